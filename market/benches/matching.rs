//! The scheduler extender's hot path: filter + score over 5,000 cached nodes for one pod.
//! Target: under 1 ms p99 (PRODUCT.md). Prints p50/p99 of whole passes, then runs criterion.

use criterion::{Criterion, criterion_group, criterion_main};
use solgrid_market::gpu::{GpuModel, ModelSet};
use solgrid_market::matching::{
    GeoPoint, GpuGroup, JobRequirements, MatchConfig, NodePhase, NodeSnapshot, Preference,
    evaluate, extender_score,
};
use std::hint::black_box;
use std::time::Instant;

const NODES: usize = 5_000;
const NOW: u64 = 1_000 * 3_600_000;

fn fleet() -> Vec<NodeSnapshot> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let regions = [
        "us-east",
        "us-west",
        "eu-west",
        "eu-central",
        "ap-southeast",
        "ap-northeast",
    ];
    (0..NODES)
        .map(|i| {
            let model = GpuModel::ALL[(next() % GpuModel::COUNT as u64) as usize];
            let total = [1u32, 2, 4, 8][(next() % 4) as usize];
            let busy = (next() % (total as u64 + 1)) as u32;
            NodeSnapshot {
                name: format!("node-{i}"),
                gpus: vec![GpuGroup {
                    model,
                    vram_mib: model.typical_vram_mib(),
                    total,
                    healthy: total,
                    healthy_free: total - busy,
                }],
                phase: if next() % 20 == 0 {
                    NodePhase::Offline
                } else {
                    NodePhase::Active
                },
                draining: next() % 50 == 0,
                stake: 1_000,
                min_stake: if next() % 10 == 0 { 2_000 } else { 1_000 },
                reputation: (next() % 1001) as u16,
                floor_micro_usd: next() % 3_000_000,
                region: regions[(next() % regions.len() as u64) as usize].to_string(),
                country: "US".into(),
                coords: Some(GeoPoint {
                    lat: (next() % 180) as f64 - 90.0,
                    lon: (next() % 360) as f64 - 180.0,
                }),
                first_seen_ms: next() % NOW,
            }
        })
        .collect()
}

fn job() -> JobRequirements {
    JobRequirements {
        vendor: None,
        models: ModelSet::EMPTY,
        min_vram_mib: 8_192,
        gpus_per_worker: 1,
        price_micro_usd: 2_500_000,
        min_reputation: 300,
        preferred_regions: vec!["eu-west".into(), "eu-central".into()],
        strict_regions: false,
        location: Some(GeoPoint {
            lat: 52.5,
            lon: 13.4,
        }),
        preference: Preference::Balanced,
    }
}

/// One extender call: filter + score every node, collect the 0–10 scores of those that pass.
fn pass(
    nodes: &[NodeSnapshot],
    job: &JobRequirements,
    cfg: &MatchConfig,
    out: &mut Vec<(u32, i64)>,
) {
    out.clear();
    for (i, n) in nodes.iter().enumerate() {
        if let Ok(s) = evaluate(n, job, cfg, NOW) {
            out.push((i as u32, extender_score(s)));
        }
    }
}

fn bench(c: &mut Criterion) {
    let nodes = fleet();
    let job = job();
    let cfg = MatchConfig::default();
    let mut out = Vec::with_capacity(NODES);

    // p50 / p99 over whole passes (a few only when run as a test: `cargo test --benches`)
    let passes = if std::env::args().any(|a| a == "--bench") {
        2_000
    } else {
        10
    };
    let mut samples: Vec<u128> = (0..passes)
        .map(|_| {
            let t = Instant::now();
            pass(&nodes, &job, &cfg, &mut out);
            black_box(&out);
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    println!(
        "matching/{NODES} nodes filter+score: {} pass, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        out.len(),
        samples[samples.len() / 2] as f64 / 1e3,
        samples[samples.len() * 99 / 100] as f64 / 1e3,
        samples[samples.len() - 1] as f64 / 1e3
    );

    c.bench_function("filter_score_5000_nodes", |b| {
        b.iter(|| {
            pass(black_box(&nodes), black_box(&job), &cfg, &mut out);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
