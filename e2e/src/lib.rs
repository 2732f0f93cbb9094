//! solgrid end-to-end tests against a real cluster.
//!
//! - [`cluster`]: a local control plane (etcd, kube-apiserver, kube-controller-manager,
//!   kube-scheduler v1.36 on loopback) or the cluster in `KUBECONFIG`
//!   ([`cluster::shared`]); `tests/cluster.rs` holds the scenarios that run on it.
//! - [`nodesim`]: simulated GPU nodes that play the kubelet's part.
//! - [`process`]: child processes that never outlive the tests.
//!
//! The older `tests/computejob.rs` runs only with `KUBECONFIG` (below).
//!
//! Every test starts with [`cluster`]: without `KUBECONFIG` it prints why it skips
//! and the test passes; with it, it returns a client. The helpers install the CRDs
//! from `crds/*.yaml`, make a throw-away namespace, and run the operator's
//! controllers in-process over an embedded ledger the test can fund and inspect.
//!
//! Knobs (environment):
//! - `KUBECONFIG`: the cluster (required, else skip).
//! - `SOLGRID_E2E_SCHEDULER`: `schedulerName` of the worker pods (default
//!   `default-scheduler`, so a bare cluster without the solgrid scheduler works;
//!   set `solgrid-scheduler` on a cluster with the chart installed).
//! - `SOLGRID_E2E_FAKE_GPUS`: `1` (default) advertises `solgrid.dev/nvidia-gpu: 8`
//!   on one schedulable node (a node status patch, the documented way to add an
//!   extended resource) so workers can be placed on a cluster without GPUs; `0`
//!   relies on the device plugin.
//! - `SOLGRID_E2E_IMAGE`: the worker image (default `busybox:1.36`).

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::path::PathBuf;
use std::time::Duration;

pub mod chart;
pub mod cluster;
pub mod market;
pub mod nodesim;
pub mod process;

/// Proof-of-work settings (environment of the operator processes) for simulated
/// nodes, whose "GPUs" are this machine's CPU running the reference worker: an RTX
/// 4090 is taken to need 1 s per 32-product, so a CPU is far faster than any claim
/// and every chain is a few products (4090: 8 rounds for the 8 s target, limit
/// 1.5 x 8 s + 2 s). Scenarios about the speed check pass their own `--verify-*`
/// flags (flags win over these).
pub const SIM_VERIFY_ENV: [(&str, &str); 7] = [
    ("SOLGRID_VERIFY_SIZE", "32"),
    ("SOLGRID_VERIFY_REFERENCE_SIZE", "32"),
    ("SOLGRID_VERIFY_REFERENCE_US", "1000000"),
    ("SOLGRID_VERIFY_TARGET_MS", "8000"),
    ("SOLGRID_VERIFY_SLACK_MS", "2000"),
    ("SOLGRID_VERIFY_TOLERANCE_PCT", "150"),
    ("SOLGRID_VERIFY_MAX_MATRICES", "2"),
];

/// A binary of this workspace, next to the test executable (`target/<profile>/`,
/// built by `cargo test --workspace` or `cargo build --bins`).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or_else(|| anyhow!("no directory above {}", exe.display()))?;
    let bin = dir.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(anyhow!(
            "{} is missing: build it first (`cargo build -p {} --bins`, or run `cargo test --workspace`, which builds every binary)",
            bin.display(),
            name
        ))
    }
}

/// A test's tracing subscriber (`RUST_LOG`, else `solgrid_e2e=info,warn`), once.
pub fn init_test_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "solgrid_e2e=info,warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Waits until the namespace's `default` ServiceAccount exists (the
/// controller-manager makes it; pods cannot be created before).
pub async fn wait_default_sa(client: &Client, ns: &str) -> Result<()> {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    wait_for(Duration::from_secs(30), || async {
        sas.get_opt("default").await.ok().flatten().map(|_| ())
    })
    .await
    .ok_or_else(|| anyhow!("no default ServiceAccount in {ns} after 30 s"))
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A client for the cluster named by `KUBECONFIG`, or `None` (with a message on
/// stderr) when it is unset: the calling test then passes without doing anything.
pub async fn cluster(test: &str) -> Option<Client> {
    match std::env::var_os("KUBECONFIG") {
        Some(v) if !v.is_empty() => {}
        _ => {
            eprintln!(
                "SKIP {test}: KUBECONFIG is not set; set it to a cluster (e.g. kind) to run the end-to-end tests"
            );
            return None;
        }
    }
    match Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) => panic!("KUBECONFIG is set but no client could be built: {e}"),
    }
}

/// Installs (server-side applies) every CRD in `crds/*.yaml` and waits until each
/// is Established.
pub async fn install_crds(client: &Client) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    let dir = root().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let crd: CustomResourceDefinition =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("solgrid-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        names.push(name);
    }
    for name in &names {
        wait_for(Duration::from_secs(60), || async {
            let crd = api.get(name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await
        .ok_or_else(|| anyhow!("CRD {name} not Established in 60 s"))?;
    }
    Ok(names)
}

/// Polls `f` every 500 ms until it returns `Some`, or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates a fresh namespace `solgrid-e2e-<suffix>`.
pub async fn namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = format!(
        "{prefix}-{}",
        chrono::Utc::now().timestamp_millis() % 1_000_000_000
    );
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(name)
}

/// Deletes a namespace (best effort).
pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
}

/// A schedulable node; with `SOLGRID_E2E_FAKE_GPUS` (default on) it is made to
/// advertise 8 `solgrid.dev/nvidia-gpu`.
pub async fn gpu_node(client: &Client) -> Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let nodes = api.list(&ListParams::default()).await?;
    let node = nodes
        .items
        .iter()
        .find(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .or(nodes.items.first())
        .ok_or_else(|| anyhow!("the cluster has no nodes"))?
        .name_any();
    if std::env::var("SOLGRID_E2E_FAKE_GPUS").map_or(true, |v| v != "0") {
        api.patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "status": {"capacity": {"solgrid.dev/nvidia-gpu": "8"}}
            })),
        )
        .await
        .context("advertising fake GPUs on the node")?;
    }
    Ok(node)
}

/// The multi-document YAML of an example, as JSON values.
pub fn example(name: &str) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(root().join("examples").join(name))?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The Secret and the ComputeJob of an example (`examples/<file>`), moved to
/// namespace `ns`, with the worker's image and command swapped (and no args).
pub fn example_job(
    file: &str,
    ns: &str,
    image: &str,
    command: &[&str],
) -> Result<(serde_json::Value, serde_json::Value)> {
    let docs = example(file)?;
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .ok_or_else(|| anyhow!("{file} has no {kind}"))
    };
    let (mut secret, mut job) = (find("Secret")?, find("ComputeJob")?);
    secret["metadata"]["namespace"] = ns.into();
    job["metadata"]["namespace"] = ns.into();
    job["spec"]["template"]["image"] = image.into();
    job["spec"]["template"]["command"] = serde_json::json!(command);
    job["spec"]["template"]["args"] = serde_json::json!([]);
    Ok((secret, job))
}

/// The LLM fine-tune example (`examples/computejob-llm-finetune.yaml`: its Secret and
/// its ComputeJob) in namespace `ns`, its worker `busybox:1.36` running `command`.
pub fn llm_example(ns: &str, command: &[&str]) -> Result<(serde_json::Value, serde_json::Value)> {
    example_job("computejob-llm-finetune.yaml", ns, "busybox:1.36", command)
}

/// The fees of one settlement per ECONOMICS.md: each node's compute
/// `C_i = floor(gpu_ms_i x P / 3,600,000)` and provider fee `ceil(C_i x 0.25 %)`
/// (one payout line per node), the requester fee and surcharge on their sum.
pub fn settlement_fees(
    gpu_ms_per_node: impl Iterator<Item = u64>,
    price: solgrid_market::Amount,
    token: solgrid_market::ledger::Token,
) -> solgrid_market::fees::FeeBreakdown {
    let cfg = solgrid_market::fees::FeeConfig::default();
    let lines: Vec<_> = gpu_ms_per_node
        .map(|ms| solgrid_market::fees::fees_for_usage(ms, price, token, &cfg).unwrap())
        .collect();
    let mut f =
        solgrid_market::fees::fees(lines.iter().map(|l| l.compute).sum(), token, &cfg).unwrap();
    f.provider_fee = lines.iter().map(|l| l.provider_fee).sum();
    f
}

/// A settled job's billed GPU time (every settlement's usage, ms) and the fees
/// [`settlement_fees`] wants for it at the quoted price, in `token`.
pub fn billed(
    st: &solgrid_crds::ComputeJobStatus,
    token: solgrid_market::ledger::Token,
) -> (u64, solgrid_market::fees::FeeBreakdown) {
    let price = st.quote.as_ref().expect("quote").price_per_gpu_hour;
    let usage = || {
        st.settlements
            .iter()
            .flat_map(|s| s.usage.iter())
            .map(|u| u.gpu_ms)
    };
    (usage().sum(), settlement_fees(usage(), price, token))
}

/// A settled job's status bills `gpu_ms` (> 0) in one settlement period at exactly
/// the fees `want`; what was paid and refunded is the quote's maximum, nothing is
/// left in escrow.
pub fn assert_billed(
    st: &solgrid_crds::ComputeJobStatus,
    gpu_ms: u64,
    want: &solgrid_market::fees::FeeBreakdown,
) {
    let c = &st.cost;
    assert_eq!(st.settlements.len(), 1, "one settlement period");
    assert!(gpu_ms > 0);
    assert_eq!(c.compute, want.compute);
    assert_eq!(c.requester_fee, want.requester_fee);
    assert_eq!(c.provider_fee, want.provider_fee);
    assert_eq!(c.surcharge, want.surcharge);
    assert_eq!(c.paid, want.paid().unwrap());
    assert_eq!(c.received, want.received().unwrap());
    assert_eq!(
        c.paid + c.refunded,
        st.quote.as_ref().expect("quote").max_cost
    );
    assert_eq!(st.escrowed, 0);
}
