//! Proof of work end to end without a cluster: the reference worker's per-device
//! reports, the operator's Freivalds check against many kinds of tampering, the
//! sizing from the claimed model (speed) and VRAM, the proportional tolerance, and
//! the per-device verdict (a missing UUID fails).
//!
//! "Property" tests here sweep seeds drawn from a fixed splitmix stream (no
//! proptest in this crate): each loop states the property it checks.

use solgrid_market::GpuModel;
use solgrid_market::gpu::default_speed_permille;
use solgrid_operator::verification::{
    Challenge, DeviceChallenge, P, SpeedConfig, SplitMix64, Verdict, WorkerReport, base64_decode,
    base64_encode, check_devices, check_report, compute, freivalds, freivalds_chain, generate,
    multiply, run_device_worker, run_worker, worker_main,
};

fn report(c: &Challenge) -> WorkerReport {
    let (line, _) = run_worker(c, || 0).unwrap();
    WorkerReport::from_log(&line).unwrap()
}

/// A small configuration: one 16-product takes an RTX 4090 1 ms; the chain 200 ms.
fn small() -> SpeedConfig {
    SpeedConfig::quick(16)
}

fn device(uuid: &str, model: GpuModel, seed: u64, s: &SpeedConfig, n: usize) -> DeviceChallenge {
    let rounds = s.rounds_for(model, n);
    DeviceChallenge {
        uuid: uuid.into(),
        model: Some(model.name().into()),
        seed: seed.to_string(),
        rounds,
        matrices: s.matrices_for(model.typical_vram_mib(), n, rounds),
    }
}

fn node_log(devs: &[DeviceChallenge], n: usize) -> String {
    devs.iter()
        .map(|d| {
            let c = d.challenge(n).unwrap();
            run_device_worker(Some(&d.uuid), &c, || 0).unwrap().0
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn honest_reports_pass_for_many_seeds_sizes_and_chains() {
    let speed = SpeedConfig::default();
    let mut rng = SplitMix64::new(2026);
    // property: an honest result passes every verifier seed, at every shape
    for (n, rounds, matrices) in [
        (1usize, 1u32, 1u32),
        (2, 3, 2),
        (7, 5, 5),
        (17, 9, 4),
        (33, 2, 1),
    ] {
        for _ in 0..4 {
            let c = Challenge {
                seed: rng.next(),
                n,
                rounds,
                matrices,
            };
            let r = report(&c);
            for vseed in 0..3 {
                assert_eq!(
                    check_report(&c, &r, None, Some(10), &speed, 3, rng.next() ^ vseed),
                    Verdict::Passed,
                    "{c:?}"
                );
            }
        }
    }
}

#[test]
fn any_single_corruption_is_caught() {
    let c = Challenge {
        seed: 99,
        n: 20,
        rounds: 4,
        matrices: 3,
    };
    let r = report(&c);
    let bytes = base64_decode(&r.product).unwrap();
    let mut rng = SplitMix64::new(5);
    // property: changing any one entry to any other value below P is rejected
    for trial in 0..300u64 {
        let mut b = bytes.clone();
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
    let c = Challenge::single(2024, 32);
    let (a, b) = generate(&c).unwrap();
    let good = multiply(&a, &b);
    let mut half = good.clone();
    for x in half.data[16 * 32..].iter_mut() {
        *x = 0;
    }
    assert!(!freivalds(&a, &b, &half, 3, 77));
    let mut swapped = good.clone();
    for j in 0..32 {
        swapped.data.swap(j, 32 + j);
    }
    assert!(!freivalds(&a, &b, &swapped, 3, 77));
    assert!(!freivalds(&a, &b, &multiply(&b, &a), 3, 77));
    // the right answer to a smaller challenge, relabelled
    let small = report(&Challenge::single(2024, 16));
    let forged = WorkerReport { n: 32, ..small };
    assert!(check_report(&c, &forged, None, None, &SpeedConfig::default(), 3, 1).is_cheating());
    // a chain: fewer rounds (less work) relabelled as the full chain
    let chain = Challenge {
        seed: 4,
        n: 16,
        rounds: 40,
        matrices: 4,
    };
    let cut = Challenge {
        rounds: 10,
        ..chain
    };
    let mut r = report(&cut);
    r.rounds = 40;
    let v = check_report(&chain, &r, None, None, &SpeedConfig::default(), 3, 1);
    assert!(matches!(v, Verdict::WrongResult { .. }), "{v:?}");
    // one matrix reused instead of cycling four (a device short of memory)
    let lazy = compute(&Challenge {
        matrices: 1,
        ..chain
    })
    .unwrap();
    assert!(!freivalds_chain(&chain, &lazy, 3, 1));
}

#[test]
fn tolerance_is_proportional_to_the_claimed_models_time() {
    let table = default_speed_permille();
    // property: for every model and size, the chain takes the claimed model at
    // least the target, the limit is tolerance x expected + a slack that is at most
    // a quarter of the target, so the fixed part never dwarfs a fast GPU's time
    for s in [SpeedConfig::default(), small()] {
        s.validate().unwrap();
        for &m in GpuModel::ALL {
            for n in [8usize, 16, 64, 256, 512, 1024] {
                let r = s.rounds_for(m, n);
                let e = s.expected_us(m, n, r);
                let limit = s.limit_ms(m, n, r);
                if r > 1 {
                    assert!(e / 1000 + 1 >= s.target_ms, "{m:?} n={n}: {e} us");
                }
                assert_eq!(
                    limit,
                    (e as u128 * s.tolerance_pct as u128 / 100_000) as u64 + s.slack_ms
                );
                assert!(s.slack_ms * 4 <= s.target_ms);
            }
        }
        // faster models get proportionally less time at the same size
        let n = 64;
        let h100 = s.expected_us(GpuModel::H100, n, 100);
        let r4090 = s.expected_us(GpuModel::Rtx4090, n, 100);
        let ratio = r4090 as f64 / h100 as f64;
        let want = table.get(GpuModel::H100) as f64 / table.get(GpuModel::Rtx4090) as f64;
        assert!((ratio - want).abs() < 0.01, "{ratio} vs {want}");
    }
}

#[test]
fn a_cpu_or_a_smaller_gpu_claiming_a_larger_one_is_too_slow() {
    let s = small();
    let n = 16;
    // property: a device of speed `actual` doing the rounds sized for `claimed`
    // passes iff its time is within the limit: every model of the table more than
    // tolerance + slack / target = 2 + 1/4 times slower than the claim is caught
    let table = default_speed_permille();
    for &claimed in GpuModel::ALL {
        let r = s.rounds_for(claimed, n);
        let limit = s.limit_ms(claimed, n, r);
        for &actual in GpuModel::ALL {
            let took = s.expected_ms(actual, n, r);
            let slower = table.get(claimed) as f64 / table.get(actual) as f64;
            let verdict = s.check(
                claimed,
                &Challenge {
                    seed: 0,
                    n,
                    rounds: r,
                    matrices: 1,
                },
                took,
            );
            if slower > 2.25 {
                assert!(
                    verdict.is_err(),
                    "{actual:?} as {claimed:?}: {took} <= {limit}"
                );
            }
            if actual == claimed {
                assert!(verdict.is_ok(), "{claimed:?} honest: {took} > {limit}");
            }
        }
    }
    // with the defaults (150 %, slack 5 s of a 30 s target) a 4090 claiming an
    // H100 (2.4x), an RTX 3090 claiming a 4090 (1.85x) and an A100 claiming an H200
    // (2.35x) are caught; an H100 claiming an H200 (1.125x) is not
    let d = SpeedConfig::default();
    for (actual, claimed, caught) in [
        (GpuModel::Rtx4090, GpuModel::H100, true),
        (GpuModel::Rtx3090, GpuModel::Rtx4090, true),
        (GpuModel::A100_80, GpuModel::H200, true),
        (GpuModel::H100, GpuModel::H200, false),
    ] {
        let r = d.rounds_for(claimed, 512);
        let c = Challenge {
            seed: 0,
            n: 512,
            rounds: r,
            matrices: 1,
        };
        let took = d.expected_ms(actual, 512, r);
        assert_eq!(
            d.check(claimed, &c, took).is_err(),
            caught,
            "{actual:?} as {claimed:?}"
        );
    }
    // a CPU (~ 1/100 of an RTX 4090 here) claiming an H100 is far past it
    let r = s.rounds_for(GpuModel::H100, n);
    let cpu_ms = s.expected_ms(GpuModel::Rtx4090, n, r) * 100;
    assert!(cpu_ms > 50 * s.limit_ms(GpuModel::H100, n, r));
}

#[test]
fn every_device_must_report_by_uuid() {
    let s = small();
    let n = 16;
    let devs = vec![
        device("GPU-0", GpuModel::H100, 1, &s, n),
        device("GPU-1", GpuModel::H100, 2, &s, n),
        device("GPU-2", GpuModel::Rtx3060, 3, &s, n),
    ];
    let log = node_log(&devs, n);
    let check = |log: &str, ms: u64, late: bool| check_devices(&devs, n, log, ms, late, &s, 3, 7);
    assert_eq!(check(&log, 100, false), Verdict::Passed);
    // each device missing in turn: wrong result naming it
    for (skip, dev) in devs.iter().enumerate() {
        let partial: Vec<&str> = log
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| l)
            .collect();
        let v = check(&partial.join("\n"), 100, false);
        let uuid = &dev.uuid;
        assert!(
            matches!(&v, Verdict::WrongResult { reason } if reason.contains(uuid.as_str())),
            "{v:?}"
        );
    }
    // one device's report given twice (another device's work under its UUID)
    let twice = format!("{log}\n{}", log.lines().next().unwrap());
    assert!(check(&twice, 100, false).is_cheating());
    // two devices swapped their UUIDs: each result is for another seed
    let swapped = log
        .replace("GPU-0", "GPU-x")
        .replace("GPU-1", "GPU-0")
        .replace("GPU-x", "GPU-1");
    assert!(check(&swapped, 100, false).is_cheating());
    // too slow for the H100s (limit 450 ms), inconclusive if the node started late
    let v = check(&log, 451, false);
    assert!(matches!(v, Verdict::TooSlow { limit_ms: 450, .. }), "{v:?}");
    assert!(matches!(
        check(&log, 451, true),
        Verdict::Inconclusive { .. }
    ));
    // a wrong result is cheating even when late
    let bad = node_log(&[device("GPU-0", GpuModel::H100, 9, &s, n)], n);
    let mixed = log.replacen(log.lines().next().unwrap(), &bad, 1);
    assert!(check(&mixed, 10, true).is_cheating());
}

#[test]
fn worker_main_validates_its_arguments() {
    let a = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    assert_eq!(worker_main(&[]), 2);
    assert_eq!(worker_main(&a("--seed x")), 2);
    assert_eq!(worker_main(&a("--seed 1 --size 0")), 1);
    assert_eq!(worker_main(&a("--seed 1 --size 4")), 0);
    assert_eq!(
        worker_main(&a("--size 4 --device GPU-a:1:3:2 --device GPU-b:2:1:1")),
        0
    );
    assert_eq!(worker_main(&a("--size 4 --device GPU-a:1:3:4")), 1);
}
