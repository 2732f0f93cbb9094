//! The trust boundary of issue 12 on a real API server ([`shared`]: the local
//! v1.36 control plane, or `KUBECONFIG`): the chart's ValidatingAdmissionPolicies
//! and RBAC, rendered by the real `helm template` and applied as they ship. Each
//! attack is made with the attacker's own credentials — a device plugin's token
//! bound to a pod on node A, a tenant's ServiceAccount token — and must be refused
//! with a message that names the field and who may change it; the honest path of
//! the same identity succeeds in the same test.
//!
//! The policies are cluster-wide, so these scenarios live in a test binary of their
//! own (a control plane of their own on the local harness). On a `KUBECONFIG`
//! cluster they install the chart's cluster-scoped objects for release `solgrid`
//! in `solgrid-system`; run them only on a throw-away cluster.

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use solgrid_crds::{ComputeJob, GpuNode};
use solgrid_e2e::cluster::{TestCluster, service_account_token, shared};
use solgrid_e2e::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[path = "scenarios/chart.rs"]
mod chart;

const NS: &str = "solgrid-system";
const OPERATOR_SA: &str = "solgrid-operator";
const DEVICE_PLUGIN_SA: &str = "solgrid-device-plugin";
const OPERATOR_USER: &str = "system:serviceaccount:solgrid-system:solgrid-operator";
const NODE_A: &str = "trust-node-a";
const NODE_B: &str = "trust-node-b";
const WALLET_A: &str = "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU";
const WALLET_B: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
const ATTACKER_WALLET: &str = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T";
const JOB_FINALIZER: &str = "solgrid.dev/settlement";
const SCENARIO_FIELD_MANAGER: &str = "solgrid-e2e-trust";

// ---------------------------------------------------------------------------
// the chart, applied

/// The real helm: `$HELM`, `PATH`, or `.tools/bin/helm` (`make tools`).
fn helm() -> Result<PathBuf> {
    solgrid_e2e::chart::helm_bin()
}

/// The chart's cluster-scoped trust objects and the ServiceAccounts they name, as
/// `helm template` renders them (with the device plugin allowed to create its
/// node's GpuNode with `WALLET_A`).
fn rendered_trust_objects() -> Result<Vec<Value>> {
    let out = Command::new(helm()?)
        .arg("template")
        .arg("solgrid")
        .arg(root().join("helm/solgrid"))
        .args(["--namespace", NS])
        .args([
            "--set",
            &format!("devicePlugin.gpuNode.payoutWallet={WALLET_A}"),
            "--set",
            "devicePlugin.gpuNode.region=eu-west",
            "--set",
            "devicePlugin.gpuNode.country=DE",
        ])
        .output()
        .context("running helm template")?;
    if !out.status.success() {
        return Err(anyhow!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(de)?;
        let keep = matches!(
            v["kind"].as_str(),
            Some(
                "ValidatingAdmissionPolicy"
                    | "ValidatingAdmissionPolicyBinding"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "ServiceAccount"
            )
        );
        if keep {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Server-side applies one object, whatever its kind.
async fn apply(client: &Client, doc: &Value) -> Result<()> {
    solgrid_e2e::chart::apply(client, doc, SCENARIO_FIELD_MANAGER).await?;
    Ok(())
}

fn api_message(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.message.clone())),
        _ => None,
    }
}

/// `r` must be a 403 whose message contains every one of `want`.
#[track_caller]
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>, want: &[&str]) -> String {
    match r {
        Ok(v) => panic!("{what}: was admitted ({v:?}); it must be refused"),
        Err(e) => {
            let (code, msg) =
                api_message(&e).unwrap_or_else(|| panic!("{what}: not an API refusal: {e}"));
            assert_eq!(code, 403, "{what}: {msg}");
            for w in want {
                assert!(msg.contains(w), "{what}: message {msg:?} lacks {w:?}");
            }
            eprintln!("refused as it should be — {what}: {msg}");
            msg
        }
    }
}

/// `attempt`'s first answer that is not an RBAC refusal containing `denied`: retried
/// for 30 s while `grant`, just made, has not reached the authorizer.
async fn once_granted<T, F, Fut>(grant: &str, denied: &str, attempt: F) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    wait_for(Duration::from_secs(30), || async {
        match attempt().await {
            Err(e) if format!("{e}").contains(denied) => None,
            other => Some(other),
        }
    })
    .await
    .unwrap_or_else(|| panic!("{grant} did not take effect in 30 s"))
}

#[track_caller]
fn admitted<T>(what: &str, r: Result<T, kube::Error>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: the honest path was refused: {e}"))
}

// ---------------------------------------------------------------------------
// the market: two nodes, their GpuNodes, the operator's client

struct Market {
    tc: &'static TestCluster,
    admin: Client,
    operator: Client,
}

async fn create_if_missing<K>(api: &Api<K>, obj: Value) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(obj)?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Installs the CRDs and the chart's trust objects, two Nodes with a GpuNode each
/// (created by the operator's own identity), and waits until every policy is
/// enforced. Idempotent: each test calls it.
async fn market() -> Option<Market> {
    init_test_tracing();
    let tc = shared()?;
    let admin = tc.client().await.expect("admin client");
    setup(tc, &admin).await.expect("setting up the market");
    let token = service_account_token(&admin, NS, OPERATOR_SA, None)
        .await
        .expect("operator token");
    let operator = tc.client_for_token(&token).await.expect("operator client");
    let nodes: Api<GpuNode> = Api::all(operator.clone());
    for (node, wallet) in [(NODE_A, WALLET_A), (NODE_B, WALLET_B)] {
        create_if_missing(&nodes, gpunode(node, node, wallet))
            .await
            .expect("the operator creates GpuNodes");
    }
    wait_enforced(&admin).await.expect("policies enforced");
    Some(Market {
        tc,
        admin,
        operator,
    })
}

async fn setup(_tc: &TestCluster, admin: &Client) -> Result<()> {
    install_crds(admin).await?;
    let nss: Api<Namespace> = Api::all(admin.clone());
    create_if_missing(
        &nss,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await?;
    let docs = rendered_trust_objects()?;
    // ServiceAccounts and RBAC first, the policies last
    for pass in [false, true] {
        for d in &docs {
            let policy = d["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy"));
            if policy == pass {
                apply(admin, d).await?;
            }
        }
    }
    let nodes: Api<Node> = Api::all(admin.clone());
    for n in [NODE_A, NODE_B] {
        create_if_missing(
            &nodes,
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                   // never schedulable: nothing is meant to run here
                   "spec": {"unschedulable": true}}),
        )
        .await?;
    }
    Ok(())
}

/// Polls until the policies refuse a probe (a server-side dry run), so that the
/// scenarios do not race the API server's policy informer. The probes hit the two
/// policies applied last (helm renders them in template-path order, and the
/// policy source loads them in that order), so the others are loaded by then.
async fn wait_enforced(admin: &Client) -> Result<()> {
    let gn: Api<GpuNode> = Api::all(admin.clone());
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    // the device-plugin policy: its matchCondition names a user we only get in a
    // scenario; the policy objects' own status shows it was loaded without errors
    let vaps = kube::discovery::pinned_kind(
        admin,
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
        ),
    )
    .await?
    .0;
    let api: Api<DynamicObject> = Api::all_with(admin.clone(), &vaps);
    for p in api.list(&Default::default()).await? {
        let warnings = &p.data["status"]["typeChecking"]["expressionWarnings"];
        if warnings.as_array().is_some_and(|w| !w.is_empty()) {
            eprintln!("note: {} type-checking warnings: {warnings}", p.name_any());
        }
    }
    let last = std::sync::Mutex::new(String::new());
    let status_probe = wait_for(Duration::from_secs(60), || async {
        let r = gn
            .patch_status(
                NODE_B,
                &dry,
                &Patch::Merge(json!({"status": {"phase": "Active"}})),
            )
            .await;
        match r {
            Err(e) if format!("{e}").contains("written only by the solgrid operator") => Some(()),
            other => {
                *last.lock().unwrap() = format!("{:?}", other.map(|_| "admitted"));
                None
            }
        }
    })
    .await;
    status_probe.ok_or_else(|| {
        anyhow!(
            "market-objects policy not enforced after 60 s; last probe: {}",
            last.lock().unwrap()
        )
    })?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let probe: Pod = serde_json::from_value(gpu_pod("probe", false))?;
    wait_for(Duration::from_secs(60), || async {
        match pods.create(&pp, &probe).await {
            Err(e) if format!("{e}").contains("requests a solgrid GPU") => Some(()),
            _ => None,
        }
    })
    .await
    .ok_or_else(|| anyhow!("gpu-pods policy not enforced after 60 s"))?;
    Ok(())
}

/// A bare pod asking for one solgrid GPU (in an init container when `init`).
fn gpu_pod(name: &str, init: bool) -> Value {
    let gpu = json!({"name": "c", "image": "registry.k8s.io/pause:3.10",
                     "resources": {"limits": {"solgrid.dev/nvidia-gpu": "1"}}});
    let plain = json!({"name": "main", "image": "registry.k8s.io/pause:3.10"});
    let mut spec = json!({"containers": [if init { plain.clone() } else { gpu.clone() }]});
    if init {
        spec["initContainers"] = json!([gpu]);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

/// The device plugin's inventory apply, as device-plugin/src/inventory.rs sends it.
fn inventory(node: &str, gpus: usize) -> Value {
    let list: Vec<Value> = (0..gpus)
        .map(|i| {
            json!({"id": format!("GPU-{node}-{i}"), "vendor": "nvidia",
                   "model": "NVIDIA GeForce RTX 4090", "vramMib": 24564, "health": "Healthy"})
        })
        .collect();
    json!({
        "apiVersion": "solgrid.dev/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": node},
        "status": {"gpus": list, "gpuCount": gpus, "model": "NVIDIA GeForce RTX 4090",
                   "lastHeartbeat": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
    })
}

/// A GpuNode `name` for Node `node`, paying out to `wallet`, in eu-west/DE (where
/// the providers configured their nodes).
fn gpunode(name: &str, node: &str, wallet: &str) -> Value {
    json!({
        "apiVersion": "solgrid.dev/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "payoutWallet": wallet,
                 "location": {"region": "eu-west", "country": "DE"}},
    })
}

/// A JSON merge patch of `name` (as `kubectl patch --type merge`).
async fn merge<K>(api: &Api<K>, name: &str, patch: Value) -> Result<K, kube::Error>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

/// A JSON merge patch of `name`'s status subresource.
async fn merge_status<K>(api: &Api<K>, name: &str, patch: Value) -> Result<K, kube::Error>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

/// Creates GpuNode `name` (see [`gpunode`]) with `api`'s identity.
async fn create_gpunode(
    api: &Api<GpuNode>,
    name: &str,
    node: &str,
    wallet: &str,
) -> Result<GpuNode, kube::Error> {
    let obj: GpuNode = serde_json::from_value(gpunode(name, node, wallet)).unwrap();
    api.create(&PostParams::default(), &obj).await
}

/// A merge patch that sets label `k` to `v`.
fn label(k: &str, v: &str) -> Value {
    json!({"metadata": {"labels": {k: v}}})
}

fn ssa(manager: &str) -> PatchParams {
    PatchParams::apply(manager).force()
}

/// A device-plugin pod on `node` and a token bound to it (what the kubelet mounts).
async fn node_token(m: &Market, node: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(m.admin.clone(), NS);
    let name = format!("device-plugin-{node}");
    create_if_missing(
        &pods,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name},
               "spec": {"nodeName": node, "serviceAccountName": DEVICE_PLUGIN_SA,
                        "containers": [{"name": "p", "image": "registry.k8s.io/pause:3.10"}]}}),
    )
    .await?;
    let pod = pods.get(&name).await?;
    let uid = pod.uid().ok_or_else(|| anyhow!("pod without uid"))?;
    service_account_token(&m.admin, NS, DEVICE_PLUGIN_SA, Some((&name, &uid))).await
}

// ---------------------------------------------------------------------------
// scenarios

/// Node A's device-plugin token: its own inventory and GPU labels go through;
/// node B's GpuNode, any spec (payout wallet), operator status (phase), other
/// labels and other Nodes are refused, and so is an unbound token of the same
/// ServiceAccount. With RBAC widened by mistake, the policy still refuses the spec.
#[tokio::test]
async fn a_node_token_writes_only_its_own_nodes_inventory() {
    let Some(m) = market().await else { return };
    let token = node_token(&m, NODE_A).await.expect("node A token");
    let node_a = m.tc.client_for_token(&token).await.unwrap();
    let gn: Api<GpuNode> = Api::all(node_a.clone());
    let nodes: Api<Node> = Api::all(node_a.clone());
    let dp = ssa("solgrid-device-plugin");

    // the operator marks node A Slashed (status is the operator's)
    let op_gn: Api<GpuNode> = Api::all(m.operator.clone());
    admitted(
        "operator sets node A Slashed",
        op_gn
            .patch_status(
                NODE_A,
                &ssa("solgrid-operator"),
                &Patch::Apply(
                    json!({"apiVersion": "solgrid.dev/v1alpha1", "kind": "GpuNode",
                                     "metadata": {"name": NODE_A},
                                     "status": {"phase": "Slashed"}}),
                ),
            )
            .await,
    );

    // honest: node A publishes its own inventory and labels
    let after = admitted(
        "node A publishes its inventory",
        gn.patch_status(NODE_A, &dp, &Patch::Apply(inventory(NODE_A, 2)))
            .await,
    );
    let st = after.status.expect("status");
    assert_eq!(st.gpu_count, 2);
    assert_eq!(
        format!("{:?}", st.phase),
        "Slashed",
        "the inventory leaves the phase alone"
    );
    let labels = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_A,
        "labels": {"solgrid.dev/nvidia-gpu.count": "2",
                   "solgrid.dev/nvidia-gpu.model": "NVIDIA-GeForce-RTX-4090",
                   "solgrid.dev/nvidia-gpu.memory-mib": "24564",
                   "solgrid.dev/gpu.present": "true"}}});
    admitted(
        "node A labels its own Node",
        nodes.patch(NODE_A, &dp, &Patch::Apply(&labels)).await,
    );

    // attacks
    let steal = json!({"spec": {"payoutWallet": ATTACKER_WALLET}});
    refused(
        "node A writes node B's inventory",
        gn.patch_status(NODE_B, &dp, &Patch::Apply(inventory(NODE_B, 8)))
            .await,
        &[
            "GpuNode trust-node-b",
            "not for node trust-node-a",
            "may write only its own",
        ],
    );
    refused(
        "node A sets its Slashed GpuNode Active",
        merge_status(&gn, NODE_A, json!({"status": {"phase": "Active"}})).await,
        &["status.phase is written only by the solgrid operator"],
    );
    refused(
        "node A sets its reputation",
        merge_status(
            &gn,
            NODE_A,
            json!({"status": {"reputation": {"score": 1000}}}),
        )
        .await,
        &["status.reputation", "only by the solgrid operator"],
    );
    refused(
        "node A changes its payout wallet (RBAC)",
        merge(&gn, NODE_A, steal.clone()).await,
        &["cannot patch"],
    );
    refused(
        "node A changes node B's payout wallet (RBAC)",
        merge(&gn, NODE_B, steal.clone()).await,
        &["cannot patch"],
    );
    let labels_b = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_B,
        "labels": {"solgrid.dev/nvidia-gpu.count": "8"}}});
    refused(
        "node A labels node B",
        nodes.patch(NODE_B, &dp, &Patch::Apply(&labels_b)).await,
        &["Node trust-node-b", "not for node trust-node-a"],
    );
    refused(
        "node A sets the operator's market-state label on itself",
        merge(&nodes, NODE_A, label("solgrid.dev/market-state", "x")).await,
        &["label solgrid.dev/market-state may not be set by the device plugin"],
    );
    refused(
        "node A relabels its hostname",
        merge(&nodes, NODE_A, label("kubernetes.io/hostname", NODE_B)).await,
        &["label kubernetes.io/hostname may not be set by the device plugin"],
    );
    refused(
        "node A uncordons itself",
        merge(&nodes, NODE_A, json!({"spec": {"unschedulable": false}})).await,
        &["not the Node's spec"],
    );
    refused(
        "node A creates a GpuNode for node B",
        create_gpunode(&gn, "trust-node-b-2", NODE_B, WALLET_A).await,
        &["stands for node trust-node-b, not for node trust-node-a"],
    );
    refused(
        "node A creates a GpuNode of its own with the attacker's wallet",
        create_gpunode(&gn, "trust-node-a-2", NODE_A, ATTACKER_WALLET).await,
        &["with the payout wallet, region and country the provider configured"],
    );

    // honest: a GpuNode of its own node, with the spec the provider configured
    admitted(
        "node A creates a GpuNode of its own with the configured spec",
        create_gpunode(&gn, "trust-node-a-own", NODE_A, WALLET_A).await,
    );
    admitted(
        "the operator removes it",
        op_gn
            .delete("trust-node-a-own", &DeleteParams::default())
            .await,
    );

    // the same ServiceAccount without a pod-bound token has no node: refused
    let unbound = service_account_token(&m.admin, NS, DEVICE_PLUGIN_SA, None)
        .await
        .unwrap();
    let unbound = m.tc.client_for_token(&unbound).await.unwrap();
    refused(
        "an unbound device-plugin token publishes inventory",
        Api::<GpuNode>::all(unbound)
            .patch_status(NODE_A, &dp, &Patch::Apply(inventory(NODE_A, 2)))
            .await,
        &["carries no node identity"],
    );

    // RBAC widened by mistake: the policy still keeps the spec the provider's
    let careless = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "trust-careless-device-plugin"},
        "rules": [{"apiGroups": ["solgrid.dev"], "resources": ["gpunodes"],
                   "verbs": ["get", "patch", "update", "delete"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "trust-careless-device-plugin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "trust-careless-device-plugin"},
        "subjects": [{"kind": "ServiceAccount", "name": DEVICE_PLUGIN_SA, "namespace": NS}]});
    apply(&m.admin, &careless).await.unwrap();
    apply(&m.admin, &binding).await.unwrap();
    let msg = once_granted("the widened RBAC", "cannot patch", || {
        merge(&gn, NODE_A, steal.clone())
    })
    .await;
    refused(
        "node A (with widened RBAC) changes its payout wallet",
        msg,
        &[
            "spec.payoutWallet may not be changed by a node token",
            "the provider's",
        ],
    );
    refused(
        "node A (with widened RBAC) deletes node B's GpuNode",
        gn.delete(NODE_B, &DeleteParams::default()).await,
        &["may not delete it"],
    );
    let rbac = kube::discovery::pinned_kind(
        &m.admin,
        &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
    )
    .await
    .unwrap()
    .0;
    let _ = Api::<DynamicObject>::all_with(m.admin.clone(), &rbac)
        .delete("trust-careless-device-plugin", &DeleteParams::default())
        .await;

    // and the honest path still works after all that
    let after = admitted(
        "node A publishes again",
        gn.patch_status(NODE_A, &dp, &Patch::Apply(inventory(NODE_A, 3)))
            .await,
    );
    assert_eq!(after.status.unwrap().gpu_count, 3);
    let b = Api::<GpuNode>::all(m.admin.clone())
        .get(NODE_B)
        .await
        .unwrap();
    assert_eq!(
        b.spec.payout_wallet, WALLET_B,
        "node B's wallet is untouched"
    );
    assert!(b.status.is_none_or(|s| s.gpu_count == 0));
}

/// The extender's ServiceAccount (RBAC: patch on every Node) changes the
/// `solgrid.dev/market-state` label, and nothing else on a Node.
#[tokio::test]
async fn the_extender_changes_only_the_market_state_label() {
    let Some(m) = market().await else { return };
    let token = service_account_token(&m.admin, NS, "solgrid-scheduler", None)
        .await
        .unwrap();
    let ext = m.tc.client_for_token(&token).await.unwrap();
    let nodes: Api<Node> = Api::all(ext);
    admitted(
        "the extender sets market-state",
        merge(&nodes, NODE_B, label("solgrid.dev/market-state", "Active")).await,
    );
    refused(
        "the extender sets another label",
        merge(&nodes, NODE_B, label("solgrid.dev/nvidia-gpu.count", "64")).await,
        &["may only change the label solgrid.dev/market-state, not solgrid.dev/nvidia-gpu.count"],
    );
    refused(
        "the extender uncordons a node",
        merge(&nodes, NODE_B, json!({"spec": {"unschedulable": false}})).await,
        &["not the Node's spec or annotations"],
    );
}

/// A tenant with the chart's requester role: creates and cancels its job, but may
/// not write status (neither through its role nor with status rights granted by
/// mistake), remove the operator's finalizer, or change a funded job's terms.
#[tokio::test]
async fn a_tenant_cannot_write_status_remove_finalizers_or_rewrite_a_running_job() {
    let Some(m) = market().await else { return };
    let (ns, alice) = requester_in(&m, "trust-team", "alice").await;
    let (secret, job) = llm_example(&ns, &["true"]).unwrap();
    let job_name = job["metadata"]["name"].as_str().unwrap().to_string();

    // honest: the tenant creates its wallet Secret and its job
    admitted("tenant creates its Secret", apply_as(&alice, &secret).await);
    let jobs: Api<ComputeJob> = Api::namespaced(alice.clone(), &ns);
    admitted(
        "tenant creates its ComputeJob",
        jobs.create(
            &PostParams::default(),
            &serde_json::from_value(job).unwrap(),
        )
        .await,
    );

    let finalizers = |f: Value| json!({"metadata": {"finalizers": f}});

    // the operator takes it: finalizer, then Running
    let op_jobs: Api<ComputeJob> = Api::namespaced(m.operator.clone(), &ns);
    admitted(
        "operator adds its finalizer",
        merge(&op_jobs, &job_name, finalizers(json!([JOB_FINALIZER]))).await,
    );
    admitted(
        "operator records the job Running",
        merge_status(&op_jobs, &job_name, json!({"status": {"phase": "Running"}})).await,
    );

    // attacks through the tenant's own role
    let planted = json!({"status": {"phase": "Settled"}});
    refused(
        "tenant writes computejobs/status (RBAC)",
        merge_status(&jobs, &job_name, planted.clone()).await,
        &["cannot patch resource \"computejobs/status\""],
    );
    refused(
        "tenant removes the settlement finalizer",
        merge(&jobs, &job_name, finalizers(json!(null))).await,
        &[
            "metadata.finalizers solgrid.dev/settlement is removed only by the solgrid operator",
            OPERATOR_USER,
        ],
    );
    refused(
        "tenant raises its price cap on the running job",
        merge(&jobs, &job_name, json!({"spec": {"maxPricePerGpuHour": 1}})).await,
        &["spec.maxPricePerGpuHour cannot change once the job is Running"],
    );

    // status rights granted by mistake: the policy still refuses
    let careless = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "trust-careless-status", "namespace": ns},
        "rules": [{"apiGroups": ["solgrid.dev"], "resources": ["computejobs/status"],
                   "verbs": ["get", "patch", "update"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "trust-careless-status", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "trust-careless-status"},
        "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": ns}]});
    apply(&m.admin, &careless).await.unwrap();
    apply(&m.admin, &binding).await.unwrap();
    let r = once_granted("the widened RBAC", "cannot patch", || {
        merge_status(&jobs, &job_name, planted.clone())
    })
    .await;
    refused(
        "tenant (with status rights) plants a settlement",
        r,
        &[
            "status is written only by the solgrid operator",
            OPERATOR_USER,
        ],
    );

    // honest: shorten and cancel; the operator's finalizer stays
    let shortened = admitted(
        "tenant shortens maxDurationSeconds",
        merge(
            &jobs,
            &job_name,
            json!({"spec": {"maxDurationSeconds": 600}}),
        )
        .await,
    );
    assert_eq!(shortened.spec.max_duration_seconds, 600);
    let cancelled = admitted(
        "tenant cancels",
        merge(&jobs, &job_name, json!({"spec": {"cancel": true}})).await,
    );
    assert!(cancelled.spec.cancel);
    assert_eq!(cancelled.finalizers(), [JOB_FINALIZER.to_string()]);
    // a finalizer of its own the tenant may add and remove
    admitted(
        "tenant adds its own finalizer",
        merge(
            &jobs,
            &job_name,
            finalizers(json!([JOB_FINALIZER, "example.com/keep"])),
        )
        .await,
    );
    admitted(
        "tenant removes its own finalizer",
        merge(&jobs, &job_name, finalizers(json!([JOB_FINALIZER]))).await,
    );
    // the operator settles and releases it
    admitted(
        "operator removes its finalizer",
        merge(&op_jobs, &job_name, finalizers(json!(null))).await,
    );
    delete_namespace(&m.admin, &ns).await;
}

/// No free GPUs: a tenant's bare pod (or init container) asking for
/// `solgrid.dev/nvidia-gpu` is refused, even with pod rights; its other pods and
/// the operator's GPU pods are admitted.
#[tokio::test]
async fn a_tenant_pod_cannot_take_solgrid_gpus_without_a_job() {
    let Some(m) = market().await else { return };
    let (ns, bob) = requester_in(&m, "trust-pods", "bob").await;
    let pods: Api<Pod> = Api::namespaced(bob.clone(), &ns);
    let pod = |v: Value| -> Pod { serde_json::from_value(v).unwrap() };
    refused(
        "tenant creates a bare GPU pod (RBAC: requesters create no pods)",
        pods.create(&PostParams::default(), &pod(gpu_pod("free-gpu", false)))
            .await,
        &["cannot create resource \"pods\""],
    );
    // pod rights (a tenant's usual `edit` role): still no GPU without a job
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "bob-edit", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "bob", "namespace": ns}]});
    apply(&m.admin, &binding).await.unwrap();
    let (pp, free_gpu) = (PostParams::default(), pod(gpu_pod("free-gpu", false)));
    let r = once_granted("the edit role", "cannot create", || {
        pods.create(&pp, &free_gpu)
    })
    .await;
    refused(
        "tenant (with pod rights) creates a bare GPU pod",
        r,
        &[
            "container c requests a solgrid GPU (solgrid.dev/*)",
            "only the solgrid operator",
            "create a ComputeJob instead",
        ],
    );
    refused(
        "tenant hides the GPU in an init container",
        pods.create(&PostParams::default(), &pod(gpu_pod("free-gpu-init", true)))
            .await,
        &["container c requests a solgrid GPU"],
    );
    admitted(
        "tenant creates a pod without GPUs",
        pods.create(
            &PostParams::default(),
            &pod(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
                        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})),
        )
        .await,
    );
    // the operator's worker pods are admitted
    admitted(
        "operator creates a GPU worker pod",
        Api::<Pod>::namespaced(m.operator.clone(), &ns)
            .create(&PostParams::default(), &pod(gpu_pod("worker-0", false)))
            .await,
    );
    delete_namespace(&m.admin, &ns).await;
}

/// A ServiceAccount `name` in `ns` bound (RoleBinding) to the chart's tenant role,
/// and a client with its token.
async fn tenant(m: &Market, ns: &str, name: &str, role: &str) -> Result<Client> {
    solgrid_e2e::chart::tenant_client(m.tc, &m.admin, ns, name, role).await
}

/// A fresh namespace (`prefix`-…) and a client of ServiceAccount `name` in it with
/// the chart's requester role.
async fn requester_in(m: &Market, prefix: &str, name: &str) -> (String, Client) {
    let ns = namespace(&m.admin, prefix).await.unwrap();
    wait_default_sa(&m.admin, &ns).await.unwrap();
    let client = tenant(m, &ns, name, "solgrid-requester").await.unwrap();
    (ns, client)
}

/// Creates an object with a client (a tenant's), whatever its kind.
async fn apply_as(client: &Client, doc: &Value) -> Result<(), kube::Error> {
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    match doc["kind"].as_str() {
        Some("Secret") => {
            let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
            api.patch(name, &ssa(SCENARIO_FIELD_MANAGER), &Patch::Apply(doc))
                .await
                .map(drop)
        }
        other => panic!("apply_as: {other:?} not supported"),
    }
}
