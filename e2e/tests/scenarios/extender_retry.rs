//! A worker whose ComputeJob the extender has not seen yet is retried, not parked.
//!
//! The operator creates a job's pods right after the job's status moves to
//! `Scheduling`; an extender whose ComputeJob watch lags (a loaded API server, a
//! restart) filters them before the job is in its cache. Answered as "no node fits",
//! kube-scheduler would set the pod aside until an unrelated cluster event, or for
//! 5 minutes; the extender answers such a pod with an *error*, which kube-scheduler
//! retries after its backoff. Here the pod exists before its job does: it is turned
//! away, then bound within seconds of the job's creation.

use super::held_cluster;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use solgrid_crds::{ComputeJob, LABEL_JOB};
use solgrid_e2e::market::{Market, MarketOpts, example_payer, fit_min_reputation};
use solgrid_e2e::wait_for;
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);
const NODE: &str = "e2e-late-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_filtered_before_its_job_is_cached_is_retried_within_seconds() {
    let Some((tc, _one)) = held_cluster("extender_retry").await else {
        return;
    };
    let opts = MarketOpts::new("e2e-late", &[(NODE, 1)]);
    let (m, scores) = Market::up_active(tc, opts, &example_payer(), 2 * MIN)
        .await
        .expect("market, its node Active");
    let pods: Api<Pod> = Api::namespaced(m.client.clone(), &m.ns);

    // a worker of job "late", which does not exist yet
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "late-w0", "labels": {LABEL_JOB: "late"}},
        "spec": {
            "schedulerName": "solgrid-scheduler",
            "restartPolicy": "Never",
            "containers": [{
                "name": "worker", "image": "busybox:1.36", "command": ["sleep", "1"],
                "resources": {"limits": {"solgrid.dev/nvidia-gpu": "1"}},
            }],
        },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    let refused = wait_for(MIN, || async {
        let p = pods.get("late-w0").await.ok()?;
        let c = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        c.message
            .filter(|m| m.contains("not in the scheduler's cache"))
    })
    .await
    .expect("the pod is turned away while its job is unknown");
    eprintln!("extender_retry: before the job exists: {refused}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pods.get("late-w0").await.expect("pod");
    assert!(
        p.spec.and_then(|s| s.node_name).is_none(),
        "not bound without its job"
    );

    // the job appears (no wallet Secret: the operator never funds it, and the
    // extender matches it on its spec)
    let (_, mut j) = m.example(&["sleep", "1"]).expect("example");
    j["metadata"]["name"] = "late".into();
    j["spec"]["workers"] = 1.into();
    fit_min_reputation(&mut j, &scores);
    let job: ComputeJob = serde_json::from_value(j).expect("job");
    let created = Instant::now();
    m.jobs()
        .create(&PostParams::default(), &job)
        .await
        .expect("job created");
    let node = wait_for(Duration::from_secs(30), || async {
        pods.get("late-w0").await.ok()?.spec?.node_name
    })
    .await
    .expect(
        "bound within seconds of its job's creation, not after kube-scheduler's 5-minute flush",
    );
    let after = created.elapsed();
    eprintln!(
        "extender_retry: bound to {node} {:.1} s after the job was created",
        after.as_secs_f64()
    );
    assert_eq!(node, NODE);
    m.down().await;
}
