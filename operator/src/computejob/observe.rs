//! Reads: the job's worker pods as the state machine sees them, and the payout
//! wallets of the job's nodes.

use super::machine::{PodPhase, PodView};
use super::{LABEL_ATTEMPT, LABEL_JOB, LABEL_WORKER, nodebook};
use crate::conditions;
use crate::context::Context;
use crate::error::Result;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use solgrid_crds::{ComputeJobStatus, GpuNode};
use std::collections::HashMap;

/// The job's worker pods, listed from the API server (a consistent read).
///
/// Not from a watch cache: a reconcile triggered by a pod event must decide on a
/// view at least as fresh as that event, and a second reflector may lag it (a job
/// then sat in `Scheduling` with all its workers running until the gang timeout).
pub(super) async fn pods(ctx: &Context, ns: &str, job: &str) -> Result<Vec<PodView>> {
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

/// Payout wallets of the job's nodes: the ones snapshotted when the job started;
/// for a node without a snapshot (a job started by an older operator), its
/// GpuNode's current wallet.
pub(super) async fn provider_wallets(
    ctx: &Context,
    st: &ComputeJobStatus,
) -> Result<HashMap<String, String>> {
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
pub(super) async fn live_payout_wallets(
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
