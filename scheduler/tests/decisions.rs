//! Decisions over testdata/snapshot.yaml: each node there is built to show one.

mod common;

use common::*;
use solgrid_scheduler::convert::{self, JobView, MarketConfig};
use solgrid_scheduler::extender::Reason;
use solgrid_scheduler::server::{filter_bytes, prioritize_bytes};
use solgrid_scheduler::snapshot::gen_pod_json;
use solgrid_scheduler::wire::{ExtenderFilterResult, HostPriority};

const ALL: [&str; 11] = [
    "gpu-a-4090",
    "gpu-b-h100",
    "gpu-c-slashed",
    "gpu-d-offline",
    "gpu-e-apple",
    "gpu-f-busy",
    "gpu-g-lowrep",
    "gpu-h-cordoned",
    "gpu-i-3060",
    "gpu-j-a100-us",
    "no-such-node",
];

fn body(ns: &str, job: &str) -> Vec<u8> {
    let mut pod = gen_pod_json(job, 0);
    pod["metadata"]["namespace"] = ns.into();
    pod["metadata"]["ownerReferences"] = serde_json::json!(null);
    serde_json::to_vec(&serde_json::json!({"Pod": pod, "Nodes": null, "NodeNames": ALL})).unwrap()
}

async fn filter(job: &str) -> ExtenderFilterResult {
    let state = testdata_state();
    let (code, out) = body_of(filter_bytes(&state, &body("ml-team", job))).await;
    assert_eq!(code, 200);
    serde_json::from_slice(&out).unwrap()
}

#[tokio::test]
async fn llama_finetune_reasons() {
    let r = filter("llama-finetune").await;
    assert_eq!(
        r.node_names.as_ref().unwrap(),
        &["gpu-a-4090", "gpu-j-a100-us"]
    );
    let unres = &r.failed_and_unresolvable_nodes;
    let trans = &r.failed_nodes;
    assert_eq!(
        unres["gpu-b-h100"],
        "solgrid: provider floor price is above the job's locked price (1500000 micro-USD/GPU-hour)"
    );
    assert_eq!(
        unres["gpu-c-slashed"],
        "solgrid: node is Slashed (caught cheating)"
    );
    assert_eq!(unres["gpu-e-apple"], "solgrid: node GPUs are not nvidia");
    assert_eq!(
        unres["gpu-g-lowrep"],
        "solgrid: node reputation is below the job's minimum 600"
    );
    assert_eq!(
        unres["gpu-i-3060"],
        "solgrid: node GPU model is not among the job's models (rtx-4090,a100-80gb,h100)"
    );
    assert!(unres["no-such-node"].contains("unknown to the solgrid scheduler's cache"));
    assert_eq!(
        trans["gpu-d-offline"],
        "solgrid: node is Offline (heartbeats stopped)"
    );
    assert_eq!(
        trans["gpu-f-busy"],
        "solgrid: not enough free GPUs (the job needs 1 per worker)"
    );
    assert_eq!(
        trans["gpu-h-cordoned"],
        "solgrid: node is cordoned (unschedulable)"
    );
    assert_eq!(unres.len() + trans.len() + 2, ALL.len());
    assert!(r.error.is_empty());
}

#[tokio::test]
async fn llama_finetune_scores_prefer_close_cheap_nodes() {
    let state = testdata_state();
    let (_, out) = body_of(prioritize_bytes(&state, &body("ml-team", "llama-finetune"))).await;
    let hp: Vec<HostPriority> = serde_json::from_slice(&out).unwrap();
    assert_eq!(hp.len(), ALL.len());
    let s = |h: &str| hp.iter().find(|x| x.host == h).unwrap().score;
    // gpu-a: in Europe near Berlin, floor $0.40 of $1.50; gpu-j: New York, $0.90
    assert!(s("gpu-a-4090") > s("gpu-j-a100-us"), "{hp:?}");
    assert!(hp.iter().all(|h| (0..=10).contains(&h.score)));
    for failed in [
        "gpu-b-h100",
        "gpu-c-slashed",
        "gpu-h-cordoned",
        "no-such-node",
    ] {
        assert_eq!(s(failed), 0, "{failed}");
    }
}

#[tokio::test]
async fn required_region_and_io_price() {
    // us-only: Require us-east, 4 IO = $2.00 at $0.50/IO
    let r = filter("us-only").await;
    assert_eq!(r.node_names.as_ref().unwrap(), &["gpu-j-a100-us"]);
    assert_eq!(
        r.failed_and_unresolvable_nodes["gpu-a-4090"],
        "solgrid: node region is not among the job's required regions (us-east)"
    );
    // gpu-d-offline is in us-east but offline: transient
    assert!(r.failed_nodes.contains_key("gpu-d-offline"));
    let snap = testdata_snapshot();
    let job = snap
        .jobs
        .iter()
        .find(|j| j.metadata.name.as_deref() == Some("us-only"))
        .unwrap();
    match convert::job_view(job, &MarketConfig::default()) {
        JobView::Match(req) => {
            assert_eq!(req.price_micro_usd, 2_000_000);
            assert!(req.strict_regions);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn finished_job_is_refused_everywhere() {
    let r = filter("finished").await;
    assert!(r.node_names.unwrap().is_empty());
    assert_eq!(r.failed_and_unresolvable_nodes.len(), ALL.len());
    assert!(r.failed_nodes.is_empty());
}

#[tokio::test]
async fn decisions_are_counted_by_reason() {
    let state = testdata_state();
    let _ = filter_bytes(&state, &body("ml-team", "llama-finetune"));
    let m = state.metrics.render();
    for want in [
        "solgrid_scheduler_filter_decisions_total{reason=\"passed\"} 2",
        "solgrid_scheduler_filter_decisions_total{reason=\"slashed\"} 1",
        "solgrid_scheduler_filter_decisions_total{reason=\"floor_above_price\"} 1",
        "solgrid_scheduler_filter_decisions_total{reason=\"not_enough_free_gpus\"} 1",
        "solgrid_scheduler_filter_decisions_total{reason=\"unknown_node\"} 1",
    ] {
        assert!(m.contains(want), "missing {want}\n{m}");
    }
}

#[test]
fn reason_classes() {
    use Reason::*;
    for r in [
        Vendor,
        Model,
        Vram,
        Slashed,
        Region,
        FloorAbovePrice,
        Reputation,
        UnknownNode,
    ] {
        assert!(r.unresolvable(), "{r:?}");
    }
    for r in [
        NotEnoughFreeGpus,
        Offline,
        Draining,
        Cordoned,
        NotReady,
        JobNotCached,
    ] {
        assert!(!r.unresolvable(), "{r:?}");
    }
    let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(labels.len(), Reason::ALL.len());
}

#[test]
fn node_snapshot_groups_gpus_and_counts_free_ones() {
    let snap = testdata_snapshot();
    let get = |n: &str| {
        convert::node_snapshot(
            snap.gpunodes
                .iter()
                .find(|g| g.metadata.name.as_deref() == Some(n))
                .unwrap(),
        )
    };
    let a = get("gpu-a-4090");
    assert_eq!(a.gpus.len(), 1);
    let g = a.gpus[0];
    assert_eq!(
        (
            g.model.name(),
            g.total,
            g.healthy,
            g.healthy_free,
            g.vram_mib
        ),
        ("rtx-4090", 4, 4, 3, 24564)
    );
    assert_eq!(a.floor_micro_usd, 400_000);
    assert_eq!(a.reputation, 850);
    assert!(a.coords.is_some() && a.first_seen_ms > 0);
    assert_eq!(get("gpu-f-busy").gpus[0].healthy_free, 0);
    assert_eq!(get("gpu-e-apple").gpus[0].model.name(), "apple-m2");
    // a mixed node with an unhealthy GPU and one the market does not know
    let mut mixed = snap.gpunodes[0].clone();
    let st = mixed.status.as_mut().unwrap();
    st.gpus[1].health = solgrid_crds::GpuHealth::Unhealthy;
    st.gpus[2].model = "NVIDIA H100 80GB HBM3".into();
    st.gpus[2].vram_mib = 81_559;
    st.gpus[3].model = "Radeon RX 7900".into();
    st.allocated_gpus = 1;
    let m = convert::node_snapshot(&mixed);
    assert_eq!(m.gpus.len(), 2);
    let rtx = m
        .gpus
        .iter()
        .find(|g| g.model.name() == "rtx-4090")
        .unwrap();
    assert_eq!((rtx.total, rtx.healthy, rtx.healthy_free), (2, 1, 1));
    let h = m.gpus.iter().find(|g| g.model.name() == "h100").unwrap();
    assert_eq!((h.total, h.healthy_free), (1, 1));
}

#[test]
fn job_view_prices_and_models() {
    let snap = testdata_snapshot();
    let cfg = MarketConfig::default();
    let mut job = snap
        .jobs
        .iter()
        .find(|j| j.metadata.name.as_deref() == Some("llama-finetune"))
        .unwrap()
        .clone();
    let JobView::Match(req) = convert::job_view(&job, &cfg) else {
        panic!()
    };
    assert_eq!(req.price_micro_usd, 1_500_000);
    assert_eq!(req.gpus_per_worker, 1);
    assert_eq!(req.min_reputation, 600);
    assert!(!req.strict_regions && req.location.is_some());
    // before a quote is locked, the cap stands in
    job.status.as_mut().unwrap().quote = None;
    let JobView::Match(req) = convert::job_view(&job, &cfg) else {
        panic!()
    };
    assert_eq!(req.price_micro_usd, 2_000_000);
    // a model list the market does not know: refused, not "any model"
    job.spec.gpus.models = vec!["Voodoo 5".into()];
    match convert::job_view(&job, &cfg) {
        JobView::Refuse(msg) => assert!(msg.contains("Voodoo 5"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // cancelled
    job.spec.gpus.models.clear();
    job.spec.cancel = true;
    assert!(matches!(convert::job_view(&job, &cfg), JobView::Refuse(_)));
}

#[test]
fn pod_job_lookup() {
    use k8s_openapi::api::core::v1::Pod;
    let pod: Pod = serde_json::from_value(gen_pod_json("j", 0)).unwrap();
    let r = convert::pod_job(&pod).unwrap();
    assert_eq!(
        (r.namespace.as_str(), r.name.as_str(), r.uid.as_deref()),
        ("bench", "j", Some("uid-j"))
    );
    // another group's ComputeJob is not ours; the label still is
    let mut v = gen_pod_json("j", 0);
    v["metadata"]["ownerReferences"][0]["apiVersion"] = "example.com/v1".into();
    let pod: Pod = serde_json::from_value(v.clone()).unwrap();
    let r = convert::pod_job(&pod).unwrap();
    assert_eq!(r.uid, None);
    v["metadata"]["labels"] = serde_json::json!({});
    let pod: Pod = serde_json::from_value(v).unwrap();
    assert!(convert::pod_job(&pod).is_none());
}

#[tokio::test]
async fn memoized_answers_equal_fresh_ones() {
    let state = testdata_state();
    for job in ["llama-finetune", "us-only", "finished", "nope"] {
        let b = body("ml-team", job);
        let mut answers = Vec::new();
        for _ in 0..3 {
            let (_, f) = body_of(filter_bytes(&state, &b)).await;
            let (_, p) = body_of(prioritize_bytes(&state, &b)).await;
            answers.push((f, p));
        }
        // a fresh index (no memo) gives the same answers
        let fresh = testdata_state();
        let (_, p) = body_of(prioritize_bytes(&fresh, &b)).await;
        let (_, f) = body_of(filter_bytes(&fresh, &b)).await;
        answers.push((f, p));
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{job}");
    }
    let idx = state.cache.load();
    let memo = idx.memo.lock().unwrap();
    assert!(memo.contains_key("ml-team/llama-finetune"));
    let m = &memo["ml-team/llama-finetune"];
    let filled = m
        .cells
        .iter()
        .filter(|c| c.load(std::sync::atomic::Ordering::Relaxed) != 0)
        .count();
    assert_eq!(filled, 10, "every cached node asked about once is memoized");
}
