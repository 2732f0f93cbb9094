//! The verification driver: reads the period's proof-of-work pod (observe),
//! records a verdict and decides when the next run starts (pure), and creates the
//! pod (apply). The check itself is [`crate::verification`] and [`super::verify`].

use super::plan::Note;
use super::verify::{self, PodState, VerifySettings};
use super::{GpuNodeCtx, machine, period_of};
use crate::toolkit::{ms_time, now_ms, set_condition, time_ms};
use crate::verification::Verdict;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams, PostParams};
use solgrid_crds::{GpuNodePhase, GpuNodeStatus};

/// The status' `lastResult` while a run is under way.
pub const RUNNING: &str = "Running";

/// Whether the status says a verification pod is running.
pub fn running(st: &GpuNodeStatus) -> bool {
    st.verification.last_result.as_deref() == Some(RUNNING)
}

/// What a look at the running verification pod found.
#[derive(Clone, Debug, Default)]
pub struct VerificationRun {
    pub verdict: Option<Verdict>,
    /// Delete the pod (judged, or not ours to judge).
    pub delete: bool,
    /// When the run was started (the status' `lastRun`).
    pub started: u64,
    /// When a pod still running can no longer pass.
    pub judge_at: Option<u64>,
}

/// Looks at the period's verification pod: judges it once it has succeeded (the
/// operator's time from creation to reading the report) or can no longer pass.
pub async fn check_verification(
    g: &GpuNodeCtx,
    pods: &Api<Pod>,
    name: &str,
    node_name: &str,
    st: &GpuNodeStatus,
    now: u64,
) -> VerificationRun {
    let s = &g.settings.verify;
    let started = st
        .verification
        .last_run
        .as_ref()
        .map(time_ms)
        .unwrap_or(now);
    let mut run = VerificationRun {
        started,
        ..Default::default()
    };
    let pname = verify::pod_name(name, period_of(started, s.period_ms));
    let p = match pods.get_opt(&pname).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            run.verdict = Some(Verdict::Inconclusive {
                reason: "the verification pod disappeared".into(),
            });
            return run;
        }
        Err(e) => {
            // keep waiting; the rest of the status is still kept in step
            tracing::warn!(gpunode = %name, error = %e, "reading the verification pod failed");
            return run;
        }
    };
    if !verify::ran_on(&p, node_name) {
        run.delete = true;
        run.verdict = Some(Verdict::Inconclusive {
            reason: format!(
                "the verification pod ran on {}, not on {node_name}: its report is rejected",
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or("no node")
            ),
        });
        return run;
    }
    let created = verify::created_ms_of(&p, started);
    let (n, devices) = verify::devices_of(&p).unwrap_or_default();
    let limit = verify::pod_limit_ms(s, n, &devices);
    run.judge_at = Some(verify::judge_at(s, created, limit));
    match verify::classify(&p, s, created, limit, now) {
        PodState::Running => {}
        PodState::Verdict(v) => {
            run.delete = true;
            run.verdict = Some(v);
        }
        PodState::Succeeded { started_late } => {
            let lp = LogParams {
                container: Some(verify::CONTAINER.into()),
                limit_bytes: Some(((n * n * 3 + 4_096) * devices.len().max(1) + 65_536) as i64),
                ..Default::default()
            };
            match pods.logs(&pname, &lp).await {
                Err(e) => {
                    tracing::warn!(gpunode = %name, error = %e, "reading the verification log failed")
                }
                Ok(log) => {
                    let judged = Judged {
                        pod: p,
                        log,
                        created,
                        limit,
                        started_late,
                    };
                    judge(g, name, judged, &mut run).await;
                }
            }
        }
    }
    run
}

/// A succeeded pod and its report, to judge.
struct Judged {
    pod: Pod,
    log: String,
    created: u64,
    limit: u64,
    started_late: bool,
}

/// Judges a report off the runtime (Freivalds over the chains is O(rounds n^2) per
/// device); the clock stops when the report is in the operator's hands.
async fn judge(g: &GpuNodeCtx, name: &str, j: Judged, run: &mut VerificationRun) {
    let read = now_ms(&g.ctx);
    run.delete = true;
    let seed = super::fresh_seed(g, g.verifier_seed);
    let settings = g.settings.verify.clone();
    let Judged {
        pod,
        log,
        created,
        limit,
        started_late,
    } = j;
    let judged = tokio::task::spawn_blocking(move || {
        verify::judge_log(&pod, &log, &settings, created, read, started_late, seed)
    })
    .await;
    let v = judged.unwrap_or_else(|e| Verdict::Inconclusive {
        reason: format!("the check did not complete: {e}"),
    });
    if limit > 0 {
        g.ctx
            .metrics
            .verification_time_ratio
            .observe(read.saturating_sub(created) as f64 / limit as f64);
    }
    tracing::info!(gpunode = %name, duration_ms = read.saturating_sub(created), limit_ms = limit, verdict = v.label(), "verification judged");
    run.verdict = Some(v);
}

/// The `Verified` condition's reason (and the metric's label) of a verdict.
pub fn verdict_reason(v: &Verdict) -> &'static str {
    match v {
        Verdict::Passed => "Passed",
        Verdict::WrongResult { .. } => "WrongResult",
        Verdict::TooSlow { .. } => "TooSlow",
        Verdict::Inconclusive { .. } => "Inconclusive",
    }
}

/// Records a verdict in the status; `true` when the node is caught cheating.
/// Inconclusive results in a row (`verification.inconclusive`) expire `verified`
/// after `expire_after` of them.
pub fn record_verdict(
    st: &mut GpuNodeStatus,
    v: &Verdict,
    s: &VerifySettings,
    events: &mut Vec<Note>,
    generation: Option<i64>,
    now: u64,
) -> bool {
    st.verification.last_result = Some(v.label().to_string());
    let mut reason = verdict_reason(v);
    let mut message = v.message();
    match v {
        Verdict::Passed => {
            st.verification.passed = st.verification.passed.saturating_add(1);
            st.verification.verified = true;
            st.verification.inconclusive = 0;
            events.push((false, "VerificationPassed", v.message()));
        }
        Verdict::Inconclusive { .. } => {
            st.verification.inconclusive = st.verification.inconclusive.saturating_add(1);
            events.push((true, "VerificationInconclusive", v.message()));
            if st.verification.inconclusive >= s.expire_after && st.verification.verified {
                st.verification.verified = false;
                reason = "Expired";
                message = format!(
                    "{} verification periods in a row were inconclusive (last: {}): not verified until a run passes",
                    st.verification.inconclusive,
                    v.message()
                );
                events.push((true, "VerificationExpired", message.clone()));
            } else if !st.verification.verified {
                // keep the reason a node lost its verification for
                if let Some(c) = st.conditions.iter().find(|c| c.type_ == "Verified")
                    && c.reason == "Expired"
                {
                    reason = "Expired";
                    message = c.message.clone();
                }
            }
        }
        Verdict::WrongResult { .. } | Verdict::TooSlow { .. } => {
            st.verification.failed = st.verification.failed.saturating_add(1);
            st.verification.verified = false;
            st.verification.inconclusive = 0;
            st.phase = GpuNodePhase::Slashed;
            events.push((true, "VerificationFailed", v.message()));
        }
    }
    set_condition(
        &mut st.conditions,
        "Verified",
        st.verification.verified,
        reason,
        &message,
        generation,
        now,
    );
    v.is_cheating()
}

/// A verification pod to start (period and challenge seed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub period: u64,
    pub seed: u64,
}

/// Whether this period's verification starts now: the phase verifies, none is
/// running, none ran this period, the node is online and every device is free
/// (every device is challenged at once).
pub fn should_start(st: &GpuNodeStatus, online: bool, period_ms: u64, now: u64) -> Option<u64> {
    let period = period_of(now, period_ms);
    let last_period = st
        .verification
        .last_run
        .as_ref()
        .map(|t| period_of(time_ms(t), period_ms));
    let all_free = st.allocated_gpus == 0 && !st.gpus.is_empty();
    (machine::verifies(st.phase)
        && !running(st)
        && last_period != Some(period)
        && all_free
        && online)
        .then_some(period)
}

/// Records a started run in the status (and its Event).
pub fn record_started(
    st: &mut GpuNodeStatus,
    name: &str,
    period: u64,
    now: u64,
    events: &mut Vec<Note>,
) {
    st.verification.last_run = Some(ms_time(now));
    st.verification.last_result = Some(RUNNING.into());
    events.push((
        false,
        "VerificationStarted",
        format!(
            "proof-of-work pod {} started",
            verify::pod_name(name, period)
        ),
    ));
}

/// Creates the verification pod; a pod that cannot be created (quota, RBAC) does
/// not hold the status back: `Err` carries the Event note.
pub async fn create_pod(
    pods: &Api<Pod>,
    s: &VerifySettings,
    name: &str,
    node_name: &str,
    st: &GpuNodeStatus,
    start: &Start,
    now: u64,
) -> std::result::Result<(), String> {
    let vendor = st.gpus.first().map(|d| d.vendor).unwrap_or_default();
    let devices = verify::plan(s, &st.gpus, start.seed);
    let p = verify::pod(
        s,
        name,
        node_name,
        vendor,
        start.period,
        start.seed,
        &devices,
        now,
    );
    match pods.create(&PostParams::default(), &p).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => {
            tracing::warn!(gpunode = %name, error = %e, "creating the verification pod failed");
            Err(format!("the proof-of-work pod could not be created: {e}"))
        }
    }
}
