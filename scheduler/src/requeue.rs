//! Tells kube-scheduler when a node may have become usable.
//!
//! kube-scheduler sets a pod the extender turned away aside until a cluster event
//! that may make it schedulable (a Node changed, a pod went away), or for up to
//! 5 minutes. A GpuNode turning `Active`, gaining stake or reputation is no such
//! event, so a worker could wait minutes for a node that became eligible seconds
//! later. After each cache rebuild the extender sets the Node label
//! `solgrid.dev/market-state` to the GpuNode's market state *as its own cache now
//! sees it*; the label change is a Node event (NodeLabelChange) on which
//! kube-scheduler retries the waiting pods, and the filter they meet then already
//! sees the new state. (The operator writing the label raced the extender's watch:
//! kube-scheduler retried, the extender still saw the old phase, and the pod waited
//! for the next unrelated event.)

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use rustc_hash::FxHashMap;
use solgrid_crds::{GpuNode, LABEL_MARKET_STATE, market_state};
use std::sync::Arc;

/// The label patches due: `(node, value)` for every GpuNode whose Node carries a
/// different value than its state, skipping those already sent with that value.
pub fn due(
    gpunodes: &[Arc<GpuNode>],
    node_label: impl Fn(&str) -> Option<Option<String>>,
    sent: &FxHashMap<String, String>,
) -> Vec<(String, String)> {
    gpunodes
        .iter()
        .filter_map(|g| {
            let st = g.status.as_ref()?;
            let node = g.spec.node_name.clone();
            let want = market_state(st);
            // the Node must exist; its label differs; not already sent
            let have = node_label(&node)?;
            (have.as_deref() != Some(want.as_str())
                && sent.get(&node).map(String::as_str) != Some(want.as_str()))
            .then_some((node, want))
        })
        .collect()
}

/// Sends the due patches (best effort: a failure is logged and retried on the
/// next rebuild).
pub fn sync(
    client: &Client,
    gpunodes: &[Arc<GpuNode>],
    nodes: &Store<Node>,
    sent: &mut FxHashMap<String, String>,
) {
    let label = |n: &str| {
        nodes.get(&ObjectRef::new(n)).map(|node| {
            node.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_MARKET_STATE).cloned())
        })
    };
    for (node, want) in due(gpunodes, label, sent) {
        sent.insert(node.clone(), want.clone());
        let api: Api<Node> = Api::all(client.clone());
        tokio::spawn(async move {
            let patch = serde_json::json!({"metadata": {"labels": {LABEL_MARKET_STATE: want}}});
            if let Err(e) = api
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(node = %node, error = %e, "setting the market-state label failed");
            }
        });
    }
    // forget nodes that are gone
    sent.retain(|n, _| nodes.get(&ObjectRef::new(n)).is_some());
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_crds::{GpuNodePhase, GpuNodeSpec, GpuNodeStatus};

    fn gn(name: &str, phase: GpuNodePhase) -> Arc<GpuNode> {
        let mut g = GpuNode::new(
            name,
            GpuNodeSpec {
                node_name: name.into(),
                ..Default::default()
            },
        );
        g.status = Some(GpuNodeStatus {
            phase,
            ..Default::default()
        });
        Arc::new(g)
    }

    #[test]
    fn patches_only_what_changed_and_only_once() {
        let gns = vec![
            gn("a", GpuNodePhase::Active),
            gn("b", GpuNodePhase::Verifying),
            gn("gone", GpuNodePhase::Active),
        ];
        let labels = |n: &str| match n {
            "a" => Some(Some("Active.r0.ineligible".to_string())),
            "b" => Some(None),
            _ => None,
        };
        let mut sent = FxHashMap::default();
        let d = due(&gns, labels, &sent);
        assert_eq!(
            d,
            vec![("b".to_string(), "Verifying.r0.ineligible".to_string())]
        );
        sent.extend(d);
        assert!(due(&gns, labels, &sent).is_empty(), "not sent twice");
        // b becomes Active: due again
        let gns2 = vec![gn("b", GpuNodePhase::Active)];
        assert_eq!(
            due(&gns2, labels, &sent),
            vec![("b".to_string(), "Active.r0.ineligible".to_string())]
        );
    }
}
