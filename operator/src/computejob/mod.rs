//! The ComputeJob controller.
//!
//! Each reconcile reads the job and its worker pods, validates what the API server
//! could not, and then walks the pure state machine ([`machine::decide`]) step by
//! step: each step builds what it needs (a quote, an escrow intent, pods, a
//! settlement plan), applies it (ledger, API server), and writes the whole status
//! by server-side apply with `observedGeneration`, a condition and an Event per
//! transition. Steps that wait on the cluster (pods) end the reconcile.
//!
//! A finalizer (`solgrid.dev/settlement`) keeps a deleted job until it is settled:
//! deleting a running job cancels it, settles its usage and refunds the escrow.

pub mod billing;
pub mod machine;
pub mod nodebook;
pub mod pods;
pub mod quote;

use crate::conditions;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::settlement::{ApiWriter, JobStore, escrow_intent, status_patch};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use machine::{PodPhase, PodView, Step, View};
use solgrid_crds::{
    ComputeJob, ComputeJobPhase, ComputeJobStatus, GpuNode, JobSettlement, SECRET_ADDRESS_KEY,
    SECRET_KEYPAIR_KEY, SettlementState, WorkerStatus,
};
use solgrid_ledger::{Executor, ExecutorConfig, PassReport};
use solgrid_market::ledger::Intent;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

pub use solgrid_crds::labels::{
    FINALIZER_SETTLEMENT as FINALIZER, LABEL_ATTEMPT, LABEL_JOB, LABEL_WORKER,
};
/// How soon a sent escrow or settlement transaction is looked up again: Solana
/// confirms in about half a second, so a 5 s poll added ~5 s to every step.
const IN_FLIGHT_POLL: Duration = Duration::from_secs(2);
/// The controller's name (metrics label).
pub const CONTROLLER: &str = "computejob";

/// Condition types.
pub mod cond {
    pub const VALID: &str = "Valid";
    pub const QUOTED: &str = "Quoted";
    pub const FUNDED: &str = "Funded";
    pub const SCHEDULED: &str = "Scheduled";
    pub const RUNNING: &str = "Running";
    pub const COMPLETE: &str = "Complete";
    pub const SETTLED: &str = "Settled";
}

/// Runs the controller (until its future is dropped).
pub async fn run(ctx: Arc<Context>) {
    let (jobs, pods): (Api<ComputeJob>, Api<Pod>) = match &ctx.config.watch_namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    if let Err(e) = jobs.list(&ListParams::default().limit(1)).await {
        warn!(error = %e, "ComputeJob CRD is not queryable; is it installed?");
    }
    let controller = Controller::new(jobs, watcher::Config::default().any_semantic())
        .owns(pods, watcher::Config::default().labels(LABEL_JOB))
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        );
    let store = controller.store();
    let metrics = ctx.metrics.clone();
    let gauge = async move {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let mut counts: HashMap<&'static str, i64> = HashMap::new();
            for j in store.state() {
                let p = j.status.as_ref().map(|s| s.phase).unwrap_or_default();
                *counts.entry(phase_str(p)).or_default() += 1;
            }
            for p in ALL_PHASES {
                let name = phase_str(p);
                metrics
                    .jobs_by_phase
                    .with_label_values(&[name])
                    .set(counts.get(name).copied().unwrap_or(0));
            }
        }
    };
    let run = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "computejob reconcile failed");
            }
        });
    tokio::select! {
        _ = run => {}
        _ = gauge => {}
    }
}

const ALL_PHASES: [ComputeJobPhase; 10] = [
    ComputeJobPhase::Pending,
    ComputeJobPhase::Quoted,
    ComputeJobPhase::Funded,
    ComputeJobPhase::Scheduling,
    ComputeJobPhase::Running,
    ComputeJobPhase::Succeeded,
    ComputeJobPhase::Failed,
    ComputeJobPhase::Cancelled,
    ComputeJobPhase::Expired,
    ComputeJobPhase::Settled,
];

/// The phase's name as in the API.
pub fn phase_str(p: ComputeJobPhase) -> &'static str {
    match p {
        ComputeJobPhase::Pending => "Pending",
        ComputeJobPhase::Quoted => "Quoted",
        ComputeJobPhase::Funded => "Funded",
        ComputeJobPhase::Scheduling => "Scheduling",
        ComputeJobPhase::Running => "Running",
        ComputeJobPhase::Succeeded => "Succeeded",
        ComputeJobPhase::Failed => "Failed",
        ComputeJobPhase::Cancelled => "Cancelled",
        ComputeJobPhase::Expired => "Expired",
        ComputeJobPhase::Settled => "Settled",
    }
}

fn key_of(job: &ComputeJob) -> String {
    format!(
        "cj:{}/{}",
        job.namespace().unwrap_or_default(),
        job.name_any()
    )
}

/// Backoff per object: transient errors from 5 s doubling to 5 min; a malformed
/// object waits 5 min (an edit re-triggers it at once).
pub fn error_policy(job: Arc<ComputeJob>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failure(CONTROLLER, err.metric_label());
    let key = key_of(&job);
    warn!(job = %key, error = %err, "reconcile failed");
    Action::requeue(ctx.failure_backoff(&key, err))
}

/// Reconciles one job (behind the finalizer).
pub async fn reconcile(job: Arc<ComputeJob>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = job
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let key = key_of(&job);
    let api: Api<ComputeJob> = Api::namespaced(ctx.client.clone(), &ns);
    let c = ctx.clone();
    let action = finalizer(&api, FINALIZER, job, |event| async move {
        match event {
            Finalizer::Apply(job) => drive(&job, &c, false).await.map(|o| o.action),
            Finalizer::Cleanup(job) => {
                let o = drive(&job, &c, true).await?;
                if o.phase == ComputeJobPhase::Settled {
                    info!(job = %key_of(&job), "settled: releasing the finalizer");
                    Ok(Action::await_change())
                } else {
                    Err(Error::SettlementPending(format!(
                        "{} is {}",
                        job.name_any(),
                        phase_str(o.phase)
                    )))
                }
            }
        }
    })
    .await
    .map_err(Error::from)?;
    ctx.reset_failures(&key);
    Ok(action)
}

/// What a drive ended with.
pub struct Outcome {
    pub action: Action,
    pub phase: ComputeJobPhase,
}

/// One reconcile's worth of state.
struct Run<'a> {
    ctx: &'a Context,
    job: &'a ComputeJob,
    api: Api<ComputeJob>,
    ns: String,
    name: String,
    uid: String,
    st: ComputeJobStatus,
    now: DateTime<Utc>,
    /// The job's resourceVersion as of our last read or write (status applies are
    /// compare-and-swap on it).
    rv: Option<String>,
}

impl Run<'_> {
    fn generation(&self) -> Option<i64> {
        self.job.metadata.generation
    }

    fn condition(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>) {
        let g = self.generation();
        conditions::set_condition(
            &mut self.st.conditions,
            type_,
            status,
            reason,
            message,
            g,
            self.now,
        );
    }

    /// Moves to `phase` (metrics), with a message.
    fn phase(&mut self, phase: ComputeJobPhase, message: impl Into<String>) {
        if self.st.phase != phase {
            self.ctx
                .metrics
                .job_transitions
                .with_label_values(&[phase_str(self.st.phase), phase_str(phase)])
                .inc();
        }
        self.st.phase = phase;
        self.st.message = Some(message.into());
    }

    /// Applies the whole status (server-side apply, forced, our field manager).
    async fn write(&mut self) -> Result<()> {
        self.st.observed_generation = self.generation();
        let pp = PatchParams::apply(&self.ctx.config.field_manager).force();
        let updated = self
            .api
            .patch_status(
                &self.name,
                &pp,
                &Patch::Apply(&status_patch(&self.st, self.rv.as_deref())),
            )
            .await?;
        self.rv = updated.metadata.resource_version;
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: impl Into<String>, action: &str) {
        self.publish(KEvent {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: action.into(),
            secondary: None,
        })
        .await;
    }

    async fn publish(&self, ev: KEvent) {
        if let Err(e) = self
            .ctx
            .recorder
            .publish(&ev, &self.job.object_ref(&()))
            .await
        {
            warn!(job = %self.name, error = %e, "publishing an Event failed");
        }
    }
}

/// Drives a job as far as it can go now.
pub async fn drive(job: &ComputeJob, ctx: &Context, deleting: bool) -> Result<Outcome> {
    let ns = job
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = job.name_any();
    let uid = job.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let mut r = Run {
        ctx,
        job,
        api: Api::namespaced(ctx.client.clone(), &ns),
        ns,
        name,
        uid,
        st: job.status.clone().unwrap_or_default(),
        now: ctx.clock.now(),
        rv: job.metadata.resource_version.clone(),
    };
    let deleting = deleting || job.metadata.deletion_timestamp.is_some();

    // Validate what the API server cannot. A malformed job gets a condition and
    // waits for an edit; it is not retried hot and never blocks others.
    if !deleting && !r.st.phase.is_finished() {
        let check = pods::validate_name(&r.name, job.spec.workers).and_then(|_| {
            quote::target_model(
                &job.spec,
                ctx.config.default_nvidia_model,
                ctx.config.default_apple_model,
            )
            .map(|_| ())
        });
        if let Err(msg) = check {
            let already = conditions::get(&r.st.conditions, cond::VALID)
                .is_some_and(|c| c.status == "False" && c.message == msg);
            if !already {
                r.condition(cond::VALID, false, "InvalidSpec", msg.clone());
                r.write().await?;
                r.event(EventType::Warning, "InvalidSpec", msg, "Validate")
                    .await;
            }
            return Ok(Outcome {
                action: Action::await_change(),
                phase: r.st.phase,
            });
        }
        if conditions::get(&r.st.conditions, cond::VALID).is_some_and(|c| c.status != "True") {
            r.condition(cond::VALID, true, "Valid", "the spec is valid");
        }
    }

    let mut observed = observe_pods(ctx, &r.ns, &r.name).await?;
    // what an earlier reconcile left unrecorded on the nodes (it died in between)
    nodebook::sync(&mut r, true).await?;
    for _ in 0..16 {
        r.now = ctx.clock.now();
        let view = View {
            spec: &job.spec,
            status: &r.st,
            deleting,
            pods: &observed,
            now: r.now,
            period_ms: ctx.config.periods.period_ms,
            gang_max_attempts: ctx.config.gang_max_attempts,
            running_requeue: ctx.config.running_requeue,
        };
        let step = machine::decide(&view);
        debug!(job = %r.name, ?step, "step");
        match step {
            Step::Done => {
                return Ok(Outcome {
                    action: Action::await_change(),
                    phase: r.st.phase,
                });
            }
            Step::Wait(d) => {
                return Ok(Outcome {
                    action: Action::requeue(d),
                    phase: r.st.phase,
                });
            }
            Step::Quote => {
                if let Some(a) = step_quote(&mut r).await? {
                    return Ok(Outcome {
                        action: a,
                        phase: r.st.phase,
                    });
                }
            }
            Step::Fund => {
                if let Some(a) = step_fund(&mut r).await? {
                    return Ok(Outcome {
                        action: a,
                        phase: r.st.phase,
                    });
                }
            }
            Step::CreatePods { attempt, missing } => {
                step_create_pods(&mut r, attempt, &missing).await?;
                return Ok(Outcome {
                    action: Action::requeue(Duration::from_secs(
                        job.spec.gang_timeout_seconds.max(1) as u64,
                    )),
                    phase: r.st.phase,
                });
            }
            Step::Start { at } => {
                let current: Vec<&PodView> = observed
                    .iter()
                    .filter(|p| p.attempt == r.st.attempts && !p.deleting)
                    .collect();
                r.st.workers = workers_of(&current, job.spec.workers);
                // snapshot each node's payout wallet now: what the job earns goes to
                // the wallet the provider had when the work began
                let wallets = live_payout_wallets(ctx, &r.st).await?;
                for w in r.st.workers.iter_mut() {
                    w.payout_wallet = w.node.as_ref().and_then(|n| wallets.get(n).cloned());
                }
                let mut nodes: Vec<String> =
                    r.st.workers.iter().filter_map(|w| w.node.clone()).collect();
                nodes.sort();
                nodes.dedup();
                r.st.nodes = nodes;
                r.st.start_time = Some(conditions::time(at));
                r.st.deadline = Some(conditions::time(
                    at + chrono::Duration::seconds(job.spec.max_duration_seconds as i64),
                ));
                r.st.deadline_duration_seconds = Some(job.spec.max_duration_seconds);
                let msg = format!(
                    "all {} workers running on {} node(s)",
                    job.spec.workers,
                    r.st.nodes.len()
                );
                r.phase(ComputeJobPhase::Running, msg.clone());
                r.condition(cond::SCHEDULED, true, "GangRunning", msg.clone());
                r.condition(cond::RUNNING, true, "GangRunning", msg.clone());
                r.write().await?;
                r.event(EventType::Normal, "Running", msg, "Start").await;
                nodebook::sync(&mut r, true).await?;
                return Ok(Outcome {
                    action: Action::requeue(ctx.config.running_requeue),
                    phase: r.st.phase,
                });
            }
            Step::ReleaseGang {
                attempt,
                retry,
                reason,
                message,
            } => {
                let names: Vec<String> = observed
                    .iter()
                    .filter(|p| p.attempt == attempt && !p.deleting)
                    .map(|p| p.name.clone())
                    .collect();
                delete_pods(&r, &names).await?;
                mark_deleting(&mut observed, &names);
                r.ctx
                    .metrics
                    .gang_timeouts
                    .with_label_values(&[if retry { "retry" } else { "failed" }])
                    .inc();
                r.st.scheduling_since = None;
                if retry {
                    r.phase(ComputeJobPhase::Funded, format!("{message}; retrying"));
                    r.condition(cond::SCHEDULED, false, reason, message.clone());
                } else {
                    r.phase(ComputeJobPhase::Failed, format!("{message}; giving up"));
                    r.condition(cond::SCHEDULED, false, reason, message.clone());
                    r.condition(cond::COMPLETE, true, reason, message.clone());
                    r.st.end_time = Some(conditions::time(r.now));
                }
                r.write().await?;
                r.event(EventType::Warning, reason, message, "ReleaseGang")
                    .await;
            }
            Step::Finish(f) => {
                nodebook::decide_outcome(&mut r, &f, &observed);
                let live: Vec<String> = observed
                    .iter()
                    .filter(|p| {
                        !p.deleting && !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed)
                    })
                    .map(|p| p.name.clone())
                    .collect();
                delete_pods(&r, &live).await?;
                mark_deleting(&mut observed, &live);
                // refresh worker phases, record usage
                let current: Vec<&PodView> = observed
                    .iter()
                    .filter(|p| p.attempt == r.st.attempts)
                    .collect();
                if !r.st.workers.is_empty() {
                    for w in r.st.workers.iter_mut() {
                        if let Some(p) = current.iter().find(|p| p.index == w.index) {
                            w.phase = p.phase.as_str().to_string();
                        }
                    }
                }
                if let (Some(end), Some(start)) = (f.end, r.st.start_time.as_ref()) {
                    let start = conditions::from_time(start);
                    let end = end.max(start);
                    r.st.end_time = Some(conditions::time(end));
                    let wallets = provider_wallets(r.ctx, &r.st).await?;
                    r.st.usage = billing::usage_between(
                        &job.spec,
                        &r.st,
                        start.timestamp_millis().max(0) as u64,
                        end.timestamp_millis().max(0) as u64,
                        &wallets,
                    );
                    r.st.gpu_seconds = r.st.usage.iter().map(|u| u.gpu_ms).sum::<u64>() / 1000;
                } else {
                    r.st.end_time = Some(conditions::time(r.now));
                }
                r.phase(f.phase, f.message.clone());
                r.condition(cond::RUNNING, false, f.reason, f.message.clone());
                r.condition(cond::COMPLETE, true, f.reason, f.message.clone());
                r.write().await?;
                let t = if f.phase == ComputeJobPhase::Succeeded {
                    EventType::Normal
                } else {
                    EventType::Warning
                };
                r.event(t, f.reason, f.message, "Finish").await;
                nodebook::sync(&mut r, true).await?;
            }
            Step::DeletePods { names } => {
                delete_pods(&r, &names).await?;
                mark_deleting(&mut observed, &names);
            }
            Step::SetDeadline {
                at,
                duration_seconds,
            } => {
                let msg = format!(
                    "maxDurationSeconds is now {duration_seconds}: the job ends at {} at the latest",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                r.st.deadline = Some(conditions::time(at));
                r.st.deadline_duration_seconds = Some(duration_seconds);
                r.st.message = Some(msg.clone());
                r.write().await?;
                r.event(EventType::Normal, "DeadlineChanged", msg, "Reschedule")
                    .await;
            }
            Step::SettlePeriods { from, upto } => {
                if let Some(a) = step_settle(&mut r, from < upto, false).await? {
                    return Ok(Outcome {
                        action: a,
                        phase: r.st.phase,
                    });
                }
            }
            Step::Settle => {
                if let Some(a) = step_settle(&mut r, true, true).await? {
                    return Ok(Outcome {
                        action: a,
                        phase: r.st.phase,
                    });
                }
            }
        }
    }
    Ok(Outcome {
        action: Action::requeue(Duration::from_secs(1)),
        phase: r.st.phase,
    })
}

fn workers_of(current: &[&PodView], n: u32) -> Vec<WorkerStatus> {
    (0..n)
        .map(|i| {
            let p = current.iter().find(|p| p.index == i);
            WorkerStatus {
                index: i,
                pod: p.map(|p| p.name.clone()).unwrap_or_default(),
                node: p.and_then(|p| p.node.clone()),
                phase: p.map(|p| p.phase.as_str()).unwrap_or("Missing").to_string(),
                payout_wallet: None,
            }
        })
        .collect()
}

fn mark_deleting(pods: &mut [PodView], names: &[String]) {
    for p in pods.iter_mut().filter(|p| names.contains(&p.name)) {
        p.deleting = true;
    }
}

/// The job's worker pods, listed from the API server (a consistent read).
///
/// Not from a watch cache: a reconcile triggered by a pod event must decide on a
/// view at least as fresh as that event, and a second reflector may lag it (a job
/// then sat in `Scheduling` with all its workers running until the gang timeout).
async fn observe_pods(ctx: &Context, ns: &str, job: &str) -> Result<Vec<PodView>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pods = api
        .list(&ListParams::default().labels(&format!("{LABEL_JOB}={job}")))
        .await?;
    Ok(pods.items.iter().filter_map(pod_view).collect())
}

/// A pod as the state machine sees it (`None` for a pod without solgrid labels).
pub fn pod_view(p: &Pod) -> Option<PodView> {
    let labels = p.labels();
    let index = labels.get(LABEL_WORKER)?.parse().ok()?;
    let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    Some(PodView {
        name: p.name_any(),
        index,
        attempt,
        phase: PodPhase::parse(p.status.as_ref().and_then(|s| s.phase.as_deref())),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        deleting: p.metadata.deletion_timestamp.is_some(),
        started: container_time(p, ContainerTime::Started),
        finished: container_time(p, ContainerTime::Finished),
        node_fault: pod_node_fault(p),
    })
}

/// Whether the node ended the pod: its `status.reason` (Evicted, NodeLost, ...) or
/// a `DisruptionTarget` condition the kubelet or the taint manager set.
fn pod_node_fault(p: &Pod) -> bool {
    let Some(st) = p.status.as_ref() else {
        return false;
    };
    nodebook::node_fault(st.reason.as_deref())
        || st.conditions.iter().flatten().any(|c| {
            c.type_ == "DisruptionTarget"
                && c.status == "True"
                && nodebook::node_fault(c.reason.as_deref())
        })
}

#[derive(Clone, Copy)]
enum ContainerTime {
    Started,
    Finished,
}

/// The worker's start or finish time as its kubelet reports it: the latest start
/// (a pod runs once all its containers run) and the latest finish over the pod's
/// containers.
fn container_time(p: &Pod, which: ContainerTime) -> Option<DateTime<Utc>> {
    let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
    let times = statuses.iter().filter_map(|c| {
        let st = c.state.as_ref()?;
        match which {
            ContainerTime::Started => st
                .running
                .as_ref()
                .and_then(|r| r.started_at.as_ref())
                .or_else(|| st.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
                .map(conditions::from_time),
            ContainerTime::Finished => st
                .terminated
                .as_ref()
                .and_then(|t| t.finished_at.as_ref())
                .map(conditions::from_time),
        }
    });
    times.max()
}

async fn delete_pods(r: &Run<'_>, names: &[String]) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(r.ctx.client.clone(), &r.ns);
    for n in names {
        match api.delete(n, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Payout wallets of the job's nodes: the ones snapshotted when the job started;
/// for a node without a snapshot (a job started by an older operator), its
/// GpuNode's current wallet.
async fn provider_wallets(ctx: &Context, st: &ComputeJobStatus) -> Result<HashMap<String, String>> {
    let mut out: HashMap<String, String> = st
        .workers
        .iter()
        .filter_map(|w| Some((w.node.clone()?, w.payout_wallet.clone()?)))
        .collect();
    if st
        .workers
        .iter()
        .all(|w| w.node.is_none() || w.payout_wallet.is_some())
    {
        return Ok(out);
    }
    for (n, w) in live_payout_wallets(ctx, st).await? {
        out.entry(n).or_insert(w);
    }
    Ok(out)
}

/// Payout wallets of the job's nodes as their GpuNodes say now: from the GpuNode
/// cache, else the API.
async fn live_payout_wallets(
    ctx: &Context,
    st: &ComputeJobStatus,
) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let nodes: Vec<String> = st.workers.iter().filter_map(|w| w.node.clone()).collect();
    for node in nodes {
        if out.contains_key(&node) {
            continue;
        }
        let cached = ctx.caches.gpunodes.as_ref().and_then(|s| {
            s.find(|g| g.metadata.name.as_deref() == Some(&node) || g.spec.node_name == node)
        });
        let gpunode = match cached {
            Some(g) => Some(g.as_ref().clone()),
            None => {
                let api: Api<GpuNode> = Api::all(ctx.client.clone());
                api.get_opt(&node).await?
            }
        };
        if let Some(g) = gpunode {
            out.insert(node, g.spec.payout_wallet.clone());
        }
    }
    Ok(out)
}

async fn step_quote(r: &mut Run<'_>) -> Result<Option<Action>> {
    let cfg = &r.ctx.config;
    let spec = &r.job.spec;
    // a job accepting several models is priced at the dearest (quote.rs)
    let models = quote::accepted_models(spec, cfg.default_nvidia_model, cfg.default_apple_model)
        .map_err(Error::Invalid)?;
    let supply = r.ctx.supply();
    let classes = quote::classes(&models, |m| supply.get(m));
    let (outcome, model) =
        quote::quote_models(spec, &classes, &cfg.market.pricing, &cfg.market.fees, r.now)
            .map_err(Error::market)?;
    match outcome {
        quote::QuoteOutcome::Locked(q) => {
            let of = if models.len() > 1 {
                let all: Vec<String> = models.iter().map(|m| m.to_string()).collect();
                format!(" (the dearest of {})", all.join(", "))
            } else {
                String::new()
            };
            let msg = format!(
                "{} {} per GPU-hour for {model}{of}; escrow {}",
                q.price_per_gpu_hour, q.token, q.max_cost
            );
            r.st.quote = Some(q);
            r.phase(ComputeJobPhase::Quoted, msg.clone());
            r.condition(cond::QUOTED, true, "PriceLocked", msg.clone());
            r.write().await?;
            r.event(EventType::Normal, "Quoted", msg, "Quote").await;
            Ok(None)
        }
        quote::QuoteOutcome::BelowMarket(msg) => {
            let already = conditions::get(&r.st.conditions, cond::QUOTED)
                .is_some_and(|c| c.reason == "BudgetBelowMarket" && c.message == msg);
            if !already {
                r.st.message = Some(msg.clone());
                r.condition(cond::QUOTED, false, "BudgetBelowMarket", msg.clone());
                r.write().await?;
                r.event(EventType::Warning, "BudgetBelowMarket", msg, "Quote")
                    .await;
            }
            Ok(Some(Action::requeue(Duration::from_secs(60))))
        }
    }
}

/// Reads the payer's wallet from the Secret in the job's own namespace. The
/// keypair is handed to the ledger and dropped; neither is logged.
async fn payer_wallet(
    r: &mut Run<'_>,
) -> Result<std::result::Result<String, (&'static str, String)>> {
    let secret_name = r.job.spec.payer_secret_ref.name.clone();
    let api: Api<Secret> = Api::namespaced(r.ctx.client.clone(), &r.ns);
    let Some(secret) = api.get_opt(&secret_name).await? else {
        return Ok(Err((
            "PayerSecretMissing",
            format!("Secret {secret_name} not found in namespace {}", r.ns),
        )));
    };
    let data = secret.data.unwrap_or_default();
    let address = data
        .get(SECRET_ADDRESS_KEY)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .map(|s| s.trim().to_string());
    let Some(address) = address.filter(|a| crate::wallet::valid_wallet(a)) else {
        return Ok(Err((
            "PayerSecretInvalid",
            format!("Secret {secret_name} has no valid base58 `{SECRET_ADDRESS_KEY}`"),
        )));
    };
    // the escrow moves out of this wallet only with its owner's keypair (every ledger)
    let kp = data.get(SECRET_KEYPAIR_KEY).map(|b| b.0.clone());
    if let Err(msg) = crate::wallet::authorize_debits(r.ctx, &secret_name, &address, kp).await? {
        return Ok(Err(("PayerSecretInvalid", msg)));
    }
    Ok(Ok(address))
}

async fn step_fund(r: &mut Run<'_>) -> Result<Option<Action>> {
    let escrow_recorded = r.st.escrow.is_some();
    // read every time: the owner's keypair signs the escrow (again after a restart)
    {
        let read = match payer_wallet(r).await? {
            Ok(addr) if escrow_recorded && r.st.payer_wallet.as_deref() != Some(addr.as_str()) => {
                Err((
                    "PayerSecretChanged",
                    format!(
                        "Secret {} now names wallet {addr}, not the wallet this escrow was planned from",
                        r.job.spec.payer_secret_ref.name
                    ),
                ))
            }
            other => other,
        };
        match read {
            Ok(addr) => {
                if !escrow_recorded {
                    r.st.payer_wallet = Some(addr);
                }
            }
            Err((reason, msg)) => {
                let already = conditions::get(&r.st.conditions, cond::FUNDED)
                    .is_some_and(|c| c.reason == reason && c.message == msg);
                if !already {
                    r.condition(cond::FUNDED, false, reason, msg.clone());
                    r.write().await?;
                    r.event(EventType::Warning, reason, msg, "Fund").await;
                }
                return Ok(Some(Action::requeue(Duration::from_secs(60))));
            }
        }
    }
    let intent = escrow_intent(&r.uid, &r.st, r.job.spec.payment_token)
        .ok_or(Error::MissingField("status.quote"))?;
    let retry: Vec<String> =
        r.st.escrow
            .iter()
            .filter(|e| e.state == SettlementState::Failed)
            .map(|e| e.key.clone())
            .collect();
    let report = execute(r, Vec::new(), vec![intent], retry).await?;
    let escrow = r.st.escrow.clone().unwrap_or_default();
    match escrow.state {
        SettlementState::Confirmed => {
            let max = r.st.quote.as_ref().map(|q| q.max_cost).unwrap_or(0);
            r.st.escrowed = max;
            r.ctx
                .metrics
                .escrowed
                .with_label_values(&[&r.job.spec.payment_token.to_string()])
                .inc_by(max);
            let msg = format!(
                "{max} {} in escrow (signature {})",
                r.job.spec.payment_token,
                escrow.signature.clone().unwrap_or_default()
            );
            r.phase(ComputeJobPhase::Funded, msg.clone());
            r.condition(cond::FUNDED, true, "EscrowConfirmed", msg.clone());
            r.write().await?;
            r.event(EventType::Normal, "Funded", msg, "Fund").await;
            Ok(None)
        }
        SettlementState::Failed => {
            let msg = format!(
                "escrow transaction failed: {}",
                escrow.error.clone().unwrap_or_default()
            );
            r.condition(cond::FUNDED, false, "EscrowFailed", msg.clone());
            r.write().await?;
            r.event(EventType::Warning, "EscrowFailed", msg, "Fund")
                .await;
            Ok(Some(Action::requeue(Duration::from_secs(60))))
        }
        _ => {
            debug!(job = %r.name, ?report, "escrow in flight");
            Ok(Some(Action::requeue(IN_FLIGHT_POLL)))
        }
    }
}

/// Plans settlement `index` (the final one when `final_period`), split into parts
/// that each fit one transaction by the ledger's own size model. `Err(action)`: a
/// provider's wallet is unknown (a condition and an Event say so; try again later).
async fn plan_next(
    r: &mut Run<'_>,
    index: u32,
    final_period: bool,
) -> Result<std::result::Result<(JobSettlement, Vec<Intent>), Action>> {
    let start_ms =
        r.st.start_time
            .as_ref()
            .map(|t| conditions::from_time(t).timestamp_millis().max(0) as u64);
    let (from, to) = match start_ms {
        Some(s) => {
            let (a, b) = r.ctx.config.periods.bounds(s, index);
            if final_period {
                let end =
                    r.st.end_time
                        .as_ref()
                        .map(|t| conditions::from_time(t).timestamp_millis().max(0) as u64)
                        .unwrap_or(a);
                (a.min(end), end)
            } else {
                (a, b)
            }
        }
        None => (0, 0),
    };
    let wallets = provider_wallets(r.ctx, &r.st).await?;
    let js = match billing::plan(
        &r.uid,
        &r.job.spec,
        &r.st,
        index,
        from,
        to,
        final_period,
        &wallets,
        &r.ctx.config.market.fees,
    ) {
        Ok((js, _)) => js,
        Err(billing::PlanError::UnknownWallet(nodes)) => {
            let msg = format!("no GpuNode payout wallet for node(s) {nodes}");
            r.condition(cond::SETTLED, false, "UnknownProviderWallet", msg.clone());
            r.write().await?;
            r.event(EventType::Warning, "UnknownProviderWallet", msg, "Settle")
                .await;
            return Ok(Err(Action::requeue(Duration::from_secs(60))));
        }
        Err(e) => return Err(Error::market(e)),
    };
    // the ledger's size model may ask the chain (which token accounts exist)
    use solgrid_market::ledger::Ledger as _;
    let ledger = r.ctx.ledger.clone();
    let payer = r.st.payer_wallet.clone().unwrap_or_default();
    let token = r.job.spec.payment_token;
    let (js, intents) = tokio::task::spawn_blocking(move || {
        crate::settlement::split(js, &payer, token, |i| ledger.fits(std::slice::from_ref(i)))
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?
    .map_err(Error::market)?;
    if intents.len() > 1 {
        info!(
            job = %r.name,
            key = %js.record.key,
            parts = intents.len(),
            "settlement split into several transactions"
        );
    }
    Ok(Ok((js, intents)))
}

/// The signatures of a settlement's parts, for messages.
fn signatures(s: &JobSettlement) -> String {
    s.records()
        .map(|r| r.signature.as_deref().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Settles: resumes what is in flight, then (when `plan_next_one`) plans the next
/// settlement (the final one when `final_period`). A settlement split into parts
/// counts as confirmed (and the job as Settled) only once every part is.
async fn step_settle(
    r: &mut Run<'_>,
    plan_next_one: bool,
    final_period: bool,
) -> Result<Option<Action>> {
    let summary = machine::settlements(&r.st);
    if final_period && !machine::escrow_confirmed(&r.st) && r.st.settlements.is_empty() {
        let msg = "nothing was escrowed: nothing to settle".to_string();
        r.phase(ComputeJobPhase::Settled, msg.clone());
        r.condition(cond::SETTLED, true, "NothingToSettle", msg.clone());
        r.write().await?;
        r.event(EventType::Normal, "Settled", msg, "Settle").await;
        return Ok(None);
    }
    let mut staged = Vec::new();
    let mut intents: Vec<Intent> = Vec::new();
    let retry: Vec<String> =
        r.st.settlements
            .iter()
            .flat_map(|s| s.records())
            .filter(|r| r.state == SettlementState::Failed)
            .map(|r| r.key.clone())
            .collect();
    let may_plan = plan_next_one
        && summary.in_flight == 0
        && summary.failed == 0
        && !(final_period && summary.final_recorded);
    if may_plan {
        match plan_next(r, summary.recorded, final_period).await? {
            Ok((js, parts)) => {
                staged.push(js);
                intents.extend(parts);
            }
            Err(action) => return Ok(Some(action)),
        }
    }
    let before: HashMap<String, SettlementState> =
        r.st.settlements
            .iter()
            .map(|s| (s.record.key.clone(), s.state()))
            .collect();
    let report = execute(r, staged, intents, retry).await?;
    // metrics and events for what was newly confirmed
    let token = r.job.spec.payment_token.to_string();
    let newly: Vec<JobSettlement> =
        r.st.settlements
            .iter()
            .filter(|s| {
                s.state() == SettlementState::Confirmed
                    && before.get(&s.record.key) != Some(&SettlementState::Confirmed)
            })
            .cloned()
            .collect();
    let m = &r.ctx.metrics;
    for s in &newly {
        m.settled
            .with_label_values(&[&token])
            .inc_by(s.cost.received);
        m.burned.with_label_values(&[&token]).inc_by(s.cost.burned);
        m.to_treasury
            .with_label_values(&[&token])
            .inc_by(s.cost.to_treasury);
        m.refunded
            .with_label_values(&[&token])
            .inc_by(s.cost.refunded);
    }
    let (totals, left) = billing::totals(&r.st);
    r.st.cost = totals;
    r.st.escrowed = left;
    // the nodes' earnings, before the status that says they are recorded
    let booked = nodebook::sync(r, false).await?;
    let after = machine::settlements(&r.st);
    for s in &newly {
        let msg = format!(
            "settlement {} confirmed: paid {}, providers {}, burned {}, treasury {}, refunded {} (signature {})",
            s.record.key,
            s.cost.paid,
            s.cost.received,
            s.cost.burned,
            s.cost.to_treasury,
            s.cost.refunded,
            signatures(s)
        );
        r.event(EventType::Normal, "PeriodSettled", msg, "Settle")
            .await;
    }
    if after.failed > 0 {
        let reasons: Vec<String> =
            r.st.settlements
                .iter()
                .flat_map(|s| s.records())
                .filter(|r| r.state == SettlementState::Failed)
                .map(|r| format!("{}: {}", r.key, r.error.clone().unwrap_or_default()))
                .collect();
        let msg = format!("settlement failed: {}", reasons.join("; "));
        r.condition(cond::SETTLED, false, "SettlementFailed", msg.clone());
        r.write().await?;
        r.event(EventType::Warning, "SettlementFailed", msg, "Settle")
            .await;
        return Ok(Some(Action::requeue(Duration::from_secs(60))));
    }
    if final_period && after.final_confirmed {
        let msg = format!(
            "settled: paid {}, providers {}, burned {}, treasury {}, refunded {}",
            r.st.cost.paid,
            r.st.cost.received,
            r.st.cost.burned,
            r.st.cost.to_treasury,
            r.st.cost.refunded
        );
        r.phase(ComputeJobPhase::Settled, msg.clone());
        r.condition(cond::SETTLED, true, "Settled", msg.clone());
        r.write().await?;
        r.event(EventType::Normal, "Settled", msg, "Settle").await;
        return Ok(None);
    }
    if !newly.is_empty() || booked {
        r.write().await?;
    }
    if after.in_flight > 0 {
        debug!(job = %r.name, ?report, "settlement in flight");
        return Ok(Some(Action::requeue(IN_FLIGHT_POLL)));
    }
    Ok(None)
}

/// Runs the exactly-once executor over the job's status (off the runtime: the
/// ledger is blocking), planning `intents` (their details `staged`) first.
async fn execute(
    r: &mut Run<'_>,
    staged: Vec<JobSettlement>,
    intents: Vec<Intent>,
    retry: Vec<String>,
) -> Result<PassReport> {
    r.st.observed_generation = r.generation();
    if let Err(msg) = crate::settlement::check_escrow_cap(&r.st, &staged, r.job.spec.payment_token)
    {
        r.condition(cond::SETTLED, false, "SettlementRefused", msg.clone());
        r.write().await?;
        r.event(
            EventType::Warning,
            "SettlementRefused",
            msg.clone(),
            "Settle",
        )
        .await;
        return Err(Error::Invalid(format!("settlement refused: {msg}")));
    }
    let writer = ApiWriter {
        api: r.api.clone(),
        name: r.name.clone(),
        field_manager: r.ctx.config.field_manager.clone(),
        handle: tokio::runtime::Handle::current(),
        resource_version: r.rv.clone(),
    };
    let mut store = JobStore::new(
        r.uid.clone(),
        r.job.spec.payment_token,
        r.st.clone(),
        r.now,
        writer,
    );
    store.staged = staged;
    let ledger = r.ctx.ledger.clone();
    let (store, result) = tokio::task::spawn_blocking(move || {
        let result = (|| {
            let mut exec = Executor::new(&*ledger, &mut store, ExecutorConfig::default());
            for k in &retry {
                exec.retry_failed(k)?;
            }
            exec.plan(&intents)?;
            let mut report = exec.settle_pass()?;
            if report.remaining > 0
                && let Some(e) = ledger.embedded()
            {
                // On the embedded ledger a recorded transaction that was never seen
                // can only be one this process never sent (it died in between):
                // let its validity window pass, then rebuild it.
                let _ = e.tick(e.config().validity_window + 1);
                report = exec.settle_pass()?;
            }
            Ok::<_, solgrid_ledger::SettleError<_, _>>(report)
        })();
        (store, result)
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?;
    let (status, writer) = store.into_parts();
    r.st = status;
    r.rv = writer.resource_version;
    r.ctx
        .metrics
        .pending_settlements
        .set(machine::settlements(&r.st).in_flight as i64);
    result.map_err(|e| {
        r.ctx
            .metrics
            .ledger_errors
            .with_label_values(&[r.ctx.ledger.kind(), "settle"])
            .inc();
        match e {
            solgrid_ledger::SettleError::Store(s) => Error::store(s),
            other => Error::ledger(other),
        }
    })
}

async fn step_create_pods(r: &mut Run<'_>, attempt: u32, missing: &[u32]) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(r.ctx.client.clone(), &r.ns);
    let first = r.st.phase != ComputeJobPhase::Scheduling || r.st.attempts != attempt;
    if first {
        let msg = format!(
            "creating {} worker(s), attempt {attempt}/{}",
            r.job.spec.workers, r.ctx.config.gang_max_attempts
        );
        r.st.attempts = attempt;
        r.st.scheduling_since = Some(conditions::time(r.now));
        r.st.workers.clear();
        r.phase(ComputeJobPhase::Scheduling, msg.clone());
        r.condition(cond::SCHEDULED, false, "WaitingForGang", msg);
        // record the attempt before creating its pods
        r.write().await?;
    }
    let mut created = 0;
    let mut first_pod = None;
    for &i in missing {
        let pod = pods::worker_pod(r.job, attempt, i, &r.ctx.config.scheduler_name);
        match api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                created += 1;
                first_pod.get_or_insert_with(|| p.object_ref(&()));
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if created > 0 {
        // The Event names a pod of this attempt as its related object: the events
        // recorder folds Events with the same key into one series and keeps the
        // first note, so without it attempt 2's Event read "attempt 1".
        let ev = KEvent {
            type_: EventType::Normal,
            reason: "WorkersCreated".into(),
            note: Some(format!(
                "created {created} worker pod(s) for attempt {attempt} (scheduler {})",
                r.ctx.config.scheduler_name
            )),
            action: "Schedule".into(),
            secondary: first_pod,
        };
        r.publish(ev).await;
    }
    Ok(())
}
