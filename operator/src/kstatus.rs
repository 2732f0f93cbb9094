//! kstatus conditions: `Ready`, `Reconciling` and `Stalled` on the statuses of
//! ComputeJob, GpuNode and StakePosition, so that Flux's health checks (kstatus),
//! `kubectl wait --for=condition=Ready` and anything else that reads the standard
//! conditions see where an object stands (docs/gitops.md).
//!
//! They are derived from the phase (and the conditions the controllers set) when a
//! status is serialized for the API server ([`crate::settlement::status_patch`],
//! [`crate::gpunode::status_apply`], [`crate::stake::store::status_apply`]), so
//! every write path carries them and none can forget them. The derivation is a pure
//! function of the status: the same status serializes to the same bytes (no churn on
//! an idle object), and a condition's `lastTransitionTime` moves only when its status
//! flips, to the newest transition among the object's own conditions (the controller's
//! transition that caused it).
//!
//! kstatus reads them in this order: `metadata.generation` newer than
//! `status.observedGeneration` → InProgress; `Reconciling=True` → InProgress;
//! `Stalled=True` → Failed; otherwise Current.

use crate::toolkit as conditions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use solgrid_crds::{
    ComputeJobPhase, ComputeJobStatus, GpuNodePhase, GpuNodeStatus, StakePhase, StakePositionStatus,
};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// `Complete` reasons of a job that failed (machine.rs): a settled job keeps them.
pub const FAILED_REASONS: [&str; 3] = ["WorkerFailed", "WorkerLost", "GangTimeout"];

/// Where an object stands, in kstatus terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// `Ready`; `None` where the controller sets it itself (GpuNode).
    pub ready: Option<bool>,
    pub reconciling: bool,
    pub stalled: bool,
    /// CamelCase reason of whichever of the three is True (else of `Ready=False`).
    pub reason: String,
    pub message: String,
}

impl Summary {
    fn new(ready: Option<bool>, reconciling: bool, stalled: bool, reason: &str) -> Self {
        Self {
            ready,
            reconciling,
            stalled,
            reason: reason.to_string(),
            message: String::new(),
        }
    }

    fn with(mut self, message: Option<&str>) -> Self {
        self.message = message.unwrap_or_default().to_string();
        self
    }
}

fn phase_name<T: std::fmt::Debug>(p: T) -> String {
    format!("{p:?}")
}

/// A ComputeJob: reconciling until it is settled; stalled when it failed (also
/// once settled: the `Complete` condition keeps why), when its spec is invalid or
/// its settlement was refused; ready once settled otherwise (cancelled included).
pub fn computejob_summary(st: &ComputeJobStatus) -> Summary {
    use ComputeJobPhase::*;
    let cs = &st.conditions;
    let msg = st.message.as_deref();
    if let Some(c) = conditions::get(cs, "Valid").filter(|c| c.status == "False") {
        return Summary::new(Some(false), false, true, &c.reason).with(Some(&c.message));
    }
    if let Some(c) = conditions::get(cs, "Settled")
        .filter(|c| c.status == "False" && c.reason == "SettlementRefused")
    {
        return Summary::new(Some(false), false, true, &c.reason).with(Some(&c.message));
    }
    let complete = conditions::get(cs, "Complete").filter(|c| c.status == "True");
    let failed = st.phase == Failed
        || (st.phase == Settled && complete.is_some_and(|c| FAILED_REASONS.contains(&&*c.reason)));
    match st.phase {
        _ if failed => {
            let reason = complete.map(|c| c.reason.as_str()).unwrap_or("Failed");
            Summary::new(Some(false), false, true, reason).with(msg)
        }
        Settled => Summary::new(Some(true), false, false, "Settled").with(msg),
        Succeeded | Cancelled | Expired => {
            Summary::new(Some(false), true, false, "Settling").with(msg)
        }
        p @ (Pending | Quoted | Funded | Scheduling | Running) => {
            Summary::new(Some(false), true, false, &phase_name(p)).with(msg)
        }
        Failed => unreachable!("failed is handled above"),
    }
}

/// A GpuNode: reconciling while it is new or being verified; stalled when offline
/// or slashed (it needs someone: a node back, a slash cleared). `Ready` stays the
/// controller's (True when Active); a draining node is neither.
pub fn gpunode_summary(st: &GpuNodeStatus) -> Summary {
    use GpuNodePhase::*;
    let p = phase_name(st.phase);
    match st.phase {
        Pending | Verifying => Summary::new(None, true, false, &p),
        Offline | Slashed => Summary::new(None, false, true, &p),
        Active | Draining => Summary::new(None, false, false, &p),
    }
}

/// A StakePosition: reconciling while it is being locked or unbonds; stalled when
/// slashed; ready when active or withdrawn.
pub fn stake_summary(st: &StakePositionStatus) -> Summary {
    use StakePhase::*;
    let p = phase_name(st.phase);
    let msg = st.message.as_deref();
    match st.phase {
        Pending | Unbonding => Summary::new(Some(false), true, false, &p).with(msg),
        Slashed => Summary::new(Some(false), false, true, &p).with(msg),
        Active | Withdrawn => Summary::new(Some(true), false, false, &p).with(msg),
    }
}

/// The status as written: with its kstatus conditions.
pub fn computejob(st: &ComputeJobStatus) -> ComputeJobStatus {
    let mut out = st.clone();
    stamp(
        &mut out.conditions,
        &computejob_summary(st),
        st.observed_generation,
        false,
    );
    out
}

/// The status as written: with its kstatus conditions (kept sorted by type, as the
/// GpuNode controller keeps them).
pub fn gpunode(st: &GpuNodeStatus) -> GpuNodeStatus {
    let mut out = st.clone();
    stamp(
        &mut out.conditions,
        &gpunode_summary(st),
        st.observed_generation,
        true,
    );
    out
}

/// The status as written: with its kstatus conditions (sorted by type, as the
/// StakePosition controller keeps them).
pub fn stake(st: &StakePositionStatus) -> StakePositionStatus {
    let mut out = st.clone();
    stamp(
        &mut out.conditions,
        &stake_summary(st),
        st.observed_generation,
        true,
    );
    out
}

/// Sets the three conditions of `s` on `cs`.
pub fn stamp(cs: &mut Vec<Condition>, s: &Summary, generation: Option<i64>, sorted: bool) {
    let newest = cs
        .iter()
        .map(|c| c.last_transition_time.clone())
        .max_by_key(|t| t.0)
        .unwrap_or_else(|| conditions::time(chrono::Utc::now()));
    let quiet = |on: bool, what: &str| {
        if on {
            (s.reason.clone(), s.message.clone())
        } else {
            (format!("Not{what}"), String::new())
        }
    };
    let mut put = |type_: &str, on: bool, (reason, message): (String, String)| {
        conditions::set_condition(cs, type_, on, &reason, message, generation, newest.clone());
    };
    if let Some(ready) = s.ready {
        put(READY, ready, (s.reason.clone(), s.message.clone()));
    }
    put(
        RECONCILING,
        s.reconciling,
        quiet(s.reconciling, "Reconciling"),
    );
    put(STALLED, s.stalled, quiet(s.stalled, "Stalled"));
    if sorted {
        cs.sort_by(|a, b| a.type_.cmp(&b.type_));
    }
}
