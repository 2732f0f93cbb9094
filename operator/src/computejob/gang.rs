//! The gang's pods: creating an attempt's workers, releasing a gang that did not
//! form, deleting workers the job no longer needs.

use super::machine::PodView;
use super::status::Run;
use super::{cond, pods};
use crate::conditions;
use crate::error::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KEvent, EventType};
use solgrid_crds::ComputeJobPhase;
use std::time::Duration;

/// Deletes these pods (one already gone is fine).
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

/// Deletes these pods and marks them deleting in what the drive observed.
pub(super) async fn delete(r: &Run<'_>, observed: &mut [PodView], names: &[String]) -> Result<()> {
    delete_pods(r, names).await?;
    for p in observed.iter_mut().filter(|p| names.contains(&p.name)) {
        p.deleting = true;
    }
    Ok(())
}

/// Records attempt `attempt` (when it is new) before creating its missing
/// workers, then waits for the gang until its timeout.
pub(super) async fn create_pods(r: &mut Run<'_>, attempt: u32, missing: &[u32]) -> Result<Action> {
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
    let api: Api<Pod> = Api::namespaced(r.ctx.client.clone(), &r.ns);
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
    Ok(Action::requeue(Duration::from_secs(
        r.job.spec.gang_timeout_seconds.max(1) as u64,
    )))
}

/// The gang of `attempt` did not form in time (or a worker failed before it
/// did): deletes its pods, then retries (back to Funded) or fails the job.
pub(super) async fn release(
    r: &mut Run<'_>,
    observed: &mut [PodView],
    attempt: u32,
    retry: bool,
    reason: &'static str,
    message: String,
) -> Result<()> {
    let names: Vec<String> = observed
        .iter()
        .filter(|p| p.attempt == attempt && !p.deleting)
        .map(|p| p.name.clone())
        .collect();
    delete(r, observed, &names).await?;
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
    Ok(())
}
