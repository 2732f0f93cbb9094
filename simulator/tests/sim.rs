//! End-to-end checks of the simulator on a small fleet.

use solgrid_sim::SimConfig;

fn small(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        providers: 40,
        days: 2,
        ..SimConfig::default()
    }
}

#[test]
fn same_seed_same_report_json() {
    let (_, a) = solgrid_sim::run(small(7), |_| {}).unwrap();
    let (_, b) = solgrid_sim::run(small(7), |_| {}).unwrap();
    assert_eq!(a.to_json(), b.to_json());
    let (_, c) = solgrid_sim::run(small(8), |_| {}).unwrap();
    assert_ne!(
        a.to_json(),
        c.to_json(),
        "a different seed gives a different market"
    );
}

#[test]
fn books_balance_to_the_unit() {
    let (mut sim, r) = solgrid_sim::run(
        SimConfig {
            seed: 3,
            providers: 60,
            days: 3,
            ..SimConfig::default()
        },
        |_| {},
    )
    .unwrap();
    let l = &r.ledger;
    assert!(r.jobs.submitted > 100, "{:?}", r.jobs);
    assert!(r.jobs.completed > 0 && l.paid_by_requesters > 0 && l.emitted > 0);
    assert_eq!(
        l.paid_by_requesters,
        l.received_by_providers + l.protocol_fees
    );
    assert_eq!(
        l.usdc.paid_by_requesters,
        l.usdc.received_by_providers + l.usdc.protocol_fees
    );
    assert_eq!(l.supply_after + l.burned, l.supply_before + l.emitted);
    assert_eq!(
        l.burned,
        l.burned_fees + l.burned_buyback + l.burned_slashing
    );
    // IO fees are burned, stablecoin fees bought back in full
    assert_eq!(l.burned_fees, l.protocol_fees);
    assert_eq!(l.usdc.bought_back, l.usdc.protocol_fees);
    // escrow: everything escrowed was either paid or refunded
    assert_eq!(l.escrowed, l.paid_by_requesters + l.refunded);
    // rewards: all emitted IO was distributed except the dust still in the pool
    assert_eq!(l.emitted, l.rewards_distributed + l.reward_dust);
    assert_eq!(l.rewards_paid, l.rewards_distributed);
    assert_eq!(l.settlements_failed, 0);
    assert_eq!(l.unit, 1_000_000_000);
    assert_eq!(l.supply_before, 500_000_000 * 1_000_000_000);
    // the job outcomes add up
    let j = &r.jobs;
    assert_eq!(
        j.submitted,
        j.completed + j.failed + j.expired + j.unfunded + j.cut_off + j.queued_at_end
    );
    sim.check_books().unwrap();
    // the report's JSON carries the fields the issue names
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    for k in ["submitted", "completed"] {
        assert!(v["jobs"][k].is_u64(), "jobs.{k}");
    }
    for k in [
        "paid_by_requesters",
        "received_by_providers",
        "protocol_fees",
        "burned",
        "emitted",
        "supply_before",
        "supply_after",
        "unit",
    ] {
        assert!(v["ledger"][k].is_u64(), "ledger.{k}");
    }
}

#[test]
fn cheaters_get_slashed_and_stake_burns() {
    let cfg = SimConfig {
        seed: 11,
        providers: 50,
        days: 2,
        cheater_permille: 200,
        detection_ppm: 500_000,
        ..SimConfig::default()
    };
    let (_, r) = solgrid_sim::run(cfg, |_| {}).unwrap();
    assert!(r.fleet.cheaters > 0);
    assert!(r.fleet.slashed > 0 && r.fleet.slashed as u64 <= r.fleet.cheaters);
    assert!(r.ledger.burned_slashing > 0);
}

#[test]
fn exact_job_count_and_plots() {
    let cfg = SimConfig {
        seed: 5,
        nodes: Some(50),
        jobs: Some(321),
        days: 1,
        ..SimConfig::default()
    };
    let (sim, r) = solgrid_sim::run(cfg, |_| {}).unwrap();
    assert_eq!(r.jobs.submitted, 321);
    assert_eq!(r.fleet.nodes, 50);
    let dir = std::env::temp_dir().join(format!("solgrid-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = solgrid_sim::plots::write_all(&dir, &sim.series, r.ledger.unit).unwrap();
    assert_eq!(files.len(), 5);
    for f in &files {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(
            svg.starts_with("<svg") && (svg.contains("<path") || svg.contains("<polyline")),
            "{}",
            f.display()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
