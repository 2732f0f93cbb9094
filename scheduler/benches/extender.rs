//! 5,000 GpuNodes cached; `filter` + `prioritize` for one pod, in process.
//!
//! - `decide`: the extender's work on parsed arguments (cache lookups, the
//!   market's filter and score, reasons) — what the < 1 ms p99 target is about;
//! - `handler`: the same from raw request bytes to response bytes (JSON parse of a
//!   5,000-name body, decide, JSON encode), as the HTTP handlers run it.
//!
//! Criterion reports means; the p50/p99 lines are computed explicitly over
//! `SOLGRID_BENCH_ITERS` (default 10,000) timed iterations of each and printed.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use solgrid_scheduler::cache::Cache;
use solgrid_scheduler::convert::MarketConfig;
use solgrid_scheduler::extender::{Extender, now_ms};
use solgrid_scheduler::metrics::Metrics;
use solgrid_scheduler::server::{AppState, filter_bytes, prioritize_bytes};
use solgrid_scheduler::snapshot::{self, GEN_JOB};
use solgrid_scheduler::wire::{FilterResult, parse_args};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const NODES: usize = 5_000;

struct Setup {
    state: AppState,
    filter_body: Vec<u8>,
    prioritize_body: Vec<u8>,
    passed: usize,
}

fn setup() -> Setup {
    let snap = snapshot::generate(NODES, 1);
    let cfg = MarketConfig::default();
    let index = snap.index(&cfg);
    let metrics = Metrics::new();
    let ext = Extender::new(cfg.matching, Some(metrics.clone()));
    let state = AppState::new(Arc::new(Cache::with_index(index)), ext, metrics);
    let names: Vec<String> = (0..NODES).map(snapshot::gen_node_name).collect();
    let filter_body = snapshot::gen_args_body(GEN_JOB, &names);
    // prioritize gets the nodes that passed filter, as kube-scheduler sends them
    let args = parse_args(&filter_body).unwrap();
    let idx = state.cache.load();
    let res: FilterResult = state.extender.filter(&idx, args, now_ms());
    let passed: Vec<String> = res
        .node_names
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let prioritize_body = snapshot::gen_args_body(GEN_JOB, &passed);
    Setup {
        passed: passed.len(),
        state,
        filter_body,
        prioritize_body,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn report(name: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    println!(
        "extender/{name}: {} iterations, 5,000 GpuNodes: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us",
        ns.len(),
        pct(&ns, 0.50),
        pct(&ns, 0.90),
        pct(&ns, 0.99),
        *ns.last().unwrap() as f64 / 1000.0
    );
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let iters: usize = std::env::var("SOLGRID_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let fargs = parse_args(&s.filter_body).unwrap();
    let pargs = parse_args(&s.prioritize_body).unwrap();
    println!(
        "setup: {NODES} GpuNodes cached; filter on {NODES} names, prioritize on the {} that pass",
        s.passed
    );

    // explicit percentiles. "cold": the job's verdict memo is cleared before each
    // iteration (every node evaluated by the market: a job's first pod after a
    // watch event); "warm": the memo is reused (the gang's next pods, retries).
    let clear = || s.state.cache.load().memo.lock().unwrap().clear();
    let mut decide_cold = Vec::with_capacity(iters);
    let mut decide_warm = Vec::with_capacity(iters);
    let mut handler_cold = Vec::with_capacity(iters);
    let mut handler_warm = Vec::with_capacity(iters);
    for i in 0..iters {
        let cold = i % 2 == 0;
        if cold {
            clear();
        }
        let a = fargs.clone();
        let t = Instant::now();
        let idx = s.state.cache.load();
        let now = now_ms();
        let f = s.state.extender.filter(&idx, a, now);
        let p = s.state.extender.prioritize(&idx, &pargs, now);
        black_box((&f, &p));
        let d = t.elapsed().as_nanos() as u64;
        if cold {
            decide_cold.push(d)
        } else {
            decide_warm.push(d)
        }
        drop((f, p, idx));
        if cold {
            clear();
        }
        let t = Instant::now();
        let f = filter_bytes(&s.state, &s.filter_body);
        let p = prioritize_bytes(&s.state, &s.prioritize_body);
        black_box((&f, &p));
        let d = t.elapsed().as_nanos() as u64;
        if cold {
            handler_cold.push(d)
        } else {
            handler_warm.push(d)
        }
    }
    report(
        "decide cold (filter+prioritize, parsed args, memo cleared)",
        decide_cold,
    );
    report(
        "decide warm (filter+prioritize, parsed args, memo reused)",
        decide_warm,
    );
    report(
        "handler cold (filter+prioritize, bytes to bytes, memo cleared)",
        handler_cold,
    );
    report(
        "handler warm (filter+prioritize, bytes to bytes, memo reused)",
        handler_warm,
    );
    // where a cold handler's time goes
    let mut parse = Vec::with_capacity(iters / 4);
    let mut filt = Vec::with_capacity(iters / 4);
    let mut prio = Vec::with_capacity(iters / 4);
    let mut enc = Vec::with_capacity(iters / 4);
    for _ in 0..iters / 4 {
        clear();
        let t = Instant::now();
        let a = parse_args(black_box(&s.filter_body)).unwrap();
        parse.push(t.elapsed().as_nanos() as u64);
        let idx = s.state.cache.load();
        let t = Instant::now();
        let f = s.state.extender.filter(&idx, a, now_ms());
        filt.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        let v = f.to_json().unwrap();
        enc.push(t.elapsed().as_nanos() as u64);
        black_box(v);
        let t = Instant::now();
        let p = s.state.extender.prioritize(&idx, &pargs, now_ms());
        prio.push(t.elapsed().as_nanos() as u64);
        black_box(p);
    }
    report("part: parse filter body (83 KiB)", parse);
    report(
        "part: filter decide, cold (scores the passing nodes too)",
        filt,
    );
    report("part: encode filter answer", enc);
    report("part: prioritize decide after filter (memo hit)", prio);

    let mut g = c.benchmark_group("extender_5000_nodes");
    g.sample_size(30);
    g.measurement_time(std::time::Duration::from_secs(4));
    // a pod's filter then prioritize, decided on the current index
    let decide = |a| {
        let idx = s.state.cache.load();
        let now = now_ms();
        let f = s.state.extender.filter(&idx, a, now);
        let p = s.state.extender.prioritize(&idx, &pargs, now);
        black_box((f.node_names.map(|n| n.len()), p.len()))
    };
    g.bench_function("decide_filter_prioritize_cold", |b| {
        b.iter_batched(
            || {
                clear();
                fargs.clone()
            },
            decide,
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decide_filter_prioritize_warm", |b| {
        b.iter_batched(|| fargs.clone(), decide, BatchSize::SmallInput)
    });
    g.bench_function("handler_filter_prioritize_bytes", |b| {
        b.iter(|| {
            let f = filter_bytes(&s.state, &s.filter_body);
            let p = prioritize_bytes(&s.state, &s.prioritize_body);
            black_box((f.status(), p.status()))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
