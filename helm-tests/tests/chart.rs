//! The Helm chart, checked with the real `helm` (v4): lint, render with the default
//! and the representative values (`helm/solgrid/ci/*.yaml`), every manifest strictly
//! typed, RBAC without wildcards, the values schema refusing bad values, the
//! component-specific properties the chart promises (leader election, ledger volume,
//! device plugin privileges, the scheduler profile), and the CRDs in sync with
//! `crds/`.
//!
//! Without helm these tests fail with a message naming `scripts/install-helm.sh`.

use serde_json::Value;
use solgrid_helm_tests::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The default values and every `ci/*.yaml`, each as its list of values files.
fn variants() -> Vec<(String, Vec<PathBuf>)> {
    let mut v = vec![("default".to_string(), vec![])];
    let mut ci: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("helm/solgrid/ci")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    ci.sort();
    assert!(
        ci.len() >= 2,
        "expected representative values files in helm/solgrid/ci"
    );
    for p in ci {
        v.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            vec![p],
        ));
    }
    v
}

fn ci(name: &str) -> Vec<PathBuf> {
    vec![values_path(name)]
}

fn containers(pod_spec: &Value) -> Vec<&Value> {
    pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod_spec["initContainers"].as_array().into_iter().flatten())
        .collect()
}

fn workloads(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "DaemonSet")))
        .collect()
}

fn arg_list(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    containers(&workload["spec"]["template"]["spec"])
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{} has no container {name}", id(workload)))
}

#[test]
fn helm_is_v4() {
    let out = run(Command::new(helm()).args(["version", "--short"]));
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.trim_start().starts_with("v4."),
        "expected helm v4, got {}",
        out.stdout
    );
}

#[test]
fn helm_lint_default_and_ci_values() {
    for (name, values) in variants() {
        let mut cmd = Command::new(helm());
        cmd.arg("lint")
            .arg("--strict")
            .arg(chart_dir())
            .args(["--namespace", NAMESPACE]);
        for v in &values {
            cmd.arg("--values").arg(v);
        }
        let out = run(&mut cmd);
        assert!(
            out.success,
            "helm lint --strict failed with {name}:\n{}\n{}",
            out.stdout, out.stderr
        );
    }
}

#[test]
fn every_rendered_manifest_is_strictly_typed() {
    let mut errors = Vec::new();
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        assert!(docs.len() > 10, "{name}: only {} documents", docs.len());
        for doc in &docs {
            if let Err(e) = check_typed(doc) {
                errors.push(format!("[{name}] {e}"));
            }
        }
        // Names are unique per kind and namespace.
        let mut seen = BTreeSet::new();
        for doc in &docs {
            let key = (
                doc["kind"].as_str().unwrap_or_default().to_string(),
                doc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            assert!(
                seen.insert(key.clone()),
                "[{name}] duplicate object {key:?}"
            );
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn rbac_has_no_wildcards() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        let roles = docs
            .iter()
            .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
            .count();
        assert!(roles >= 4, "[{name}] expected RBAC roles, found {roles}");
        let found: Vec<String> = docs.iter().flat_map(rbac_wildcards).collect();
        assert!(
            found.is_empty(),
            "[{name}] wildcards in RBAC:\n{}",
            found.join("\n")
        );
        // Bindings only bind roles the chart defines, or the one built-in read-only
        // Role for kube-scheduler's authentication ConfigMap.
        for b in docs.iter().filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("RoleBinding" | "ClusterRoleBinding")
            )
        }) {
            let role = b["roleRef"]["name"].as_str().unwrap();
            let defined = docs.iter().any(|d| {
                d["kind"] == b["roleRef"]["kind"] && d["metadata"]["name"].as_str() == Some(role)
            });
            assert!(
                defined || role == "extension-apiserver-authentication-reader",
                "[{name}] {} binds {role}, which the chart does not define",
                id(b)
            );
        }
    }
}

#[test]
fn rbac_rules_are_commented() {
    // Each rule in the chart's RBAC templates says why it is there: the line before
    // `- apiGroups:` is a comment (or the first rule follows a commented header).
    let mut missing = Vec::new();
    for dir in ["operator", "scheduler", "device-plugin", "tenants"] {
        let path = chart_dir().join("templates").join(dir).join("rbac.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.trim_start().starts_with("- apiGroups:") {
                let mut j = i;
                let mut commented = false;
                while j > 0 {
                    j -= 1;
                    let prev = lines[j].trim();
                    if prev.starts_with('#') {
                        commented = true;
                        break;
                    }
                    // A rule directly after another rule's fields shares no comment.
                    if prev.starts_with("- ") || prev.starts_with("verbs:") {
                        break;
                    }
                    if prev == "rules:" {
                        // The first rule: the comment may sit above the role.
                        commented = lines[..j]
                            .iter()
                            .rev()
                            .take(12)
                            .any(|l| l.trim().starts_with('#'));
                        break;
                    }
                }
                if !commented {
                    missing.push(format!("{}:{}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "RBAC rules without a comment saying why:\n{}",
        missing.join("\n")
    );
}

#[test]
fn chart_crds_are_in_sync_with_crds_dir() {
    let root = workspace_root();
    let names = |dir: PathBuf| -> BTreeSet<String> {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let src = names(root.join("crds"));
    let chart = names(chart_dir().join("crds"));
    assert!(!src.is_empty());
    assert_eq!(
        src, chart,
        "helm/solgrid/crds differs from crds/: run scripts/sync-chart-crds.sh"
    );
    for n in &src {
        let a = std::fs::read(root.join("crds").join(n)).unwrap();
        let b = std::fs::read(chart_dir().join("crds").join(n)).unwrap();
        assert!(
            a == b,
            "helm/solgrid/crds/{n} differs from crds/{n}: run scripts/sync-chart-crds.sh"
        );
    }
    // And the chart installs them: the default render includes every CRD.
    let docs = render(&[], &[]);
    let crds = of_kind(&docs, "CustomResourceDefinition");
    let crd_names: BTreeSet<&str> = crds
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    for want in [
        "gpunodes.solgrid.dev",
        "computejobs.solgrid.dev",
        "stakepositions.solgrid.dev",
    ] {
        assert!(
            crd_names.contains(want),
            "CRD {want} not installed by the chart"
        );
    }
}

#[test]
fn scheduler_profile_is_the_schedulers_own_and_wired_to_the_sidecar() {
    let source = workspace_root().join("scheduler/deploy/kube-scheduler-config.yaml");
    let copy = chart_dir().join("files/kube-scheduler-config.yaml");
    if source.exists() {
        assert!(
            std::fs::read(&source).unwrap() == std::fs::read(&copy).unwrap(),
            "helm/solgrid/files/kube-scheduler-config.yaml differs from {}: run scripts/sync-chart-crds.sh",
            source.display()
        );
    } else {
        eprintln!(
            "note: {} does not exist yet; checking the chart's copy only",
            source.display()
        );
    }
    // The shipped file itself is a valid configuration.
    let shipped: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    strict::<scheduler_config::KubeSchedulerConfiguration>(&shipped)
        .unwrap_or_else(|e| panic!("{}: {e}", copy.display()));

    let docs = render(&[], &["scheduler.extender.port=9999"]);
    let cm = find(&docs, "ConfigMap", "-scheduler-config");
    let text = cm["data"]["kube-scheduler-config.yaml"].as_str().unwrap();
    let doc: Value = serde_yaml_ng::from_str(text).unwrap();
    let cfg: scheduler_config::KubeSchedulerConfiguration =
        strict(&doc).unwrap_or_else(|e| panic!("rendered scheduler config: {e}"));
    assert_eq!(cfg.api_version, "kubescheduler.config.k8s.io/v1");
    assert_eq!(cfg.kind, "KubeSchedulerConfiguration");
    let le = cfg.leader_election.as_ref().expect("leaderElection");
    assert_eq!(le.leader_elect, Some(true));
    assert_eq!(le.resource_namespace.as_deref(), Some(NAMESPACE));
    assert_ne!(
        le.resource_name.as_deref(),
        Some("kube-scheduler"),
        "must not compete for the default scheduler's Lease"
    );
    assert_eq!(cfg.profiles.len(), 1);
    assert_eq!(cfg.profiles[0].scheduler_name, "solgrid-scheduler");
    assert!(!cfg.extenders.is_empty());
    for e in &cfg.extenders {
        assert_eq!(e.url_prefix, "http://127.0.0.1:9999");
        assert!(e.filter_verb.is_some(), "extender without filterVerb");
        assert_eq!(
            e.node_cache_capable,
            Some(true),
            "PRODUCT.md: nodeCacheCapable"
        );
        let managed: BTreeSet<&str> = e
            .managed_resources
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        for r in ["solgrid.dev/nvidia-gpu", "solgrid.dev/apple-gpu"] {
            assert!(managed.contains(r), "extender does not manage {r}");
        }
    }
    // kube-scheduler reads it from the mounted ConfigMap; the sidecar listens on the port.
    let dep = find(&docs, "Deployment", "-scheduler");
    let ks = container(dep, "kube-scheduler");
    let image = ks["image"].as_str().unwrap();
    assert!(
        image.starts_with("registry.k8s.io/kube-scheduler:v1.36."),
        "{image}"
    );
    assert!(
        arg_list(ks)
            .iter()
            .any(|a| a == "--config=/etc/solgrid/scheduler/kube-scheduler-config.yaml")
    );
    // filter/prioritize on the pod's loopback only; the only container port (and
    // the probes') is the metrics listener.
    let ext = container(dep, "extender");
    let args = arg_list(ext);
    assert!(
        args.iter().any(|a| a == "--listen=127.0.0.1:9999"),
        "{args:?}"
    );
    assert!(
        args.iter().any(|a| a == "--metrics-listen=0.0.0.0:8889"),
        "{args:?}"
    );
    for flag in [
        "--max-body-bytes=4194304",
        "--max-concurrent-requests=32",
        "--request-timeout-ms=1000",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
    }
    let ports: Vec<&Value> = ext["ports"].as_array().unwrap().iter().collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["containerPort"], 8889);
    assert_eq!(ports[0]["name"], "metrics");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(ext[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let svc = find(&docs, "Service", "-scheduler-metrics");
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["port"] != 9999 && p["targetPort"] != "extender"),
        "the Service must not expose filter/prioritize"
    );
    // the extender answers before kube-scheduler gives up on it
    for e in &cfg.extenders {
        if let Some(t) = &e.http_timeout {
            let ms: u64 = if let Some(s) = t.strip_suffix("ms") {
                s.parse().unwrap()
            } else {
                t.strip_suffix('s').unwrap().parse::<u64>().unwrap() * 1000
            };
            assert!(
                ms > 1000,
                "httpTimeout {t} must exceed --request-timeout-ms"
            );
        }
    }
    // The operator creates worker pods for this scheduler.
    let op = container(find(&docs, "Deployment", "-operator"), "operator");
    assert!(
        arg_list(op)
            .iter()
            .any(|a| a == "--scheduler-name=solgrid-scheduler")
    );
}

#[test]
fn operator_defaults_embedded_ledger_on_a_volume_with_leader_election() {
    let docs = render(&[], &[]);
    let dep = find(&docs, "Deployment", "-operator");
    assert_eq!(dep["spec"]["replicas"], 2);
    let c = container(dep, "operator");
    let env = c["env"].as_array().unwrap();
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], path);
    }
    let args = arg_list(c);
    assert!(args.contains(&"--http-addr=0.0.0.0:8080".to_string()));
    assert!(args.contains(&"--ledger-path=/var/lib/solgrid/ledger.jsonl".to_string()));
    assert!(
        !args.iter().any(|a| a.starts_with("--solana-rpc-url")),
        "no Solana by default"
    );
    let vols = dep["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let ledger = vols.iter().find(|v| v["name"] == "ledger").unwrap();
    let claim = ledger["persistentVolumeClaim"]["claimName"]
        .as_str()
        .expect("the embedded ledger is on a PVC by default");
    let pvc = find(&docs, "PersistentVolumeClaim", "-ledger");
    assert_eq!(pvc["metadata"]["name"], claim);
    assert_eq!(
        pvc["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    // ReadWriteOnce: both replicas must land on the node that can mount it.
    assert!(
        dep["spec"]["template"]["spec"]["affinity"]["podAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_array()
    );
    // Probes on the documented endpoints.
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // Leader election RBAC names the Lease.
    let role = find(&docs, "Role", "-operator-leader-election");
    assert!(role["rules"].as_array().unwrap().iter().any(|r| {
        r["resourceNames"]
            .as_array()
            .is_some_and(|n| n.contains(&Value::from("solgrid-operator")))
    }));
    // The market parameters reach the operator.
    let market = find(&docs, "ConfigMap", "-market");
    let m: Value = serde_json::from_str(market["data"]["market.json"].as_str().unwrap()).unwrap();
    assert!(
        arg_list(c)
            .iter()
            .any(|a| a == "--market-config=/etc/solgrid/market/market.json")
    );
    assert!(
        arg_list(c)
            .iter()
            .any(|a| a == &format!("--lease-namespace={NAMESPACE}"))
    );
    assert_eq!(m["fees"]["requesterFeeBps"], 25);
    assert_eq!(m["fees"]["stablecoinSurchargeBps"], 200);
}

#[test]
fn operator_with_solana_gets_rpc_mints_and_keypair() {
    let docs = render(&ci("solana-enabled.yaml"), &[]);
    let dep = find(&docs, "Deployment", "-operator");
    let c = container(dep, "operator");
    let args = arg_list(c);
    for want in [
        "--solana-rpc-url=https://api.devnet.solana.com",
        "--io-mint=4vMsoUT2BWatFweudnQM1xedRLfJgJ7hswhcpz4xgBTy",
        "--usdc-mint=4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
        "--authority-keypair=/etc/solgrid/authority/keypair.json",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    let vols = dep["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let auth = vols.iter().find(|v| v["name"] == "authority").unwrap();
    assert_eq!(auth["secret"]["secretName"], "solgrid-authority");
    assert_eq!(auth["secret"]["defaultMode"], 0o400);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "authority")
        .unwrap();
    assert_eq!(mount["readOnly"], true);
    // Solana holds the money: no ledger PVC.
    assert!(of_kind(&docs, "PersistentVolumeClaim").is_empty());
    let ledger = vols.iter().find(|v| v["name"] == "ledger").unwrap();
    assert!(ledger["emptyDir"].is_object());
}

#[test]
fn incomplete_solana_configuration_is_refused() {
    for (sets, want) in [
        (
            vec!["solana.rpcUrl=https://api.devnet.solana.com"],
            "ioMint",
        ),
        (
            vec![
                "solana.rpcUrl=https://api.devnet.solana.com",
                "solana.ioMint=4vMsoUT2BWatFweudnQM1xedRLfJgJ7hswhcpz4xgBTy",
                "solana.usdcMint=4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
            ],
            "secretName",
        ),
    ] {
        let out = helm_template(&[], &sets);
        assert!(!out.success, "{sets:?} rendered");
        assert!(out.stderr.contains(want), "{sets:?}: {}", out.stderr);
    }
}

#[test]
fn device_plugin_runs_on_gpu_nodes_with_least_privilege() {
    for values in [vec![], ci("solana-enabled.yaml")] {
        let docs = render(&values, &[]);
        let ds = find(&docs, "DaemonSet", "-device-plugin");
        let spec = &ds["spec"]["template"]["spec"];
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(spec[host].is_null() || spec[host] == false, "{host} set");
        }
        let terms = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert!(
            terms.as_array().is_some_and(|t| !t.is_empty()),
            "the device plugin must be restricted to GPU nodes"
        );
        let c = container(ds, "device-plugin");
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(sc["capabilities"]["add"].is_null(), "no capabilities added");
        // hostPaths: only the kubelet's device-plugins directory (rw) and /dev (ro).
        let vols = spec["volumes"].as_array().unwrap();
        let mounts = c["volumeMounts"].as_array().unwrap();
        for v in vols.iter().filter(|v| v["hostPath"].is_object()) {
            let path = v["hostPath"]["path"].as_str().unwrap();
            let m = mounts.iter().find(|m| m["name"] == v["name"]).unwrap();
            match path {
                "/var/lib/kubelet/device-plugins" => {
                    assert_eq!(m["mountPath"], "/var/lib/kubelet/device-plugins")
                }
                "/dev" => assert_eq!(m["readOnly"], true, "/dev must be mounted read-only"),
                other => panic!("unexpected hostPath {other}"),
            }
        }
        assert!(
            vols.iter()
                .any(|v| v["hostPath"]["path"] == "/var/lib/kubelet/device-plugins")
        );
        let env = c["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));
        // RBAC: writes only GpuNodes (and their status) and Node labels.
        let role = find(&docs, "ClusterRole", "-device-plugin");
        for r in role["rules"].as_array().unwrap() {
            for verb in r["verbs"].as_array().unwrap() {
                assert!(
                    ["get", "create", "patch"].contains(&verb.as_str().unwrap()),
                    "device plugin verb {verb}"
                );
            }
        }
    }
    let docs = render(&ci("solana-enabled.yaml"), &[]);
    let ds = find(&docs, "DaemonSet", "-device-plugin");
    assert_eq!(ds["spec"]["template"]["spec"]["runtimeClassName"], "nvidia");
    // Disabled: gone, with its RBAC.
    let docs = render(&ci("minimal.yaml"), &[]);
    assert!(of_kind(&docs, "DaemonSet").is_empty());
    assert!(!docs.iter().any(|d| {
        d["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .contains("device-plugin")
    }));
}

#[test]
fn every_container_is_hardened_and_sized() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        for w in workloads(&docs) {
            let spec = &w["spec"]["template"]["spec"];
            assert!(
                spec["serviceAccountName"].is_string(),
                "[{name}] {} has no ServiceAccount of its own",
                id(w)
            );
            for c in containers(spec) {
                let cid = format!("[{name}] {} container {}", id(w), c["name"]);
                assert!(
                    c["resources"]["requests"]["cpu"].is_string(),
                    "{cid}: cpu request"
                );
                assert!(
                    c["resources"]["requests"]["memory"].is_string(),
                    "{cid}: memory request"
                );
                assert!(
                    c["resources"]["limits"]["memory"].is_string(),
                    "{cid}: memory limit"
                );
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{cid}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{cid}");
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{cid}"
                );
                assert!(
                    sc["privileged"].is_null() || sc["privileged"] == false,
                    "{cid}"
                );
                if w["kind"] == "Deployment" {
                    assert_eq!(sc["runAsNonRoot"], true, "{cid}: must not run as root");
                }
                let image = c["image"].as_str().unwrap();
                assert!(
                    image.contains(':') && !image.ends_with(":latest"),
                    "{cid}: pinned image tag, got {image}"
                );
                assert!(c["livenessProbe"].is_object(), "{cid}: liveness probe");
            }
        }
    }
}

#[test]
fn services_select_pods_and_name_their_ports() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        let services = of_kind(&docs, "Service");
        assert!(!services.is_empty());
        for s in services {
            let sel = s["spec"]["selector"].as_object().unwrap();
            let targets: Vec<&Value> = workloads(&docs)
                .into_iter()
                .filter(|w| {
                    let labels = &w["spec"]["template"]["metadata"]["labels"];
                    sel.iter().all(|(k, v)| &labels[k] == v)
                })
                .collect();
            assert_eq!(
                targets.len(),
                1,
                "[{name}] {} selects {} workloads",
                id(s),
                targets.len()
            );
            let ports: Vec<&Value> = containers(&targets[0]["spec"]["template"]["spec"])
                .into_iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .collect();
            for p in s["spec"]["ports"].as_array().unwrap() {
                let tp = &p["targetPort"];
                let ok = ports.iter().any(|cp| {
                    (tp.is_string() && cp["name"] == *tp)
                        || (tp.is_number() && cp["containerPort"] == *tp)
                });
                assert!(
                    ok,
                    "[{name}] {} targetPort {tp} is no container port",
                    id(s)
                );
                assert!(
                    p["name"]
                        .as_str()
                        .is_some_and(|n| n.contains("metrics") || n.starts_with("https")),
                    "[{name}] {} port {} is not named for scraping",
                    id(s),
                    p["name"]
                );
            }
            // The NetworkPolicy (when on) admits each Service port.
            let pols: Vec<&Value> = of_kind(&docs, "NetworkPolicy")
                .into_iter()
                .filter(|np| {
                    let m = &np["spec"]["podSelector"]["matchLabels"];
                    sel.iter().all(|(k, v)| &m[k] == v)
                })
                .collect();
            for np in pols {
                let allowed: Vec<&Value> = np["spec"]["ingress"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r["ports"].as_array().into_iter().flatten())
                    .map(|p| &p["port"])
                    .collect();
                for p in s["spec"]["ports"].as_array().unwrap() {
                    assert!(
                        allowed.contains(&&p["port"]),
                        "[{name}] {} does not admit port {}",
                        id(np),
                        p["port"]
                    );
                }
            }
        }
    }
}

#[test]
fn monitoring_objects_only_when_enabled() {
    let docs = render(&[], &[]);
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    let docs = render(&ci("monitoring-enabled.yaml"), &[]);
    assert_eq!(of_kind(&docs, "ServiceMonitor").len(), 3);
    assert_eq!(of_kind(&docs, "PrometheusRule").len(), 1);
    let dash = find(&docs, "ConfigMap", "-dashboard");
    assert_eq!(dash["metadata"]["namespace"], "monitoring");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dash["data"]["solgrid.json"].as_str().unwrap())
        .expect("the dashboard is JSON");
    assert_eq!(json["uid"], "solgrid-market");
    let titles: Vec<String> = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str().map(str::to_lowercase))
        .collect();
    for want in [
        "price",
        "utilization",
        "jobs by phase",
        "settlement",
        "burned",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no dashboard panel about {want}: {titles:?}"
        );
    }
    // Every ServiceMonitor selects a Service of the chart on a port it has.
    for sm in of_kind(&docs, "ServiceMonitor") {
        let sel = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let svc = of_kind(&docs, "Service")
            .into_iter()
            .find(|s| {
                let l = &s["metadata"]["labels"];
                sel.iter().all(|(k, v)| &l[k] == v)
            })
            .unwrap_or_else(|| panic!("{} selects no Service", id(sm)));
        for ep in sm["spec"]["endpoints"].as_array().unwrap() {
            assert!(
                svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == ep["port"]),
                "{}: port {} not on {}",
                id(sm),
                ep["port"],
                id(svc)
            );
        }
    }
}

/// Each `bad-values/*.yaml` starts with `# expect: <text>`: helm must refuse it with
/// that text in its error (the schema, or the chart's own checks).
#[test]
fn values_schema_rejects_bad_values() {
    let dir = fixtures_dir().join("bad-values");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected bad values fixtures in {}",
        dir.display()
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let want = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", f.display()))
            .trim()
            .to_string();
        let out = helm_template(std::slice::from_ref(&f), &[]);
        assert!(
            !out.success,
            "{} rendered, but must be refused",
            f.display()
        );
        assert!(
            out.stderr.contains(&want),
            "{}: expected {want:?} in the error, got:\n{}",
            f.display(),
            out.stderr
        );
        // helm lint refuses a schema violation as well (it reports a template's
        // `fail` only as a message).
        if !(want.starts_with('/') || want.contains("additional properties")) {
            continue;
        }
        let lint = run(Command::new(helm())
            .arg("lint")
            .arg(chart_dir())
            .arg("--values")
            .arg(&f));
        assert!(!lint.success, "helm lint accepted {}", f.display());
    }
}
