//! The chart as a release on the test cluster: the real `helm` (install, upgrade,
//! template, show crds) against the control plane's admin kubeconfig, the previous
//! release kept as `helm-tests/fixtures/releases/solgrid-<version>.tgz`, server-side
//! apply of any rendered object, and the device plugin's node-bound token.

use crate::cluster::{TestCluster, service_account_token};
use crate::root;
use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt as _};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The chart in this tree.
pub fn chart_dir() -> PathBuf {
    root().join("helm/solgrid")
}

/// The newest packaged release under `helm-tests/fixtures/releases/` (what
/// `helm upgrade` starts from) and its version.
pub fn previous_release() -> Result<(String, PathBuf)> {
    let dir = root().join("helm-tests/fixtures/releases");
    let mut found: Vec<(Vec<u32>, String, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name
                .strip_prefix("solgrid-")?
                .strip_suffix(".tgz")?
                .to_string();
            let key = v
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((key, v, e.path()))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, v, p)| (v, p))
        .ok_or_else(|| anyhow!("no solgrid-<version>.tgz under {}", dir.display()))
}

/// The real helm: `$HELM`, `PATH`, or `.tools/bin/helm` (`make tools`).
pub fn helm_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HELM").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("helm"))
        .chain(std::iter::once(root().join(".tools/bin/helm")))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("helm not found: run `make tools` or set HELM"))
}

/// Runs helm with the cluster's admin kubeconfig (its cache, config and data
/// under the cluster's directory); stdout, or an error with stderr.
pub fn helm(tc: &TestCluster, args: &[&str]) -> Result<String> {
    let home = tc.dir().join("helm");
    let out = Command::new(helm_bin()?)
        .args(args)
        .env("KUBECONFIG", tc.kubeconfig())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .context("running helm")?;
    if !out.status.success() {
        return Err(anyhow!(
            "helm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The documents of a YAML stream (empty ones dropped).
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(de)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// `helm template solgrid <chart> -n <ns> -f <values>`: the release's objects.
pub fn template(tc: &TestCluster, chart: &Path, ns: &str, values: &Path) -> Result<Vec<Value>> {
    let (c, v) = (chart.display().to_string(), values.display().to_string());
    documents(&helm(
        tc,
        &["template", "solgrid", &c, "--namespace", ns, "-f", &v],
    )?)
}

/// The CRDs a chart ships (`helm show crds`).
pub fn chart_crds(tc: &TestCluster, chart: &Path) -> Result<Vec<Value>> {
    let c = chart.display().to_string();
    Ok(documents(&helm(tc, &["show", "crds", &c])?)?
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect())
}

/// Server-side applies one object of any kind, forcing conflicts, as `manager`.
pub async fn apply(client: &Client, doc: &Value, manager: &str) -> Result<DynamicObject> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap_or_default());
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        _ => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(doc),
    )
    .await
    .with_context(|| format!("applying {} {name}", gvk.kind))
}

/// A token of the device plugin's ServiceAccount `sa` in `ns`, bound to a pod of
/// it on `node` (created if missing), as the kubelet mounts it in the DaemonSet's
/// pod there: the chart's device-plugin policy lets it write that node's inventory.
pub async fn device_plugin_token(admin: &Client, ns: &str, sa: &str, node: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let name = format!("{sa}-{node}");
    if pods.get_opt(&name).await?.is_none() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "plugin", "image": "registry.k8s.io/pause:3.10"}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    let uid = pods
        .get(&name)
        .await?
        .uid()
        .ok_or_else(|| anyhow!("pod {name} has no uid"))?;
    service_account_token(admin, ns, sa, Some((&name, &uid))).await
}

/// A ServiceAccount `name` in `ns` (created if missing) bound by a RoleBinding to
/// ClusterRole `role` (e.g. the chart's `solgrid-requester`), and a client with its
/// token, once the binding has reached the authorizer (it can list ComputeJobs).
pub async fn tenant_client(
    tc: &TestCluster,
    admin: &Client,
    ns: &str,
    name: &str,
    role: &str,
) -> Result<Client> {
    let manager = "solgrid-e2e";
    apply(
        admin,
        &serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns}}),
        manager,
    )
    .await?;
    let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{name}-{role}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]});
    apply(admin, &binding, manager).await?;
    let token = service_account_token(admin, ns, name, None).await?;
    let client = tc.client_for_token(&token).await?;
    let jobs: Api<solgrid_crds::ComputeJob> = Api::namespaced(client.clone(), ns);
    crate::wait_for(std::time::Duration::from_secs(30), || async {
        jobs.list(&Default::default()).await.ok().map(|_| ())
    })
    .await
    .ok_or_else(|| anyhow!("{name}'s role binding never took effect"))?;
    Ok(client)
}
