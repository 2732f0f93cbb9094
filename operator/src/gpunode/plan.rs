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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OperatorConfig;
    use crate::toolkit::ms_time;
    use crate::verification::Verdict;
    use solgrid_crds::{GpuNodeSpec, Location};

    const NOW: u64 = 1_800_000_000_000;
    const H: u64 = 3_600_000;

    fn node(phase: GpuNodePhase, verified: bool) -> GpuNode {
        let mut gn = GpuNode::new(
            "gpu-1",
            GpuNodeSpec {
                node_name: "gpu-1".into(),
                payout_wallet: "w".into(),
                location: Location {
                    region: "eu".into(),
                    country: "DE".into(),
                    coordinates: None,
                },
                floor_micro_usd_per_gpu_hour: 0,
                staker_commission_bps: 0,
                draining: false,
            },
        );
        gn.metadata.generation = Some(2);
        gn.metadata.creation_timestamp = Some(ms_time(NOW - 20 * H));
        let mut st = GpuNodeStatus {
            phase,
            gpus: vec![serde_json::from_value(serde_json::json!(
                {"id": "g0", "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3", "vramMib": 81559, "health": "Healthy"}
            ))
            .unwrap()],
            ..Default::default()
        };
        st.verification.verified = verified;
        st.verification.passed = u32::from(verified);
        gn.status = Some(st);
        gn
    }

    fn online() -> Observed {
        Observed {
            node_exists: true,
            hb: Heartbeat {
                online: true,
                renew_ms: Some(NOW - 5_000),
                ready_since_ms: Some(NOW - 10 * H),
                acquired_ms: Some(NOW - 10 * H),
            },
            ..Default::default()
        }
    }

    fn settings() -> Settings {
        Settings::from_config(&OperatorConfig::default())
    }

    fn cond<'a>(
        st: &'a GpuNodeStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        st.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_wrong_result_slashes_and_records_the_incident_on_the_node() {
        let mut gn = node(GpuNodePhase::Active, true);
        let run_ms = NOW - 60_000;
        let st = gn.status.as_mut().unwrap();
        st.verification.last_run = Some(ms_time(run_ms));
        st.verification.last_result = Some(driver::RUNNING.into());
        let mut o = online();
        o.run = Some(VerificationRun {
            verdict: Some(Verdict::WrongResult {
                reason: "bad".into(),
            }),
            delete: true,
            started: run_ms,
            judge_at: None,
        });
        let s = settings();
        let p = plan(&gn, &o, &s, &MarketConfig::default(), NOW).unwrap();
        assert_eq!(p.status.phase, GpuNodePhase::Slashed);
        assert!(!p.status.verification.verified);
        assert_eq!(p.status.verification.failed, 1);
        let inc = p.incident.clone().unwrap();
        assert_eq!(inc.id, slashing::incident_id(run_ms, s.verify.period_ms));
        assert_eq!(time_ms(&inc.at), run_ms);
        assert_eq!(p.status.slash_incident, Some(inc));
        assert_eq!(p.verdicts, vec!["WrongResult"]);
        assert!(p.delete_pod.is_some());
        assert_eq!(p.start, None, "a slashed node is not challenged");
        assert!(!p.status.reward_eligible);
        assert_eq!(cond(&p.status, "Slashed").status, "True");
        let reasons: Vec<_> = p.events.iter().map(|e| e.1).collect();
        assert_eq!(reasons, vec!["VerificationFailed", "PhaseChanged"]);
        // the next reconcile (still slashed) records nothing new
        gn.status = Some(p.status);
        let p = plan(&gn, &online(), &s, &MarketConfig::default(), NOW + 1).unwrap();
        assert_eq!(p.incident, None);
        assert!(p.status.slash_incident.is_some());
    }

    #[test]
    fn a_due_run_starts_only_online_with_every_device_free() {
        let gn = node(GpuNodePhase::Pending, false);
        let s = settings();
        let cfg = MarketConfig::default();
        let p = plan(&gn, &online(), &s, &cfg, NOW).unwrap();
        assert_eq!(p.status.phase, GpuNodePhase::Verifying);
        assert_eq!(p.start, Some(NOW / s.verify.period_ms));
        assert_eq!(p.status.observed_generation, Some(2));
        assert_eq!(cond(&p.status, "Online").reason, "HeartbeatCurrent");
        assert_eq!(
            requeue(&p.status, None, NOW, s.resync),
            s.resync,
            "nothing running yet"
        );
        let offline = Observed {
            node_exists: true,
            ..Default::default()
        };
        let p = plan(&gn, &offline, &s, &cfg, NOW).unwrap();
        assert_eq!(p.start, None);
        assert_eq!(cond(&p.status, "Online").reason, "HeartbeatExpired");
        let mut busy = gn.clone();
        busy.status.as_mut().unwrap().allocated_gpus = 1;
        assert_eq!(plan(&busy, &online(), &s, &cfg, NOW).unwrap().start, None);
    }

    #[test]
    fn an_admin_clear_verifies_again_and_keeps_the_incident() {
        let mut gn = node(GpuNodePhase::Slashed, false);
        let st = gn.status.as_mut().unwrap();
        st.verification.last_run = Some(ms_time(NOW - 2 * H));
        st.slash_incident = Some(SlashIncident {
            id: "p1".into(),
            at: ms_time(NOW - 2 * H),
        });
        gn.metadata.annotations = Some([(ANN_CLEAR_SLASH.to_string(), "true".to_string())].into());
        let p = plan(&gn, &online(), &settings(), &MarketConfig::default(), NOW).unwrap();
        assert_eq!(p.status.phase, GpuNodePhase::Verifying);
        assert_eq!(p.annotations[ANN_CLEAR_SLASH], serde_json::Value::Null);
        assert!(p.events.iter().any(|e| e.1 == "SlashCleared"));
        assert_eq!(p.incident, None);
        assert_eq!(p.status.slash_incident.as_ref().unwrap().id, "p1");
        assert!(p.start.is_some(), "re-verification starts");
    }
}
