//! Mirrors a GpuNode's market state onto its Node as a label, so that workers
//! waiting for a node are retried at once when it becomes usable.
//!
//! kube-scheduler keeps an unschedulable pod aside until a cluster event that may
//! make it schedulable (a Node changed, a pod went away), or for up to 5 minutes.
//! A GpuNode turning `Active`, gaining stake or reputation is no such event, so a
//! worker the extender turned away waited up to 5 minutes for a node that had
//! become eligible seconds later. A change of the Node label
//! `solgrid.dev/market-state` is such an event (NodeLabelChange): the pods rejected
//! by the extender (which kube-scheduler records as rejected by no plugin) go back
//! to the active queue.
//!
//! The value changes only with what the extender filters on (phase, reputation
//! score, reward eligibility), never with heartbeats, so it does not churn.

use crate::Context;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use solgrid_crds::{GpuNodePhase, GpuNodeStatus, LABEL_MARKET_STATE};

/// The label's value for a GpuNode status, e.g. `Active.r550.eligible`.
pub fn market_state(st: &GpuNodeStatus) -> String {
    let phase = match st.phase {
        GpuNodePhase::Pending => "Pending",
        GpuNodePhase::Verifying => "Verifying",
        GpuNodePhase::Active => "Active",
        GpuNodePhase::Draining => "Draining",
        GpuNodePhase::Offline => "Offline",
        GpuNodePhase::Slashed => "Slashed",
    };
    format!(
        "{phase}.r{}.{}",
        st.reputation.score,
        if st.reward_eligible {
            "eligible"
        } else {
            "ineligible"
        }
    )
}

/// Sets the label on the Node when it differs. Best effort: a failure only delays
/// the retry of waiting workers to kube-scheduler's own flush.
pub async fn sync_node_label(ctx: &Context, node: Option<&Node>, st: &GpuNodeStatus) {
    let Some(node) = node else { return };
    let Some(name) = node.metadata.name.as_deref() else {
        return;
    };
    let want = market_state(st);
    let have = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MARKET_STATE));
    if have == Some(&want) {
        return;
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {LABEL_MARKET_STATE: want}}});
    if let Err(e) = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(node = %name, error = %e, "labelling the Node with its market state failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_a_valid_label_value_and_ignores_heartbeats() {
        let mut st = GpuNodeStatus {
            phase: GpuNodePhase::Active,
            reward_eligible: true,
            ..Default::default()
        };
        st.reputation.score = 550;
        let v = market_state(&st);
        assert_eq!(v, "Active.r550.eligible");
        assert!(v.len() <= 63);
        assert!(
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        );
        st.last_heartbeat = Some(crate::conditions::time(chrono::Utc::now()));
        assert_eq!(market_state(&st), v);
        st.reputation.score = 560;
        assert_ne!(market_state(&st), v);
    }
}
