//! A running job: it starts once its whole gang runs, its deadline follows
//! `maxDurationSeconds`, and it finishes (usage recorded, live workers deleted).

use super::machine::{Finish, PodPhase, PodView};
use super::status::Run;
use super::{billing, cond, gang, nodebook, observe};
use crate::conditions;
use crate::error::Result;
use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use solgrid_crds::{ComputeJobPhase, WorkerStatus};

/// The `n` workers as these pods of the current attempt show them.
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

/// All N workers run: the job runs from `at`, until its deadline. Records the
/// workers, their nodes and each node's payout wallet (what the job earns goes to
/// the wallet the provider had when the work began).
pub(super) async fn start(
    r: &mut Run<'_>,
    observed: &[PodView],
    at: DateTime<Utc>,
) -> Result<Action> {
    let spec = &r.job.spec;
    let current: Vec<&PodView> = observed
        .iter()
        .filter(|p| p.attempt == r.st.attempts && !p.deleting)
        .collect();
    r.st.workers = workers_of(&current, spec.workers);
    let wallets = observe::live_payout_wallets(r.ctx, &r.st).await?;
    for w in r.st.workers.iter_mut() {
        w.payout_wallet = w.node.as_ref().and_then(|n| wallets.get(n).cloned());
    }
    let mut nodes: Vec<String> = r.st.workers.iter().filter_map(|w| w.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    r.st.nodes = nodes;
    r.st.start_time = Some(conditions::time(at));
    r.st.deadline = Some(conditions::time(
        at + chrono::Duration::seconds(spec.max_duration_seconds as i64),
    ));
    r.st.deadline_duration_seconds = Some(spec.max_duration_seconds);
    let msg = format!(
        "all {} workers running on {} node(s)",
        spec.workers,
        r.st.nodes.len()
    );
    r.phase(ComputeJobPhase::Running, msg.clone());
    r.condition(cond::SCHEDULED, true, "GangRunning", msg.clone());
    r.condition(cond::RUNNING, true, "GangRunning", msg.clone());
    r.write().await?;
    r.event(EventType::Normal, "Running", msg, "Start").await;
    nodebook::sync(r, true).await?;
    Ok(Action::requeue(r.ctx.config.running_requeue))
}

/// `maxDurationSeconds` changed while running: the job now ends at `at`.
pub(super) async fn set_deadline(
    r: &mut Run<'_>,
    at: DateTime<Utc>,
    duration_seconds: u64,
) -> Result<()> {
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
    Ok(())
}

/// Records the workers' last phases and, for a job that ran, its end and the GPU
/// usage per node between its start and `end` (else the end is now).
async fn record_usage(
    r: &mut Run<'_>,
    observed: &[PodView],
    end: Option<DateTime<Utc>>,
) -> Result<()> {
    let current: Vec<&PodView> = observed
        .iter()
        .filter(|p| p.attempt == r.st.attempts)
        .collect();
    for w in r.st.workers.iter_mut() {
        if let Some(p) = current.iter().find(|p| p.index == w.index) {
            w.phase = p.phase.as_str().to_string();
        }
    }
    let (Some(end), Some(start)) = (end, r.st.start_time.as_ref()) else {
        r.st.end_time = Some(conditions::time(r.now));
        return Ok(());
    };
    let start = conditions::from_time(start);
    let end = end.max(start);
    r.st.end_time = Some(conditions::time(end));
    let wallets = observe::provider_wallets(r.ctx, &r.st).await?;
    r.st.usage = billing::usage_between(
        &r.job.spec,
        &r.st,
        start.timestamp_millis().max(0) as u64,
        end.timestamp_millis().max(0) as u64,
        &wallets,
    );
    r.st.gpu_seconds = r.st.usage.iter().map(|u| u.gpu_ms).sum::<u64>() / 1000;
    Ok(())
}

/// The job stopped: records how it counts on its nodes, deletes its live
/// workers, records its usage, and says how it ended.
pub(super) async fn finish(r: &mut Run<'_>, observed: &mut [PodView], f: Finish) -> Result<()> {
    nodebook::decide_outcome(r, &f, observed);
    let live: Vec<String> = observed
        .iter()
        .filter(|p| !p.deleting && !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed))
        .map(|p| p.name.clone())
        .collect();
    gang::delete(r, observed, &live).await?;
    record_usage(r, observed, f.end).await?;
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
    nodebook::sync(r, true).await?;
    Ok(())
}
