#![allow(dead_code)]

use solgrid_scheduler::cache::{Cache, Index};
use solgrid_scheduler::convert::MarketConfig;
use solgrid_scheduler::extender::Extender;
use solgrid_scheduler::metrics::Metrics;
use solgrid_scheduler::server::AppState;
use solgrid_scheduler::snapshot::Snapshot;
use std::sync::Arc;

pub const FIXTURES: [&str; 4] = [
    "filter-nodecache.json",
    "filter-nodelist.json",
    "prioritize-nodecache.json",
    "prioritize-nodelist.json",
];

/// A kube-scheduler fixture, byte for byte: from ../shared (CI, this workplace), else
/// the copy under tests/fixtures (a user's clone).
pub fn fixture(name: &str) -> Vec<u8> {
    let shared = format!(
        "{}/../../shared/fixtures/kube-scheduler-v1.36/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let local = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&shared)
        .or_else(|_| std::fs::read(&local))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn testdata_snapshot() -> Snapshot {
    Snapshot::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/snapshot.yaml"
    )))
    .expect("testdata/snapshot.yaml loads")
}

pub fn state_of(index: Index) -> AppState {
    let metrics = Metrics::new();
    let ext = Extender::new(MarketConfig::default().matching, Some(metrics.clone()));
    AppState::new(Arc::new(Cache::with_index(index)), ext, metrics)
}

pub fn testdata_state() -> AppState {
    let s = testdata_snapshot();
    state_of(s.index(&MarketConfig::default()))
}

/// The fixture with its pod turned into a worker of ComputeJob `ns/name`: by an
/// owner reference (`by_owner`) or by the `solgrid.dev/job` label; the pod's
/// namespace becomes `ns`.
pub fn owned_variant(
    bytes: &[u8],
    ns: &str,
    job: &str,
    uid: Option<&str>,
    by_owner: bool,
) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let md = &mut v["Pod"]["metadata"];
    md["namespace"] = ns.into();
    if by_owner {
        md["ownerReferences"] = serde_json::json!([{
            "apiVersion": "solgrid.dev/v1alpha1",
            "kind": "ComputeJob",
            "name": job,
            "uid": uid.unwrap_or(""),
            "controller": true,
            "blockOwnerDeletion": true
        }]);
    } else {
        md["labels"] = serde_json::json!({ "solgrid.dev/job": job });
    }
    serde_json::to_vec(&v).unwrap()
}

/// Replaces the candidate node names of a nodeCacheCapable body.
pub fn with_names(bytes: &[u8], names: &[&str]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v["NodeNames"] = serde_json::json!(names);
    serde_json::to_vec(&v).unwrap()
}

pub async fn body_of(r: axum::response::Response) -> (u16, Vec<u8>) {
    let status = r.status().as_u16();
    let b = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, b.to_vec())
}

/// The `Error` of an extender answer (panics when the body is not one).
pub fn error_of(body: impl AsRef<[u8]>) -> String {
    let b = body.as_ref();
    let v: serde_json::Value =
        serde_json::from_slice(b).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(b)));
    v["Error"].as_str().unwrap().to_string()
}
