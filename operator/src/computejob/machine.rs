//! The ComputeJob state machine, as a pure function:
//! `(spec, status, observed pods, now) → the next step`.
//!
//! ```text
//! Pending ──quote──▶ Quoted ──escrow──▶ Funded ──pods──▶ Scheduling ──all N running──▶ Running
//!    │ (cap below market: stays, Quoted=False)            │ gang timeout: release,        │
//!    │                                                     │ retry (Funded) or Failed      ├─▶ Succeeded (all workers succeeded)
//!    └─ cancel ─▶ Cancelled                                └─ cancel ─▶ Cancelled          ├─▶ Failed (a worker failed or vanished)
//!                                                                                          ├─▶ Cancelled (spec.cancel or deletion)
//!                                                                                          └─▶ Expired (max duration = budget)
//! Succeeded | Failed | Cancelled | Expired ──final settlement (pay, burn, refund)──▶ Settled
//! ```
//!
//! While Running, every completed settlement period is settled on its own.

use crate::conditions::from_time;
use chrono::{DateTime, Utc};
use solgrid_crds::{ComputeJobPhase, ComputeJobSpec, ComputeJobStatus, SettlementState};
use std::time::Duration;

/// What the controller sees of one worker pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub index: u32,
    pub attempt: u32,
    pub phase: PodPhase,
    pub node: Option<String>,
    /// Has a deletion timestamp.
    pub deleting: bool,
    /// When its container started (the kubelet's `state.running.startedAt`, or
    /// `state.terminated.startedAt` once it ended).
    pub started: Option<DateTime<Utc>>,
    /// When its container finished (`state.terminated.finishedAt`).
    pub finished: Option<DateTime<Utc>>,
    /// The node, not the workload, ended it (evicted, node lost, ...).
    pub node_fault: bool,
}

/// A pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Pending") | None => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some(_) => PodPhase::Unknown,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }
    fn live(self) -> bool {
        matches!(
            self,
            PodPhase::Pending | PodPhase::Running | PodPhase::Unknown
        )
    }
}

/// Everything a decision is made from.
#[derive(Clone, Debug)]
pub struct View<'a> {
    pub spec: &'a ComputeJobSpec,
    pub status: &'a ComputeJobStatus,
    /// The job has a deletion timestamp (deleting = cancel, settle, then release).
    pub deleting: bool,
    pub pods: &'a [PodView],
    pub now: DateTime<Utc>,
    pub period_ms: u64,
    pub gang_max_attempts: u32,
    pub running_requeue: Duration,
}

/// How a job finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub phase: ComputeJobPhase,
    /// CamelCase reason (condition and Event).
    pub reason: &'static str,
    pub message: String,
    /// When the job stopped using GPUs (`None`: it never ran).
    pub end: Option<DateTime<Utc>>,
}

/// The next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Pending: compute and lock a quote (or say the cap is below market).
    Quote,
    /// Quoted (or an escrow in flight): move the maximum cost into escrow.
    Fund,
    /// Create the missing workers of `attempt`.
    CreatePods { attempt: u32, missing: Vec<u32> },
    /// All N workers run: the job runs from `at`.
    Start { at: DateTime<Utc> },
    /// The gang did not form in time (or a worker failed before it did): release
    /// it, then retry or fail.
    ReleaseGang {
        attempt: u32,
        retry: bool,
        reason: &'static str,
        message: String,
    },
    /// The job stopped: record it (and delete live workers).
    Finish(Finish),
    /// Delete workers still alive after the job finished.
    DeletePods { names: Vec<String> },
    /// Running: `maxDurationSeconds` changed; the job now ends at `at` (never
    /// before the moment the change was observed).
    SetDeadline {
        at: DateTime<Utc>,
        duration_seconds: u64,
    },
    /// Running: settle the completed periods `from..upto`.
    SettlePeriods { from: u32, upto: u32 },
    /// Finished: resume or plan the final settlement.
    Settle,
    /// Nothing to do until then (or until something changes).
    Wait(Duration),
    /// Settled: nothing more, ever.
    Done,
}

/// Where the job's settlements stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SettlementSummary {
    /// Settlement records (periods planned so far).
    pub recorded: u32,
    /// Records Planned or Sent.
    pub in_flight: u32,
    /// Records Failed.
    pub failed: u32,
    /// The final settlement (with the refund line) is recorded.
    pub final_recorded: bool,
    /// ... and confirmed.
    pub final_confirmed: bool,
}

/// Summarises `status.settlements`.
pub fn settlements(status: &ComputeJobStatus) -> SettlementSummary {
    let mut s = SettlementSummary::default();
    for js in &status.settlements {
        s.recorded += 1;
        let is_final = js.payouts.iter().any(|p| p.to == crate::settlement::REFUND);
        // a settlement in parts as a whole: confirmed once every part is
        match js.state() {
            SettlementState::Planned | SettlementState::Sent => s.in_flight += 1,
            SettlementState::Failed => s.failed += 1,
            SettlementState::Confirmed => {
                if is_final {
                    s.final_confirmed = true;
                }
            }
        }
        if is_final {
            s.final_recorded = true;
        }
    }
    s
}

/// The escrow is in flight (planned or sent, not confirmed nor failed).
pub fn escrow_in_flight(status: &ComputeJobStatus) -> bool {
    status
        .escrow
        .as_ref()
        .is_some_and(|r| matches!(r.state, SettlementState::Planned | SettlementState::Sent))
}

/// The escrow is confirmed.
pub fn escrow_confirmed(status: &ComputeJobStatus) -> bool {
    status
        .escrow
        .as_ref()
        .is_some_and(|r| r.state == SettlementState::Confirmed)
}

fn secs(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

/// The next step for a job.
pub fn decide(v: &View<'_>) -> Step {
    let st = v.status;
    let phase = st.phase;
    let stop = v.spec.cancel || v.deleting;
    let attempt = st.attempts;
    let current: Vec<&PodView> = v
        .pods
        .iter()
        .filter(|p| p.attempt == attempt && !p.deleting)
        .collect();

    if phase == ComputeJobPhase::Settled {
        return Step::Done;
    }
    if phase.is_finished() {
        let live: Vec<String> = v
            .pods
            .iter()
            .filter(|p| !p.deleting && p.phase.live())
            .map(|p| p.name.clone())
            .collect();
        if !live.is_empty() {
            return Step::DeletePods { names: live };
        }
        return Step::Settle;
    }
    let why = if v.deleting {
        "the job was deleted"
    } else {
        "spec.cancel is set"
    };
    match phase {
        ComputeJobPhase::Pending | ComputeJobPhase::Quoted if stop => {
            if escrow_in_flight(st) {
                // finish the escrow first: it may already have moved the tokens
                Step::Fund
            } else {
                Step::Finish(Finish {
                    phase: ComputeJobPhase::Cancelled,
                    reason: "Cancelled",
                    message: format!("cancelled before it ran: {why}"),
                    end: None,
                })
            }
        }
        ComputeJobPhase::Pending => Step::Quote,
        ComputeJobPhase::Quoted => Step::Fund,
        ComputeJobPhase::Funded | ComputeJobPhase::Scheduling if stop => Step::Finish(Finish {
            phase: ComputeJobPhase::Cancelled,
            reason: "Cancelled",
            message: format!("cancelled before it ran: {why}"),
            end: None,
        }),
        ComputeJobPhase::Funded => Step::CreatePods {
            attempt: attempt.saturating_add(1),
            missing: (0..v.spec.workers).collect(),
        },
        ComputeJobPhase::Scheduling => scheduling(v, attempt, &current),
        ComputeJobPhase::Running => running(v, &current, stop, why),
        // finished phases handled above
        _ => Step::Done,
    }
}

fn scheduling(v: &View<'_>, attempt: u32, current: &[&PodView]) -> Step {
    let n = v.spec.workers;
    let since = v
        .status
        .scheduling_since
        .as_ref()
        .map(from_time)
        .unwrap_or(v.now);
    let deadline = since + chrono::Duration::seconds(v.spec.gang_timeout_seconds as i64);
    let retry = attempt < v.gang_max_attempts;
    if let Some(failed) = current.iter().find(|p| p.phase == PodPhase::Failed) {
        return Step::ReleaseGang {
            attempt,
            retry,
            reason: "WorkerFailed",
            message: format!(
                "worker {} failed before all {n} workers ran (attempt {attempt}/{})",
                failed.index, v.gang_max_attempts
            ),
        };
    }
    let started = |p: &&&PodView| matches!(p.phase, PodPhase::Running | PodPhase::Succeeded);
    let running = (0..n)
        .filter(|i| current.iter().filter(started).any(|p| p.index == *i))
        .count() as u32;
    if running == n {
        // The gang runs from the moment its last worker's container started (as the
        // kubelet reports it), not from when the operator noticed.
        let at = (0..n)
            .filter_map(|i| {
                current
                    .iter()
                    .filter(|p| p.index == i)
                    .filter_map(|p| p.started)
                    .min()
            })
            .max()
            .unwrap_or(v.now)
            .min(v.now);
        // A worker that had already finished when the last one started never ran
        // with the others (one GPU served them in turn): that is no gang.
        if let Some(p) = current
            .iter()
            .find(|p| p.phase == PodPhase::Succeeded && p.finished.is_some_and(|f| f < at))
        {
            return Step::ReleaseGang {
                attempt,
                retry,
                reason: "GangNotConcurrent",
                message: format!(
                    "worker {} finished before the last worker started: the {n} workers never ran together (attempt {attempt}/{})",
                    p.index, v.gang_max_attempts
                ),
            };
        }
        return Step::Start { at };
    }
    if v.now >= deadline {
        return Step::ReleaseGang {
            attempt,
            retry,
            reason: "GangTimeout",
            message: format!(
                "{running}/{n} workers running after {} s (attempt {attempt}/{})",
                v.spec.gang_timeout_seconds, v.gang_max_attempts
            ),
        };
    }
    let missing: Vec<u32> = (0..n)
        .filter(|i| !current.iter().any(|p| p.index == *i))
        .collect();
    if !missing.is_empty() {
        return Step::CreatePods { attempt, missing };
    }
    Step::Wait(secs(deadline - v.now).max(Duration::from_secs(1)))
}

/// When a running job ends at the latest, and whether `maxDurationSeconds` changed
/// since that was recorded (then the new deadline is returned to be recorded).
///
/// The requester may only shorten `maxDurationSeconds` (a CEL rule); a shortening
/// seen while running never ends the job before `now`, the moment it is observed,
/// so the time in between is billed.
pub fn deadline(
    spec: &ComputeJobSpec,
    status: &ComputeJobStatus,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, bool) {
    let start = status.start_time.as_ref().map(from_time).unwrap_or(now);
    let by_spec = start + chrono::Duration::seconds(spec.max_duration_seconds as i64);
    let recorded = status.deadline.as_ref().map(from_time);
    let changed = status
        .deadline_duration_seconds
        .is_some_and(|d| d != spec.max_duration_seconds);
    match recorded {
        // a change seen now: not before now, never later than before
        Some(old) if changed => (by_spec.max(now).min(old), true),
        Some(old) => (old, false),
        // no record (a job started before deadlines were recorded): the spec's
        None => (by_spec, false),
    }
}

fn running(v: &View<'_>, current: &[&PodView], stop: bool, why: &str) -> Step {
    let n = v.spec.workers;
    let start = v.status.start_time.as_ref().map(from_time).unwrap_or(v.now);
    let (max_end, changed) = deadline(v.spec, v.status, v.now);
    if changed && !stop {
        return Step::SetDeadline {
            at: max_end,
            duration_seconds: v.spec.max_duration_seconds,
        };
    }
    // when a worker stopped, as its kubelet reports it (within the job's run)
    let clamp = |t: Option<DateTime<Utc>>| t.unwrap_or(v.now).max(start).min(v.now);
    if stop {
        return Step::Finish(Finish {
            phase: ComputeJobPhase::Cancelled,
            reason: "Cancelled",
            message: format!("cancelled while running: {why}"),
            end: Some(v.now.min(max_end)),
        });
    }
    if v.now >= max_end {
        return Step::Finish(Finish {
            phase: ComputeJobPhase::Expired,
            reason: "MaxDurationReached",
            message: format!(
                "ran for its maximum duration of {} s (its escrowed budget)",
                v.spec.max_duration_seconds
            ),
            end: Some(max_end),
        });
    }
    if let Some(p) = current.iter().find(|p| p.phase == PodPhase::Failed) {
        return Step::Finish(Finish {
            phase: ComputeJobPhase::Failed,
            reason: "WorkerFailed",
            message: format!("worker {} ({}) failed", p.index, p.name),
            end: Some(clamp(p.finished).min(max_end)),
        });
    }
    if let Some(i) = (0..n).find(|i| !current.iter().any(|p| p.index == *i)) {
        return Step::Finish(Finish {
            phase: ComputeJobPhase::Failed,
            reason: "WorkerLost",
            message: format!("worker {i} disappeared while running"),
            end: Some(v.now),
        });
    }
    if current.iter().all(|p| p.phase == PodPhase::Succeeded) {
        // the job used its GPUs until its last worker finished
        let end = current
            .iter()
            .map(|p| clamp(p.finished))
            .max()
            .unwrap_or(v.now)
            .min(max_end);
        return Step::Finish(Finish {
            phase: ComputeJobPhase::Succeeded,
            reason: "Succeeded",
            message: format!("all {n} workers succeeded"),
            end: Some(end),
        });
    }
    // Settle each completed period on its own.
    let period_ms = v.period_ms.max(1);
    let elapsed_ms = (v.now - start).num_milliseconds().max(0) as u64;
    let completed = u32::try_from(elapsed_ms / period_ms).unwrap_or(u32::MAX);
    let s = settlements(v.status);
    if completed > s.recorded && s.in_flight == 0 && s.failed == 0 {
        return Step::SettlePeriods {
            from: s.recorded,
            upto: completed,
        };
    }
    if s.in_flight > 0 {
        return Step::SettlePeriods {
            from: s.recorded,
            upto: s.recorded,
        };
    }
    let next_period = start
        + chrono::Duration::milliseconds(
            (completed as i64 + 1).saturating_mul(period_ms.min(i64::MAX as u64) as i64),
        );
    let wake = next_period.min(max_end);
    Step::Wait(
        secs(wake - v.now)
            .min(v.running_requeue)
            .max(Duration::from_millis(500)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::time;
    use solgrid_crds::*;

    fn spec(workers: u32) -> ComputeJobSpec {
        ComputeJobSpec {
            template: WorkerTemplate {
                image: "img".into(),
                ..Default::default()
            },
            gpus: GpuRequest {
                count: 2,
                ..Default::default()
            },
            workers,
            max_duration_seconds: 7200,
            max_price_per_gpu_hour: 1_000,
            payer_secret_ref: WalletSecretRef { name: "w".into() },
            gang_timeout_seconds: 300,
            ..Default::default()
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn pod(i: u32, attempt: u32, phase: PodPhase) -> PodView {
        PodView {
            name: format!("j-a{attempt}-w{i}"),
            index: i,
            attempt,
            phase,
            node: Some(format!("n{i}")),
            deleting: false,
            started: None,
            finished: None,
            node_fault: false,
        }
    }

    fn view<'a>(
        spec: &'a ComputeJobSpec,
        status: &'a ComputeJobStatus,
        pods: &'a [PodView],
        now: DateTime<Utc>,
    ) -> View<'a> {
        View {
            spec,
            status,
            deleting: false,
            pods,
            now,
            period_ms: 3_600_000,
            gang_max_attempts: 2,
            running_requeue: Duration::from_secs(30),
        }
    }

    fn status(phase: ComputeJobPhase) -> ComputeJobStatus {
        ComputeJobStatus {
            phase,
            ..Default::default()
        }
    }

    #[test]
    fn early_phases() {
        let sp = spec(2);
        assert_eq!(
            decide(&view(&sp, &status(ComputeJobPhase::Pending), &[], t(0))),
            Step::Quote
        );
        assert_eq!(
            decide(&view(&sp, &status(ComputeJobPhase::Quoted), &[], t(0))),
            Step::Fund
        );
        let mut st = status(ComputeJobPhase::Funded);
        st.attempts = 0;
        assert_eq!(
            decide(&view(&sp, &st, &[], t(0))),
            Step::CreatePods {
                attempt: 1,
                missing: vec![0, 1]
            }
        );
    }

    #[test]
    fn cancel_before_running_and_escrow_in_flight() {
        let mut sp = spec(1);
        sp.cancel = true;
        let st = status(ComputeJobPhase::Quoted);
        assert!(matches!(
            decide(&view(&sp, &st, &[], t(0))),
            Step::Finish(Finish {
                phase: ComputeJobPhase::Cancelled,
                end: None,
                ..
            })
        ));
        let mut st = status(ComputeJobPhase::Quoted);
        st.escrow = Some(LedgerRecord {
            key: "u/escrow".into(),
            state: SettlementState::Sent,
            ..Default::default()
        });
        assert_eq!(decide(&view(&sp, &st, &[], t(0))), Step::Fund);
    }

    #[test]
    fn gang_forms_or_times_out() {
        let sp = spec(2);
        let mut st = scheduling();
        let one = [pod(0, 1, PodPhase::Running), pod(1, 1, PodPhase::Pending)];
        assert!(matches!(
            decide(&view(&sp, &st, &one, t(10))),
            Step::Wait(_)
        ));
        let both = [pod(0, 1, PodPhase::Running), pod(1, 1, PodPhase::Running)];
        assert_eq!(
            decide(&view(&sp, &st, &both, t(10))),
            Step::Start { at: t(10) }
        );
        // stale pods of an earlier attempt do not count
        let old = [pod(0, 0, PodPhase::Running), pod(1, 1, PodPhase::Running)];
        assert_eq!(
            decide(&view(&sp, &st, &old, t(10))),
            Step::CreatePods {
                attempt: 1,
                missing: vec![0]
            }
        );
        match decide(&view(&sp, &st, &one, t(300))) {
            Step::ReleaseGang {
                attempt: 1,
                retry: true,
                reason: "GangTimeout",
                ..
            } => {}
            s => panic!("{s:?}"),
        }
        st.attempts = 2;
        let one2 = [pod(0, 2, PodPhase::Running), pod(1, 2, PodPhase::Pending)];
        match decide(&view(&sp, &st, &one2, t(301))) {
            Step::ReleaseGang { retry: false, .. } => {}
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn running_outcomes() {
        let sp = spec(2);
        let mut st = status(ComputeJobPhase::Running);
        st.attempts = 1;
        st.start_time = Some(time(t(0)));
        let ok = [pod(0, 1, PodPhase::Running), pod(1, 1, PodPhase::Running)];
        assert!(matches!(decide(&view(&sp, &st, &ok, t(60))), Step::Wait(_)));
        let done = [
            pod(0, 1, PodPhase::Succeeded),
            pod(1, 1, PodPhase::Succeeded),
        ];
        assert!(matches!(
            decide(&view(&sp, &st, &done, t(60))),
            Step::Finish(Finish {
                phase: ComputeJobPhase::Succeeded,
                ..
            })
        ));
        let failed = [pod(0, 1, PodPhase::Failed), pod(1, 1, PodPhase::Running)];
        assert!(matches!(
            decide(&view(&sp, &st, &failed, t(60))),
            Step::Finish(Finish {
                phase: ComputeJobPhase::Failed,
                reason: "WorkerFailed",
                ..
            })
        ));
        let lost = [pod(0, 1, PodPhase::Running)];
        assert!(matches!(
            decide(&view(&sp, &st, &lost, t(60))),
            Step::Finish(Finish {
                reason: "WorkerLost",
                ..
            })
        ));
        // max duration 7200 s: expired, end capped at the maximum
        assert_eq!(
            decide(&view(&sp, &st, &ok, t(9000))),
            Step::Finish(Finish {
                phase: ComputeJobPhase::Expired,
                reason: "MaxDurationReached",
                message: "ran for its maximum duration of 7200 s (its escrowed budget)".into(),
                end: Some(t(7200)),
            })
        );
        // after one hour: settle period 0
        assert_eq!(
            decide(&view(&sp, &st, &ok, t(3601))),
            Step::SettlePeriods { from: 0, upto: 1 }
        );
        let mut cancelled = sp.clone();
        cancelled.cancel = true;
        assert!(matches!(
            decide(&view(&cancelled, &st, &ok, t(100))),
            Step::Finish(Finish { phase: ComputeJobPhase::Cancelled, end: Some(e), .. }) if e == t(100)
        ));
    }

    #[test]
    fn finished_deletes_pods_then_settles_then_done() {
        let sp = spec(2);
        let mut st = status(ComputeJobPhase::Cancelled);
        st.attempts = 1;
        let live = [pod(0, 1, PodPhase::Running), pod(1, 1, PodPhase::Succeeded)];
        assert_eq!(
            decide(&view(&sp, &st, &live, t(0))),
            Step::DeletePods {
                names: vec!["j-a1-w0".into()]
            }
        );
        assert_eq!(decide(&view(&sp, &st, &[], t(0))), Step::Settle);
        st.phase = ComputeJobPhase::Settled;
        assert_eq!(decide(&view(&sp, &st, &live, t(0))), Step::Done);
    }

    #[test]
    fn deletion_cancels() {
        let sp = spec(1);
        let st = status(ComputeJobPhase::Scheduling);
        let mut v = view(&sp, &st, &[], t(0));
        v.deleting = true;
        assert!(matches!(
            decide(&v),
            Step::Finish(Finish {
                phase: ComputeJobPhase::Cancelled,
                ..
            })
        ));
    }

    fn timed(i: u32, phase: PodPhase, started: i64, finished: Option<i64>) -> PodView {
        PodView {
            started: Some(t(started)),
            finished: finished.map(t),
            ..pod(i, 1, phase)
        }
    }

    /// The first attempt's gang, scheduling since t(0).
    fn scheduling() -> ComputeJobStatus {
        let mut st = status(ComputeJobPhase::Scheduling);
        st.attempts = 1;
        st.scheduling_since = Some(time(t(0)));
        st
    }

    /// Workers 0 and 1 of the first attempt: (phase, started, finished) each.
    fn two(w0: (PodPhase, i64, Option<i64>), w1: (PodPhase, i64, Option<i64>)) -> [PodView; 2] {
        [timed(0, w0.0, w0.1, w0.2), timed(1, w1.0, w1.1, w1.2)]
    }

    /// Asserts the job finishes in `phase`, billed up to `end`.
    fn assert_finish(step: Step, phase: ComputeJobPhase, end: DateTime<Utc>) {
        match step {
            Step::Finish(f) => {
                assert_eq!(f.phase, phase);
                assert_eq!(f.end, Some(end));
            }
            other => panic!("{other:?}"),
        }
    }

    fn running_status(start: i64) -> ComputeJobStatus {
        let mut st = status(ComputeJobPhase::Running);
        st.attempts = 1;
        st.start_time = Some(time(t(start)));
        st.deadline = Some(time(t(start + 7200)));
        st.deadline_duration_seconds = Some(7200);
        st
    }

    #[test]
    fn the_gang_runs_from_its_last_container_start_not_from_when_it_is_noticed() {
        let sp = spec(2);
        let st = scheduling();
        let pods = two((PodPhase::Running, 10, None), (PodPhase::Running, 12, None));
        // noticed 250 s later: billing still starts when the last worker started
        assert_eq!(
            decide(&view(&sp, &st, &pods, t(262))),
            Step::Start { at: t(12) }
        );
        // a start time in the future (clock skew) is clamped to now
        let pods = two(
            (PodPhase::Running, 10, None),
            (PodPhase::Running, 400, None),
        );
        assert_eq!(
            decide(&view(&sp, &st, &pods, t(300))),
            Step::Start { at: t(300) }
        );
    }

    #[test]
    fn a_job_ends_when_its_workers_finished_not_when_it_is_noticed() {
        let sp = spec(2);
        let st = running_status(100);
        let pods = two(
            (PodPhase::Succeeded, 100, Some(190)),
            (PodPhase::Succeeded, 100, Some(250)),
        );
        assert_finish(
            decide(&view(&sp, &st, &pods, t(500))),
            ComputeJobPhase::Succeeded,
            t(250),
        );
        let pods = two(
            (PodPhase::Failed, 100, Some(160)),
            (PodPhase::Running, 100, None),
        );
        assert_finish(
            decide(&view(&sp, &st, &pods, t(500))),
            ComputeJobPhase::Failed,
            t(160),
        );
    }

    #[test]
    fn shortening_max_duration_never_ends_the_job_in_the_past() {
        let mut sp = spec(1);
        let st = running_status(0);
        let pods = [timed(0, PodPhase::Running, 0, None)];
        // at t=3000 the requester shortens 7200 -> 600: the job ends now, not at 600;
        // shortened to 5000 at t=3000: the spec's end is still ahead
        for (max, end) in [(600, 3000), (5000, 5000)] {
            sp.max_duration_seconds = max;
            assert_eq!(
                decide(&view(&sp, &st, &pods, t(3000))),
                Step::SetDeadline {
                    at: t(end),
                    duration_seconds: max
                },
                "shortened to {max} s at t=3000"
            );
        }
        // once recorded, the job expires at the recorded deadline, billed up to it
        let mut st2 = st.clone();
        st2.deadline = Some(time(t(3000)));
        st2.deadline_duration_seconds = Some(600);
        sp.max_duration_seconds = 600;
        assert_finish(
            decide(&view(&sp, &st2, &pods, t(3001))),
            ComputeJobPhase::Expired,
            t(3000),
        );
        // the deadline never moves later, even if the spec were lengthened
        sp.max_duration_seconds = 9000;
        assert_eq!(
            deadline(&sp, &st, t(10)),
            (t(7200), true),
            "a longer duration than escrowed is never granted"
        );
    }

    #[test]
    fn workers_served_in_turn_are_no_gang() {
        let sp = spec(2);
        let st = scheduling();
        // worker 0 ran 10..14 s, worker 1 started at 15 s on the same GPU
        let pods = two(
            (PodPhase::Succeeded, 10, Some(14)),
            (PodPhase::Running, 15, None),
        );
        match decide(&view(&sp, &st, &pods, t(16))) {
            Step::ReleaseGang { reason, retry, .. } => {
                assert_eq!(reason, "GangNotConcurrent");
                assert!(retry);
            }
            other => panic!("{other:?}"),
        }
        // overlapping: a gang, even if one has finished since
        let pods = two(
            (PodPhase::Succeeded, 10, Some(16)),
            (PodPhase::Running, 15, None),
        );
        assert_eq!(
            decide(&view(&sp, &st, &pods, t(17))),
            Step::Start { at: t(15) }
        );
    }
}
