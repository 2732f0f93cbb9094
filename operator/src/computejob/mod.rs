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
mod escrow;
mod executor;
mod gang;
pub mod machine;
pub mod nodebook;
mod observe;
pub mod pods;
pub mod quote;
mod quoting;
mod running;
mod settle;
mod status;
mod validate;

use crate::context::Context;
use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use machine::{PodView, Step};
use solgrid_crds::{ComputeJob, ComputeJobPhase};
use status::Run;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

pub use observe::pod_view;
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
            for p in ComputeJobPhase::ALL {
                let name = phase_str(p);
                metrics
                    .jobs_by_phase
                    .with_label_values(&[name])
                    .set(counts.get(name).copied().unwrap_or(0));
            }
        }
    };
    let run = crate::toolkit::drive(CONTROLLER, controller.run(reconcile, error_policy, ctx));
    tokio::select! {
        _ = run => {}
        _ = gauge => {}
    }
}

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
    let key = key_of(&job);
    warn!(job = %key, error = %err, "reconcile failed");
    crate::toolkit::requeue_failed(&ctx, CONTROLLER, &key, err)
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

/// Drives a job as far as it can go now: validate, observe, then one step of the
/// state machine after the other (each builds and applies what it needs and
/// writes the status) until a step waits on the cluster or the ledger.
pub async fn drive(job: &ComputeJob, ctx: &Context, deleting: bool) -> Result<Outcome> {
    let mut r = Run::new(job, ctx)?;
    let deleting = deleting || job.metadata.deletion_timestamp.is_some();
    if !deleting
        && !r.st.phase.is_finished()
        && let Some(action) = validate::validate(&mut r).await?
    {
        return Ok(r.outcome(action));
    }
    let mut observed = observe::pods(ctx, &r.ns, &r.name).await?;
    // what an earlier reconcile left unrecorded on the nodes (it died in between)
    nodebook::sync(&mut r, true).await?;
    for _ in 0..16 {
        r.now = ctx.clock.now();
        let step = machine::decide(&r.view(deleting, &observed));
        debug!(job = %r.name, ?step, "step");
        if let Some(action) = apply(&mut r, &mut observed, step).await? {
            return Ok(r.outcome(action));
        }
    }
    Ok(r.outcome(Action::requeue(Duration::from_secs(1))))
}

/// Applies one step. `Some(action)`: the drive ends with it; `None`: decide the
/// next step.
async fn apply(r: &mut Run<'_>, observed: &mut [PodView], step: Step) -> Result<Option<Action>> {
    match step {
        Step::Done => Ok(Some(Action::await_change())),
        Step::Wait(d) => Ok(Some(Action::requeue(d))),
        Step::Quote => quoting::lock_quote(r).await,
        Step::Fund => escrow::fund(r).await,
        Step::CreatePods { attempt, missing } => {
            gang::create_pods(r, attempt, &missing).await.map(Some)
        }
        Step::Start { at } => running::start(r, observed, at).await.map(Some),
        Step::ReleaseGang {
            attempt,
            retry,
            reason,
            message,
        } => gang::release(r, observed, attempt, retry, reason, message)
            .await
            .map(|()| None),
        Step::Finish(f) => running::finish(r, observed, f).await.map(|()| None),
        Step::DeletePods { names } => gang::delete(r, observed, &names).await.map(|()| None),
        Step::SetDeadline {
            at,
            duration_seconds,
        } => running::set_deadline(r, at, duration_seconds)
            .await
            .map(|()| None),
        Step::SettlePeriods { from, upto } => settle::settle(r, from < upto, false).await,
        Step::Settle => settle::settle(r, true, true).await,
    }
}
