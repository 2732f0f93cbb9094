//! The GpuNode reconcile's pure middle: what was observed (Node, heartbeat, stakes,
//! the running verification) → a [`Plan`] (the status, Events and effects), which
//! [`super::reconcile`] applies. Unit-tested without an API server.

use super::driver::{self, VerificationRun};
use super::eligibility::{self, StandingInput};
use super::heartbeat::Heartbeat;
use super::machine::{self, PhaseReason};
use super::{ANN_CLEAR_SLASH, ANN_UPTIME, Settings, slashing, verify};
use crate::Result;
use crate::toolkit::{set_condition, time_ms};
use kube::ResourceExt;
use solgrid_crds::{GpuNode, GpuNodePhase, GpuNodeStatus, SlashIncident, StakePositionStatus};
use solgrid_market::MarketConfig;
use solgrid_market::reputation::UptimeTrack;
use std::time::Duration;

/// An Event to publish: (warning, reason, note).
pub type Note = (bool, &'static str, String);

/// What a reconcile read (from the caches and the verification pod).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Whether the Kubernetes Node exists, and is cordoned.
    pub node_exists: bool,
    pub cordoned: bool,
    pub hb: Heartbeat,
    /// Statuses of the StakePositions on the node.
    pub stakes: Vec<StakePositionStatus>,
    /// The look at the running verification pod, if one is running.
    pub run: Option<VerificationRun>,
}

/// What to write and do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The status this controller owns (as it should be).
    pub status: GpuNodeStatus,
    pub events: Vec<Note>,
    /// Annotations to merge (`null` removes one).
    pub annotations: serde_json::Map<String, serde_json::Value>,
    /// The verification pod to delete (judged, or not ours to judge).
    pub delete_pod: Option<String>,
    /// Start this period's verification pod.
    pub start: Option<u64>,
    /// Labels of the `verifications` metric to count.
    pub verdicts: Vec<&'static str>,
    /// A slash incident recorded now (the node was caught cheating).
    pub incident: Option<SlashIncident>,
    /// When a running pod can no longer pass.
    pub judge_at: Option<u64>,
}

/// Plans a reconcile of `obj` at `now`.
pub fn plan(
    obj: &GpuNode,
    o: &Observed,
    s: &Settings,
    cfg: &MarketConfig,
    now: u64,
) -> Result<Plan> {
    let old = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let mut p = Plan {
        status: old.clone(),
        ..Default::default()
    };
    if let Some(run) = &o.run {
        verdict_step(&mut p, &obj.name_any(), run, s, generation, now);
    }
    let clear = obj.annotations().get(ANN_CLEAR_SLASH).map(String::as_str) == Some("true");
    let (reason, cleared) = phase_step(&mut p, o, obj.spec.draining, clear);
    p.incident = slashing::record_incident(&mut p.status, s.verify.period_ms);
    let prev_track = obj
        .annotations()
        .get(ANN_UPTIME)
        .and_then(|a| UptimeTrack::decode(a));
    let standing = eligibility::assess(
        &mut p.status,
        &StandingInput {
            hb: &o.hb,
            created_ms: obj
                .metadata
                .creation_timestamp
                .as_ref()
                .map(time_ms)
                .unwrap_or(now),
            prev_online_since: old.online_since.as_ref().map(time_ms),
            prev_track,
            stakes: &o.stakes,
            now,
        },
        cfg,
        &mut p.events,
    )?;
    p.start = driver::should_start(&p.status, o.hb.online, s.verify.period_ms, now);
    conditions(&mut p.status, o, reason, &standing, generation, now);
    p.status.observed_generation = generation;
    if old.phase != p.status.phase {
        p.events.push((
            matches!(
                p.status.phase,
                GpuNodePhase::Offline | GpuNodePhase::Slashed
            ),
            "PhaseChanged",
            format!(
                "{:?} -> {:?}: {}",
                old.phase,
                p.status.phase,
                reason.message()
            ),
        ));
    }
    if prev_track != Some(standing.track) {
        p.annotations
            .insert(ANN_UPTIME.into(), standing.track.encode().into());
    }
    if clear && cleared {
        p.annotations
            .insert(ANN_CLEAR_SLASH.into(), serde_json::Value::Null);
    }
    Ok(p)
}

/// Records what the look at the running verification found.
fn verdict_step(
    p: &mut Plan,
    name: &str,
    run: &VerificationRun,
    s: &Settings,
    generation: Option<i64>,
    now: u64,
) {
    p.judge_at = run.judge_at;
    if run.delete {
        p.delete_pod = Some(verify::pod_name(
            name,
            super::period_of(run.started, s.verify.period_ms),
        ));
    }
    if let Some(v) = &run.verdict {
        let was_verified = p.status.verification.verified;
        p.verdicts.push(driver::verdict_reason(v));
        driver::record_verdict(&mut p.status, v, &s.verify, &mut p.events, generation, now);
        if was_verified && !p.status.verification.verified && !v.is_cheating() {
            p.verdicts.push("Expired");
        }
    }
}

/// Decides the phase (an admin's clear-slash makes the node verify again); `true`
/// when the slash was cleared.
fn phase_step(p: &mut Plan, o: &Observed, draining: bool, clear: bool) -> (PhaseReason, bool) {
    let st = &mut p.status;
    let input = machine::PhaseInput {
        current: st.phase,
        node_exists: o.node_exists,
        cordoned: o.cordoned,
        draining,
        online: o.hb.online,
        gpus: st.gpus.len() as u32,
        verified: st.verification.verified,
        clear_slash: clear,
    };
    let (phase, reason) = machine::next_phase(&input);
    let cleared = st.phase == GpuNodePhase::Slashed && phase != GpuNodePhase::Slashed;
    if cleared {
        st.verification.verified = false;
        p.events.push((
            false,
            "SlashCleared",
            "an admin cleared the slash: the node verifies again".into(),
        ));
    }
    st.phase = phase;
    (reason, cleared)
}

/// The `Ready`, `Online`, `RewardEligible` and `Slashed` conditions.
fn conditions(
    st: &mut GpuNodeStatus,
    o: &Observed,
    reason: PhaseReason,
    standing: &eligibility::Standing,
    generation: Option<i64>,
    now: u64,
) {
    let online = o.hb.online;
    let slashed = st.phase == GpuNodePhase::Slashed;
    let ready = st.phase == GpuNodePhase::Active;
    let c = &mut st.conditions;
    set_condition(
        c,
        "Ready",
        ready,
        reason.as_str(),
        reason.message(),
        generation,
        now,
    );
    let (why, msg) = match (online, o.node_exists) {
        (true, _) => ("HeartbeatCurrent", "the heartbeat lease is current"),
        (false, false) => ("NodeGone", "no current heartbeat lease"),
        (false, true) => ("HeartbeatExpired", "no current heartbeat lease"),
    };
    set_condition(c, "Online", online, why, msg, generation, now);
    let eligible = standing.eligible;
    let why = if eligible { "Eligible" } else { "NotEligible" };
    set_condition(
        c,
        "RewardEligible",
        eligible,
        why,
        &standing.why,
        generation,
        now,
    );
    let (why, msg) = if slashed {
        ("CaughtCheating", PhaseReason::Slashed.message())
    } else {
        ("NotSlashed", "not slashed")
    };
    set_condition(c, "Slashed", slashed, why, msg, generation, now);
}

/// When to look again: soon while a pod runs (when it can no longer pass at the
/// latest), else at the resync.
pub fn requeue(st: &GpuNodeStatus, judge_at: Option<u64>, now: u64, resync: Duration) -> Duration {
    if !driver::running(st) {
        return resync;
    }
    let until = judge_at.map(|t| Duration::from_millis(t.saturating_sub(now) + 200));
    Duration::from_secs(15)
        .min(resync)
        .min(until.unwrap_or(Duration::MAX))
}
