//! `helm upgrade` from the previous release while a job runs, on the local control
//! plane (its own, in this binary: a release installs cluster-wide RBAC and
//! admission policies that the trust scenarios apply in their own way).
//!
//! The previous release is the packaged chart `helm-tests/fixtures/releases/
//! solgrid-<version>.tgz`. The real `helm install` puts it on the cluster (CRDs,
//! ServiceAccounts, RBAC, admission policies, the market ConfigMap, the ledger's
//! PVC); its Deployments' pods stay Pending (no kubelet runs images here: a
//! nodeSelector no node has), and the operator and the extender run as processes
//! with the tokens of the chart's ServiceAccounts, the operator with the flags the
//! release's Deployment gives it and the market.json of its ConfigMap. The nodes
//! register under the release's CRDs and device-plugin policy; the replica playing
//! the previous release's operator is this tree's binary, so this tree's CRDs go
//! in before it acts (it writes their status fields).
//!
//! A stake is locked on a node (its owner funded by a LedgerGrant) and a job is
//! submitted; while the job runs, the upgrade goes as docs/upgrades.md says:
//! the new CRDs (server-side apply of `helm show crds`), `helm upgrade` to this
//! chart, then the rolling restart as the Deployment does it: a replica of the new
//! release starts and must be ready (`/readyz`) while the old leader still holds
//! the Lease and the journal, and only then is the old one stopped; the new one
//! takes the same Lease. The job settles exactly once, the stake is as it was,
//! the ledger journal keeps every record, the PVC, the ServiceAccounts and the stored objects are the same
//! objects, and neither replica is refused anything.
//!
//! Then the idle market: the Settled job, the Active stake and the Active GpuNodes
//! are reconciled (touched annotations, the nodes' 5 s heartbeats) but never
//! written again.

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use solgrid_crds::{ComputeJob, ComputeJobPhase, GpuNode, StakePosition};
use solgrid_e2e::chart::{
    apply, chart_crds, chart_dir, device_plugin_token, helm, previous_release, template,
};
use solgrid_e2e::cluster::{TestCluster, http_get, service_account_token, shared};
use solgrid_e2e::market::{Market, MarketOpts, fit_min_reputation, read_journal};
use solgrid_e2e::nodesim::SimNodeSpec;
use solgrid_e2e::{example, init_test_tracing, install_crds, wait_for};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NS: &str = "solgrid-system";
const NODES: [&str; 2] = ["e2e-upg-a", "e2e-upg-b"];
/// The flags the `Market` fixture gives every replica itself (paths and ports of
/// this machine, the scenario's namespace, test-speed timers); every other flag of
/// the release's Deployment is passed as the release passes it.
const FIXTURE_FLAGS: [&str; 9] = [
    "--http-addr",
    "--ledger-path",
    "--watch-namespace",
    "--leader-election",
    "--lease-name",
    "--lease-namespace",
    "--running-requeue-seconds",
    "--reward-interval-seconds",
    "--verifier-image",
];

/// Values of both releases: the chart's defaults, with its pods kept off every
/// node (the processes play them).
fn values_file(tc: &TestCluster) -> Result<PathBuf> {
    let never = json!({"e2e.solgrid.dev/no-kubelet": "true"});
    let values = json!({
        "operator": {"nodeSelector": never},
        "scheduler": {"nodeSelector": never},
        "devicePlugin": {"nodeSelector": never},
    });
    let path = tc.dir().join("upgrade-values.yaml");
    std::fs::write(&path, serde_json::to_vec_pretty(&values)?)?;
    Ok(path)
}

/// The operator container's `--flag=value`s in a rendered release.
fn operator_args(docs: &[Value]) -> Result<BTreeMap<String, String>> {
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "solgrid-operator")
        .ok_or_else(|| anyhow!("the release has no operator Deployment"))?;
    let c = dep["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "operator"))
        .ok_or_else(|| anyhow!("no operator container"))?;
    c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let a = a.as_str().ok_or_else(|| anyhow!("arg {a}"))?;
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The flags a replica of this release runs with, besides the fixture's own: the
/// release's, with its market.json (ConfigMap `solgrid-market` on the cluster,
/// where the pod mounts it) written to a file here.
async fn release_flags(
    admin: &Client,
    docs: &[Value],
    dir: &Path,
    release: &str,
) -> Result<Vec<String>> {
    let args = operator_args(docs)?;
    // the fixture's election is the release's: the same Lease, in the same place
    anyhow::ensure!(args.get("--leader-election").map(String::as_str) == Some("true"));
    anyhow::ensure!(args.get("--lease-name").map(String::as_str) == Some("solgrid-operator"));
    anyhow::ensure!(args.get("--lease-namespace").map(String::as_str) == Some(NS));
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .get("solgrid-market")
        .await?;
    let market = cm
        .data
        .and_then(|d| d.get("market.json").cloned())
        .ok_or_else(|| anyhow!("ConfigMap solgrid-market has no market.json"))?;
    let market_path = dir.join(format!("market-{release}.json"));
    std::fs::write(&market_path, market)?;
    Ok(args
        .into_iter()
        .filter(|(k, _)| !FIXTURE_FLAGS.contains(&k.as_str()))
        .map(|(k, v)| match k.as_str() {
            "--market-config" => format!("{k}={}", market_path.display()),
            _ if v.is_empty() => k,
            _ => format!("{k}={v}"),
        })
        .collect())
}

/// A node's GPU inventory as its device plugin applies it (the simulated node's
/// one GPU).
fn inventory(node: &str) -> Value {
    let spec = SimNodeSpec::rtx4090(node, 1);
    json!({
        "apiVersion": solgrid_crds::API_VERSION, "kind": "GpuNode",
        "metadata": {"name": node},
        "status": {"gpus": [{"id": format!("GPU-{node}-0"), "vendor": "nvidia",
                             "model": spec.gpu_model, "vramMib": spec.vram_mib,
                             "health": "Healthy"}],
                   "gpuCount": 1, "model": spec.gpu_model,
                   "lastHeartbeat": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
    })
}

/// The address an operator's HTTP server (`/readyz`) listens on, from its log.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .find_map(|l| l.split("http server listening addr=").nth(1))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn lease_holder(admin: &Client) -> Option<String> {
    Api::<Lease>::namespaced(admin.clone(), NS)
        .get_opt("solgrid-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

fn uid_of<K: kube::Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap_or_default()
}

/// `resourceVersion` and `managedFields` of an object: what any write changes.
fn write_marks<K: kube::Resource>(o: &K) -> (String, String) {
    (
        o.meta().resource_version.clone().unwrap_or_default(),
        serde_json::to_string(&o.meta().managed_fields).unwrap_or_default(),
    )
}

/// Every intent key confirmed in the journal, with its count.
fn journal_keys(journal: &Path) -> Result<std::collections::HashMap<String, usize>> {
    Ok(read_journal(journal)?.confirmed_key_counts())
}

#[tokio::test]
async fn helm_upgrade_while_a_job_runs_keeps_the_ledger_the_leader_and_the_job() {
    init_test_tracing();
    let Some(tc) = shared() else { return };
    if !tc.is_local() {
        eprintln!("SKIP: needs the local control plane (simulated nodes at 127.0.1.x)");
        return;
    }
    let _one = tc.exclusive().await;
    let t0 = Instant::now();
    if let Err(e) = scenario(tc).await {
        panic!("{e:#}");
    }
    eprintln!("upgrade scenario: {:.1} s", t0.elapsed().as_secs_f64());
}

async fn scenario(tc: &'static TestCluster) -> Result<()> {
    let admin = tc.client().await?;
    let (old_version, old_chart) = previous_release()?;
    let values = values_file(tc)?;
    let v = values.display().to_string();

    // --- the previous release, installed by helm
    let t = Instant::now();
    let old_c = old_chart.display().to_string();
    helm(
        tc,
        &[
            "install",
            "solgrid",
            &old_c,
            "-n",
            NS,
            "--create-namespace",
            "-f",
            &v,
        ],
    )?;
    eprintln!(
        "helm install solgrid {old_version}: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let old_docs = template(tc, &old_chart, NS, &values)?;
    let token = |sa: &'static str| {
        let admin = admin.clone();
        async move {
            let t = service_account_token(&admin, NS, sa, None).await?;
            tc.kubeconfig_for_token(sa, &t)
        }
    };
    let payer = example("computejob-llm-finetune.yaml")?[0]["stringData"]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("the example has no payer address"))?
        .to_string();
    let mut opts = MarketOpts::new("e2e-upgrade", &[(NODES[0], 1), (NODES[1], 1)]);
    opts.operator_kubeconfig = Some(token("solgrid-operator").await?);
    opts.extender_kubeconfig = Some(token("solgrid-scheduler").await?);
    opts.lease_name = Some("solgrid-operator".into());
    opts.publish_inventory = false;
    opts.operator_args = release_flags(&admin, &old_docs, tc.dir(), &old_version).await?;
    let mut m = Market::up(tc, opts, &payer).await?;
    // The nodes register under the previous release: its CRDs (Market::up applied
    // this tree's) and its device-plugin policy, which admits a first inventory
    // only with the status defaults of the CRDs it was made with.
    for crd in chart_crds(tc, &old_chart)? {
        apply(&admin, &crd, "solgrid-e2e").await?;
    }
    for node in NODES {
        let t = device_plugin_token(&admin, NS, "solgrid-device-plugin", node).await?;
        let dp = tc.client_for_token(&t).await?;
        Api::<GpuNode>::all(dp)
            .patch_status(
                node,
                &PatchParams::apply("solgrid-device-plugin").force(),
                &Patch::Apply(inventory(node)),
            )
            .await
            .with_context(|| format!("{node}'s inventory, with its device plugin's token"))?;
    }
    // The replica that plays the previous release's operator is this tree's
    // binary: it writes the status fields of this tree's CRDs (the API server
    // refuses a status with an undeclared field), so they go in before it acts.
    install_crds(&admin).await?;
    // A CRD update ends every watch of its kind (410 Expired) and the extender's
    // re-lists with backoff: a job created in that moment reaches kube-scheduler
    // before the extender's cache and waits for a retry. Let the watches come back
    // first (the scenario is about the upgrade, not that race).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = run_through_upgrade(tc, &admin, &mut m, &payer, &values).await;
    let r = match r {
        Ok(job) => idle(&m, &job).await,
        Err(e) => Err(e),
    };
    let r = r.map_err(|e| m.with_logs(format!("{e:#}")));
    m.down().await;
    r
}

/// Submits the job, upgrades while it runs, rolls the operator; the settled job's
/// name.
async fn run_through_upgrade(
    tc: &'static TestCluster,
    admin: &Client,
    m: &mut Market,
    payer: &str,
    values: &Path,
) -> Result<String> {
    let scores = m.wait_active(&NODES, Duration::from_secs(90)).await?;
    let stake_before = m.stake(NODES[0]).await?;
    let (secret, mut job) = m.example(&["sleep", "25"])?;
    fit_min_reputation(&mut job, &scores);
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    m.submit(&secret, &job).await?;
    let before = m.balances(payer)?;
    m.wait_job(&name, Duration::from_secs(60), |st| {
        st.phase == ComputeJobPhase::Running
    })
    .await?;

    // --- what must outlive the upgrade
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), NS);
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    let pvc_uid = uid_of(&pvcs.get("solgrid-ledger").await?);
    let sa_uids = [
        uid_of(&sas.get("solgrid-operator").await?),
        uid_of(&sas.get("solgrid-scheduler").await?),
    ];
    let job_before = m.jobs().get(&name).await?;
    let nodes_before: Vec<GpuNode> = futures::future::try_join_all(
        NODES.map(|n| async move { Api::<GpuNode>::all(admin.clone()).get(n).await }),
    )
    .await?;
    let leader = "e2e-upgrade-operator-0".to_string();
    anyhow::ensure!(
        lease_holder(admin).await.as_deref() == Some(leader.as_str()),
        "the previous release's replica does not hold the Lease"
    );
    let keys_before = journal_keys(&m.journal)?;

    // --- the upgrade (docs/upgrades.md): CRDs first, then helm upgrade
    let t = Instant::now();
    for crd in chart_crds(tc, &chart_dir())? {
        apply(admin, &crd, "solgrid-e2e").await?;
    }
    let (chart, v) = (
        chart_dir().display().to_string(),
        values.display().to_string(),
    );
    helm(tc, &["upgrade", "solgrid", &chart, "-n", NS, "-f", &v])?;
    let new_version =
        serde_yaml_ng::from_str::<Value>(&helm(tc, &["show", "chart", &chart])?)?["version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    let releases: Value = serde_json::from_str(&helm(tc, &["list", "-n", NS, "-o", "json"])?)?;
    let r = &releases[0];
    eprintln!(
        "CRDs + helm upgrade to {}: {:.1} s",
        r["chart"],
        t.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        r["chart"] == format!("solgrid-{new_version}").as_str()
            && r["revision"] == "2"
            && r["status"] == "deployed",
        "after helm upgrade: {releases}"
    );
    anyhow::ensure!(
        uid_of(&pvcs.get("solgrid-ledger").await?) == pvc_uid,
        "the ledger PVC was replaced"
    );
    for (sa, uid) in ["solgrid-operator", "solgrid-scheduler"]
        .iter()
        .zip(&sa_uids)
    {
        anyhow::ensure!(
            &uid_of(&sas.get(sa).await?) == uid,
            "ServiceAccount {sa} was replaced"
        );
    }
    // the stored objects read back the same under the new CRDs
    let job_after = m.jobs().get(&name).await?;
    anyhow::ensure!(uid_of(&job_after) == uid_of(&job_before));
    anyhow::ensure!(
        serde_json::to_value(&job_after.spec)? == serde_json::to_value(&job_before.spec)?,
        "the job's spec changed under the new CRDs"
    );
    let status_keys = |j: &ComputeJob| -> Vec<String> {
        serde_json::to_value(&j.status)
            .ok()
            .and_then(|s| s.as_object().map(|o| o.keys().cloned().collect()))
            .unwrap_or_default()
    };
    for k in status_keys(&job_before) {
        anyhow::ensure!(status_keys(&job_after).contains(&k), "status.{k} pruned");
    }
    for b in &nodes_before {
        let a = Api::<GpuNode>::all(admin.clone())
            .get(&b.name_any())
            .await?;
        anyhow::ensure!(
            serde_json::to_value(&a.spec)? == serde_json::to_value(&b.spec)?,
            "GpuNode {} spec changed under the new CRDs",
            b.name_any()
        );
    }

    // --- the rolling restart: the new replica waits, the old leader exits
    let new_docs = template(tc, &chart_dir(), NS, values)?;
    let flags = release_flags(admin, &new_docs, &m.dir, "new").await?;
    m.set_operator_args(flags);
    let standby = m.start_operator(1)?;
    m.operators.push(standby);
    // the Deployment stops the old pod only once the new one is ready (maxSurge 1,
    // maxUnavailable 0): a standby must be ready while the leader holds the Lease
    // and the journal
    let ready = wait_for(Duration::from_secs(20), || async {
        let addr = listening_addr(&m.operators[1].log_tail(100_000))?;
        http_get(addr, "/readyz").map(|_| ())
    })
    .await;
    anyhow::ensure!(
        ready.is_some(),
        "the new replica is not ready while the old leader runs: the rollout would never stop the old pod"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    anyhow::ensure!(
        lease_holder(admin).await.as_deref() == Some(leader.as_str()),
        "the new replica took the Lease from a live leader"
    );
    let phase = m.jobs().get(&name).await?.status.map(|s| s.phase);
    anyhow::ensure!(
        phase == Some(ComputeJobPhase::Running),
        "the job is {phase:?} at the handover, not Running: make it longer"
    );
    let t = Instant::now();
    m.operators[0].stop(Duration::from_secs(20));
    let new_leader = "e2e-upgrade-operator-1";
    wait_for(Duration::from_secs(30), || async {
        (lease_holder(admin).await.as_deref() == Some(new_leader)).then_some(())
    })
    .await
    .ok_or_else(|| anyhow!("the new replica did not take the Lease in 30 s"))?;
    eprintln!(
        "leader handover {leader} -> {new_leader}: {:.1} s after the old leader was stopped",
        t.elapsed().as_secs_f64()
    );

    // --- the job settles once, on the same ledger
    let st = m
        .wait_job(&name, Duration::from_secs(90), |st| {
            st.phase == ComputeJobPhase::Settled
        })
        .await?;
    m.confirmed_once()?;
    let after = m.balances(payer)?;
    anyhow::ensure!(
        after.payer == before.payer - st.cost.paid,
        "{before:?} -> {after:?}, {:?}",
        st.cost
    );
    anyhow::ensure!(after.escrow == 0, "escrow left: {after:?}");
    anyhow::ensure!(st.cost.received > 0, "{:?}", st.cost);
    let keys_after = journal_keys(&m.journal)?;
    for (k, n) in &keys_before {
        anyhow::ensure!(
            keys_after.get(k) == Some(n),
            "journal record {k} lost or repeated"
        );
    }
    let stakes: Api<StakePosition> = Api::namespaced(m.client.clone(), &m.ns);
    let stake_after = stakes.get(&stake_before.name_any()).await?;
    anyhow::ensure!(
        uid_of(&stake_after) == uid_of(&stake_before)
            && stake_after.status.as_ref().map(|s| (s.phase, s.locked))
                == stake_before.status.as_ref().map(|s| (s.phase, s.locked)),
        "the stake did not come through the upgrade as it was: {:?}",
        stake_after.status
    );
    for p in &m.operators {
        let log = p.log_tail(400_000);
        anyhow::ensure!(
            !log.contains("forbidden") && !log.contains("Forbidden"),
            "{} was refused something during the upgrade",
            p.name()
        );
    }
    Ok(name)
}

/// The paths at which two JSON values differ (`managedFields` aside).
fn changed_paths(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                if k != "managedFields" {
                    let (va, vb) = (
                        &x.get(k).cloned().unwrap_or_default(),
                        &y.get(k).cloned().unwrap_or_default(),
                    );
                    changed_paths(va, vb, &format!("{path}.{k}"), out);
                }
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// What a write between `before` and `after` changed, for the failure message.
fn what_changed<K: kube::Resource + serde::Serialize>(before: &K, after: &K) -> String {
    let (a, b) = (
        serde_json::to_value(before).unwrap_or_default(),
        serde_json::to_value(after).unwrap_or_default(),
    );
    let mut paths = Vec::new();
    changed_paths(&a, &b, "", &mut paths);
    let managers = |v: &Value| -> Vec<String> {
        v["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{} {} {} {}",
                    m["manager"], m["operation"], m["subresource"], m["time"]
                )
            })
            .collect()
    };
    format!(
        "changed {paths:?}; managers before {:?}, after {:?}",
        managers(&a),
        managers(&b)
    )
}

/// `after` is `before`, unwritten for `window`.
fn unwritten<K: kube::Resource + serde::Serialize>(
    what: &str,
    before: &K,
    after: &K,
    window: Duration,
) -> Result<()> {
    anyhow::ensure!(
        write_marks(after) == write_marks(before),
        "{what} ({}) was written again in {window:?} of idling: {}",
        before.meta().name.as_deref().unwrap_or_default(),
        what_changed(before, after)
    );
    Ok(())
}

/// No status churn: the Settled job and the Active GpuNodes keep their
/// resourceVersion and managedFields while the operator looks at them again.
async fn idle(m: &Market, job: &str) -> Result<()> {
    let gpunodes: Api<GpuNode> = Api::all(m.client.clone());
    // settle first: the last writes of the settlement (pods, finalizer) land
    tokio::time::sleep(Duration::from_secs(2)).await;
    // a touch the controller sees (any change is an event), outside status
    let touched = m
        .jobs()
        .patch(
            job,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"e2e.solgrid.dev/touch": "1"}}})),
        )
        .await?;
    let mut nodes_before = Vec::new();
    for n in NODES {
        nodes_before.push(gpunodes.get(n).await?);
    }
    let stakes: Api<StakePosition> = Api::namespaced(m.client.clone(), &m.ns);
    let mut stakes_before = Vec::new();
    for p in stakes.list(&Default::default()).await? {
        stakes_before.push(
            stakes
                .patch(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"e2e.solgrid.dev/touch": "1"}}}),
                    ),
                )
                .await?,
        );
    }
    anyhow::ensure!(!stakes_before.is_empty(), "no StakePosition to watch");
    // three of the nodes' 5 s heartbeats (each a Node event the GpuNode controller
    // reconciles on) and the touch's reconcile
    let window = Duration::from_secs(12);
    tokio::time::sleep(window).await;
    let j = m.jobs().get(job).await?;
    anyhow::ensure!(
        j.status.as_ref().map(|s| s.phase) == Some(ComputeJobPhase::Settled),
        "{:?}",
        j.status
    );
    unwritten("the Settled job", &touched, &j, window)?;
    for before in &nodes_before {
        let g = gpunodes.get(&before.name_any()).await?;
        unwritten("an Active GpuNode", before, &g, window)?;
    }
    for before in &stakes_before {
        let p = stakes.get(&before.name_any()).await?;
        unwritten("an Active StakePosition", before, &p, window)?;
    }
    eprintln!(
        "idle: no writes to the Settled job, the Active GpuNodes or the Active stake in {window:?}"
    );
    Ok(())
}
