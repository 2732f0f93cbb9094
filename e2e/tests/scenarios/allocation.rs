//! Allocation on the real control plane: a running job's GPUs are written on its
//! GpuNode (`status.allocations`, `allocatedGpus`, `jobs.running`) by the operator,
//! and cleared when it finishes, with its outcome counted once, the finished span
//! kept for idle rewards, and the settlement's pay added to the node's earnings.

use super::active_market;
use kube::ResourceExt as _;
use kube::api::Api;
use solgrid_crds::{ComputeJobPhase, GpuNode, GpuNodeStatus};
use solgrid_e2e::market::MarketOpts;
use solgrid_e2e::wait_for;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);
const NODE: &str = "e2e-alloc-a";

async fn gpunode_status(api: &Api<GpuNode>) -> Option<GpuNodeStatus> {
    api.get(NODE).await.ok()?.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_allocated_on_its_node_and_released_when_it_ends() {
    let opts = MarketOpts::new("e2e-alloc", &[(NODE, 2)]);
    let Some((_one, m, _)) = active_market("allocation", opts).await else {
        return;
    };
    let (secret, mut j) = m.example(&["sleep", "15"]).expect("example");
    j["metadata"]["name"] = "alloc".into();
    j["spec"]["workers"] = 1.into();
    let per_worker = j["spec"]["gpus"]["count"].as_u64().unwrap_or(1) as u32;
    m.submit(&secret, &j).await.expect("submit");
    let running = m
        .wait_phase("alloc", 2 * MIN, ComputeJobPhase::Running)
        .await
        .expect("running");
    let uid = m
        .jobs()
        .get("alloc")
        .await
        .expect("job")
        .uid()
        .expect("uid");
    let gpunodes: Api<GpuNode> = Api::all(m.client.clone());

    // written while it runs
    let held = wait_for(MIN, || async {
        let st = gpunode_status(&gpunodes).await?;
        st.allocations.iter().any(|a| a.uid == uid).then_some(st)
    })
    .await
    .expect("the allocation is written on the GpuNode");
    assert_eq!(held.allocations.len(), 1, "{:?}", held.allocations);
    let a = &held.allocations[0];
    assert_eq!(a.job, format!("{}/alloc", m.ns));
    assert_eq!(a.gpus, per_worker);
    assert_eq!(Some(&a.since), running.start_time.as_ref());
    assert_eq!((held.allocated_gpus, held.jobs.running), (per_worker, 1));

    // cleared when it ends: outcome counted, span kept, pay earned
    let done = m
        .wait_phase("alloc", 2 * MIN, ComputeJobPhase::Settled)
        .await
        .expect("settled");
    let outcome = format!("{uid}/outcome");
    let after = wait_for(MIN, || async {
        let st = gpunode_status(&gpunodes).await?;
        (st.allocations.is_empty() && st.recorded.contains(&outcome)).then_some(st)
    })
    .await
    .expect("the allocation is cleared");
    assert_eq!((after.allocated_gpus, after.jobs.running), (0, 0));
    assert_eq!(after.jobs.succeeded, 1);
    assert_eq!(
        after.jobs.failed_by_provider + after.jobs.failed_by_requester,
        0
    );
    assert!(after.allocation_history.iter().any(|h| h.uid == uid));
    assert_eq!(
        after.earnings.compute_io + after.earnings.compute_usdc,
        done.cost.received,
        "the node earned what the settlements paid it, once"
    );
    m.down().await;
}
