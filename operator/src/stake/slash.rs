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

/// The positions to look at when a GpuNode changes: those on a node with an incident.
pub fn positions_of(
    gn: &GpuNode,
    positions: &[std::sync::Arc<StakePosition>],
) -> Vec<ObjectRef<StakePosition>> {
    if gn
        .status
        .as_ref()
        .is_none_or(|s| s.slash_incident.is_none())
    {
        return Vec::new();
    }
    let name = gn.name_any();
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
}
