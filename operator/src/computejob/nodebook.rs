//! What a job records on the GpuNodes its workers run on, exactly once:
//!
//! - while it runs, an allocation `{uid, job, gpus, since}` in `status.allocations`
//!   (`allocatedGpus` = Σ gpus, `jobs.running` = the number of allocations);
//! - when it ends, the allocation moves to `status.allocationHistory` (`[from, to)`,
//!   pruned to the last hours: idle rewards are weighted by it) and its outcome is
//!   counted (`jobs.succeeded`, `jobs.failedByProvider` on the node at fault,
//!   `jobs.failedByRequester`);
//! - each confirmed settlement adds what it paid the node's wallet to
//!   `earnings.computeIo` / `computeUsdc`.
//!
//! **Exactly once**: [`plan`] (pure) says what is due from the job's status and its
//! `status.nodeBook` progress; each node's bookings are applied ([`apply`], pure) in
//! one compare-and-swap write of the GpuNode status (a merge patch carrying the
//! `resourceVersion` it read; retried on 409). Outcomes and earnings carry an
//! idempotency key kept in the GpuNode's `status.recorded` ring (the last
//! [`RING`] keys), checked in the same write, so a step replayed after a crash
//! (GpuNode written, job progress not) changes nothing. The job's `nodeBook` is
//! written after the nodes, so a replay is only ever that window.
//!
//! The GpuNode controller's and the device plugin's server-side applies never name
//! these fields.

use super::Run;
use super::billing;
use super::machine::{Finish, PodPhase, PodView};
use crate::conditions::{from_time, time};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::settlement::REFUND;
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use solgrid_crds::{
    Allocation, AllocationSpan, ComputeJobPhase, ComputeJobSpec, ComputeJobStatus, GpuNode,
    GpuNodeStatus, JobOutcome, JobSettlement, NodeBook, PaymentToken, SettlementState,
};
use std::collections::BTreeMap;
use tracing::{debug, warn};

/// Idempotency keys kept per GpuNode.
pub const RING: usize = 128;
/// Finished allocations kept per GpuNode (besides the age limit).
pub const HISTORY_MAX: usize = 256;
/// Compare-and-swap attempts per GpuNode write.
pub const CAS_ATTEMPTS: u32 = 8;
/// The field manager of these writes.
pub const FIELD_MANAGER: &str = "solgrid-operator-jobs";

/// One change to a GpuNode's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Booking {
    /// The job holds `gpus` GPUs here since `since`.
    Allocate {
        uid: String,
        job: String,
        gpus: u32,
        since: DateTime<Utc>,
    },
    /// The job held `gpus` GPUs over `[from, to)` and ended with `outcome` here.
    Release {
        uid: String,
        gpus: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        outcome: JobOutcome,
    },
    /// Settlement `key` paid the node's wallet `amount` base units of `token`.
    Earn {
        key: String,
        token: PaymentToken,
        amount: u64,
    },
}

/// The ring key of a job's release (its outcome).
pub fn outcome_key(uid: &str) -> String {
    format!("{uid}/outcome")
}

/// The ring key of a settlement's earnings (settlement keys are `<uid>/<period>`).
pub fn earn_key(settlement_key: &str) -> String {
    format!("{settlement_key}/earned")
}

/// Pod reasons (and `DisruptionTarget` condition reasons) that mean the node, not
/// the workload, ended the pod.
const NODE_FAULTS: [&str; 8] = [
    "Evicted",
    "NodeLost",
    "UnexpectedAdmissionError",
    "NodeShutdown",
    "Shutdown",
    "Terminated",
    "DeletionByTaintManager",
    "TerminationByKubelet",
];

/// Whether a failed pod's `status.reason` (or a `DisruptionTarget` reason) names
/// a node-side cause.
pub fn node_fault(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| NODE_FAULTS.contains(&r))
}

/// How a job that stopped counts on its nodes: the outcome and the nodes at fault
/// (for `FailedByProvider`). A job that never ran counts nothing.
pub fn outcome_of(
    f: &Finish,
    pods: &[PodView],
    status: &ComputeJobStatus,
    workers: u32,
) -> (JobOutcome, Vec<String>) {
    if f.end.is_none() || status.start_time.is_none() {
        return (JobOutcome::None, Vec::new());
    }
    let current: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.attempt == status.attempts && !p.deleting)
        .collect();
    let node_of = |i: u32| {
        status
            .workers
            .iter()
            .find(|w| w.index == i)
            .and_then(|w| w.node.clone())
    };
    match f.phase {
        ComputeJobPhase::Succeeded | ComputeJobPhase::Expired | ComputeJobPhase::Cancelled => {
            (JobOutcome::Succeeded, Vec::new())
        }
        ComputeJobPhase::Failed => {
            if let Some(p) = current.iter().find(|p| p.phase == PodPhase::Failed) {
                let node = p.node.clone().or_else(|| node_of(p.index));
                return if p.node_fault {
                    (JobOutcome::FailedByProvider, node.into_iter().collect())
                } else {
                    (JobOutcome::FailedByRequester, Vec::new())
                };
            }
            // a worker vanished: its node lost it
            let lost: Vec<String> = (0..workers)
                .filter(|i| !current.iter().any(|p| p.index == *i))
                .filter_map(node_of)
                .collect();
            (JobOutcome::FailedByProvider, lost)
        }
        _ => (JobOutcome::None, Vec::new()),
    }
}

/// The outcome node `node` counts for a job that ended with `nb.outcome`.
fn node_outcome(nb: &NodeBook, node: &str) -> JobOutcome {
    match nb.outcome {
        JobOutcome::FailedByProvider if !nb.faulty_nodes.iter().any(|n| n == node) => {
            JobOutcome::None
        }
        o => o,
    }
}

/// What a settlement paid each node (its payouts are per wallet; a wallet shared by
/// several nodes is split by their usage, the remainder to the first, so the parts
/// add up to the payout exactly).
pub fn earnings_by_node(js: &JobSettlement) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut add = |node: &str, amount: u64| match out.iter_mut().find(|(n, _)| n == node) {
        Some((_, a)) => *a = a.saturating_add(amount),
        None => out.push((node.to_string(), amount)),
    };
    for p in js.payouts.iter().filter(|p| p.to != REFUND && p.amount > 0) {
        let nodes: Vec<&str> = p.to.split(',').filter(|n| !n.is_empty()).collect();
        let used = |n: &str| -> u128 {
            js.usage
                .iter()
                .filter(|u| u.node == n)
                .map(|u| u.gpu_ms as u128)
                .sum()
        };
        let total: u128 = nodes.iter().map(|n| used(n)).sum();
        if nodes.len() <= 1 || total == 0 {
            if let Some(n) = nodes.first() {
                add(n, p.amount);
            }
            continue;
        }
        let parts: Vec<u64> = nodes
            .iter()
            .map(|n| (p.amount as u128 * used(n) / total) as u64)
            .collect();
        let rest = p.amount - parts.iter().sum::<u64>();
        for (i, (n, part)) in nodes.iter().zip(parts).enumerate() {
            add(n, if i == 0 { part + rest } else { part });
        }
    }
    out
}

/// What is due on each node now, and the job's `nodeBook` once it is done.
pub fn plan(
    spec: &ComputeJobSpec,
    status: &ComputeJobStatus,
    uid: &str,
    job: &str,
) -> (BTreeMap<String, Vec<Booking>>, NodeBook) {
    let mut nb = status.node_book.clone();
    let mut due: BTreeMap<String, Vec<Booking>> = BTreeMap::new();
    let per_node: Vec<(String, u32)> = billing::gpus_per_node(spec, status)
        .into_iter()
        .filter(|(n, _)| !n.is_empty())
        .map(|(n, g)| (n, u32::try_from(g).unwrap_or(u32::MAX)))
        .collect();
    let start = status.start_time.as_ref().map(from_time);
    if let Some(since) = start {
        if status.phase == ComputeJobPhase::Running && !nb.allocated {
            for (node, gpus) in &per_node {
                due.entry(node.clone())
                    .or_default()
                    .push(Booking::Allocate {
                        uid: uid.into(),
                        job: job.into(),
                        gpus: *gpus,
                        since,
                    });
            }
            nb.allocated = true;
        }
        let ended = status.phase.is_finished();
        if ended && !nb.released && (nb.allocated || nb.outcome != JobOutcome::None) {
            let to = status.end_time.as_ref().map(from_time).unwrap_or(since);
            for (node, gpus) in &per_node {
                due.entry(node.clone()).or_default().push(Booking::Release {
                    uid: uid.into(),
                    gpus: *gpus,
                    from: since,
                    to: to.max(since),
                    outcome: node_outcome(&nb, node),
                });
            }
            nb.released = true;
        }
    }
    let booked = nb.settlements_booked as usize;
    for js in status.settlements.iter().skip(booked) {
        if js.state() != SettlementState::Confirmed {
            break; // in order: settlements confirm one after the other
        }
        for (node, amount) in earnings_by_node(js) {
            due.entry(node).or_default().push(Booking::Earn {
                key: js.record.key.clone(),
                token: spec.payment_token,
                amount,
            });
        }
        nb.settlements_booked += 1;
    }
    (due, nb)
}

fn remember(st: &mut GpuNodeStatus, key: String) {
    st.recorded.push(key);
    let over = st.recorded.len().saturating_sub(RING);
    st.recorded.drain(..over);
}

/// `allocatedGpus` and `jobs.running` from the allocations.
fn recount(st: &mut GpuNodeStatus) {
    st.allocated_gpus = st
        .allocations
        .iter()
        .fold(0u32, |a, x| a.saturating_add(x.gpus));
    st.jobs.running = u32::try_from(st.allocations.len()).unwrap_or(u32::MAX);
}

/// Drops history older than `now - keep_ms` (and beyond [`HISTORY_MAX`]).
fn prune(st: &mut GpuNodeStatus, now_ms: u64, keep_ms: u64) {
    let cutoff = now_ms.saturating_sub(keep_ms);
    st.allocation_history
        .retain(|h| from_time(&h.to).timestamp_millis().max(0) as u64 >= cutoff);
    let over = st.allocation_history.len().saturating_sub(HISTORY_MAX);
    st.allocation_history.drain(..over);
}

/// Applies one booking to a GpuNode status; `false` when it was already there.
pub fn apply(st: &mut GpuNodeStatus, b: &Booking, now_ms: u64, keep_ms: u64) -> bool {
    let changed = match b {
        Booking::Allocate {
            uid,
            job,
            gpus,
            since,
        } => {
            let released = st.recorded.contains(&outcome_key(uid));
            if released || st.allocations.iter().any(|a| a.uid == *uid) {
                false
            } else {
                st.allocations.push(Allocation {
                    uid: uid.clone(),
                    job: job.clone(),
                    gpus: *gpus,
                    since: time(*since),
                });
                true
            }
        }
        Booking::Release {
            uid,
            gpus,
            from,
            to,
            outcome,
        } => {
            let key = outcome_key(uid);
            let before = st.allocations.len();
            st.allocations.retain(|a| a.uid != *uid);
            if st.recorded.contains(&key) {
                st.allocations.len() != before
            } else {
                st.allocation_history.push(AllocationSpan {
                    uid: uid.clone(),
                    gpus: *gpus,
                    from: time(*from),
                    to: time(*to),
                });
                let j = &mut st.jobs;
                let counter = match outcome {
                    JobOutcome::Succeeded => Some(&mut j.succeeded),
                    JobOutcome::FailedByProvider => Some(&mut j.failed_by_provider),
                    JobOutcome::FailedByRequester => Some(&mut j.failed_by_requester),
                    JobOutcome::None => None,
                };
                if let Some(c) = counter {
                    *c = c.saturating_add(1);
                    j.last_outcome = Some(time(
                        DateTime::from_timestamp_millis(now_ms as i64).unwrap_or_default(),
                    ));
                }
                remember(st, key);
                true
            }
        }
        Booking::Earn { key, token, amount } => {
            let key = earn_key(key);
            if st.recorded.contains(&key) {
                false
            } else {
                let e = &mut st.earnings;
                let c = match token {
                    PaymentToken::Io => &mut e.compute_io,
                    PaymentToken::Usdc => &mut e.compute_usdc,
                };
                *c = c.saturating_add(*amount);
                remember(st, key);
                true
            }
        }
    };
    if changed {
        recount(st);
        prune(st, now_ms, keep_ms);
    }
    changed
}

/// The merge patch of the fields this module owns, guarded by `resource_version`.
pub fn status_patch(st: &GpuNodeStatus, resource_version: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "status": {
            "allocations": st.allocations,
            "allocatedGpus": st.allocated_gpus,
            "allocationHistory": st.allocation_history,
            "recorded": st.recorded,
            "jobs": st.jobs,
            "earnings": {
                "computeIo": st.earnings.compute_io,
                "computeUsdc": st.earnings.compute_usdc,
            },
        },
    })
}

/// The GpuNode of a Kubernetes Node (from the cache; else the Node's own name).
fn gpunode_name(ctx: &Context, node: &str) -> String {
    ctx.caches
        .gpunodes
        .as_ref()
        .and_then(|s| {
            s.find(|g| g.metadata.name.as_deref() == Some(node) || g.spec.node_name == node)
        })
        .map(|g| g.name_any())
        .unwrap_or_else(|| node.to_string())
}

/// How long finished allocations are kept: two reward periods, at least 2 h.
pub fn history_keep_ms(ctx: &Context) -> u64 {
    let period = ctx.config.reward_interval.as_millis() as u64;
    period.saturating_mul(2).max(2 * 3_600_000)
}

/// Applies `bookings` to one node's GpuNode: read, apply, write with the version
/// read (compare-and-swap), again on a conflict. A missing GpuNode is skipped.
pub async fn book_node(ctx: &Context, node: &str, bookings: &[Booking], now_ms: u64) -> Result<()> {
    let api: Api<GpuNode> = Api::all(ctx.client.clone());
    let name = gpunode_name(ctx, node);
    let keep = history_keep_ms(ctx);
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    for attempt in 1..=CAS_ATTEMPTS {
        let Some(gn) = api.get_opt(&name).await? else {
            warn!(gpunode = %name, "no GpuNode for a job's node: nothing recorded there");
            return Ok(());
        };
        let mut st = gn.status.clone().unwrap_or_default();
        let mut changed = false;
        for b in bookings {
            changed |= apply(&mut st, b, now_ms, keep);
        }
        if !changed {
            debug!(gpunode = %name, "bookings already recorded");
            return Ok(());
        }
        let body = status_patch(&st, gn.metadata.resource_version.as_deref());
        match api.patch_status(&name, &pp, &Patch::Merge(&body)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                debug!(gpunode = %name, attempt, "GpuNode changed meanwhile: again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::store(format!(
        "GpuNode {name}: still conflicting after {CAS_ATTEMPTS} attempts"
    )))
}

/// Records on the job's nodes what is due, then the progress in `status.nodeBook`
/// (written now when `write`; else by the caller's next write). Returns whether
/// the progress moved.
pub(super) async fn sync(r: &mut Run<'_>, write: bool) -> Result<bool> {
    let job = format!("{}/{}", r.ns, r.name);
    let (due, book) = plan(&r.job.spec, &r.st, &r.uid, &job);
    if book == r.st.node_book {
        return Ok(false);
    }
    let now_ms = r.now.timestamp_millis().max(0) as u64;
    for (node, bookings) in &due {
        book_node(r.ctx, node, bookings, now_ms).await?;
    }
    r.st.node_book = book;
    if write {
        r.write().await?;
    }
    Ok(true)
}

/// Records how a stopping job counts on its nodes (before its status is written).
pub(super) fn decide_outcome(r: &mut Run<'_>, f: &Finish, pods: &[PodView]) {
    if r.st.node_book.released {
        return;
    }
    let (outcome, faulty) = outcome_of(f, pods, &r.st, r.job.spec.workers);
    r.st.node_book.outcome = outcome;
    r.st.node_book.faulty_nodes = faulty;
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_crds::{GpuRequest, NodeUsage, Payout, WorkerStatus};

    const H: u64 = 3_600_000;

    fn t(ms: u64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms as i64).unwrap()
    }

    fn spec() -> ComputeJobSpec {
        ComputeJobSpec {
            gpus: GpuRequest {
                count: 2,
                ..Default::default()
            },
            workers: 3,
            ..Default::default()
        }
    }

    fn worker(index: u32, node: &str) -> WorkerStatus {
        WorkerStatus {
            index,
            pod: format!("j-a1-w{index}"),
            node: Some(node.into()),
            phase: "Running".into(),
            payout_wallet: None,
        }
    }

    fn running() -> ComputeJobStatus {
        ComputeJobStatus {
            phase: ComputeJobPhase::Running,
            attempts: 1,
            start_time: Some(time(t(10 * H))),
            workers: vec![worker(0, "a"), worker(1, "b"), worker(2, "a")],
            ..Default::default()
        }
    }

    fn pod(index: u32, node: &str, phase: PodPhase, node_fault: bool) -> PodView {
        PodView {
            name: format!("j-a1-w{index}"),
            index,
            attempt: 1,
            phase,
            node: Some(node.into()),
            deleting: false,
            started: None,
            finished: None,
            node_fault,
        }
    }

    fn settlement(period: u32, state: SettlementState) -> JobSettlement {
        JobSettlement {
            period,
            record: solgrid_crds::LedgerRecord {
                key: format!("u/{period}"),
                state,
                ..Default::default()
            },
            usage: vec![
                NodeUsage {
                    node: "a".into(),
                    wallet: "W1".into(),
                    gpu_ms: 3,
                },
                NodeUsage {
                    node: "b".into(),
                    wallet: "W1".into(),
                    gpu_ms: 1,
                },
            ],
            payouts: vec![
                Payout {
                    to: "a,b".into(),
                    wallet: "W1".into(),
                    amount: 1_001,
                },
                Payout {
                    to: REFUND.into(),
                    wallet: "P".into(),
                    amount: 50,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn running_job_allocates_per_node_once() {
        let st = running();
        let (due, nb) = plan(&spec(), &st, "u", "ns/j");
        assert!(nb.allocated);
        assert_eq!(
            due["a"],
            vec![Booking::Allocate {
                uid: "u".into(),
                job: "ns/j".into(),
                gpus: 4,
                since: t(10 * H)
            }]
        );
        assert_eq!(due.len(), 2);
        let mut st2 = st.clone();
        st2.node_book = nb;
        assert!(
            plan(&spec(), &st2, "u", "ns/j").0.is_empty(),
            "nothing due twice"
        );
        // a job that is not running yet books nothing
        let mut sched = st.clone();
        sched.phase = ComputeJobPhase::Scheduling;
        sched.start_time = None;
        assert!(plan(&spec(), &sched, "u", "ns/j").0.is_empty());
    }

    #[test]
    fn finished_job_releases_with_its_outcome_and_earnings_in_order() {
        let mut st = running();
        st.phase = ComputeJobPhase::Failed;
        st.end_time = Some(time(t(11 * H)));
        st.node_book = NodeBook {
            allocated: true,
            outcome: JobOutcome::FailedByProvider,
            faulty_nodes: vec!["b".into()],
            ..Default::default()
        };
        st.settlements = vec![
            settlement(0, SettlementState::Confirmed),
            settlement(1, SettlementState::Sent),
            settlement(2, SettlementState::Confirmed),
        ];
        let (due, nb) = plan(&spec(), &st, "u", "ns/j");
        assert!(nb.released);
        assert_eq!(nb.settlements_booked, 1, "stops at the first unconfirmed");
        let release = |gpus, outcome| Booking::Release {
            uid: "u".into(),
            gpus,
            from: t(10 * H),
            to: t(11 * H),
            outcome,
        };
        let earn = |amount| Booking::Earn {
            key: "u/0".into(),
            token: PaymentToken::Io,
            amount,
        };
        // the shared wallet's payout split 3:1 by usage, remainder to the first
        assert_eq!(due["a"], vec![release(4, JobOutcome::None), earn(751)]);
        assert_eq!(
            due["b"],
            vec![release(2, JobOutcome::FailedByProvider), earn(250)]
        );
        // an old finished job (no outcome, never allocated) counts nothing
        let mut old = st.clone();
        old.node_book = NodeBook::default();
        old.settlements.clear();
        assert!(plan(&spec(), &old, "u", "ns/j").0.is_empty());
    }

    #[test]
    fn outcomes_by_cause() {
        let st = running();
        let fin = |phase, end: bool| Finish {
            phase,
            reason: "x",
            message: String::new(),
            end: end.then(|| t(11 * H)),
        };
        let ok = [
            pod(0, "a", PodPhase::Succeeded, false),
            pod(1, "b", PodPhase::Succeeded, false),
            pod(2, "a", PodPhase::Succeeded, false),
        ];
        for p in [
            ComputeJobPhase::Succeeded,
            ComputeJobPhase::Expired,
            ComputeJobPhase::Cancelled,
        ] {
            assert_eq!(
                outcome_of(&fin(p, true), &ok, &st, 3),
                (JobOutcome::Succeeded, vec![])
            );
        }
        assert_eq!(
            outcome_of(&fin(ComputeJobPhase::Cancelled, false), &ok, &st, 3).0,
            JobOutcome::None,
            "cancelled before it ran"
        );
        let failed = fin(ComputeJobPhase::Failed, true);
        let mut exit1 = ok.clone();
        exit1[1] = pod(1, "b", PodPhase::Failed, false);
        assert_eq!(
            outcome_of(&failed, &exit1, &st, 3),
            (JobOutcome::FailedByRequester, vec![])
        );
        let mut evicted = ok.clone();
        evicted[1] = pod(1, "b", PodPhase::Failed, true);
        assert_eq!(
            outcome_of(&failed, &evicted, &st, 3),
            (JobOutcome::FailedByProvider, vec!["b".to_string()])
        );
        // worker 2 vanished: its node (from the status) is at fault
        assert_eq!(
            outcome_of(&failed, &ok[..2], &st, 3),
            (JobOutcome::FailedByProvider, vec!["a".to_string()])
        );
        assert!(node_fault(Some("Evicted")) && node_fault(Some("NodeLost")));
        assert!(!node_fault(Some("Error")) && !node_fault(None));
    }

    #[test]
    fn apply_is_idempotent_and_keeps_counts_consistent() {
        let mut st = GpuNodeStatus::default();
        let now = 12 * H;
        let alloc = |uid: &str, gpus| Booking::Allocate {
            uid: uid.into(),
            job: "ns/j".into(),
            gpus,
            since: t(10 * H),
        };
        assert!(apply(&mut st, &alloc("u", 4), now, 2 * H));
        assert!(apply(&mut st, &alloc("v", 2), now, 2 * H));
        assert!(!apply(&mut st, &alloc("u", 4), now, 2 * H));
        assert_eq!((st.allocated_gpus, st.jobs.running), (6, 2));
        let release = Booking::Release {
            uid: "u".into(),
            gpus: 4,
            from: t(10 * H),
            to: t(11 * H),
            outcome: JobOutcome::FailedByRequester,
        };
        assert!(apply(&mut st, &release, now, 2 * H));
        assert!(!apply(&mut st, &release, now, 2 * H), "replayed: nothing");
        assert_eq!((st.allocated_gpus, st.jobs.running), (2, 1));
        assert_eq!(st.jobs.failed_by_requester, 1);
        assert_eq!(st.allocation_history.len(), 1);
        // a stale allocate after the release never resurrects the job
        assert!(!apply(&mut st, &alloc("u", 4), now, 2 * H));
        let earn = Booking::Earn {
            key: "u/0".into(),
            token: PaymentToken::Usdc,
            amount: 7,
        };
        assert!(apply(&mut st, &earn, now, 2 * H));
        assert!(!apply(&mut st, &earn, now, 2 * H));
        assert_eq!((st.earnings.compute_usdc, st.earnings.compute_io), (7, 0));
        // history older than the keep window is pruned with the next change
        assert!(apply(&mut st, &alloc("w", 1), 14 * H, 2 * H));
        assert!(st.allocation_history.is_empty());
        // the ring is bounded, oldest out first
        for i in 0..(RING as u64 + 5) {
            let e = Booking::Earn {
                key: format!("k/{i}"),
                token: PaymentToken::Io,
                amount: 1,
            };
            assert!(apply(&mut st, &e, now, 2 * H));
        }
        assert_eq!(st.recorded.len(), RING);
        assert_eq!(
            st.recorded.last().unwrap(),
            &format!("k/{}/earned", RING + 4)
        );
    }

    #[test]
    fn patch_names_only_these_fields_and_the_version() {
        let p = status_patch(&GpuNodeStatus::default(), Some("9"));
        assert_eq!(p["metadata"]["resourceVersion"], "9");
        let keys: Vec<&String> = p["status"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "allocatedGpus",
                "allocationHistory",
                "allocations",
                "earnings",
                "jobs",
                "recorded"
            ]
        );
        assert!(p["status"]["earnings"].get("idleRewardsIo").is_none());
    }

    #[test]
    fn the_gpunode_controllers_apply_never_claims_these_fields() {
        let mut st = GpuNodeStatus::default();
        apply(
            &mut st,
            &Booking::Allocate {
                uid: "u".into(),
                job: "ns/j".into(),
                gpus: 1,
                since: t(H),
            },
            H,
            H,
        );
        let gn = GpuNode::new("n", Default::default());
        let body = crate::gpunode::status_apply(&gn, &st);
        for k in [
            "allocations",
            "allocatedGpus",
            "allocationHistory",
            "recorded",
            "jobs",
            "earnings",
        ] {
            assert!(body["status"].get(k).is_none(), "{k} in {body}");
        }
    }
}
