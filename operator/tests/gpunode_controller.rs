//! The GpuNode controller against an in-memory API server (tower-test): the exact
//! requests of each important transition (verification pod, status applies,
//! annotations, Events), and slashing through to the embedded ledger.

mod apiserver;

use apiserver::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};
use solgrid_crds::{GpuNode, StakePosition};
use solgrid_market::ledger::{Account, Ledger, Token};
use solgrid_operator::config::OperatorConfig;
use solgrid_operator::gpunode::verify::devices_of;
use solgrid_operator::gpunode::{GpuNodeCtx, Settings, gpunode_for_node, reconcile};
use solgrid_operator::verification::{Challenge, SpeedConfig, run_device_worker, run_worker};
use std::sync::Arc;

const GN: &str = "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-1";
const PODS: &str = "/api/v1/namespaces/solgrid-system/pods";
const SP: &str = "/apis/solgrid.dev/v1alpha1/namespaces/stakers/stakepositions/sp1";
const IO: u64 = 1_000_000_000;
const H: i64 = 3_600_000;

struct T {
    ctx: Arc<solgrid_operator::Context>,
    server: ApiServer,
    clock: Arc<solgrid_operator::FakeClock>,
    g: Arc<GpuNodeCtx>,
    nodes: Writer<Node>,
    leases: Writer<Lease>,
    stakes: Writer<StakePosition>,
}

fn node(name: &str, ready_since: i64, cordoned: bool) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "spec": {"unschedulable": cordoned},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": rfc(ready_since)}]},
    }))
    .unwrap()
}

fn lease(name: &str, renew: i64) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                  "renewTime": rfc(renew).replace('Z', "000Z")},
    }))
    .unwrap()
}

fn gpunode_json(phase: &str, extra_status: Value) -> Value {
    let mut v = json!({
        "apiVersion": "solgrid.dev/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": "gpu-1", "creationTimestamp": rfc(T0_MS - 13 * H), "generation": 3},
        "spec": {"nodeName": "gpu-1", "payoutWallet": WALLET_PROV,
                 "location": {"region": "eu-west", "country": "DE"}, "stakerCommissionBps": 1000},
        "status": {
            "phase": phase,
            "gpus": [
                {"id": "g0", "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3", "vramMib": 81559, "health": "Healthy"},
                {"id": "g1", "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3", "vramMib": 81559, "health": "Healthy"}
            ],
            "gpuCount": 2,
            "firstSeen": rfc(T0_MS - 13 * H),
        },
    });
    merge(&mut v["status"], &extra_status);
    v
}

fn setup(phase: &str, extra: Value) -> T {
    let Env { ctx, server, clock } = env(OperatorConfig::default());
    server.put(GN, gpunode_json(phase, extra));
    let (ns, mut nw) = reflector::store();
    let (ls, mut lw) = reflector::store();
    let (ss, sw) = reflector::store();
    nw.apply_watcher_event(&watcher::Event::Apply(node("gpu-1", T0_MS - 7 * H, false)));
    lw.apply_watcher_event(&watcher::Event::Apply(lease("gpu-1", T0_MS - 5_000)));
    let mut settings = Settings::from_config(&ctx.config);
    settings.verify.size = 32;
    // an RTX 4090 takes 1 ms per 32-product; the chain takes the claimed model 200 ms
    settings.verify.speed = SpeedConfig::quick(32);
    let g = Arc::new(GpuNodeCtx {
        ctx: ctx.clone(),
        nodes: ns,
        leases: ls,
        stakes: ss,
        settings,
        verifier_seed: Some(11),
        challenge_seed: Some(4242),
    });
    T {
        ctx,
        server,
        clock,
        g,
        nodes: nw,
        leases: lw,
        stakes: sw,
    }
}

/// Moves the clock; the kubelet keeps renewing its lease.
fn advance(t: &mut T, d: chrono::Duration) {
    t.clock.advance(d);
    let now = t.clock_ms();
    t.leases
        .apply_watcher_event(&watcher::Event::Apply(lease("gpu-1", now - 5_000)));
}

impl T {
    fn clock_ms(&self) -> i64 {
        use solgrid_operator::Clock;
        self.clock.now().timestamp_millis()
    }
}

fn gn(t: &T) -> Arc<GpuNode> {
    Arc::new(serde_json::from_value(t.server.get(GN).unwrap()).unwrap())
}

fn status_applies(t: &T) -> Vec<Value> {
    t.server
        .writes()
        .into_iter()
        .filter(|c| c.is("PATCH", &format!("{GN}/status")))
        .map(|c| {
            assert!(
                c.query.contains("fieldManager=solgrid-operator") && c.query.contains("force=true")
            );
            c.body["status"].clone()
        })
        .collect()
}

/// Reconciles the node again, the calls cleared first; the status applies made.
async fn rerun(t: &T) -> Vec<Value> {
    t.server.clear_calls();
    reconcile(gn(t), t.g.clone()).await.unwrap();
    status_applies(t)
}

/// Asserts the status says the node earns no idle rewards, for `reason`.
fn not_eligible(st: &Value, reason: &str) {
    assert_eq!(st["rewardEligible"], false);
    let why = st["eligibilityReason"].as_str().unwrap();
    assert!(why.contains(reason), "{why}");
}

fn pod_path(t: &T) -> String {
    let p = t
        .server
        .calls()
        .into_iter()
        .find(|c| c.is("POST", PODS))
        .expect("a verification pod was created");
    format!("{PODS}/{}", p.body["metadata"]["name"].as_str().unwrap())
}

fn finish_pod(t: &T, path: &str, log: &str) {
    t.server.edit(path, |p| p["status"] = json!({
        "phase": "Succeeded",
        "containerStatuses": [{"name": "verify", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": 0, "startedAt": rfc(T0_MS), "finishedAt": rfc(T0_MS)}}}],
    }));
    t.server.set_log(path, log);
}

fn good_log(t: &T, path: &str) -> String {
    let p: Pod = serde_json::from_value(t.server.get(path).unwrap()).unwrap();
    let (n, devices) = devices_of(&p).expect("the challenges in the annotations");
    let lines: Vec<String> = devices
        .iter()
        .map(|d| {
            let c = d.challenge(n).unwrap();
            run_device_worker(Some(&d.uuid), &c, || 0).unwrap().0
        })
        .collect();
    format!("starting\n{}\n", lines.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_with_inventory_verifies_then_activates() {
    let mut t = setup("Pending", json!({}));
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let w = t.server.writes();
    // 1. the verification pod
    assert!(w[0].is("POST", PODS), "{:?}", w[0]);
    let pod = &w[0].body;
    // bound by name: a hostname label a node sets on itself draws nothing
    assert_eq!(pod["spec"]["nodeName"], "gpu-1");
    assert!(pod["spec"].get("nodeSelector").is_none());
    assert_eq!(pod["spec"]["activeDeadlineSeconds"], 900);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    let c = &pod["spec"]["containers"][0];
    // every GPU of the node, each with its own challenge by UUID (here: the id)
    assert_eq!(c["resources"]["limits"]["solgrid.dev/nvidia-gpu"], "2");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[..3], ["verify-worker", "--size", "32"]);
    assert_eq!(args[3], "--device");
    assert!(
        args[4].starts_with("g0:") && args[6].starts_with("g1:"),
        "{args:?}"
    );
    // H100: 2.4x an RTX 4090 -> 480 rounds for the 200 ms target
    assert!(args[4].ends_with(":480:8"), "{args:?}");
    assert_eq!(
        pod["metadata"]["annotations"]["solgrid.dev/verify-created-ms"],
        T0_MS.to_string()
    );
    assert_eq!(
        pod["metadata"]["annotations"]["solgrid.dev/gpunode"],
        "gpu-1"
    );
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/component"],
        "verification"
    );
    // 2. the status: Verifying, a verification running
    assert!(w[1].is("PATCH", &format!("{GN}/status")));
    let st = &status_applies(&t)[0];
    assert_eq!(st["phase"], "Verifying");
    assert_eq!(st["verification"]["lastResult"], "Running");
    assert_eq!(st["observedGeneration"], 3);
    assert_eq!(cond(st, "Ready")["status"], "False");
    assert_eq!(cond(st, "Ready")["reason"], "AwaitingVerification");
    assert_eq!(cond(st, "Online")["status"], "True");
    assert_eq!(st["minimumStake"], 200 * 10 * 2 * IO);
    assert_eq!(st["rewardEligible"], false);
    // only our fields: never the device plugin's
    assert!(st.get("gpus").is_none() && st.get("lastHeartbeat").is_none());
    // 3. the uptime track annotation
    assert!(w[2].is("PATCH", GN));
    assert!(w[2].body["metadata"]["annotations"]["solgrid.dev/uptime"].is_string());
    assert_eq!(w.len(), 3);
    assert_eq!(
        t.server.events(),
        vec!["VerificationStarted", "PhaseChanged"]
    );

    // the pod passes: Active
    let path = pod_path(&t);
    let log = good_log(&t, &path);
    finish_pod(&t, &path, &log);
    // the operator's clock: 300 ms from creation to the read (450 ms allowed)
    advance(&mut t, chrono::Duration::milliseconds(300));
    rerun(&t).await;
    let calls = t.server.calls();
    assert!(calls.iter().any(|c| c.is("GET", &path)));
    let logc = calls
        .iter()
        .find(|c| c.is("GET", &format!("{path}/log")))
        .unwrap();
    assert!(logc.query.contains("container=verify"), "{}", logc.query);
    let st = &status_applies(&t)[0];
    assert_eq!(st["phase"], "Active");
    assert_eq!(st["verification"]["lastResult"], "Passed");
    assert_eq!(st["verification"]["passed"], 1);
    assert_eq!(st["verification"]["verified"], true);
    assert_eq!(cond(st, "Ready")["status"], "True");
    assert_eq!(cond(st, "Verified")["reason"], "Passed");
    assert!(t.server.writes().iter().any(|c| c.is("DELETE", &path)));
    assert_eq!(
        t.server.events(),
        vec!["VerificationPassed", "PhaseChanged"]
    );

    // same period: no new pod, nothing to write
    rerun(&t).await;
    assert!(t.server.writes().is_empty(), "{:?}", t.server.writes());
    // next period: a new verification pod
    advance(&mut t, chrono::Duration::hours(1));
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    assert!(t.server.writes().iter().any(|c| c.is("POST", PODS)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_or_missing_node_is_offline() {
    let mut t = active(1, true, json!({}));
    t.leases
        .apply_watcher_event(&watcher::Event::Apply(lease("gpu-1", T0_MS - 10 * 60_000)));
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let st = &status_applies(&t)[0];
    assert_eq!(st["phase"], "Offline");
    assert!(st.get("onlineSince").is_none(), "the stretch is over");
    assert_eq!(cond(st, "Online")["reason"], "HeartbeatExpired");
    assert_eq!(cond(st, "Ready")["reason"], "HeartbeatExpired");
    assert_eq!(st["rewardEligible"], false);
    assert!(
        !t.server.writes().iter().any(|c| c.is("POST", PODS)),
        "no verification while offline"
    );
    assert_eq!(t.server.events(), vec!["PhaseChanged"]);

    // the Node is gone
    t.nodes
        .apply_watcher_event(&watcher::Event::Delete(node("gpu-1", 0, false)));
    t.leases
        .apply_watcher_event(&watcher::Event::Apply(lease("gpu-1", T0_MS)));
    let st = &rerun(&t).await[0];
    assert_eq!(st["phase"], "Offline");
    assert_eq!(cond(st, "Ready")["reason"], "NodeGone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_online_after_a_restart_resets_online_since() {
    let mut t = active(1, true, json!({}));
    // the Node rebooted 10 minutes ago
    t.nodes.apply_watcher_event(&watcher::Event::Apply(node(
        "gpu-1",
        T0_MS - 600_000,
        false,
    )));
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let st = &status_applies(&t)[0];
    assert_eq!(st["onlineSince"], rfc(T0_MS - 600_000).replace(".000", ""));
    assert_eq!(st["phase"], "Active");
    not_eligible(st, "without a break");
    assert!(t.server.events().contains(&"Restarted".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordoned_or_draining_is_draining_without_verification() {
    let mut t = active(1, false, json!({}));
    t.nodes
        .apply_watcher_event(&watcher::Event::Apply(node("gpu-1", T0_MS - 7 * H, true)));
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let st = &status_applies(&t)[0];
    assert_eq!(st["phase"], "Draining");
    assert_eq!(cond(st, "Ready")["reason"], "NodeCordoned");
    assert!(!t.server.writes().iter().any(|c| c.is("POST", PODS)));

    // uncordoned but spec.draining
    t.nodes
        .apply_watcher_event(&watcher::Event::Apply(node("gpu-1", T0_MS - 7 * H, false)));
    t.server.edit(GN, |o| o["spec"]["draining"] = json!(true));
    rerun(&t).await;
    let st = t.server.get(GN).unwrap()["status"].clone();
    assert_eq!(st["phase"], "Draining");
    assert_eq!(cond(&st, "Ready")["reason"], "DrainRequested");
}

async fn locked_stake(t: &mut T, amount: u64) -> Arc<StakePosition> {
    t.server.put(
        SP,
        json!({
            "apiVersion": "solgrid.dev/v1alpha1", "kind": "StakePosition",
            "metadata": {"name": "sp1", "namespace": "stakers"},
            "spec": {"nodeName": "gpu-1", "amount": amount, "ownerSecretRef": {"name": "owner"}},
        }),
    );
    t.server.put(
        "/api/v1/namespaces/stakers/secrets/owner",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "owner", "namespace": "stakers"},
               "data": wallet_secret_data(WALLET_A)}),
    );
    fund(&t.ctx, WALLET_A, amount);
    // the first reconcile adds the finalizer, the next one locks
    for _ in 0..2 {
        let sp: StakePosition = serde_json::from_value(t.server.get(SP).unwrap()).unwrap();
        solgrid_operator::stake::reconcile(Arc::new(sp), t.ctx.clone())
            .await
            .unwrap();
    }
    let sp: StakePosition = serde_json::from_value(t.server.get(SP).unwrap()).unwrap();
    assert_eq!(sp.status.as_ref().unwrap().locked, amount);
    t.stakes
        .apply_watcher_event(&watcher::Event::Apply(sp.clone()));
    Arc::new(sp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_total_and_eligibility() {
    let mut t = active(3, true, json!({}));
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let st = t.server.get(GN).unwrap()["status"].clone();
    not_eligible(&st, "below its minimum");
    assert!(st["reputation"]["score"].as_u64().unwrap() > 500);

    locked_stake(&mut t, 4_000 * IO).await;
    let st = &rerun(&t).await[0];
    assert_eq!(st["stakeTotal"], 4_000 * IO);
    assert_eq!(st["rewardEligible"], true);
    assert_eq!(cond(st, "RewardEligible")["status"], "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_result_slashes_the_node_and_burns_its_stake_exactly_once() {
    let mut t = verified_active();
    let sp = locked_stake(&mut t, 4_000 * IO).await;
    // the period's verification pod
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let path = pod_path(&t);
    // the worker reports the product of another challenge
    let wrong = format!(
        "{}\n",
        run_worker(&Challenge::single(1, 32), || 0).unwrap().0
    )
    .replace("\"seed\":\"1\"", "\"seed\":\"4242\"");
    finish_pod(&t, &path, &wrong);
    let supply0 = t.ctx.ledger.supply(Token::Io).unwrap();
    t.server.clear_calls();
    advance(&mut t, chrono::Duration::seconds(30));
    reconcile(gn(&t), t.g.clone()).await.unwrap();

    let st = &status_applies(&t)[0];
    assert_eq!(st["phase"], "Slashed");
    assert_eq!(st["reputation"]["score"], 0);
    assert_eq!(st["verification"]["verified"], false);
    assert_eq!(st["verification"]["failed"], 1);
    assert_eq!(st["verification"]["lastResult"], "Failed");
    assert_eq!(st["rewardEligible"], false);
    assert_eq!(cond(st, "Slashed")["status"], "True");
    assert_eq!(cond(st, "Verified")["reason"], "WrongResult");
    let ev = t.server.events();
    assert!(
        ev.contains(&"VerificationFailed".to_string()) && ev.contains(&"PhaseChanged".to_string())
    );
    // the incident is recorded in the node's OWN status; no StakePosition is written
    let inc = &st["slashIncident"];
    let last_run = st["verification"]["lastRun"].as_str().unwrap();
    assert_eq!(inc["at"], last_run);
    assert!(inc["id"].as_str().unwrap().starts_with('p'), "{inc}");
    assert!(
        !t.server.writes().iter().any(|c| c.path.starts_with(SP)),
        "the GpuNode controller writes no StakePosition"
    );
    assert_eq!(t.ctx.ledger.supply(Token::Io).unwrap(), supply0);
    assert!(t.server.writes().iter().any(|c| c.is("DELETE", &path)));
    let uid = sp.metadata.uid.clone().unwrap();
    let key = format!("{uid}/slash/{}", inc["id"].as_str().unwrap());

    // the StakePosition controller (woken by the GpuNode) records the slash in the
    // position's status (Planned, before anything is sent), then burns half of it
    let spo: StakePosition = serde_json::from_value(t.server.get(SP).unwrap()).unwrap();
    t.server.clear_calls();
    solgrid_operator::stake::reconcile(Arc::new(spo), t.ctx.clone())
        .await
        .unwrap();
    let spw: Vec<_> = t
        .server
        .writes()
        .into_iter()
        .filter(|c| c.is("PATCH", &format!("{SP}/status")))
        .collect();
    let ops = spw[0].body["status"]["operations"].as_array().unwrap();
    assert_eq!(ops.last().unwrap()["key"], key);
    assert_eq!(ops.last().unwrap()["state"], "Planned");
    assert_eq!(
        t.ctx.ledger.embedded().unwrap().confirmed_key_counts()[&key],
        1
    );
    assert_eq!(
        t.ctx.ledger.supply(Token::Io).unwrap(),
        supply0 - 2_000 * IO
    );
    assert_eq!(
        t.ctx
            .ledger
            .balance(&Account::StakeVault, Token::Io)
            .unwrap(),
        2_000 * IO
    );

    // reconciling the node again (stakes cache updated) plans nothing new
    let spo: StakePosition = serde_json::from_value(t.server.get(SP).unwrap()).unwrap();
    t.stakes
        .apply_watcher_event(&watcher::Event::Apply(spo.clone()));
    rerun(&t).await;
    assert!(!t.server.writes().iter().any(|c| c.path.starts_with(SP)));
    solgrid_operator::stake::reconcile(Arc::new(spo), t.ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        t.ctx.ledger.embedded().unwrap().confirmed_key_counts()[&key],
        1
    );
    assert_eq!(
        t.ctx.ledger.supply(Token::Io).unwrap(),
        supply0 - 2_000 * IO
    );

    // slashed: no verification, stays slashed
    advance(&mut t, chrono::Duration::hours(2));
    rerun(&t).await;
    assert!(!t.server.writes().iter().any(|c| c.is("POST", PODS)));
    assert_eq!(t.server.get(GN).unwrap()["status"]["phase"], "Slashed");

    // an admin clears it: the node verifies again, the annotation is removed
    t.server.edit(GN, |o| {
        o["metadata"]["annotations"]["solgrid.dev/clear-slash"] = json!("true")
    });
    let st = &rerun(&t).await[0];
    assert_eq!(st["phase"], "Verifying");
    assert_eq!(cond(st, "Slashed")["status"], "False");
    let meta = t
        .server
        .writes()
        .into_iter()
        .find(|c| c.is("PATCH", GN))
        .unwrap();
    assert!(meta.body["metadata"]["annotations"]["solgrid.dev/clear-slash"].is_null());
    assert!(
        meta.body["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .contains_key("solgrid.dev/clear-slash")
    );
    assert!(t.server.events().contains(&"SlashCleared".to_string()));
    assert!(
        t.server.writes().iter().any(|c| c.is("POST", PODS)),
        "re-verification starts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_too_slow_is_cheating() {
    let mut t = verified_active();
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let path = pod_path(&t);
    // killed at its deadline after running: far slower than an H100
    t.server.edit(&path, |p| p["status"] = json!({
        "phase": "Failed", "reason": "DeadlineExceeded",
        "containerStatuses": [{"name": "verify", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": 137, "startedAt": rfc(T0_MS), "finishedAt": rfc(T0_MS + 900_000)}}}],
    }));
    advance(&mut t, chrono::Duration::seconds(901));
    let st = &rerun(&t).await[0];
    assert_eq!(st["phase"], "Slashed");
    assert_eq!(cond(st, "Verified")["reason"], "TooSlow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_never_ran_is_inconclusive() {
    let mut t = verified_active();
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let path = pod_path(&t);
    t.server
        .edit(&path, |p| p["status"] = json!({"phase": "Pending"}));
    advance(&mut t, chrono::Duration::seconds(900 + 121));
    let st = &rerun(&t).await[0];
    assert_eq!(st["phase"], "Active");
    assert_eq!(st["verification"]["lastResult"], "Inconclusive");
    assert_eq!(st["verification"]["failed"], 0);
    assert!(t.server.writes().iter().any(|c| c.is("DELETE", &path)));
    assert!(
        t.server
            .events()
            .contains(&"VerificationInconclusive".to_string())
    );
}

/// Runs one period whose pod never starts: reconcile (pod created), then again
/// once it can no longer pass; the status applied last.
async fn unschedulable_period(t: &mut T) -> Value {
    rerun(t).await;
    let path = pod_path(t);
    t.server
        .edit(&path, |p| p["status"] = json!({"phase": "Pending"}));
    // H100 limit 450 ms + 50 ms slack to read: judged after 500 ms
    advance(t, chrono::Duration::milliseconds(501));
    rerun(t).await;
    assert!(t.server.writes().iter().any(|c| c.is("DELETE", &path)));
    let st = status_applies(t).pop().expect("a status write");
    advance(t, chrono::Duration::hours(1));
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconclusive_periods_in_a_row_expire_verification() {
    let mut t = verified_active();
    assert_eq!(t.g.settings.verify.expire_after, 3);
    for i in 1..=2 {
        let st = unschedulable_period(&mut t).await;
        assert_eq!(st["verification"]["inconclusive"], i);
        assert_eq!(st["verification"]["verified"], true, "period {i}");
        assert_eq!(st["phase"], "Active");
        assert_eq!(cond(&st, "Verified")["reason"], "Inconclusive");
    }
    let st = unschedulable_period(&mut t).await;
    assert_eq!(st["verification"]["inconclusive"], 3);
    assert_eq!(st["verification"]["verified"], false);
    assert_eq!(st["verification"]["failed"], 0, "not cheating");
    assert_eq!(cond(&st, "Verified")["status"], "False");
    assert_eq!(cond(&st, "Verified")["reason"], "Expired");
    assert_eq!(st["phase"], "Verifying");
    assert_eq!(st["rewardEligible"], false);
    assert!(
        t.server
            .events()
            .contains(&"VerificationExpired".to_string())
    );
    let count = |r: &str| t.ctx.metrics.verifications.with_label_values(&[r]).get();
    assert_eq!((count("Inconclusive"), count("Expired")), (3, 1));
    // a run's time over its limit is observed only when judged from a report
    assert_eq!(t.ctx.metrics.verification_time_ratio.get_sample_count(), 0);
    // a fourth keeps the reason; a pass restores it
    let st = unschedulable_period(&mut t).await;
    assert_eq!(cond(&st, "Verified")["reason"], "Expired");
    rerun(&t).await;
    let path = pod_path(&t);
    let log = good_log(&t, &path);
    finish_pod(&t, &path, &log);
    advance(&mut t, chrono::Duration::milliseconds(100));
    let st = rerun(&t).await.pop().unwrap();
    assert_eq!(st["verification"]["verified"], true);
    assert_eq!(st["verification"]["inconclusive"], 0);
    assert_eq!(st["phase"], "Active");
}

/// An Active node, verified `passed` times (the last at T0 when `ran_at_t0`),
/// online for 6 hours; `extra` merged into its status.
fn active(passed: u32, ran_at_t0: bool, extra: Value) -> T {
    let mut status = json!({"verification": {"passed": passed, "failed": 0, "verified": true},
                            "onlineSince": rfc(T0_MS - 6 * H)});
    if ran_at_t0 {
        merge(
            &mut status["verification"],
            &json!({"lastRun": rfc(T0_MS), "lastResult": "Passed"}),
        );
    }
    merge(&mut status, &extra);
    setup("Active", status)
}

fn verified_active() -> T {
    active(3, false, json!({}))
}

/// A verified node's period: its pod succeeds (the node reporting a 0 ms run) with
/// `log_of(the honest log)`, read `after` the pod's creation; the status applied and
/// its `Verified` condition.
async fn judged(log_of: impl Fn(String) -> String, after: chrono::Duration) -> (Value, Value) {
    let mut t = verified_active();
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    let path = pod_path(&t);
    let log = log_of(good_log(&t, &path));
    finish_pod(&t, &path, &log);
    advance(&mut t, after);
    let st = rerun(&t).await.remove(0);
    let c = cond(&st, "Verified").clone();
    (st, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_by_the_operators_clock_is_cheating_whatever_the_node_says() {
    // the node claims a 0 ms run started at once and its worker 0 ms of compute;
    // the operator reads the report 2 s after creating the pod (450 ms allowed)
    let (st, c) = judged(|l| l, chrono::Duration::seconds(2)).await;
    assert_eq!(st["phase"], "Slashed");
    assert_eq!(c["reason"], "TooSlow");
    assert!(c["message"].as_str().unwrap().contains("2000 ms"), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_a_report_is_cheating() {
    // only the first GPU's report: the second (g1) is missing
    let first = |l: String| l.lines().take(2).collect::<Vec<_>>().join("\n");
    let (st, c) = judged(first, chrono::Duration::milliseconds(100)).await;
    assert_eq!(st["phase"], "Slashed");
    assert_eq!(c["reason"], "WrongResult");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("device g1 did not report"),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_allocated_gpu_is_not_challenged() {
    let t = active(3, false, json!({"allocatedGpus": 1}));
    reconcile(gn(&t), t.g.clone()).await.unwrap();
    assert!(
        !t.server.writes().iter().any(|c| c.is("POST", PODS)),
        "every device is challenged at once: not while one is busy"
    );
}

#[test]
fn gpunodes_are_created_for_nodes_with_gpu_capacity_and_a_wallet() {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "worker-7",
                     "annotations": {"solgrid.dev/payout-wallet": WALLET_PROV, "solgrid.dev/country": "DE"},
                     "labels": {"topology.kubernetes.io/region": "EU_West"}},
        "status": {"capacity": {"solgrid.dev/nvidia-gpu": "2"}},
    }))
    .unwrap();
    let g = gpunode_for_node(&n).unwrap();
    assert_eq!(g.spec.node_name, "worker-7");
    assert_eq!(g.spec.payout_wallet, WALLET_PROV);
    assert_eq!(g.spec.location.region, "eu-west");
    assert_eq!(g.spec.location.country, "DE");
    // no wallet named: not created
    let mut n2 = n.clone();
    n2.metadata.annotations = None;
    assert!(gpunode_for_node(&n2).is_none());
    // no GPU
    let mut n3 = n.clone();
    n3.status = None;
    assert!(gpunode_for_node(&n3).is_none());
    // what is created passes the CRD's validation
    let v = serde_json::to_value(&g).unwrap();
    assert!(
        solgrid_crds::validate::validate_object(&v, None).is_ok(),
        "{v}"
    );
}
