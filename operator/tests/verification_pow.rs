//! Proof of work end to end without a cluster: the reference worker's report, the
//! operator's Freivalds check against many kinds of tampering, the speed check per
//! claimed model, and the verification pod's verdicts.

use solgrid_market::GpuModel;
use solgrid_operator::verification::{
    Challenge, P, SpeedConfig, SplitMix64, Verdict, WorkerReport, base64_decode, base64_encode,
    check_report, freivalds, generate, multiply, run_worker, worker_main,
};

fn report(c: &Challenge) -> WorkerReport {
    let (line, _) = run_worker(c, || 0).unwrap();
    WorkerReport::from_log(&line).unwrap()
}

#[test]
fn honest_reports_pass_for_many_seeds_and_sizes() {
    let speed = SpeedConfig::default();
    for (seed, n) in [
        (0u64, 1usize),
        (1, 2),
        (7, 17),
        (u64::MAX, 40),
        (123_456_789, 64),
    ] {
        let c = Challenge { seed, n };
        let r = report(&c);
        for vseed in 0..5 {
            assert_eq!(
                check_report(&c, &r, Some(GpuModel::Rtx4090), Some(10), &speed, 3, vseed),
                Verdict::Passed,
                "seed {seed} n {n}"
            );
        }
    }
}

#[test]
fn any_single_corruption_is_caught() {
    let c = Challenge { seed: 99, n: 24 };
    let r = report(&c);
    let bytes = base64_decode(&r.product).unwrap();
    let mut rng = SplitMix64::new(5);
    for trial in 0..300u64 {
        let mut b = bytes.clone();
        // change one entry to another value below P
        let i = rng.below((c.n * c.n) as u64) as usize;
        let old = u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u64;
        let new = ((old + 1 + rng.below(P - 1)) % P) as u16;
        b[2 * i..2 * i + 2].copy_from_slice(&new.to_le_bytes());
        let bad = WorkerReport {
            product: base64_encode(&b),
            ..r.clone()
        };
        let v = check_report(&c, &bad, None, None, &SpeedConfig::default(), 2, trial);
        assert!(
            matches!(v, Verdict::WrongResult { .. }),
            "trial {trial}: {v:?}"
        );
    }
}

#[test]
fn shortcuts_a_cheater_might_take_are_caught() {
    let c = Challenge { seed: 2024, n: 32 };
    let (a, b) = generate(&c).unwrap();
    let good = multiply(&a, &b);
    // computing only half of the rows
    let mut half = good.clone();
    for x in half.data[16 * 32..].iter_mut() {
        *x = 0;
    }
    assert!(!freivalds(&a, &b, &half, 3, 77));
    // swapping two rows
    let mut swapped = good.clone();
    for j in 0..32 {
        swapped.data.swap(j, 32 + j);
    }
    assert!(!freivalds(&a, &b, &swapped, 3, 77));
    // B*A instead of A*B
    assert!(!freivalds(&a, &b, &multiply(&b, &a), 3, 77));
    // the right answer to a smaller challenge, padded
    let small = report(&Challenge { seed: 2024, n: 16 });
    let forged = WorkerReport { n: 32, ..small };
    assert!(check_report(&c, &forged, None, None, &SpeedConfig::default(), 3, 1).is_cheating());
}

#[test]
fn a_weaker_gpu_claiming_a_stronger_model_is_too_slow() {
    let s = SpeedConfig::default();
    let c = Challenge { seed: 3, n: 8 };
    let r = report(&c);
    // at n = 4096 an RTX 3060 needs ~582 s; an H100 is allowed ~243 s
    let n = 4096;
    let slow = s.expected_ms(GpuModel::Rtx3060, n);
    assert!(s.check(GpuModel::Rtx3060, n, slow).is_ok());
    assert!(s.check(GpuModel::H100, n, slow).is_err());
    // a report whose own computeMs is far past the limit is too slow even if the
    // kubelet's times are missing
    let lying = WorkerReport {
        compute_ms: 10_000_000,
        ..r
    };
    let v = check_report(&c, &lying, Some(GpuModel::H100), None, &s, 3, 1);
    assert!(matches!(v, Verdict::TooSlow { .. }), "{v:?}");
}

#[test]
fn worker_main_validates_its_arguments() {
    assert_eq!(worker_main(&[]), 2);
    assert_eq!(worker_main(&["--seed".into(), "x".into()]), 2);
    assert_eq!(
        worker_main(&["--seed".into(), "1".into(), "--size".into(), "0".into()]),
        1
    );
    assert_eq!(
        worker_main(&["--seed".into(), "1".into(), "--size".into(), "4".into()]),
        0
    );
}
