//! Slashing, the StakePosition side: the GpuNode controller records a cheating
//! node's incident in the GpuNode's own status (`status.slashIncident`, written
//! only by the operator); this controller, watching GpuNodes, records the slash in
//! the position's own status (state `Planned`, key `<uid>/slash/<incident id>`)
//! exactly once per incident, for positions locked before it, then the executor
//! burns it. Nothing the staker can edit (spec, annotations) takes part.

use super::machine;
use crate::toolkit::{set_condition, time_ms};
use crate::{Context, Result};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use solgrid_crds::{
    GpuNode, LedgerRecord, SettlementState, SlashIncident, StakePhase, StakePosition,
    StakePositionStatus,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Whether a position could be slashed for some incident (it holds locked tokens
/// and is not being withdrawn): only then is its node looked up.
pub fn exposed(st: &StakePositionStatus) -> bool {
    st.phase != StakePhase::Pending
        && machine::slashable(
            st.phase,
            st.locked,
            st.active_since.as_ref().map(time_ms),
            u64::MAX,
            &st.operations,
        )
}

/// The status with the incident's slash recorded (`Planned`), or `None` when the
/// position already has it or is not slashable for it (locked after the incident,
/// nothing locked, being withdrawn).
pub fn plan(
    uid: &str,
    st: &StakePositionStatus,
    incident: &SlashIncident,
    generation: Option<i64>,
    now: u64,
) -> Option<StakePositionStatus> {
    let key = machine::slash_key(uid, &incident.id);
    if st.operations.iter().any(|r| r.key == key) {
        return None;
    }
    if !machine::slashable(
        st.phase,
        st.locked,
        st.active_since.as_ref().map(time_ms),
        time_ms(&incident.at),
        &st.operations,
    ) {
        return None;
    }
    let mut new = st.clone();
    new.operations.push(LedgerRecord {
        key,
        purpose: machine::SLASH.into(),
        state: SettlementState::Planned,
        ..Default::default()
    });
    set_condition(
        &mut new.conditions,
        "SlashPending",
        true,
        "NodeCaughtCheating",
        "the node this stake backs failed its proof-of-work verification",
        generation,
        now,
    );
    Some(new)
}

/// The slash incident of the position's node: from the API server (the operator's
/// GpuNode cache may lag the watch event that woke this reconcile).
pub async fn incident_of(ctx: &Context, sp: &StakePosition) -> Result<Option<SlashIncident>> {
    let api: Api<GpuNode> = Api::all(ctx.client.clone());
    let node = api.get_opt(&sp.spec.node_name).await?;
    Ok(node.and_then(|n| n.status).and_then(|s| s.slash_incident))
}

/// The incident each node was last seen with by the GpuNode watch, so that a
/// slashed node's other status changes (heartbeats, jobs) do not wake its positions
/// again. Empty after a restart: the first sight of each incident wakes them (and
/// every position is reconciled at start anyway).
#[derive(Debug, Default)]
pub struct Seen(Mutex<HashMap<String, String>>);

impl Seen {
    /// Whether `id` is new for `node` (and remembers it).
    pub fn is_new(&self, node: &str, id: &str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(node.to_string(), id.to_string()).as_deref() != Some(id)
    }
}

/// The positions to wake when a GpuNode changes: those on it, when it carries an
/// incident not seen before.
pub fn positions_of(
    gn: &GpuNode,
    positions: &[Arc<StakePosition>],
    seen: &Seen,
) -> Vec<ObjectRef<StakePosition>> {
    let name = gn.name_any();
    let incident = gn.status.as_ref().and_then(|s| s.slash_incident.as_ref());
    if !incident.is_some_and(|i| seen.is_new(&name, &i.id)) {
        return Vec::new();
    }
    positions
        .iter()
        .filter(|p| p.spec.node_name == name)
        .map(|p| ObjectRef::from_obj(&**p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolkit::ms_time;

    fn active(since_ms: u64, locked: u64) -> StakePositionStatus {
        StakePositionStatus {
            phase: StakePhase::Active,
            locked,
            active_since: Some(ms_time(since_ms)),
            ..Default::default()
        }
    }

    fn incident(id: &str, at_ms: u64) -> SlashIncident {
        SlashIncident {
            id: id.into(),
            at: ms_time(at_ms),
        }
    }

    #[test]
    fn a_position_locked_before_the_incident_is_planned_once() {
        let st = active(1_000, 300);
        let new = plan("u1", &st, &incident("p7", 2_000), Some(1), 3_000).unwrap();
        let rec = new.operations.last().unwrap();
        assert_eq!(rec.key, "u1/slash/p7");
        assert_eq!(rec.purpose, machine::SLASH);
        assert_eq!(rec.state, SettlementState::Planned);
        assert!(
            new.conditions
                .iter()
                .any(|c| c.type_ == "SlashPending" && c.status == "True")
        );
        assert_eq!(
            plan("u1", &new, &incident("p7", 2_000), Some(1), 3_000),
            None
        );
        // a later incident is another slash
        assert!(plan("u1", &new, &incident("p9", 4_000), Some(1), 5_000).is_some());
    }

    #[test]
    fn positions_locked_after_it_empty_or_withdrawing_are_left_alone() {
        assert_eq!(
            plan(
                "u",
                &active(5_000, 300),
                &incident("p1", 2_000),
                None,
                6_000
            ),
            None
        );
        assert_eq!(
            plan("u", &active(1_000, 0), &incident("p1", 2_000), None, 6_000),
            None
        );
        let mut st = active(1_000, 300);
        st.operations.push(LedgerRecord {
            key: "u/withdraw".into(),
            purpose: machine::WITHDRAW.into(),
            ..Default::default()
        });
        assert_eq!(plan("u", &st, &incident("p1", 2_000), None, 6_000), None);
        assert!(!exposed(&st));
        assert!(exposed(&active(1_000, 300)));
        assert!(!exposed(&StakePositionStatus::default()));
    }

    #[test]
    fn a_node_wakes_its_positions_once_per_new_incident() {
        let gn = |inc: Option<&str>| {
            let mut g: GpuNode = serde_json::from_value(serde_json::json!({
                "apiVersion": "solgrid.dev/v1alpha1", "kind": "GpuNode",
                "metadata": {"name": "n1"},
                "spec": {"nodeName": "n1", "payoutWallet": "w", "location": {"region": "eu", "country": "DE"}},
            }))
            .unwrap();
            g.status = Some(solgrid_crds::GpuNodeStatus {
                slash_incident: inc.map(|id| incident(id, 1_000)),
                ..Default::default()
            });
            g
        };
        let sp = |name: &str, node: &str| {
            Arc::new(
                serde_json::from_value::<StakePosition>(serde_json::json!({
                    "apiVersion": "solgrid.dev/v1alpha1", "kind": "StakePosition",
                    "metadata": {"name": name, "namespace": "s"},
                    "spec": {"nodeName": node, "amount": 5, "ownerSecretRef": {"name": "o"}},
                }))
                .unwrap(),
            )
        };
        let all = vec![sp("a", "n1"), sp("b", "n2"), sp("c", "n1")];
        let seen = Seen::default();
        assert!(positions_of(&gn(None), &all, &seen).is_empty());
        let woken = positions_of(&gn(Some("p1")), &all, &seen);
        let names: Vec<_> = woken.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c"]);
        assert!(
            positions_of(&gn(Some("p1")), &all, &seen).is_empty(),
            "seen"
        );
        assert_eq!(positions_of(&gn(Some("p2")), &all, &seen).len(), 2);
    }
}
