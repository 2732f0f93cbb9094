//! The request bodies a real kube-scheduler v1.36.2 sent (../shared/fixtures), byte
//! for byte: parsed, answered (pass-through for their non-solgrid pods), and in
//! ComputeJob-owned variants, decided.

mod common;

use common::*;
use solgrid_scheduler::convert::MarketConfig;
use solgrid_scheduler::server::{filter_bytes, prioritize_bytes};
use solgrid_scheduler::wire::{ExtenderFilterResult, HostPriority, parse_args};

#[test]
fn all_fixtures_parse_as_sent() {
    for name in FIXTURES {
        let bytes = fixture(name);
        let args = parse_args(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let pod = args.pod.as_ref().expect("pod");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"), "{name}");
        let req = pod.spec.as_ref().unwrap().containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert!(req.contains_key("example.com/gpu"), "{name}");
        let mut names = args.candidate_names();
        names.sort();
        assert_eq!(names, ["fake-node-1", "fake-node-2"], "{name}");
        if name.ends_with("nodecache.json") {
            assert!(args.nodes.is_none() && args.node_names.is_some(), "{name}");
        } else {
            assert!(args.node_names.is_none(), "{name}");
            let list = args.nodes.as_ref().unwrap();
            assert_eq!(list.items.len(), 2);
            let alloc = list.items[0]
                .status
                .as_ref()
                .unwrap()
                .allocatable
                .as_ref()
                .unwrap();
            assert_eq!(alloc["example.com/gpu"].0, "4");
        }
    }
}

#[tokio::test]
async fn fixture_pods_pass_through() {
    let state = testdata_state();
    // nodeCacheCapable: NodeNames back, every node passes
    let (code, body) = body_of(filter_bytes(&state, &fixture("filter-nodecache.json"))).await;
    assert_eq!(code, 200);
    let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        raw,
        serde_json::json!({
            "Nodes": null,
            "NodeNames": ["fake-node-1", "fake-node-2"],
            "FailedNodes": {},
            "FailedAndUnresolvableNodes": {},
            "Error": ""
        })
    );
    // full node list: the same NodeList back, NodeNames null
    let (code, r) = filter(&state, &fixture("filter-nodelist.json")).await;
    assert_eq!(code, 200);
    assert!(r.node_names.is_none());
    let items = r.nodes.unwrap().items;
    let names: Vec<_> = items
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["fake-node-2", "fake-node-1"]);
    assert!(
        items[0].status.as_ref().unwrap().capacity.is_some(),
        "node objects echoed whole"
    );
    assert!(r.failed_nodes.is_empty() && r.error.is_empty());
    // prioritize: equal scores
    for f in ["prioritize-nodecache.json", "prioritize-nodelist.json"] {
        let (code, body) = body_of(prioritize_bytes(&state, &fixture(f))).await;
        assert_eq!(code, 200, "{f}");
        let hp: Vec<HostPriority> = serde_json::from_slice(&body).unwrap();
        assert_eq!(hp.len(), 2, "{f}");
        assert!(hp.iter().all(|h| h.score == hp[0].score), "{f}: {hp:?}");
        let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(raw[0].get("Host").is_some() && raw[0].get("Score").is_some());
    }
    let m = state.metrics.render();
    assert!(
        m.contains("solgrid_scheduler_passthrough_pods_total{verb=\"filter\"} 2"),
        "{m}"
    );
}

/// fake-node-1 is a slashed GpuNode, fake-node-2 a fitting one.
fn fake_nodes_state() -> solgrid_scheduler::server::AppState {
    let mut s = testdata_snapshot();
    let pick = |name: &str, as_name: &str| {
        let mut g = s
            .gpunodes
            .iter()
            .find(|g| g.metadata.name.as_deref() == Some(name))
            .unwrap()
            .clone();
        g.metadata.name = Some(as_name.into());
        g.spec.node_name = as_name.into();
        g
    };
    let n1 = pick("gpu-c-slashed", "fake-node-1");
    let n2 = pick("gpu-a-4090", "fake-node-2");
    s.gpunodes = vec![n1, n2];
    s.nodes.clear();
    state_of(s.index(&MarketConfig::default()))
}

/// Fixture `name` with its pod made a worker of ComputeJob ml-team/`job` (see
/// [`owned_variant`]).
fn owned(name: &str, job: &str, uid: Option<&str>, by_owner: bool) -> Vec<u8> {
    owned_variant(&fixture(name), "ml-team", job, uid, by_owner)
}

/// The extender's HTTP status and filter answer to `body`.
async fn filter(
    state: &solgrid_scheduler::server::AppState,
    body: &[u8],
) -> (u16, ExtenderFilterResult) {
    let (code, out) = body_of(filter_bytes(state, body)).await;
    (code, serde_json::from_slice(&out).unwrap())
}

const JOB_UID: &str = "6f1c1d0e-0000-4000-8000-000000000001";

#[tokio::test]
async fn owned_fixture_pods_are_decided() {
    let state = fake_nodes_state();
    for by_owner in [true, false] {
        let uid = by_owner.then_some(JOB_UID);
        let body = owned("filter-nodecache.json", "llama-finetune", uid, by_owner);
        let (code, r) = filter(&state, &body).await;
        assert_eq!(code, 200);
        assert_eq!(
            r.node_names.as_deref(),
            Some(&["fake-node-2".to_string()][..]),
            "{r:?}"
        );
        assert!(r.failed_nodes.is_empty(), "{r:?}");
        assert_eq!(
            r.failed_and_unresolvable_nodes["fake-node-1"],
            "solgrid: node is Slashed (caught cheating)"
        );
        assert_eq!(r.error, "");

        // full node list: the filtered NodeList
        let body = owned("filter-nodelist.json", "llama-finetune", uid, by_owner);
        let (_, r) = filter(&state, &body).await;
        let items = r.nodes.unwrap().items;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].metadata.name.as_deref(), Some("fake-node-2"));
        assert!(r.node_names.is_none());
        assert!(r.failed_and_unresolvable_nodes.contains_key("fake-node-1"));

        // prioritize: the fitting node scores, the slashed one 0
        for f in ["prioritize-nodecache.json", "prioritize-nodelist.json"] {
            let body = owned(f, "llama-finetune", uid, by_owner);
            let (_, out) = body_of(prioritize_bytes(&state, &body)).await;
            let hp: Vec<HostPriority> = serde_json::from_slice(&out).unwrap();
            let s = |h: &str| hp.iter().find(|x| x.host == h).unwrap().score;
            assert_eq!(s("fake-node-1"), 0, "{f}");
            assert!((1..=10).contains(&s("fake-node-2")), "{f}: {hp:?}");
        }
    }
}

#[tokio::test]
async fn owned_pod_of_unknown_or_stale_job_fails_transiently() {
    let state = fake_nodes_state();
    // a job the cache does not have
    let body = owned("filter-nodecache.json", "nope", Some("u"), true);
    let (_, r) = filter(&state, &body).await;
    assert_eq!(r.node_names.as_deref(), Some(&[][..]));
    assert_eq!(r.failed_nodes.len(), 2);
    assert!(
        r.failed_nodes["fake-node-1"]
            .contains("ComputeJob ml-team/nope is not in the scheduler's cache")
    );
    // ...answered as an error, which kube-scheduler retries after its backoff
    // (a "no fit" would leave the pod waiting for an unrelated event)
    assert!(
        r.error
            .contains("ComputeJob ml-team/nope is not in the scheduler's cache"),
        "{r:?}"
    );
    // the owner uid names a deleted-and-recreated job: not this one
    let body = owned(
        "filter-nodecache.json",
        "llama-finetune",
        Some("other-uid"),
        true,
    );
    let (_, r) = filter(&state, &body).await;
    assert_eq!(r.failed_nodes.len(), 2, "{r:?}");
    assert!(!r.error.is_empty(), "a stale job is transient too: {r:?}");
    // a finished job: unresolvable everywhere
    let body = owned("filter-nodecache.json", "finished", None, false);
    let (_, r) = filter(&state, &body).await;
    assert_eq!(r.failed_and_unresolvable_nodes.len(), 2, "{r:?}");
    assert!(r.failed_and_unresolvable_nodes["fake-node-2"].contains("Succeeded"));
    assert_eq!(r.error, "", "a finished job is no error: {r:?}");
    // prioritize for them: all 0
    let body = owned("prioritize-nodecache.json", "nope", None, false);
    let (_, out) = body_of(prioritize_bytes(&state, &body)).await;
    let hp: Vec<HostPriority> = serde_json::from_slice(&out).unwrap();
    assert!(hp.iter().all(|h| h.score == 0));
}

#[tokio::test]
async fn unknown_nodes_fail_with_a_clear_reason() {
    let state = fake_nodes_state();
    let body = owned(
        "filter-nodecache.json",
        "llama-finetune",
        Some(JOB_UID),
        true,
    );
    let body = with_names(&body, &["fake-node-2", "not-a-gpu-node"]);
    let (_, r) = filter(&state, &body).await;
    assert_eq!(r.node_names.unwrap(), ["fake-node-2"]);
    assert_eq!(
        r.failed_and_unresolvable_nodes["not-a-gpu-node"],
        "solgrid: node is unknown to the solgrid scheduler's cache (no GpuNode for it)"
    );
}
