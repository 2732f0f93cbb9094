//! One reconcile's state: the status being built and the ways it reaches the API
//! server (a server-side apply of the whole status, Events).

use super::{Outcome, machine, phase_str};
use crate::conditions;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::settlement::status_patch;
use chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KEvent, EventType};
use kube::{Resource, ResourceExt};
use machine::{PodView, View};
use solgrid_crds::{ComputeJob, ComputeJobPhase, ComputeJobStatus};
use tracing::warn;

/// One reconcile's worth of state.
pub(super) struct Run<'a> {
    pub(super) ctx: &'a Context,
    pub(super) job: &'a ComputeJob,
    pub(super) api: Api<ComputeJob>,
    pub(super) ns: String,
    pub(super) name: String,
    pub(super) uid: String,
    pub(super) st: ComputeJobStatus,
    pub(super) now: DateTime<Utc>,
    /// The job's resourceVersion as of our last read or write (status applies are
    /// compare-and-swap on it).
    pub(super) rv: Option<String>,
}

impl<'a> Run<'a> {
    /// Reads what a reconcile starts from: the job as the watch delivered it.
    pub(super) fn new(job: &'a ComputeJob, ctx: &'a Context) -> Result<Self> {
        let ns = job
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let uid = job.uid().ok_or(Error::MissingField("metadata.uid"))?;
        Ok(Run {
            ctx,
            job,
            api: Api::namespaced(ctx.client.clone(), &ns),
            ns,
            name: job.name_any(),
            uid,
            st: job.status.clone().unwrap_or_default(),
            now: ctx.clock.now(),
            rv: job.metadata.resource_version.clone(),
        })
    }

    /// What the state machine decides from: this status, these pods, now.
    pub(super) fn view<'v>(&'v self, deleting: bool, pods: &'v [PodView]) -> View<'v> {
        let cfg = &self.ctx.config;
        View {
            spec: &self.job.spec,
            status: &self.st,
            deleting,
            pods,
            now: self.now,
            period_ms: cfg.periods.period_ms,
            gang_max_attempts: cfg.gang_max_attempts,
            running_requeue: cfg.running_requeue,
        }
    }

    /// The drive ends with `action` in the current phase.
    pub(super) fn outcome(&self, action: Action) -> Outcome {
        Outcome {
            action,
            phase: self.st.phase,
        }
    }

    pub(super) fn generation(&self) -> Option<i64> {
        self.job.metadata.generation
    }

    pub(super) fn condition(
        &mut self,
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) {
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

    /// Whether condition `type_` already says `reason: message` (a repeated
    /// problem is not written nor announced again).
    pub(super) fn already_says(&self, type_: &str, reason: &str, message: &str) -> bool {
        conditions::get(&self.st.conditions, type_)
            .is_some_and(|c| c.reason == reason && c.message == message)
    }

    /// Sets a False condition `type_` with `reason`, writes the status and
    /// announces it with a Warning, unless the condition says so already.
    pub(super) async fn problem(
        &mut self,
        type_: &str,
        reason: &str,
        message: String,
        action: &str,
    ) -> Result<()> {
        if self.already_says(type_, reason, &message) {
            return Ok(());
        }
        self.condition(type_, false, reason, message.clone());
        self.write().await?;
        self.event(EventType::Warning, reason, message, action)
            .await;
        Ok(())
    }

    /// Moves to `phase` (metrics), with a message.
    pub(super) fn phase(&mut self, phase: ComputeJobPhase, message: impl Into<String>) {
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
    pub(super) async fn write(&mut self) -> Result<()> {
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

    pub(super) async fn event(
        &self,
        type_: EventType,
        reason: &str,
        note: impl Into<String>,
        action: &str,
    ) {
        self.publish(KEvent {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: action.into(),
            secondary: None,
        })
        .await;
    }

    pub(super) async fn publish(&self, ev: KEvent) {
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
