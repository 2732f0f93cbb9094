//! The simulator at scale: 10,000 nodes and 100,000 jobs over 7 simulated days
//! (target: under 10 s on a 2-core machine). `cargo bench -p solgrid-sim`.
//!
//! Runs the whole market (matching, pricing, settlement through the embedded
//! ledger, emission, rewards) and prints the wall time of each run; a plain
//! harness-less bench so that one run is one sample.

use solgrid_sim::SimConfig;
use std::time::Instant;

fn main() {
    // `cargo test --benches` passes no `--bench`: run a small smoke size then.
    let full = std::env::args().any(|a| a == "--bench");
    let (nodes, jobs, runs) = if full {
        (10_000, 100_000, 3)
    } else {
        (300, 2_000, 1)
    };
    let mut times = Vec::new();
    for run in 0..runs {
        let cfg = SimConfig {
            nodes: Some(nodes),
            jobs: Some(jobs),
            days: 7,
            seed: 42 + run,
            ..SimConfig::default()
        };
        let t = Instant::now();
        let (_, report) = solgrid_sim::run(cfg, |_| {}).expect("simulation runs");
        let s = t.elapsed().as_secs_f64();
        assert_eq!(report.jobs.submitted, jobs);
        println!(
            "sim/{nodes} nodes/{jobs} jobs/7 days: {s:.2} s ({} completed, {} ledger transactions, {} settlements)",
            report.jobs.completed, report.ledger.transactions, report.ledger.settlements_confirmed
        );
        times.push(s);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "sim/{nodes} nodes/{jobs} jobs: median {:.2} s over {runs} run(s) (target < 10 s)",
        times[times.len() / 2]
    );
}
