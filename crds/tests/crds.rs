//! The CRDs: no drift from the types, a structural schema, and the examples
//! (valid ones pass, each invalid one is refused naming its field).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};
use solgrid_crds::validate::{FieldError, parse_yaml_stream, validate_object};
use solgrid_crds::*;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn committed_yaml_matches_the_types() {
    for (file, crd) in all_crds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
        let generated = crd_yaml(&crd).unwrap();
        assert!(
            committed == generated,
            "{} drifted from crds/src; run `make crds`",
            path.display()
        );
    }
}

#[test]
fn names_scope_and_subresources() {
    for (crd, scope, short_name) in [
        (GpuNode::crd(), "Cluster", "gn"),
        (ComputeJob::crd(), "Namespaced", "cjob"),
        (StakePosition::crd(), "Namespaced", "sp"),
        (LedgerGrant::crd(), "Cluster", "lgrant"),
    ] {
        assert_eq!(crd.spec.scope, scope, "{}", crd.spec.names.kind);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short_name.to_string()][..]),
            "{}",
            crd.spec.names.kind
        );
    }
    for (_, crd) in all_crds() {
        assert_eq!(crd.spec.group, GROUP);
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, VERSION);
        assert!(v.served && v.storage);
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} lacks /status",
            crd.spec.names.kind
        );
    }
}

/// Short names of the resources a v1.36 API server serves (`kubectl api-resources`):
/// a CRD short name among them would shadow, or be shadowed by, a built-in one
/// (`cj` is batch/v1 CronJob's, so `kubectl get cj` never listed a ComputeJob).
const BUILTIN_SHORT_NAMES: &[&str] = &[
    "cs", "cm", "ep", "ev", "limits", "ns", "no", "pvc", "pv", "po", "rc", "quota", "sa", "svc",
    "crd", "crds", "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "netpol", "pdb", "pc",
    "sc", "ipa", "cidr", "eps", "vap", "vapb", "mwh", "vwh", "psp", "rcs", "rct", "dc", "dr",
    "drc", "pdc", "rsd", "sgi", "sgs", "va",
];

#[test]
fn short_names_do_not_collide_with_builtin_resources() {
    for (_, crd) in all_crds() {
        for s in crd.spec.names.short_names.iter().flatten() {
            assert!(
                !BUILTIN_SHORT_NAMES.contains(&s.as_str()),
                "{}: short name {s} is a built-in resource's",
                crd.spec.names.kind
            );
        }
    }
}

#[test]
fn served_schemas_carry_only_formats_the_api_server_knows() {
    for (file, crd) in all_crds() {
        let yaml = solgrid_crds::crd_yaml(&crd).unwrap();
        for line in yaml
            .lines()
            .filter(|l| l.trim_start().starts_with("format: "))
        {
            let f = line.trim_start().trim_start_matches("format: ").trim();
            assert!(
                solgrid_crds::KNOWN_FORMATS.contains(&f),
                "{file}: format {f} is unknown to the API server (kubectl apply warns)"
            );
        }
    }
}

fn columns(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn printer_columns() {
    assert_eq!(
        columns(&ComputeJob::crd()),
        ["Phase", "GPUs", "Workers", "Price", "Cost", "Age"]
    );
    assert_eq!(
        columns(&GpuNode::crd()),
        ["Phase", "GPUs", "Model", "Reputation", "Stake", "Age"]
    );
    assert_eq!(
        columns(&StakePosition::crd()),
        ["Node", "Amount", "Phase", "Age"]
    );
    assert_eq!(
        columns(&LedgerGrant::crd()),
        ["Wallet", "Token", "Amount", "Phase", "Age"]
    );
}

/// Every node of a schema below `path` (its object and its path), parents first.
fn visit(schema: &Value, path: &str, f: &mut dyn FnMut(&serde_json::Map<String, Value>, &str)) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    f(obj, path);
    for (k, v) in obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        visit(v, &format!("{path}.{k}"), f);
    }
    if let Some(items) = obj.get("items") {
        visit(items, &format!("{path}[]"), f);
    }
}

/// The OpenAPI v3 schema of a CRD's version, as JSON.
fn schema_of(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn schemas_are_structural_and_money_is_integer() {
    for (_, crd) in all_crds() {
        // a structural schema: every node says its type; no float types near money
        let mut problems = Vec::new();
        visit(&schema_of(&crd), &crd.spec.names.kind, &mut |obj, path| {
            let special = obj.contains_key("x-kubernetes-int-or-string")
                || obj.contains_key("x-kubernetes-preserve-unknown-fields");
            if !obj.contains_key("type") && !special {
                problems.push(format!("{path}: no type"));
            }
            for bad in ["anyOf", "oneOf", "allOf", "$ref"] {
                if obj.contains_key(bad) {
                    problems.push(format!("{path}: {bad} is not structural"));
                }
            }
            if obj.get("type").and_then(Value::as_str) == Some("number")
                && !path.contains("coordinates")
                && !path.contains("origin")
            {
                problems.push(format!("{path}: a float outside coordinates"));
            }
        });
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[test]
fn every_integer_is_bounded_below() {
    // u64/u32/u16 fields carry `minimum` so a negative amount is refused by the API server.
    // the generated schemas (before `served` drops the uint formats), so that every
    // u64/u32/u16 field is found
    for crd in [
        GpuNode::crd(),
        ComputeJob::crd(),
        StakePosition::crd(),
        LedgerGrant::crd(),
    ] {
        let mut out = Vec::new();
        visit(&schema_of(&crd), "", &mut |obj, path| {
            if obj.get("type").and_then(Value::as_str) == Some("integer")
                && obj
                    .get("format")
                    .and_then(Value::as_str)
                    .is_some_and(|f| f.starts_with("uint"))
                && !obj.contains_key("minimum")
            {
                out.push(path.to_string());
            }
        });
        assert!(out.is_empty(), "unbounded integers: {out:?}");
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_examples_pass_and_parse_as_types() {
    let files = yaml_files(&repo().join("examples"));
    assert!(files.len() >= 4, "examples missing");
    let mut seen = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in parse_yaml_stream(&text).unwrap() {
            let kind = doc["kind"].as_str().unwrap().to_string();
            if doc["apiVersion"] != API_VERSION {
                continue; // e.g. the Secret beside a job
            }
            if let Err(errors) = validate_object(&doc, None) {
                panic!("{}: {kind} refused: {errors:?}", file.display());
            }
            match kind.as_str() {
                "ComputeJob" => {
                    let job: ComputeJob = serde_json::from_value(doc).unwrap();
                    assert!(job.spec.workers >= 1);
                }
                "GpuNode" => {
                    let _: GpuNode = serde_json::from_value(doc).unwrap();
                }
                "StakePosition" => {
                    let _: StakePosition = serde_json::from_value(doc).unwrap();
                }
                "LedgerGrant" => {
                    let g: LedgerGrant = serde_json::from_value(doc).unwrap();
                    assert!(g.spec.amount > 0);
                }
                other => panic!("unexpected kind {other}"),
            }
            seen.insert(kind);
        }
    }
    assert_eq!(seen.len(), 4, "an example for each kind: {seen:?}");
}

#[test]
fn the_realistic_job_is_what_it_says() {
    let text =
        std::fs::read_to_string(repo().join("examples/computejob-llm-finetune.yaml")).unwrap();
    let doc = parse_yaml_stream(&text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "ComputeJob")
        .unwrap();
    let job: ComputeJob = serde_json::from_value(doc).unwrap();
    assert_eq!(job.spec.workers, 2);
    assert_eq!(job.spec.gpus.count, 1);
    assert!(
        job.spec
            .gpus
            .models
            .iter()
            .any(|m| m.contains("4090") || m.contains("A100"))
    );
    assert_eq!(job.spec.urgency, Urgency::High);
    assert_eq!(job.spec.payment_token, PaymentToken::Io);
}

fn expected_field(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect-field: "))
        .expect("invalid example lacks `# expect-field:`")
        .trim()
        .to_string()
}

#[test]
fn each_invalid_example_is_refused_naming_its_field() {
    let files = yaml_files(&repo().join("examples/invalid"));
    assert!(files.len() >= 10);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let field = expected_field(&text);
        let docs = parse_yaml_stream(&text).unwrap();
        assert_eq!(docs.len(), 1, "{}", file.display());
        match validate_object(&docs[0], None) {
            Ok(()) => panic!("{} was accepted", file.display()),
            Err(errors) => {
                eprintln!(
                    "{}: {}",
                    file.file_name().unwrap().to_string_lossy(),
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let named = errors
                    .iter()
                    .any(|e: &FieldError| e.field == field || e.to_string().contains(&field));
                assert!(
                    named,
                    "{}: errors {errors:?} do not name {field}",
                    file.display()
                );
            }
        }
    }
}

fn job(workers: u32, cancel: bool) -> Value {
    json!({
        "apiVersion": API_VERSION, "kind": "ComputeJob",
        "metadata": {"name": "j", "namespace": "n"},
        "spec": {
            "template": {"image": "x:1"},
            "gpus": {"count": 1},
            "workers": workers,
            "maxDurationSeconds": 3600,
            "maxPricePerGpuHour": 10,
            "payerSecretRef": {"name": "w"},
            "cancel": cancel
        }
    })
}

#[test]
fn transition_rules_refuse_what_cannot_change() {
    let old = job(2, false);
    assert!(
        validate_object(&job(2, true), Some(&old)).is_ok(),
        "cancelling is allowed"
    );
    let errors = validate_object(&job(3, false), Some(&old)).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.field.contains("workers") && e.message.contains("immutable")),
        "{errors:?}"
    );
    let errors = validate_object(&job(2, false), Some(&job(2, true))).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("cannot be resumed")),
        "{errors:?}"
    );
    let mut longer = job(2, false);
    longer["spec"]["maxDurationSeconds"] = json!(7200);
    let errors = validate_object(&longer, Some(&old)).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.field.contains("maxDurationSeconds")),
        "{errors:?}"
    );
    let mut shorter = job(2, false);
    shorter["spec"]["maxDurationSeconds"] = json!(1800);
    assert!(validate_object(&shorter, Some(&old)).is_ok());
}

#[test]
fn stake_amount_and_unbond_transitions() {
    let sp = |amount: u64, unbond: bool| {
        json!({"apiVersion": API_VERSION, "kind": "StakePosition", "metadata": {"name": "s", "namespace": "n"},
               "spec": {"nodeName": "g", "amount": amount, "ownerSecretRef": {"name": "o"}, "unbond": unbond}})
    };
    assert!(validate_object(&sp(5, true), Some(&sp(5, false))).is_ok());
    assert!(validate_object(&sp(6, false), Some(&sp(5, false))).is_err());
    assert!(validate_object(&sp(5, false), Some(&sp(5, true))).is_err());
}

#[test]
fn wrong_api_version_or_kind_is_refused() {
    let mut j = job(1, false);
    j["apiVersion"] = json!("solgrid.dev/v1");
    assert_eq!(
        validate_object(&j, None).unwrap_err()[0].field,
        "apiVersion"
    );
    let mut j = job(1, false);
    j["kind"] = json!("Pod");
    assert_eq!(validate_object(&j, None).unwrap_err()[0].field, "kind");
    let mut g = json!({"apiVersion": API_VERSION, "kind": "GpuNode", "metadata": {"name": "Bad_Name"}, "spec": {}});
    let errors = validate_object(&g, None).unwrap_err();
    assert!(errors.iter().any(|e| e.field == "metadata.name"));
    g["metadata"] = json!({"name": "ok", "namespace": "x"});
    let errors = validate_object(&g, None).unwrap_err();
    assert!(errors.iter().any(|e| e.field == "metadata.namespace"));
}

#[test]
fn status_round_trips() {
    let mut j: ComputeJob = serde_json::from_value(job(2, false)).unwrap();
    j.status = Some(ComputeJobStatus {
        phase: ComputeJobPhase::Running,
        escrowed: u64::MAX,
        ..Default::default()
    });
    let v = serde_json::to_value(&j).unwrap();
    assert_eq!(v["status"]["phase"], "Running");
    assert_eq!(v["status"]["escrowed"], json!(u64::MAX));
    let back: ComputeJob = serde_json::from_value(v).unwrap();
    assert_eq!(back.status.unwrap().escrowed, u64::MAX);
}

fn grant(wallet: &str, amount: u64) -> Value {
    json!({
        "apiVersion": API_VERSION, "kind": "LedgerGrant",
        "metadata": {"name": "g"},
        "spec": {"wallet": wallet, "token": "IO", "amount": amount},
    })
}

#[test]
fn a_ledger_grant_is_immutable() {
    let w = "Dy7gxWpurMmzfdypQ9jBfofMFn6pGTfC3D2vkJhajeMy";
    let old = grant(w, 5);
    assert!(validate_object(&old, None).is_ok());
    assert!(validate_object(&grant(w, 5), Some(&old)).is_ok());
    let errors = validate_object(&grant(w, 6), Some(&old)).unwrap_err();
    assert!(
        errors.iter().any(|e| e.to_string().contains("immutable")),
        "{errors:?}"
    );
    let other = "HpSE3YfBJusgofj9NLG2nWGeUfBxFi3eFQB2tNkedAQ";
    assert!(validate_object(&grant(other, 5), Some(&old)).is_err());
}

/// Every wallet Secret the examples ship carries a keypair whose public key is its
/// address (a debit needs the owner's keypair on every ledger), and says it is a
/// test-only keypair.
#[test]
fn example_wallet_secrets_carry_their_own_keypair() {
    let mut n = 0;
    for file in yaml_files(&repo().join("examples")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in parse_yaml_stream(&text).unwrap() {
            if doc["kind"] != "Secret" {
                continue;
            }
            n += 1;
            let address = doc["stringData"]["address"].as_str().unwrap();
            let keypair = doc["stringData"]["keypair"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a Secret without keypair", file.display()));
            let bytes: Vec<u8> = keypair
                .trim_matches(['[', ']'])
                .split(',')
                .map(|b| b.trim().parse().unwrap())
                .collect();
            assert_eq!(bytes.len(), 64, "{}", file.display());
            assert_eq!(
                bs58_encode(&bytes[32..]),
                address,
                "{}: the keypair's public half is not the address",
                file.display()
            );
            assert!(text.contains("TEST-ONLY"), "{}", file.display());
        }
    }
    assert!(n >= 2, "wallet Secrets in the examples: {n}");
}

fn bs58_encode(bytes: &[u8]) -> String {
    const A: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut digits: Vec<u32> = Vec::new();
    for &b in bytes {
        let mut carry = b as u32;
        for d in digits.iter_mut() {
            carry += *d << 8;
            *d = carry % 58;
            carry /= 58;
        }
        while carry > 0 {
            digits.push(carry % 58);
            carry /= 58;
        }
    }
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    std::iter::repeat_n('1', zeros)
        .chain(digits.iter().rev().map(|&d| A[d as usize] as char))
        .collect()
}

#[test]
fn market_state_label_is_a_valid_label_value_and_ignores_heartbeats() {
    let mut st = GpuNodeStatus {
        phase: GpuNodePhase::Active,
        reward_eligible: true,
        ..Default::default()
    };
    st.reputation.score = 550;
    let v = market_state(&st);
    assert_eq!(v, "Active.r550.eligible");
    assert!(v.len() <= 63);
    assert!(
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    );
    st.last_heartbeat = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    assert_eq!(market_state(&st), v, "a heartbeat does not change it");
    st.reputation.score = 560;
    assert_ne!(market_state(&st), v);
}
