//! `solgrid-operator-cachebench`: fills the controllers' reflector stores with
//! 10,000 GpuNodes and 10,000 ComputeJobs (realistic objects, decoded from JSON as
//! a watch would, managedFields included), reports the process RSS (VmRSS from
//! /proc/self/status; target < 200 MiB) and the throughput of the pure reconcile
//! step (state machine decision, plus quoting for pending jobs).
//!
//! Usage: `cargo run --release -p solgrid-operator --bin solgrid-operator-cachebench [-- NODES JOBS]`

use chrono::{DateTime, Utc};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::json;
use solgrid_crds::{ComputeJob, GpuNode};
use solgrid_market::supply::SupplyIndex;
use solgrid_operator::computejob::machine::{self, PodPhase, PodView, View};
use solgrid_operator::computejob::quote;
use solgrid_operator::config::OperatorConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

const MODELS: [&str; 6] = [
    "NVIDIA GeForce RTX 4090",
    "NVIDIA H100 80GB HBM3",
    "NVIDIA A100-SXM4-80GB",
    "NVIDIA GeForce RTX 3090",
    "NVIDIA L40S",
    "NVIDIA GeForce RTX 4080",
];

fn wallet(i: usize) -> String {
    // 44 base58 characters, unique per i
    let alphabet = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut s = String::with_capacity(44);
    let mut x = i as u64 * 2_654_435_761 + 12345;
    for _ in 0..44 {
        s.push(alphabet[(x % 58) as usize] as char);
        x = x / 58 + 7_919 * (i as u64 + 1);
    }
    s
}

fn managed_fields(manager: &str) -> serde_json::Value {
    json!([
        {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "solgrid.dev/v1alpha1",
         "time": "2026-11-25T10:00:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                      "f:spec": {".": {}, "f:gpus": {}, "f:template": {}, "f:workers": {}, "f:maxDurationSeconds": {}}}},
        {"manager": manager, "operation": "Apply", "apiVersion": "solgrid.dev/v1alpha1",
         "time": "2026-11-25T10:05:00Z", "fieldsType": "FieldsV1", "subresource": "status",
         "fieldsV1": {"f:status": {"f:phase": {}, "f:conditions": {}, "f:observedGeneration": {}}}}
    ])
}

fn gpunode(i: usize) -> serde_json::Value {
    let model = MODELS[i % MODELS.len()];
    let gpus: Vec<_> = (0..8)
        .map(|g| {
            json!({"id": format!("GPU-{i:05}-{g}"), "uuid": format!("GPU-{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", i, g, i % 4096, g, i * 8 + g),
                   "vendor": "nvidia", "model": model, "vramMib": 81920, "health": "Healthy",
                   "pciBusId": format!("0000:{:02x}:00.0", g + 1), "numaNode": g / 4})
        })
        .collect();
    json!({
        "apiVersion": "solgrid.dev/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": format!("node-{i:05}"), "uid": format!("00000000-0000-4000-8000-{i:012}"),
                     "resourceVersion": (1000 + i).to_string(), "generation": 2,
                     "creationTimestamp": "2026-11-01T00:00:00Z",
                     "labels": {"solgrid.dev/region": "eu-west", "solgrid.dev/model": "h100"},
                     "managedFields": managed_fields("solgrid-operator")},
        "spec": {"nodeName": format!("node-{i:05}"), "payoutWallet": wallet(i),
                 "location": {"region": "eu-west", "country": "DE", "coordinates": {"latitude": 50.1, "longitude": 8.6}},
                 "floorMicroUsdPerGpuHour": 500_000 + (i % 100) as u64 * 1000, "stakerCommissionBps": 1000, "draining": false},
        "status": {"phase": "Active", "gpus": gpus, "gpuCount": 8, "allocatedGpus": i % 9, "model": model,
                   "reputation": {"score": 700, "uptime": 800, "jobSuccess": 650, "verification": 900, "age": 500},
                   "lastHeartbeat": "2026-11-25T10:00:00Z", "onlineSince": "2026-11-20T00:00:00Z", "firstSeen": "2026-11-01T00:00:00Z",
                   "stakeTotal": 16_000_000_000_000u64, "minimumStake": 16_000_000_000_000u64, "rewardEligible": true,
                   "earnings": {"computeIo": 123_456_789_000u64, "computeUsdc": 1_234_567, "idleRewardsIo": 98_765_432_100u64},
                   "verification": {"lastRun": "2026-11-25T09:00:00Z", "lastResult": "passed", "passed": 400, "failed": 0, "verified": true},
                   "jobs": {"succeeded": 120, "failedByProvider": 1, "running": 1},
                   "conditions": [
                       {"type": "Ready", "status": "True", "reason": "Heartbeat", "message": "heartbeat fresh", "lastTransitionTime": "2026-11-20T00:00:00Z", "observedGeneration": 2},
                       {"type": "Verified", "status": "True", "reason": "ProofOfWorkPassed", "message": "last verification passed", "lastTransitionTime": "2026-11-25T09:00:00Z", "observedGeneration": 2}],
                   "observedGeneration": 2}
    })
}

fn computejob(i: usize) -> serde_json::Value {
    let phases = ["Pending", "Running", "Running", "Settled", "Scheduling"];
    let phase = phases[i % phases.len()];
    let uid = format!("11111111-0000-4000-8000-{i:012}");
    json!({
        "apiVersion": "solgrid.dev/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": format!("job-{i:05}"), "namespace": format!("team-{}", i % 50), "uid": uid,
                     "resourceVersion": (50_000 + i).to_string(), "generation": 1, "creationTimestamp": "2026-11-25T08:00:00Z",
                     "finalizers": ["solgrid.dev/settlement"],
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"solgrid.dev/v1alpha1\",\"kind\":\"ComputeJob\",\"spec\":{\"workers\":2}}"},
                     "managedFields": managed_fields("solgrid-operator")},
        "spec": {"template": {"image": "ghcr.io/example/llama-finetune:1.4.0", "command": ["torchrun"],
                              "args": ["--nnodes=2", "--nproc-per-node=1", "train.py", "--model=llama-7b", "--epochs=3"],
                              "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}]},
                 "gpus": {"count": 1, "vendor": "nvidia", "models": ["RTX 4090", "A100 80GB"], "minVramMib": 24000},
                 "workers": 2, "maxDurationSeconds": 14400, "urgency": "high", "maxPricePerGpuHour": 2_000_000_000u64,
                 "paymentToken": "IO", "payerSecretRef": {"name": "alice-wallet"},
                 "preferredRegions": ["eu-west", "eu-central"], "origin": {"latitude": 52.52, "longitude": 13.4},
                 "minReputation": 600, "preference": "balanced", "gangTimeoutSeconds": 300},
        "status": {"phase": phase, "message": "all 2 workers running on 2 node(s)",
                   "quote": {"pricePerGpuHour": 1_200_000_000u64, "token": "IO", "referencePricePerGpuHour": 1_000_000_000u64,
                             "urgencyFactorBps": 12500, "complexityFactorBps": 10200, "supplyFactorBps": 9500,
                             "maxCost": 9_624_000_000u64, "lockedAt": "2026-11-25T08:00:01Z"},
                   "payerWallet": wallet(i + 1_000_000),
                   "escrow": {"key": format!("{uid}/escrow"), "purpose": "escrow", "state": "Confirmed",
                              "signature": "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW",
                              "lastValidBlockHeight": 1234567, "confirmedAt": "2026-11-25T08:00:02Z"},
                   "escrowed": 9_624_000_000u64,
                   "workers": [{"index": 0, "pod": format!("job-{i:05}-a1-w0"), "node": format!("node-{:05}", i % 10_000), "phase": "Running"},
                               {"index": 1, "pod": format!("job-{i:05}-a1-w1"), "node": format!("node-{:05}", (i + 1) % 10_000), "phase": "Running"}],
                   "nodes": [format!("node-{:05}", i % 10_000), format!("node-{:05}", (i + 1) % 10_000)],
                   "attempts": 1, "schedulingSince": "2026-11-25T08:00:03Z", "startTime": "2026-11-25T08:01:00Z",
                   "gpuSeconds": 7200, "usage": [], "cost": {"compute": 0, "requesterFee": 0, "providerFee": 0, "surcharge": 0, "paid": 0, "received": 0, "burned": 0, "toTreasury": 0, "refunded": 0},
                   "settlements": [],
                   "conditions": [
                       {"type": "Quoted", "status": "True", "reason": "PriceLocked", "message": "1200000000 IO per GPU-hour for rtx-4090; escrow 9624000000", "lastTransitionTime": "2026-11-25T08:00:01Z", "observedGeneration": 1},
                       {"type": "Funded", "status": "True", "reason": "EscrowConfirmed", "message": "9624000000 IO in escrow", "lastTransitionTime": "2026-11-25T08:00:02Z", "observedGeneration": 1},
                       {"type": "Scheduled", "status": "True", "reason": "GangRunning", "message": "all 2 workers running on 2 node(s)", "lastTransitionTime": "2026-11-25T08:01:00Z", "observedGeneration": 1},
                       {"type": "Running", "status": "True", "reason": "GangRunning", "message": "all 2 workers running on 2 node(s)", "lastTransitionTime": "2026-11-25T08:01:00Z", "observedGeneration": 1}],
                   "observedGeneration": 1}
    })
}

/// What to fill the caches with: `[NODES JOBS]` from the command line, and
/// whether GpuNodes keep their managedFields.
struct Args {
    nodes: usize,
    jobs: usize,
    /// GpuNodes: managedFields stripped, as the operator's GpuNode cache does
    /// (SOLGRID_BENCH_KEEP_MANAGED_FIELDS=1 keeps them); ComputeJobs keep theirs.
    strip: bool,
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let n = |i: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(10_000);
        Args {
            nodes: n(1),
            jobs: n(2),
            strip: std::env::var("SOLGRID_BENCH_KEEP_MANAGED_FIELDS").map_or(true, |v| v != "1"),
        }
    }
}

/// Fills the two reflector stores with objects decoded from bytes, as from a watch.
fn fill_caches(args: &Args) -> anyhow::Result<(Store<GpuNode>, Store<ComputeJob>)> {
    let (nodes, mut node_writer) = reflector::store::<GpuNode>();
    let (jobs, mut job_writer) = reflector::store::<ComputeJob>();
    let t = Instant::now();
    for i in 0..args.nodes {
        let bytes = serde_json::to_vec(&gpunode(i))?;
        let mut n: GpuNode = serde_json::from_slice(&bytes)?;
        if args.strip {
            solgrid_operator::context::slim(&mut n);
        }
        node_writer.apply_watcher_event(&watcher::Event::Apply(n));
    }
    for i in 0..args.jobs {
        let bytes = serde_json::to_vec(&computejob(i))?;
        // the ComputeJob controller's own cache (kube's Controller::new) keeps them
        let j: ComputeJob = serde_json::from_slice(&bytes)?;
        job_writer.apply_watcher_event(&watcher::Event::Apply(j));
    }
    println!(
        "filled {} GpuNodes + {} ComputeJobs in {:.2?} (managedFields {})",
        nodes.len(),
        jobs.len(),
        t.elapsed(),
        if args.strip {
            "stripped from GpuNodes"
        } else {
            "kept"
        }
    );
    Ok((nodes, jobs))
}

fn report_rss(before_kib: u64, with_caches_kib: u64) {
    println!(
        "RSS: {:.1} MiB before, {:.1} MiB with the caches (+{:.1} MiB); target < 200 MiB: {}",
        before_kib as f64 / 1024.0,
        with_caches_kib as f64 / 1024.0,
        (with_caches_kib.saturating_sub(before_kib)) as f64 / 1024.0,
        if with_caches_kib < 200 * 1024 {
            "OK"
        } else {
            "OVER"
        }
    );
}

/// What every decision is made against: a running two-worker gang, now.
struct Bench {
    cfg: OperatorConfig,
    now: DateTime<Utc>,
    pods: Vec<PodView>,
}

const ROUNDS: usize = 5;

impl Bench {
    fn new() -> anyhow::Result<Self> {
        let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-25T09:00:00Z")?.into();
        let pods = (0..2)
            .map(|i| PodView {
                name: format!("w{i}"),
                index: i,
                attempt: 1,
                phase: PodPhase::Running,
                node: Some("node-00001".into()),
                deleting: false,
                started: Some(now),
                finished: None,
                node_fault: false,
            })
            .collect();
        Ok(Bench {
            cfg: OperatorConfig::default(),
            now,
            pods,
        })
    }

    /// The state machine's decision for `job`.
    fn decide(&self, job: &ComputeJob) -> machine::Step {
        let st = job.status.clone().unwrap_or_default();
        machine::decide(&View {
            spec: &job.spec,
            status: &st,
            deleting: false,
            pods: &self.pods,
            now: self.now,
            period_ms: self.cfg.periods.period_ms,
            gang_max_attempts: self.cfg.gang_max_attempts,
            running_requeue: Duration::from_secs(30),
        })
    }

    /// Quotes a pending job against the supply of its target model.
    fn quote(&self, job: &ComputeJob, supply: &SupplyIndex) -> anyhow::Result<()> {
        let cfg = &self.cfg;
        let model =
            quote::target_model(&job.spec, cfg.default_nvidia_model, cfg.default_apple_model)
                .map_err(anyhow::Error::msg)?;
        let (util, floor) = supply.get(model);
        let q = quote::quote(
            &job.spec,
            model,
            util,
            floor,
            &cfg.market.pricing,
            &cfg.market.fees,
            self.now,
        )
        .map_err(anyhow::Error::msg)?;
        std::hint::black_box(q);
        Ok(())
    }

    /// The pure reconcile step over every cached job: decide the next step, and
    /// quote pending jobs against the GpuNode cache (utilization + floors).
    fn reconciles(&self, jobs: &[Arc<ComputeJob>], nodes: &[Arc<GpuNode>]) -> anyhow::Result<()> {
        let t = Instant::now();
        // as `Context::supply`: one pass over the GpuNode cache, reused for 5 s
        let supply = solgrid_crds::market::supply_index(nodes.iter().map(|n| n.as_ref()));
        println!(
            "supply index over {} GpuNodes built in {:.2?}",
            nodes.len(),
            t.elapsed()
        );
        let t = Instant::now();
        let (mut decisions, mut quotes) = (0u64, 0u64);
        for _ in 0..ROUNDS {
            for j in jobs {
                let step = self.decide(j);
                decisions += 1;
                if step == machine::Step::Quote {
                    self.quote(j, &supply)?;
                    quotes += 1;
                }
            }
        }
        let el = t.elapsed();
        println!(
            "pure reconcile step: {decisions} decisions ({quotes} with a quote over {} GpuNodes) in {:.2?}: {:.0} reconciles/s",
            nodes.len(),
            el,
            decisions as f64 / el.as_secs_f64()
        );
        Ok(())
    }

    /// The state machine alone over every cached job.
    fn decisions(&self, jobs: &[Arc<ComputeJob>]) {
        let t = Instant::now();
        for _ in 0..ROUNDS {
            for j in jobs {
                std::hint::black_box(self.decide(j));
            }
        }
        let el = t.elapsed();
        println!(
            "state machine alone: {:.0} decisions/s",
            (ROUNDS * jobs.len()) as f64 / el.as_secs_f64()
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rss0 = rss_kib();
    let (nodes, jobs) = fill_caches(&args)?;
    report_rss(rss0, rss_kib());
    let bench = Bench::new()?;
    let (all_jobs, all_nodes) = (jobs.state(), nodes.state());
    bench.reconciles(&all_jobs, &all_nodes)?;
    bench.decisions(&all_jobs);
    println!("final RSS: {:.1} MiB", rss_kib() as f64 / 1024.0);
    Ok(())
}
