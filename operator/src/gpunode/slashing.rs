//! Slashing, the GpuNode side (pure): a node caught cheating records the incident
//! in its OWN status (`status.slashIncident`, which only the operator writes,
//! through the status subresource). The StakePosition controller watches GpuNodes
//! and plans each position's slash from it, exactly once per incident
//! ([`crate::stake::slash`]); this controller never writes a StakePosition.

use super::period_of;
use crate::toolkit::{ms_time, time_ms};
use solgrid_crds::{GpuNodePhase, GpuNodeStatus, SlashIncident};

/// The id of the incident of a verification that started at `run_ms`.
pub fn incident_id(run_ms: u64, period_ms: u64) -> String {
    format!("p{}", period_of(run_ms, period_ms))
}

/// While the node is `Slashed`, the incident is its last verification run (none
/// runs while slashed). Returns the incident when it is new (not yet in the
/// status); a status from before the field existed gets it on its next reconcile.
pub fn record_incident(st: &mut GpuNodeStatus, period_ms: u64) -> Option<SlashIncident> {
    if st.phase != GpuNodePhase::Slashed {
        return None;
    }
    let run_ms = st.verification.last_run.as_ref().map(time_ms)?;
    let incident = SlashIncident {
        id: incident_id(run_ms, period_ms),
        at: ms_time(run_ms),
    };
    if st.slash_incident.as_ref() == Some(&incident) {
        return None;
    }
    st.slash_incident = Some(incident.clone());
    Some(incident)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slashed_at(run_ms: Option<u64>) -> GpuNodeStatus {
        let mut st = GpuNodeStatus {
            phase: GpuNodePhase::Slashed,
            ..Default::default()
        };
        st.verification.last_run = run_ms.map(ms_time);
        st
    }

    #[test]
    fn a_slashed_node_records_its_incident_once() {
        let mut st = slashed_at(Some(7_200_500));
        let inc = record_incident(&mut st, 3_600_000).unwrap();
        assert_eq!(inc.id, "p2");
        assert_eq!(time_ms(&inc.at), 7_200_500);
        assert_eq!(st.slash_incident, Some(inc));
        assert_eq!(
            record_incident(&mut st, 3_600_000),
            None,
            "already recorded"
        );
    }

    #[test]
    fn no_incident_without_a_slash_or_a_run_and_a_cleared_one_is_kept() {
        let mut st = slashed_at(None);
        assert_eq!(record_incident(&mut st, 1_000), None);
        let mut st = slashed_at(Some(5_000));
        record_incident(&mut st, 1_000).unwrap();
        st.phase = GpuNodePhase::Verifying;
        st.verification.last_run = Some(ms_time(9_000));
        assert_eq!(record_incident(&mut st, 1_000), None);
        assert_eq!(st.slash_incident.as_ref().unwrap().id, "p5");
    }
}
