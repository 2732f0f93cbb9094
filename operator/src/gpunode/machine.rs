//! The GpuNode phase machine and the numbers derived from a node's facts: pure
//! functions of their inputs (time is passed in as milliseconds since the epoch).
//!
//! ```text
//!            inventory published        first verification passed
//!  Pending ───────────────────► Verifying ───────────────────► Active ◄──► Draining
//!     ▲                                                          │  ▲   (cordoned or spec.draining)
//!     │ (no GPUs)                                    lease expired│  │ heartbeats again
//!     │                                    or Node gone          ▼  │
//!     └──────────────────────────────────────────────────────── Offline
//!  any ── cheating (wrong result / far too slow) ──► Slashed ── clear-slash annotation ──► Verifying
//! ```
//!
//! Priority when several facts hold: Slashed (until cleared) > Offline (Node gone or
//! heartbeat lease missing/expired) > Draining (Node cordoned or `spec.draining`) >
//! Pending (no GPUs in the inventory) > Verifying (not verified) > Active.

use crate::gpunode::heartbeat::Heartbeat;
use solgrid_crds::GpuNodePhase;
use solgrid_market::staking::{EligibilityInput, Ineligible, StakingConfig};

/// The facts the phase is decided from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhaseInput {
    pub current: GpuNodePhase,
    /// The Kubernetes Node exists.
    pub node_exists: bool,
    /// `spec.unschedulable` of the Node (cordoned).
    pub cordoned: bool,
    /// `spec.draining` of the GpuNode.
    pub draining: bool,
    /// Heartbeat state (lease).
    pub online: bool,
    /// GPUs in the published inventory.
    pub gpus: u32,
    /// Passed a verification since it was last slashed.
    pub verified: bool,
    /// An admin asked to clear a slash (`solgrid.dev/clear-slash=true`).
    pub clear_slash: bool,
}

/// Why the phase is what it is (a condition reason, CamelCase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseReason {
    Slashed,
    SlashCleared,
    NodeGone,
    HeartbeatExpired,
    Cordoned,
    DrainRequested,
    NoInventory,
    AwaitingVerification,
    Ready,
}

impl PhaseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseReason::Slashed => "Slashed",
            PhaseReason::SlashCleared => "SlashCleared",
            PhaseReason::NodeGone => "NodeGone",
            PhaseReason::HeartbeatExpired => "HeartbeatExpired",
            PhaseReason::Cordoned => "NodeCordoned",
            PhaseReason::DrainRequested => "DrainRequested",
            PhaseReason::NoInventory => "NoInventory",
            PhaseReason::AwaitingVerification => "AwaitingVerification",
            PhaseReason::Ready => "Ready",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            PhaseReason::Slashed => {
                "caught cheating: stake slashed, no rewards until an admin sets solgrid.dev/clear-slash=true"
            }
            PhaseReason::SlashCleared => "slash cleared by an admin; re-verifying",
            PhaseReason::NodeGone => "the Kubernetes Node no longer exists",
            PhaseReason::HeartbeatExpired => "the node's heartbeat lease is missing or expired",
            PhaseReason::Cordoned => "the Node is cordoned: no new jobs",
            PhaseReason::DrainRequested => "spec.draining is set: no new jobs",
            PhaseReason::NoInventory => "the device plugin has not published any GPU yet",
            PhaseReason::AwaitingVerification => "waiting for a proof-of-work verification to pass",
            PhaseReason::Ready => "verified, online and taking jobs",
        }
    }
}

/// The next phase and why.
pub fn next_phase(i: &PhaseInput) -> (GpuNodePhase, PhaseReason) {
    let mut cleared = false;
    if i.current == GpuNodePhase::Slashed {
        if !i.clear_slash {
            return (GpuNodePhase::Slashed, PhaseReason::Slashed);
        }
        cleared = true;
    }
    if !i.node_exists {
        return (GpuNodePhase::Offline, PhaseReason::NodeGone);
    }
    if !i.online {
        return (GpuNodePhase::Offline, PhaseReason::HeartbeatExpired);
    }
    if i.cordoned {
        return (GpuNodePhase::Draining, PhaseReason::Cordoned);
    }
    if i.draining {
        return (GpuNodePhase::Draining, PhaseReason::DrainRequested);
    }
    if i.gpus == 0 {
        return (GpuNodePhase::Pending, PhaseReason::NoInventory);
    }
    // A cleared slash must verify again (its `verified` is reset on slashing).
    if !i.verified || cleared {
        let r = if cleared {
            PhaseReason::SlashCleared
        } else {
            PhaseReason::AwaitingVerification
        };
        return (GpuNodePhase::Verifying, r);
    }
    (GpuNodePhase::Active, PhaseReason::Ready)
}

/// Whether a node in this phase runs the periodic verification.
pub fn verifies(p: GpuNodePhase) -> bool {
    matches!(p, GpuNodePhase::Verifying | GpuNodePhase::Active)
}

/// The start of the current unbroken online stretch.
///
/// - offline: `None`;
/// - online: the previous start, moved forward to the latest restart signal (the
///   Node's `Ready` condition turning true again after a reboot or kubelet restart,
///   or the lease being re-acquired), or `now` when there was none.
pub fn online_since(hb: &Heartbeat, previous_ms: Option<u64>, now_ms: u64) -> Option<u64> {
    if !hb.online {
        return None;
    }
    let start = previous_ms.unwrap_or(now_ms);
    let restarted = [hb.ready_since_ms, hb.acquired_ms]
        .into_iter()
        .flatten()
        .filter(|t| *t <= now_ms)
        .max();
    Some(match restarted {
        Some(r) if r > start => r,
        _ => start,
    })
}

/// Reward eligibility (the market's rules) and its human reason.
pub fn eligibility(cfg: &StakingConfig, input: &EligibilityInput, now_ms: u64) -> (bool, String) {
    match cfg.reward_eligibility(input, now_ms) {
        Ok(()) => (true, "eligible for idle rewards".to_string()),
        Err(e) => (false, describe(&e, input)),
    }
}

/// The reason as status text. It must not change while the node's facts do not:
/// a duration counted up to now would make every reconcile (each Node heartbeat)
/// a status write. The reasons that wait for time name the moment they started
/// and the moment they end instead.
fn describe(e: &Ineligible, input: &EligibilityInput) -> String {
    match *e {
        Ineligible::UptimeTooShort { need_ms, .. } => match input.online_since_ms {
            Some(since) => format!(
                "node has been online without a break since {}; {need_ms} ms needed (eligible from {})",
                rfc3339(since),
                rfc3339(since.saturating_add(need_ms))
            ),
            None => e.to_string(),
        },
        Ineligible::TooNew { need_ms, .. } => format!(
            "node was first seen {}; {need_ms} ms of age needed (eligible from {})",
            rfc3339(input.first_seen_ms),
            rfc3339(input.first_seen_ms.saturating_add(need_ms))
        ),
        _ => e.to_string(),
    }
}

fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PhaseInput {
        PhaseInput {
            current: GpuNodePhase::Pending,
            node_exists: true,
            cordoned: false,
            draining: false,
            online: true,
            gpus: 2,
            verified: false,
            clear_slash: false,
        }
    }

    #[test]
    fn phase_walk() {
        use GpuNodePhase::*;
        let mut i = PhaseInput { gpus: 0, ..base() };
        assert_eq!(next_phase(&i), (Pending, PhaseReason::NoInventory));
        i.gpus = 2;
        assert_eq!(next_phase(&i).0, Verifying);
        i.current = Verifying;
        i.verified = true;
        assert_eq!(next_phase(&i), (Active, PhaseReason::Ready));
        i.current = Active;
        i.cordoned = true;
        assert_eq!(next_phase(&i), (Draining, PhaseReason::Cordoned));
        i.cordoned = false;
        i.draining = true;
        assert_eq!(next_phase(&i), (Draining, PhaseReason::DrainRequested));
        i.draining = false;
        i.online = false;
        assert_eq!(next_phase(&i), (Offline, PhaseReason::HeartbeatExpired));
        i.node_exists = false;
        assert_eq!(next_phase(&i), (Offline, PhaseReason::NodeGone));
        i.node_exists = true;
        i.online = true;
        i.current = Offline;
        assert_eq!(next_phase(&i).0, Active);
        // Slashed sticks, whatever else holds, until cleared
        i.current = Slashed;
        i.verified = false;
        assert_eq!(next_phase(&i), (Slashed, PhaseReason::Slashed));
        i.online = false;
        assert_eq!(next_phase(&i).0, Slashed);
        i.online = true;
        i.clear_slash = true;
        assert_eq!(next_phase(&i), (Verifying, PhaseReason::SlashCleared));
        // cleared but offline: Offline
        i.online = false;
        assert_eq!(next_phase(&i).0, Offline);
        assert!(verifies(Active) && verifies(Verifying) && !verifies(Draining));
        assert!(!verifies(Slashed) && !verifies(Offline) && !verifies(Pending));
    }

    #[test]
    fn online_since_resets_on_restart() {
        let hb = |online, ready, acq| Heartbeat {
            online,
            renew_ms: Some(1_000),
            ready_since_ms: ready,
            acquired_ms: acq,
        };
        assert_eq!(online_since(&hb(false, None, None), Some(5), 100), None);
        assert_eq!(online_since(&hb(true, None, None), None, 100), Some(100));
        assert_eq!(
            online_since(&hb(true, Some(10), None), Some(50), 100),
            Some(50)
        );
        // the Node became Ready again after the stretch started: a restart
        assert_eq!(
            online_since(&hb(true, Some(70), None), Some(50), 100),
            Some(70)
        );
        assert_eq!(
            online_since(&hb(true, None, Some(80)), Some(50), 100),
            Some(80)
        );
        // a future timestamp (clock skew) is ignored
        assert_eq!(
            online_since(&hb(true, Some(500), None), Some(50), 100),
            Some(50)
        );
    }

    #[test]
    fn eligibility_reason() {
        let s = StakingConfig::default();
        let input = EligibilityInput {
            phase: solgrid_market::matching::NodePhase::Active,
            verified: true,
            online_since_ms: Some(0),
            first_seen_ms: 0,
            stake: 1,
            min_stake: 2,
            slashed: false,
        };
        let (ok, why) = eligibility(&s, &input, 13 * 3_600_000);
        assert!(!ok);
        assert!(why.contains("below its minimum"), "{why}");
        let (ok, _) = eligibility(&s, &EligibilityInput { stake: 2, ..input }, 13 * 3_600_000);
        assert!(ok);
    }

    /// A reason that waits for time reads the same at every reconcile until it
    /// ends (no status write per heartbeat), and says when it ends.
    #[test]
    fn time_based_reasons_do_not_change_with_the_clock() {
        let s = StakingConfig::default();
        let h = 3_600_000;
        let input = EligibilityInput {
            phase: solgrid_market::matching::NodePhase::Active,
            verified: true,
            online_since_ms: Some(20 * h),
            first_seen_ms: 0,
            stake: 2,
            min_stake: 2,
            slashed: false,
        };
        let (ok, a) = eligibility(&s, &input, 21 * h);
        let (_, b) = eligibility(&s, &input, 21 * h + 12_345);
        assert!(!ok);
        assert_eq!(a, b);
        assert!(
            a.contains("without a break since 1970-01-01T20:00:00Z"),
            "{a}"
        );
        assert!(a.contains("eligible from 1970-01-02T01:00:00Z"), "{a}");
        let young = EligibilityInput {
            online_since_ms: Some(0),
            first_seen_ms: 5 * h,
            ..input
        };
        let (ok, a) = eligibility(&s, &young, 6 * h);
        let (_, b) = eligibility(&s, &young, 6 * h + 999);
        assert!(!ok);
        assert_eq!(a, b);
        assert!(a.contains("eligible from 1970-01-01T17:00:00Z"), "{a}");
    }
}
