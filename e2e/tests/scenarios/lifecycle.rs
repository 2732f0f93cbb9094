//! A job's life on the real control plane beyond the happy path: gang timeout and
//! retry (and workers retried at once when a node becomes usable), a failing
//! worker, `spec.cancel` and deletion of a running job, two operator replicas whose
//! leader is killed while its job runs, a node that corrupts its proof of work, and
//! every invalid example refused by the API server itself.
//!
//! Each scenario brings up its own market ([`Market`]) in its own namespace, one at
//! a time (the extender and the GpuNodes are cluster-wide).

use super::{active_market, held_cluster, local_cluster};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use solgrid_crds::{ComputeJobPhase, ComputeJobStatus, GpuNode, GpuNodePhase};
use solgrid_e2e::market::{Market, MarketOpts, example_payer};
use solgrid_e2e::wait_for;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);

fn settled(st: &ComputeJobStatus) -> bool {
    st.phase == ComputeJobPhase::Settled
}

/// The example job with `workers` workers of one GPU running `command`.
fn job(
    m: &Market,
    name: &str,
    workers: u32,
    command: &[&str],
) -> (serde_json::Value, serde_json::Value, String) {
    let (secret, mut job) = m.example(command).expect("example");
    job["metadata"]["name"] = name.into();
    job["spec"]["workers"] = workers.into();
    let payer = secret["stringData"]["address"]
        .as_str()
        .expect("the example's payer")
        .to_string();
    (secret, job, payer)
}

/// The money of a settled job adds up: the payer paid exactly `cost.paid`, the
/// escrow is empty, providers got `cost.received`, nothing was confirmed twice.
fn check_money(m: &Market, payer: &str, st: &ComputeJobStatus, before: u64) {
    let b = m.balances(payer).expect("balances");
    let c = &st.cost;
    assert_eq!(b.payer, before - c.paid, "payer paid exactly cost.paid");
    assert_eq!(b.escrow, 0, "escrow empty");
    assert_eq!(c.paid + c.refunded, st.quote.as_ref().unwrap().max_cost);
    m.confirmed_once().expect("exactly once");
}

/// Attempt 1 cannot form its gang (one GPU for two workers): released after the
/// gang timeout, attempt 2 is created (its Event says attempt 2), a second node is
/// added, and the waiting worker is bound soon after that node becomes `Active` —
/// not after kube-scheduler's 5-minute flush; the job then runs and settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_timeout_retries_and_waiting_workers_follow_a_node_that_becomes_usable() {
    let mut opts = MarketOpts::new("e2e-gang", &[("e2e-gang-a", 1)]);
    opts.operator_args = vec!["--gang-max-attempts=3".into()];
    let Some((_one, mut m, _)) = active_market("gang_timeout", opts).await else {
        return;
    };
    // workers that outlast the gang timeout: the one GPU never holds both at once
    let (secret, mut j, payer) = job(&m, "gang", 2, &["sleep", "35"]);
    j["spec"]["gangTimeoutSeconds"] = 30.into();
    m.submit(&secret, &j).await.expect("submit");
    let before = m.balances(&payer).unwrap().payer;
    m.wait_job("gang", 2 * MIN, |st| st.attempts >= 2)
        .await
        .expect("attempt 2 after the gang timeout");

    // a second node arrives; its worker waits for it to become Active
    m.add_node("e2e-gang-b", 1).await.expect("node b");
    m.wait_active(&["e2e-gang-b"], 2 * MIN)
        .await
        .expect("node b Active");
    let active_at = Instant::now();
    let pods: Api<Pod> = Api::namespaced(m.client.clone(), &m.ns);
    let bound = wait_for(MIN, || async {
        let l = pods
            .list(&ListParams::default().labels("solgrid.dev/job=gang,solgrid.dev/attempt=2"))
            .await
            .ok()?;
        l.items
            .iter()
            .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("e2e-gang-b"))
            .then_some(())
    })
    .await;
    assert!(
        bound.is_some(),
        "{}",
        m.with_logs("attempt 2's worker never went to node b".into())
    );
    let waited = active_at.elapsed();
    eprintln!(
        "worker bound {:.1} s after node b became Active",
        waited.as_secs_f64()
    );
    // kube-scheduler's own retry (the 5-minute flush, or an unrelated event) would
    // take far longer; the extender's market-state label brings it at once
    assert!(
        waited < Duration::from_secs(10),
        "the waiting worker took {waited:?} (kube-scheduler was not told the node changed)"
    );
    let st = m.wait_job("gang", 2 * MIN, settled).await.expect("settled");
    assert_eq!(st.attempts, 2);
    check_money(&m, &payer, &st, before);

    // one WorkersCreated Event per attempt, each naming its own attempt
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(m.client.clone(), &m.ns);
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("WorkersCreated"))
        .filter_map(|e| e.note)
        .collect();
    assert!(notes.iter().any(|n| n.contains("attempt 1")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("attempt 2")), "{notes:?}");
    m.down().await;
}

/// A worker that exits non-zero fails the job; it is billed until the failure and
/// the rest of the escrow is refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_worker_fails_the_job_and_the_rest_is_refunded() {
    let opts = MarketOpts::new("e2e-fail", &[("e2e-fail-a", 1)]);
    let Some((_one, m, _)) = active_market("worker_failure", opts).await else {
        return;
    };
    m.faults("e2e-fail-a")
        .fail_workers
        .store(true, Ordering::SeqCst);
    let (secret, j, payer) = job(&m, "fails", 1, &["sleep", "3"]);
    m.submit(&secret, &j).await.expect("submit");
    let before = m.balances(&payer).unwrap().payer;
    let failed = m
        .wait_job("fails", 2 * MIN, |st| {
            st.phase == ComputeJobPhase::Failed || settled(st)
        })
        .await
        .expect("failed");
    assert!(
        failed.conditions.iter().any(|c| c.reason == "WorkerFailed"),
        "{failed:?}"
    );
    let st = m.wait_job("fails", MIN, settled).await.expect("settled");
    assert!(st.cost.refunded > 0, "the unused escrow is refunded");
    assert!(
        st.gpu_seconds <= 6,
        "billed {} s for a 3 s worker",
        st.gpu_seconds
    );
    check_money(&m, &payer, &st, before);
    m.down().await;
}

/// `spec.cancel` on a running job ends it: billed for the time it ran, the rest
/// refunded. Deleting a running job cancels, settles, and only then releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_delete_a_running_job() {
    let opts = MarketOpts::new("e2e-cancel", &[("e2e-cancel-a", 1), ("e2e-cancel-b", 1)]);
    let Some((_one, m, payer)) = active_market("cancel_delete", opts).await else {
        return;
    };
    let before = m.balances(&payer).unwrap().payer;

    // cancel
    let (secret, j, _) = job(&m, "cancelled", 1, &["sleep", "600"]);
    m.submit(&secret, &j).await.expect("submit");
    m.wait_phase("cancelled", 2 * MIN, ComputeJobPhase::Running)
        .await
        .expect("running");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let cancelled_at = chrono::Utc::now();
    m.jobs()
        .patch(
            "cancelled",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"cancel": true}})),
        )
        .await
        .expect("cancel");
    let st = m
        .wait_job("cancelled", MIN, settled)
        .await
        .expect("settled");
    assert!(
        st.conditions.iter().any(|c| c.reason == "Cancelled"),
        "{:?}",
        st.conditions
    );
    let start = st.start_time.as_ref().unwrap().0.as_millisecond();
    let ran_ms = (cancelled_at.timestamp_millis() - start).max(0) as u64;
    let billed_ms: u64 = st.usage.iter().map(|u| u.gpu_ms).sum();
    assert!(
        billed_ms.abs_diff(ran_ms) <= 3_000,
        "billed {billed_ms} ms for {ran_ms} ms until the cancel"
    );
    check_money(&m, &payer, &st, before);

    // delete
    let mid = m.balances(&payer).unwrap();
    let (_, j, _) = job(&m, "deleted", 1, &["sleep", "600"]);
    m.submit(&secret, &j).await.expect("submit");
    let running = m
        .wait_phase("deleted", 2 * MIN, ComputeJobPhase::Running)
        .await
        .expect("running");
    let max_cost = running.quote.as_ref().unwrap().max_cost;
    tokio::time::sleep(Duration::from_secs(3)).await;
    m.jobs()
        .delete("deleted", &Default::default())
        .await
        .expect("delete");
    let gone = wait_for(MIN, || async {
        m.jobs()
            .get_opt("deleted")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "{}",
        m.with_logs("the deleted job was never released".into())
    );
    let after = m.balances(&payer).unwrap();
    assert_eq!(after.escrow, 0, "the escrow is empty once the job is gone");
    let paid = mid.payer - after.payer;
    assert!(
        paid > 0 && paid < max_cost,
        "paid {paid} of {max_cost}: usage paid, the rest refunded"
    );
    let earned: u64 = after.providers.values().sum::<u64>() - mid.providers.values().sum::<u64>();
    assert!(
        earned > 0,
        "the provider was paid for the deleted job's usage"
    );
    assert_eq!(
        (mid.supply - after.supply) as u64 + earned,
        paid,
        "what the payer paid went to the provider or was burned"
    );
    m.confirmed_once().expect("exactly once");
    m.down().await;
}

/// Shortening `maxDurationSeconds` of a running job to a moment already past ends
/// it now, billed up to the change, never back at `start + new duration`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shortening_max_duration_to_the_past_bills_up_to_the_change() {
    let opts = MarketOpts::new("e2e-maxdur", &[("e2e-maxdur-a", 1)]);
    let Some((_one, m, payer)) = active_market("max_duration", opts).await else {
        return;
    };
    let before = m.balances(&payer).unwrap().payer;
    let (secret, j, _) = job(&m, "shortened", 1, &["sleep", "600"]);
    m.submit(&secret, &j).await.expect("submit");
    let running = m
        .wait_phase("shortened", 2 * MIN, ComputeJobPhase::Running)
        .await
        .expect("running");
    let start = running.start_time.as_ref().unwrap().0.as_millisecond();
    // past the 60 s the requester will ask for
    let wait_ms = (start + 66_000 - chrono::Utc::now().timestamp_millis()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let changed_at = chrono::Utc::now().timestamp_millis();
    m.jobs()
        .patch(
            "shortened",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"maxDurationSeconds": 60}})),
        )
        .await
        .expect("shorten");
    let st = m
        .wait_job("shortened", MIN, settled)
        .await
        .expect("settled");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.reason == "MaxDurationReached"),
        "{:?}",
        st.conditions
    );
    let billed_ms: u64 = st.usage.iter().map(|u| u.gpu_ms).sum();
    let ran_ms = (changed_at - start) as u64;
    assert!(
        billed_ms.abs_diff(ran_ms) <= 3_000 && billed_ms > 62_000,
        "billed {billed_ms} ms; it ran {ran_ms} ms until maxDurationSeconds was cut to 60 s"
    );
    check_money(&m, &payer, &st, before);
    m.down().await;
}

/// Two operator replicas on one Lease: the leader is SIGKILLed when the job has
/// finished and is being settled; the standby takes the lease (and the journal)
/// and finishes: nothing paid twice, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_while_a_job_runs_the_standby_settles_it() {
    let mut opts = MarketOpts::new("e2e-ha", &[("e2e-ha-a", 1), ("e2e-ha-b", 1)]);
    opts.operators = 2;
    opts.operator_args = vec![
        "--lease-duration-seconds=6".into(),
        "--lease-grace-seconds=2".into(),
    ];
    let Some((_one, m, payer)) = active_market("leader_killed", opts).await else {
        return;
    };
    let before = m.balances(&payer).unwrap();
    // killed while the workers run: their finish, the usage and the settlement are
    // the standby's (a settlement takes ~1 s now, too short to aim a kill into it;
    // crashes between its records are the executor's and the 40-wallet test's)
    let (secret, j, payer) = job(&m, "ha", 2, &["sleep", "4"]);
    m.submit(&secret, &j).await.expect("submit");
    m.wait_phase("ha", 2 * MIN, ComputeJobPhase::Running)
        .await
        .expect("running");
    // the leader, by the Lease
    let leases: Api<Lease> = Api::namespaced(m.client.clone(), "solgrid-system");
    let holder = leases
        .get(&m.ns)
        .await
        .expect("the lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a holder");
    let i = m
        .operators
        .iter()
        .position(|p| p.name() == holder)
        .expect("the holder is one of ours");
    eprintln!("SIGKILL {holder}");
    m.operators[i].signal(9); // SIGKILL
    let killed_at = Instant::now();
    let st = m
        .wait_job("ha", 2 * MIN, settled)
        .await
        .expect("settled by the standby");
    eprintln!(
        "settled {:.1} s after the leader died",
        killed_at.elapsed().as_secs_f64()
    );
    let new_holder = wait_for(MIN, || async {
        leases
            .get(&m.ns)
            .await
            .ok()?
            .spec?
            .holder_identity
            .filter(|h| *h != holder)
    })
    .await;
    assert!(
        new_holder.is_some(),
        "the standby took the lease from {holder}"
    );
    check_money(&m, &payer, &st, before.payer);
    let after = m.balances(&payer).unwrap();
    assert_eq!(
        after.providers.values().sum::<u64>() - before.providers.values().sum::<u64>(),
        st.cost.received
    );
    assert_eq!(before.supply - after.supply, st.cost.burned as u128);
    m.down().await;
}

/// A node whose proof of work is wrong is slashed; the honest one becomes Active,
/// even though the cheat labels itself with the honest node's hostname.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_corrupts_its_proof_is_slashed() {
    let Some((tc, _one)) = held_cluster("corrupt_proof").await else {
        return;
    };
    let mut opts = MarketOpts::new("e2e-pow", &[("e2e-pow-honest", 1), ("e2e-pow-cheat", 1)]);
    opts.corrupt_proof = vec!["e2e-pow-cheat".into()];
    let m = Market::up(tc, opts, &example_payer())
        .await
        .expect("market");
    // the cheat also claims the honest node's hostname label (a kubelet may set its
    // own labels): verification pods are bound by spec.nodeName, so the honest
    // node's challenge still runs on the honest node
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(m.client.clone());
    nodes
        .patch(
            "e2e-pow-cheat",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"labels": {"kubernetes.io/hostname": "e2e-pow-honest"}}
            })),
        )
        .await
        .expect("hostname label");
    m.wait_active(&["e2e-pow-honest"], 2 * MIN)
        .await
        .expect("honest Active");
    let api: Api<GpuNode> = Api::all(m.client.clone());
    let slashed = wait_for(2 * MIN, || async {
        let st = api.get("e2e-pow-cheat").await.ok()?.status?;
        (st.phase == GpuNodePhase::Slashed).then_some(st)
    })
    .await;
    let st =
        slashed.unwrap_or_else(|| panic!("{}", m.with_logs("the cheat was not slashed".into())));
    assert!(!st.verification.verified);
    assert!(st.verification.failed >= 1);
    // the incident is on the node's own status, for the stake controller to slash from
    let incident = st.slash_incident.as_ref().expect("status.slashIncident");
    assert_eq!(Some(&incident.at), st.verification.last_run.as_ref());
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Slashed" && c.status == "True"),
        "{:?}",
        st.conditions
    );
    m.down().await;
}

/// Every manifest in `examples/invalid/` is refused by the API server (strict
/// field validation, as `kubectl apply` does), and the refusal names the field the
/// file says it gets wrong (`# expect-field:`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_examples_are_refused_by_the_api_server_naming_their_field() {
    let Some(tc) = local_cluster("invalid_examples") else {
        return;
    };
    let client = tc.client().await.expect("client");
    solgrid_e2e::install_crds(&client).await.expect("CRDs");
    let ns = solgrid_e2e::namespace(&client, "e2e-invalid")
        .await
        .expect("ns");
    let dir = solgrid_e2e::root().join("examples/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let field = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect-field: "))
            .expect("# expect-field:")
            .trim()
            .to_string();
        let mut obj: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let api_version = obj["apiVersion"].as_str().unwrap().to_string();
        let (group, version) = api_version.split_once('/').unwrap();
        let kind = obj["kind"].as_str().unwrap().to_string();
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
        // a create as `kubectl apply` makes it: server-side dry run, strict fields
        let cluster_scoped = kind == "GpuNode" || kind == "LedgerGrant";
        if !cluster_scoped {
            obj["metadata"]["namespace"] = ns.clone().into();
        }
        let path = if cluster_scoped {
            format!("/apis/{group}/{version}/{}", ar.plural)
        } else {
            format!("/apis/{group}/{version}/namespaces/{ns}/{}", ar.plural)
        };
        let req = http::Request::post(format!("{path}?dryRun=All&fieldValidation=Strict"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&obj).unwrap())
            .unwrap();
        let res = client.request_text(req).await;
        let file = f.file_name().unwrap().to_string_lossy().to_string();
        match res {
            Ok(_) => panic!("{file} was accepted by the API server"),
            Err(kube::Error::Api(e)) => {
                eprintln!("{file}: {} {}", e.code, e.message);
                assert!(
                    e.code == 422 || e.code == 400,
                    "{file}: {} {}",
                    e.code,
                    e.message
                );
                let leaf = field.rsplit('.').next().unwrap_or(&field);
                assert!(
                    e.message.contains(&field) || e.message.contains(leaf),
                    "{file}: the API server's refusal does not name {field}: {}",
                    e.message
                );
            }
            Err(e) => panic!("{file}: {e}"),
        }
    }
    solgrid_e2e::delete_namespace(&client, &ns).await;
}
