//! The trust boundary the chart ships (docs/security.md), checked on the rendered
//! manifests of the default values and every `helm/solgrid/ci/*.yaml`: the
//! ValidatingAdmissionPolicies and their bindings, the node-scoped device plugin
//! RBAC, and the tenant roles. (That the policies refuse the attacks on a real API
//! server is e2e/tests/trust_attacks.rs.)

use serde_json::Value;
use solgrid_helm_tests::*;
use std::path::PathBuf;

const OPERATOR: &str = "system:serviceaccount:solgrid-system:solgrid-operator";
const DEVICE_PLUGIN: &str = "system:serviceaccount:solgrid-system:solgrid-device-plugin";

fn variants() -> Vec<(String, Vec<PathBuf>)> {
    let mut v = vec![("default".to_string(), vec![])];
    let mut ci: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    ci.sort();
    for p in ci {
        v.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            vec![p],
        ));
    }
    v
}

/// Every CEL expression of a policy (match conditions, variables, validations and
/// their messages), joined.
fn all_cel(p: &Value) -> String {
    let spec = &p["spec"];
    let mut out = Vec::new();
    for key in ["matchConditions", "variables", "validations"] {
        for item in spec[key].as_array().into_iter().flatten() {
            for f in ["expression", "messageExpression"] {
                if let Some(s) = item[f].as_str() {
                    out.push(s.to_string());
                }
            }
        }
    }
    out.join("\n")
}

fn variable<'a>(p: &'a Value, name: &str) -> &'a str {
    p["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{} has no variable {name}", id(p)))["expression"]
        .as_str()
        .unwrap()
}

/// A CEL literal of JSON values wrapped in `dyn(...)` → the JSON (the defaults
/// hold no parentheses).
fn regex_lite_dyn(cel: &str) -> String {
    cel.replace("dyn(", "").replace(')', "")
}

fn policy<'a>(docs: &'a [Value], suffix: &str) -> Option<&'a Value> {
    of_kind(docs, "ValidatingAdmissionPolicy")
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str().unwrap().ends_with(suffix))
}

fn rules_of<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> Vec<&'a Value> {
    find(docs, kind, suffix)["rules"]
        .as_array()
        .unwrap()
        .iter()
        .collect()
}

#[test]
fn every_policy_is_bound_enforced_and_explains_itself() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        let policies = of_kind(&docs, "ValidatingAdmissionPolicy");
        let dp = !name.starts_with("minimal");
        assert_eq!(
            policies.len(),
            if dp { 4 } else { 3 },
            "[{name}] policies: {:?}",
            policies.iter().map(|p| id(p)).collect::<Vec<_>>()
        );
        for p in &policies {
            let pname = p["metadata"]["name"].as_str().unwrap();
            assert_eq!(p["spec"]["failurePolicy"], "Fail", "[{name}] {pname}");
            let bindings: Vec<_> = of_kind(&docs, "ValidatingAdmissionPolicyBinding")
                .into_iter()
                .filter(|b| b["spec"]["policyName"] == pname)
                .collect();
            assert_eq!(bindings.len(), 1, "[{name}] {pname} binding");
            assert_eq!(
                bindings[0]["spec"]["validationActions"],
                serde_json::json!(["Deny"]),
                "[{name}] {pname}"
            );
            let validations = p["spec"]["validations"].as_array().unwrap();
            assert!(!validations.is_empty());
            for v in validations {
                let msg = v["messageExpression"].as_str().unwrap_or_else(|| {
                    panic!("[{name}] {pname}: a validation without messageExpression")
                });
                assert!(
                    msg.contains("may") || msg.contains("only") || msg.contains("cannot"),
                    "[{name}] {pname}: the message should say who may do what: {msg}"
                );
                assert_eq!(v["reason"], "Forbidden", "[{name}] {pname}");
            }
            // exactly one matchCondition naming the identity it is about
            let conds = p["spec"]["matchConditions"].as_array().unwrap();
            assert_eq!(conds.len(), 1, "[{name}] {pname}");
        }
    }
}

#[test]
fn device_plugin_writes_only_its_own_node_inventory() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        let Some(p) = policy(&docs, "-device-plugin-node-scope") else {
            assert!(
                name.starts_with("minimal"),
                "[{name}] no device plugin policy"
            );
            continue;
        };
        let cel = all_cel(p);
        assert_eq!(
            p["spec"]["matchConditions"][0]["expression"],
            format!("request.userInfo.username == '{DEVICE_PLUGIN}'"),
            "[{name}]"
        );
        // keyed on the node identity of pod-bound tokens, matched to spec.nodeName
        assert!(
            variable(p, "node")
                .contains("request.userInfo.extra['authentication.kubernetes.io/node-name'][0]"),
            "[{name}]"
        );
        assert!(variable(p, "target").contains("oldObject.spec.nodeName"));
        assert!(cel.contains("variables.target == variables.node"));
        // only the four inventory fields of status
        assert_eq!(
            variable(p, "inventory"),
            "['gpus', 'gpuCount', 'model', 'lastHeartbeat']"
        );
        // the status defaults come from the chart's CRD (a CEL map of dyn values:
        // CEL map literals are otherwise of one value type)
        let cel_map = variable(p, "statusDefaults");
        let as_json = regex_lite_dyn(cel_map);
        let defaults: Value =
            serde_json::from_str(&as_json).unwrap_or_else(|e| panic!("[{name}] {cel_map}: {e}"));
        assert_eq!(defaults["phase"], "Pending", "[{name}]");
        assert_eq!(defaults["stakeTotal"], 0);
        assert!(defaults.get("lastHeartbeat").is_none());
        // never the spec, never a delete, only the plugin's labels on Nodes
        assert!(cel.contains("size(variables.specChanged) == 0"));
        assert!(cel.contains("request.operation != 'DELETE'"));
        assert!(cel.contains(
            r"k.matches('^solgrid\\.dev/([a-z0-9]+-gpu\\.(count|model|memory-mib)|gpu\\.present)$')"
        ));
        assert!(cel.contains("object.spec == oldObject.spec"));
        // creating a GpuNode only with the configured wallet, or not at all
        let wallet = name == "solana-enabled.yaml";
        assert_eq!(
            cel.contains(
                "variables.newSpec.payoutWallet == '7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU'"
            ),
            wallet,
            "[{name}]"
        );
        let matched: Vec<&str> = p["spec"]["matchConstraints"]["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["resources"].as_array().unwrap())
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(
            matched,
            ["gpunodes", "gpunodes/status", "nodes", "nodes/status"]
        );

        // RBAC: nothing but SSA of its status and labels (and create, when configured)
        let rules = rules_of(&docs, "ClusterRole", "-device-plugin");
        for r in &rules {
            for v in verbs(r) {
                assert!(
                    v == "patch" || (v == "create" && wallet),
                    "[{name}] device plugin verb {v} on {:?}",
                    resources(r)
                );
            }
            if verbs(r).contains(&"create") {
                assert_eq!(resources(r), ["gpunodes"]);
            }
        }
        let patched: Vec<&str> = rules
            .iter()
            .filter(|r| verbs(r).contains(&"patch"))
            .flat_map(|r| resources(r))
            .collect();
        assert_eq!(patched, ["gpunodes/status", "nodes"], "[{name}]");
    }
}

#[test]
fn status_finalizers_and_funded_jobs_are_the_operators() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        let p = policy(&docs, "-market-objects").expect("market-objects policy");
        let cel = all_cel(p);
        assert_eq!(
            p["spec"]["matchConditions"][0]["expression"],
            format!("!(request.userInfo.username in [\"{OPERATOR}\"])"),
            "[{name}]"
        );
        assert!(cel.contains("variables.sub != 'status'"));
        assert_eq!(
            variable(p, "sub"),
            "has(request.subResource) ? request.subResource : ''"
        );
        assert!(cel.contains(&format!("request.userInfo.username == '{DEVICE_PLUGIN}'")));
        assert!(variable(p, "removedFinalizers").contains("f.startsWith('solgrid.dev/')"));
        assert_eq!(
            variable(p, "mutableWhenFunded"),
            "['cancel', 'maxDurationSeconds']"
        );
        assert!(variable(p, "fundedJob").contains("!(variables.phase in ['Pending', 'Quoted'])"));
        let matched = strings(&p["spec"]["matchConstraints"]["resourceRules"][0]["resources"]);
        for r in [
            "computejobs",
            "computejobs/status",
            "stakepositions",
            "stakepositions/status",
            "gpunodes/status",
        ] {
            assert!(matched.contains(&r), "[{name}] {r} not matched");
        }
        // the messages name the operator
        assert!(cel.contains(&format!("only by the solgrid operator ({OPERATOR})")));
    }
    // extra operator identities are trusted too
    let docs = render(
        &[],
        &["admissionPolicies.extraOperatorUsers[0]=system:serviceaccount:ops:solgrid-break-glass"],
    );
    let p = policy(&docs, "-market-objects").unwrap();
    assert_eq!(
        p["spec"]["matchConditions"][0]["expression"],
        format!(
            "!(request.userInfo.username in [\"{OPERATOR}\",\"system:serviceaccount:ops:solgrid-break-glass\"])"
        )
    );
}

#[test]
fn the_extender_changes_only_the_market_state_label() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        let p = policy(&docs, "-extender-node-label").expect("extender policy");
        assert_eq!(
            p["spec"]["matchConditions"][0]["expression"],
            "request.userInfo.username == 'system:serviceaccount:solgrid-system:solgrid-scheduler'",
            "[{name}]"
        );
        assert!(
            all_cel(p).contains("variables.labelsChanged.all(k, k == 'solgrid.dev/market-state')")
        );
    }
    let docs = render(&[], &["scheduler.enabled=false"]);
    assert!(policy(&docs, "-extender-node-label").is_none());
}

#[test]
fn only_the_operator_creates_pods_with_solgrid_gpus() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        let p = policy(&docs, "-gpu-pods").expect("gpu-pods policy");
        let rule = &p["spec"]["matchConstraints"]["resourceRules"][0];
        assert_eq!(rule["resources"], serde_json::json!(["pods"]), "[{name}]");
        assert_eq!(rule["operations"], serde_json::json!(["CREATE"]));
        let containers = variable(p, "containers");
        assert!(containers.contains("object.spec.containers"));
        assert!(containers.contains("object.spec.initContainers"));
        let gpu = variable(p, "gpuContainers");
        for want in [
            "c.resources.requests.exists(r, r.startsWith('solgrid.dev/'))",
            "c.resources.limits.exists(r, r.startsWith('solgrid.dev/'))",
        ] {
            assert!(gpu.contains(want), "[{name}] {want}");
        }
        assert!(all_cel(p).contains(OPERATOR));
    }
}

#[test]
fn tenant_roles_never_write_status_or_finalizers() {
    for (name, values) in variants() {
        let docs = render(&values, &[]);
        for (role, objects) in [("-requester", "computejobs"), ("-staker", "stakepositions")] {
            let rules = rules_of(&docs, "ClusterRole", role);
            for r in &rules {
                for res in resources(r) {
                    assert!(
                        !res.contains('/') || res == "pods/log",
                        "[{name}] {role} may touch the subresource {res}"
                    );
                }
            }
            let own = rules
                .iter()
                .find(|r| resources(r) == [objects])
                .unwrap_or_else(|| panic!("[{name}] {role} has no {objects} rule"));
            assert_eq!(
                verbs(own),
                [
                    "create", "get", "list", "watch", "update", "patch", "delete"
                ]
            );
            let secrets = rules
                .iter()
                .find(|r| resources(r) == ["secrets"])
                .unwrap_or_else(|| panic!("[{name}] {role} has no secrets rule"));
            assert!(verbs(secrets).contains(&"create"));
            // nothing cluster-wide is reachable through a RoleBinding, and no
            // binding of these roles ships: the administrator binds them per namespace
            assert!(
                !of_kind(&docs, "ClusterRoleBinding")
                    .iter()
                    .any(|b| b["roleRef"]["name"].as_str().unwrap().ends_with(role)),
                "[{name}] {role} is bound cluster-wide"
            );
        }
        let viewer = rules_of(&docs, "ClusterRole", "-market-viewer");
        assert_eq!(viewer.len(), 1);
        assert_eq!(verbs(viewer[0]), ["get", "list", "watch"]);
    }
}

#[test]
fn policies_can_be_switched_off_or_to_audit() {
    let docs = render(&[], &["admissionPolicies.enabled=false"]);
    assert!(of_kind(&docs, "ValidatingAdmissionPolicy").is_empty());
    assert!(of_kind(&docs, "ValidatingAdmissionPolicyBinding").is_empty());
    let docs = render(&[], &["admissionPolicies.validationActions={Warn,Audit}"]);
    for b in of_kind(&docs, "ValidatingAdmissionPolicyBinding") {
        assert_eq!(
            b["spec"]["validationActions"],
            serde_json::json!(["Warn", "Audit"])
        );
    }
    // Deny and Warn together is refused by the schema (and would be by the API server)
    let out = helm_template(&[], &["admissionPolicies.validationActions={Deny,Warn}"]);
    assert!(!out.success, "Deny+Warn must be refused");
    let docs = render(&[], &["tenantRoles.create=false"]);
    assert!(!of_kind(&docs, "ClusterRole").iter().any(|r| {
        r["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-requester")
    }));
    let docs = render(&[], &["tenantRoles.marketViewer.bindAuthenticated=true"]);
    let b = find(&docs, "ClusterRoleBinding", "-market-viewer");
    assert_eq!(b["subjects"][0]["name"], "system:authenticated");
}
