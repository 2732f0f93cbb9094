//! Helpers for the chart checks in `tests/`: finding the real `helm` and `promtool`,
//! rendering the chart, and typing every rendered manifest strictly.
//!
//! Strict typing: each document is deserialized into the k8s-openapi type its
//! `apiVersion`/`kind` claims (with the path of the first bad field, through
//! `serde_path_to_error`), serialized back, and compared with the original modulo
//! nulls. k8s-openapi ignores unknown fields when deserializing, so the comparison is
//! what catches a misspelled or misplaced field: it is missing from the round trip.
//! Prometheus Operator objects and the KubeSchedulerConfiguration, which k8s-openapi
//! does not know, have small typed models here with `deny_unknown_fields`.

#![forbid(unsafe_code)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("helm-tests lives in the workspace")
        .to_path_buf()
}

/// `helm/solgrid`.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("helm/solgrid")
}

/// This crate's fixtures.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Finds a tool: `$ENV`, then `PATH`, then `<workspace>/.tools/bin`. The error names
/// the script that installs it.
pub fn find_tool(name: &str, env: &str, install_script: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(format!(
            "{env}={} is not an executable file; unset it or run `bash {install_script}`",
            p.display()
        ));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if is_executable(&p) {
                return Ok(p);
            }
        }
    }
    let local = workspace_root().join(".tools/bin").join(name);
    if is_executable(&local) {
        return Ok(local);
    }
    Err(format!(
        "`{name}` not found: set {env}, put it on PATH, or run `bash {install_script}` \
         (from the workspace root; it installs to .tools/bin or the system). \
         These chart checks need the real tool and do not skip without it."
    ))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The real helm, or a panic naming `scripts/install-helm.sh`.
pub fn helm() -> PathBuf {
    find_tool("helm", "HELM", "scripts/install-helm.sh").unwrap_or_else(|e| panic!("{e}"))
}

/// The real promtool, or a panic naming `scripts/install-promtool.sh`.
pub fn promtool() -> PathBuf {
    find_tool("promtool", "PROMTOOL", "scripts/install-promtool.sh")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `promtool check metrics` on a component's `/metrics` text (which must carry
/// solgrid metrics); panics with promtool's findings. Used by the live scrapes here
/// and by the operator's own metrics tests.
pub fn promtool_check_metrics(component: &str, body: &str) {
    assert!(
        body.contains("# TYPE solgrid_"),
        "{component}: no solgrid metrics:\n{body}"
    );
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {component}'s /metrics:\n{}{}\n---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The release name and namespace every render uses.
pub const RELEASE: &str = "solgrid";
pub const NAMESPACE: &str = "solgrid-system";

/// What a command printed.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Absolute path of a values file: `ci/<name>` of the chart, or a path as given.
pub fn values_path(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        chart_dir().join("ci").join(name)
    }
}

/// `helm template` with the given values files and `--set`s (CRDs included).
pub fn helm_template(values: &[PathBuf], sets: &[&str]) -> Output {
    helm_template_of(&chart_dir(), values, sets)
}

/// `helm template` of a chart directory or packaged chart (`.tgz`), as
/// [`helm_template`] renders `helm/solgrid`.
pub fn helm_template_of(chart: &Path, values: &[PathBuf], sets: &[&str]) -> Output {
    let mut cmd = Command::new(helm());
    cmd.arg("template")
        .arg(RELEASE)
        .arg(chart)
        .args(["--namespace", NAMESPACE, "--include-crds"]);
    for v in values {
        cmd.arg("--values").arg(v);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    run(&mut cmd)
}

/// `helm template`, which must succeed; the parsed documents.
pub fn render(values: &[PathBuf], sets: &[&str]) -> Vec<Value> {
    let out = helm_template(values, sets);
    assert!(
        out.success,
        "helm template failed for {values:?} {sets:?}:\n{}",
        out.stderr
    );
    documents(&out.stdout).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}"))
}

/// The released charts an upgrade starts from: `fixtures/releases/solgrid-<version>.tgz`
/// (`helm package` of the chart as it was released), oldest first, with their versions.
pub fn previous_releases() -> Vec<(Version, PathBuf)> {
    let dir = fixtures_dir().join("releases");
    let mut out: Vec<(Version, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix("solgrid-")?.strip_suffix(".tgz")?;
            Some((Version::parse(v)?, e.path()))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no released chart under {}", dir.display());
    out
}

/// A chart's `version` or `appVersion` (`MAJOR.MINOR.PATCH`; no pre-releases here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s
            .trim()
            .trim_matches('"')
            .split('.')
            .map(|p| p.parse().ok());
        let v = Version(it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// `helm show <what>` of a chart directory or packaged chart.
fn helm_show(what: &str, chart: &Path) -> String {
    let out = run(Command::new(helm()).args(["show", what]).arg(chart));
    assert!(
        out.success,
        "helm show {what} {}: {}",
        chart.display(),
        out.stderr
    );
    out.stdout
}

/// `Chart.yaml` of a chart directory or packaged chart.
pub fn chart_metadata(chart: &Path) -> Value {
    serde_yaml_ng::from_str(&helm_show("chart", chart)).expect("Chart.yaml parses")
}

/// The CRDs a chart directory or packaged chart ships.
pub fn chart_crds(chart: &Path) -> Vec<Value> {
    documents(&helm_show("crds", chart))
        .unwrap()
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect()
}

/// The YAML documents of a stream, as JSON (empty documents dropped).
pub fn documents(yaml: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let v: Value =
            serde::Deserialize::deserialize(de).map_err(|e| format!("document {i}: {e}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// `kind/name` of a document, for messages.
pub fn id(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Documents of one kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one document of a kind whose name ends with `suffix`.
pub fn find<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    let found: Vec<_> = of_kind(docs, kind)
        .into_iter()
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} named *{suffix}, found {}",
        found.len()
    );
    found[0]
}

/// Drops nulls (recursively): a field set to null and a field left out mean the same.
pub fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The first place two JSON values differ, as a path and the two sides.
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    None => {
                        return Some(format!(
                            "{p}: not a field of the type (lost in the round trip): {v}"
                        ));
                    }
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, &p) {
                            return Some(d);
                        }
                    }
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}: appeared in the round trip"))
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{path}: {} items became {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

/// Deserializes `doc` into `T` (naming the path of a bad field), serializes it back
/// and requires the same JSON modulo nulls.
pub fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let typed: T = serde_path_to_error::deserialize(doc.clone())
        .map_err(|e| format!("{}: {} at `{}`", id(doc), e.inner(), e.path()))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("{}: {e}", id(doc)))?;
    let (a, b) = (without_nulls(doc), without_nulls(&back));
    if let Some(d) = first_difference(&a, &b, "") {
        return Err(format!(
            "{}: does not round-trip through its type: {d}",
            id(doc)
        ));
    }
    Ok(typed)
}

/// Types one rendered document by its `apiVersion` and `kind`. Unknown kinds fail:
/// a new kind in the chart needs a type here.
pub fn check_typed(doc: &Value) -> Result<(), String> {
    use k8s_openapi::api::{
        admissionregistration::v1 as admission, apps::v1 as apps, core::v1 as core,
        networking::v1 as net, policy::v1 as policy, rbac::v1 as rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("apps/v1", "Deployment") => strict::<apps::Deployment>(doc).map(drop),
        ("apps/v1", "DaemonSet") => strict::<apps::DaemonSet>(doc).map(drop),
        ("v1", "Service") => strict::<core::Service>(doc).map(drop),
        ("v1", "ServiceAccount") => strict::<core::ServiceAccount>(doc).map(drop),
        ("v1", "ConfigMap") => strict::<core::ConfigMap>(doc).map(drop),
        ("v1", "Secret") => strict::<core::Secret>(doc).map(drop),
        ("v1", "PersistentVolumeClaim") => strict::<core::PersistentVolumeClaim>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            strict::<rbac::ClusterRole>(doc).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<rbac::ClusterRoleBinding>(doc).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<rbac::Role>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            strict::<rbac::RoleBinding>(doc).map(drop)
        }
        ("policy/v1", "PodDisruptionBudget") => {
            strict::<policy::PodDisruptionBudget>(doc).map(drop)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => strict::<net::NetworkPolicy>(doc).map(drop),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            strict::<admission::ValidatingAdmissionPolicy>(doc).map(drop)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            strict::<admission::ValidatingAdmissionPolicyBinding>(doc).map(drop)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict::<CustomResourceDefinition>(doc).map(drop)
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            strict::<monitoring::ServiceMonitor>(doc).map(drop)
        }
        ("monitoring.coreos.com/v1", "PrometheusRule") => {
            strict::<monitoring::PrometheusRule>(doc).map(drop)
        }
        _ => Err(format!(
            "{}: no type known for apiVersion {api:?} kind {kind:?} (add it to check_typed)",
            id(doc)
        )),
    }
}

/// The strings of a JSON array (an RBAC rule's `verbs`, a policy's `resources`);
/// panics on anything else.
pub fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// An RBAC rule's verbs.
pub fn verbs(rule: &Value) -> Vec<&str> {
    strings(&rule["verbs"])
}

/// An RBAC rule's resources.
pub fn resources(rule: &Value) -> Vec<&str> {
    strings(&rule["resources"])
}

/// Every `*` in an RBAC rule of a Role or ClusterRole, as `Kind/name rule[i].field`.
pub fn rbac_wildcards(doc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if !matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
        return found;
    }
    for (i, rule) in doc["rules"].as_array().into_iter().flatten().enumerate() {
        for field in [
            "apiGroups",
            "resources",
            "verbs",
            "resourceNames",
            "nonResourceURLs",
        ] {
            for item in rule[field].as_array().into_iter().flatten() {
                if item.as_str().is_some_and(|s| s.contains('*')) {
                    found.push(format!("{} rules[{i}].{field}: {item}", id(doc)));
                }
            }
        }
    }
    if doc.get("aggregationRule").is_some_and(|a| !a.is_null()) {
        found.push(format!(
            "{}: aggregationRule grants whatever other roles hold",
            id(doc)
        ));
    }
    found
}

/// Prometheus Operator objects: only the fields the chart uses, unknown ones refused.
pub mod monitoring {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PrometheusRule {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: PrometheusRuleSpec,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PrometheusRuleSpec {
        pub groups: Vec<RuleGroup>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct RuleGroup {
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub interval: Option<String>,
        pub rules: Vec<Rule>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Rule {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub alert: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub record: Option<String>,
        pub expr: String,
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        pub for_: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keep_firing_for: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub labels: Option<BTreeMap<String, String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub annotations: Option<BTreeMap<String, String>>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ServiceMonitor {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: ServiceMonitorSpec,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ServiceMonitorSpec {
        pub selector: LabelSelector,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub namespace_selector: Option<NamespaceSelector>,
        pub endpoints: Vec<Endpoint>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub job_label: Option<String>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct NamespaceSelector {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub any: Option<bool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub match_names: Vec<String>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Endpoint {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub scheme: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub interval: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub scrape_timeout: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub honor_labels: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub relabelings: Option<Vec<Relabeling>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub metric_relabelings: Option<Vec<Relabeling>>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Relabeling {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub source_labels: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub separator: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub target_label: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub regex: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub replacement: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub action: Option<String>,
    }
}

/// `kubescheduler.config.k8s.io/v1` KubeSchedulerConfiguration: the fields a
/// solgrid profile may use, unknown ones refused (kube-scheduler refuses them too).
pub mod scheduler_config {
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct KubeSchedulerConfiguration {
        pub api_version: String,
        pub kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub parallelism: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub leader_election: Option<LeaderElection>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub client_connection: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub enable_profiling: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub enable_contention_profiling: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub percentage_of_nodes_to_score: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pod_initial_backoff_seconds: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pod_max_backoff_seconds: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub delay_cache_until_active: Option<bool>,
        #[serde(default)]
        pub profiles: Vec<Profile>,
        #[serde(default)]
        pub extenders: Vec<Extender>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct LeaderElection {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub leader_elect: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub lease_duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub renew_deadline: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub retry_period: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub resource_lock: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub resource_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub resource_namespace: Option<String>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Profile {
        pub scheduler_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub percentage_of_nodes_to_score: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub plugins: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub plugin_config: Option<Value>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Extender {
        pub url_prefix: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub filter_verb: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub preempt_verb: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub prioritize_verb: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bind_verb: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub weight: Option<i64>,
        #[serde(
            default,
            rename = "enableHTTPS",
            skip_serializing_if = "Option::is_none"
        )]
        pub enable_https: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tls_config: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub http_timeout: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub node_cache_capable: Option<bool>,
        #[serde(default)]
        pub managed_resources: Vec<ManagedResource>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ignorable: Option<bool>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ManagedResource {
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ignored_by_scheduler: Option<bool>,
    }
}

/// Metric names (`solgrid_*`) a PromQL expression or dashboard query uses, with
/// histogram/summary suffixes stripped.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("solgrid_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_' || c == b'"' || c == b'-' || c == b'.')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            let mut n = &expr[start..end];
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(s) = n.strip_suffix(suffix) {
                    n = s;
                }
            }
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
        i = end.max(start + 1);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_catches_a_misspelled_field() {
        let good = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"},
                          "automountServiceAccountToken": false});
        assert!(check_typed(&good).is_ok());
        let bad = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"},
                         "automountServiceAccountTokn": false});
        let e = check_typed(&bad).unwrap_err();
        assert!(e.contains("automountServiceAccountTokn"), "{e}");
        let nested = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                            "spec": {"ports": [{"port": 80, "targetPort": "http", "protocl": "TCP"}]}});
        let e = check_typed(&nested).unwrap_err();
        assert!(e.contains(".spec.ports[0].protocl"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
                         "spec": {"replicas": "two", "selector": {}, "template": {}}});
        let e = check_typed(&bad).unwrap_err();
        assert!(e.contains("spec.replicas"), "{e}");
        let wrong_api =
            json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "a"}});
        assert!(check_typed(&wrong_api).is_err());
    }

    #[test]
    fn nulls_do_not_count() {
        let doc = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": null},
                         "data": {"k": "v"}});
        assert!(check_typed(&doc).is_ok());
    }

    #[test]
    fn wildcards_found() {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                          "metadata": {"name": "r"},
                          "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                                    {"apiGroups": ["*"], "resources": ["pods/*"], "verbs": ["get"]}]});
        let w = rbac_wildcards(&role);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("rules[1].apiGroups"));
    }

    #[test]
    fn metric_names_parsed() {
        let e = r#"histogram_quantile(0.99, sum by (le) (rate(solgrid_extender_request_duration_seconds_bucket{namespace="solgrid_x"}[5m]))) > 0 and on() solgrid_gpunodes"#;
        assert_eq!(
            metric_names(e),
            [
                "solgrid_extender_request_duration_seconds",
                "solgrid_gpunodes"
            ]
        );
    }

    #[test]
    fn missing_tool_message_names_the_script() {
        let e = find_tool(
            "definitely-not-a-tool-solgrid",
            "SOLGRID_TEST_NO_SUCH_TOOL",
            "scripts/install-x.sh",
        )
        .unwrap_err();
        assert!(e.contains("scripts/install-x.sh"), "{e}");
    }
}
