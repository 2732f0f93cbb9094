//! GitOps health: the statuses the operator writes (through its real serializers)
//! for a ComputeJob, GpuNode and StakePosition in every phase, judged by
//! - kstatus's rules (what Flux's health checks and `kubectl wait` read: the
//!   `observedGeneration`, `Reconciling` and `Stalled` conditions, and `Ready`), and
//! - the Argo CD health checks in gitops/argocd/*.lua, run by Debian's `lua5.1`
//!   (Argo's gopher-lua is Lua 5.1); skipped with a note where it is not installed
//!   (`.ci/run` installs it),
//!
//! and docs/gitops.md carries exactly those Lua files.

use serde_json::{Value, json};
use solgrid_crds::*;
use solgrid_operator::conditions::time;
use solgrid_operator::kstatus;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn t(s: i64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    time(chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap())
}

fn cond(type_: &str, status: bool, reason: &str, at: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: format!("{type_} {reason}"),
        observed_generation: Some(1),
        last_transition_time: t(at),
    }
}

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) for a custom resource:
/// Terminating, then generation, then the Reconciling / Stalled conditions.
fn kstatus_of(obj: &Value) -> &'static str {
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating";
    }
    let generation = obj["metadata"]["generation"].as_i64();
    let observed = obj["status"]["observedGeneration"].as_i64();
    if let (Some(g), Some(o)) = (generation, observed)
        && g != o
    {
        return "InProgress";
    }
    for c in obj["status"]["conditions"].as_array().into_iter().flatten() {
        if c["type"] == "Reconciling" && c["status"] == "True" {
            return "InProgress";
        }
        if c["type"] == "Stalled" && c["status"] == "True" {
            return "Failed";
        }
    }
    "Current"
}

fn condition_status<'a>(obj: &'a Value, type_: &str) -> Option<&'a str> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

/// A Lua table constructor for a JSON value (what Argo CD hands the script as `obj`).
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn lua5_1() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("lua5.1"))
        .find(|p| p.is_file())
}

/// Runs gitops/argocd/<file> on each object: (status, message) per object.
fn argo_health(lua51: &Path, file: &str, objects: &[Value]) -> Vec<(String, String)> {
    let script = std::fs::read_to_string(root().join("gitops/argocd").join(file)).unwrap();
    let mut chunk = String::new();
    chunk.push_str("local function check(obj)\n");
    chunk.push_str(&script);
    chunk.push_str("\nend\n");
    for o in objects {
        chunk.push_str(&format!(
            "do local hs = check({}); print(hs.status .. \"\\t\" .. (hs.message or \"\")) end\n",
            lua(o)
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("check.lua");
    std::fs::write(&path, chunk).unwrap();
    let out = Command::new(lua51).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (s, m) = l.split_once('\t').unwrap_or((l, ""));
            (s.to_string(), m.to_string())
        })
        .collect();
    assert_eq!(lines.len(), objects.len(), "{file}");
    lines
}

struct Case {
    what: String,
    obj: Value,
    kstatus: &'static str,
    /// `Ready`, where the kind has it from this module (None: not checked).
    ready: Option<bool>,
    argo: &'static str,
}

/// Every ComputeJob phase (a new phase fails to compile here until it has a case).
fn job_phase_cases(p: ComputeJobPhase) -> Vec<(Vec<Condition>, &'static str, bool, &'static str)> {
    use ComputeJobPhase::*;
    let valid = cond("Valid", true, "Valid", 0);
    let done = |reason: &str| vec![valid.clone(), cond("Complete", true, reason, 50)];
    match p {
        Pending => vec![
            (vec![], "InProgress", false, "Progressing"),
            (
                vec![cond("Valid", false, "InvalidSpec", 1)],
                "Failed",
                false,
                "Degraded",
            ),
        ],
        Quoted | Funded | Scheduling | Running => {
            vec![(vec![valid.clone()], "InProgress", false, "Progressing")]
        }
        Succeeded => vec![(done("Succeeded"), "InProgress", false, "Progressing")],
        Expired => vec![(
            done("MaxDurationReached"),
            "InProgress",
            false,
            "Progressing",
        )],
        Cancelled => vec![(done("Cancelled"), "InProgress", false, "Suspended")],
        Failed => vec![
            (done("WorkerFailed"), "Failed", false, "Degraded"),
            (done("GangTimeout"), "Failed", false, "Degraded"),
        ],
        Settled => vec![
            (done("Succeeded"), "Current", true, "Healthy"),
            (done("MaxDurationReached"), "Current", true, "Healthy"),
            (done("Cancelled"), "Current", true, "Suspended"),
            (done("WorkerLost"), "Failed", false, "Degraded"),
            (vec![], "Current", true, "Healthy"),
        ],
    }
}

fn job_object(st: &ComputeJobStatus, generation: i64) -> Value {
    // the body the operator applies (settlement::status_patch), on the object
    let body = solgrid_operator::settlement::status_patch(st, None);
    json!({
        "apiVersion": API_VERSION,
        "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team-a", "generation": generation},
        "status": body["status"],
    })
}

/// The case of a job with status `st` at `generation`, expected to be judged
/// (kstatus, Ready, Argo CD health).
fn job_case(
    what: String,
    st: &ComputeJobStatus,
    generation: i64,
    (kstatus, ready, argo): (&'static str, Option<bool>, &'static str),
) -> Case {
    Case {
        what,
        obj: job_object(st, generation),
        kstatus,
        ready,
        argo,
    }
}

fn job_cases() -> Vec<Case> {
    let mut out = vec![];
    for p in ComputeJobPhase::ALL {
        for (i, (conds, ks, ready, argo)) in job_phase_cases(p).into_iter().enumerate() {
            let st = ComputeJobStatus {
                phase: p,
                message: Some(format!("{p:?} #{i}")),
                conditions: conds,
                observed_generation: Some(1),
                ..Default::default()
            };
            let what = format!("ComputeJob {p:?} #{i}");
            out.push(job_case(what, &st, 1, (ks, Some(ready), argo)));
        }
    }
    // refused settlement: stuck until someone looks
    let st = ComputeJobStatus {
        phase: ComputeJobPhase::Succeeded,
        conditions: vec![
            cond("Complete", true, "Succeeded", 5),
            cond("Settled", false, "SettlementRefused", 6),
        ],
        observed_generation: Some(1),
        ..Default::default()
    };
    let what = "ComputeJob settlement refused".into();
    out.push(job_case(what, &st, 1, ("Failed", Some(false), "Degraded")));
    // a spec change the operator has not seen yet (even on a settled job)
    let st = ComputeJobStatus {
        phase: ComputeJobPhase::Settled,
        observed_generation: Some(1),
        ..Default::default()
    };
    let what = "ComputeJob generation 2 not observed".into();
    out.push(job_case(what, &st, 2, ("InProgress", None, "Progressing")));
    out
}

fn gpunode_cases() -> Vec<Case> {
    use GpuNodePhase::*;
    let gn: GpuNode = serde_json::from_value(json!({
        "apiVersion": API_VERSION, "kind": "GpuNode",
        "metadata": {"name": "gpu-1", "generation": 1},
        "spec": {"nodeName": "gpu-1", "payoutWallet": "So11111111111111111111111111111111111111112",
                 "location": {"region": "eu-west", "country": "DE"}},
    }))
    .unwrap();
    let mut out = vec![];
    for (p, ks, argo) in [
        (Pending, "InProgress", "Progressing"),
        (Verifying, "InProgress", "Progressing"),
        (Active, "Current", "Healthy"),
        (Draining, "Current", "Suspended"),
        (Offline, "Failed", "Degraded"),
        (Slashed, "Failed", "Degraded"),
    ] {
        // exhaustive: a new phase needs a line above
        match p {
            Pending | Verifying | Active | Draining | Offline | Slashed => {}
        }
        let st = GpuNodeStatus {
            phase: p,
            // the controller's own Ready (True only when Active)
            conditions: vec![cond("Ready", p == Active, &format!("{p:?}"), 3)],
            observed_generation: Some(1),
            ..Default::default()
        };
        let body = solgrid_operator::gpunode::status_apply(&gn, &st);
        let mut obj = body.clone();
        obj["metadata"]["generation"] = json!(1);
        out.push(Case {
            what: format!("GpuNode {p:?}"),
            obj,
            kstatus: ks,
            ready: Some(p == Active),
            argo,
        });
    }
    out
}

fn stake_cases() -> Vec<Case> {
    use StakePhase::*;
    let sp: StakePosition = serde_json::from_value(json!({
        "apiVersion": API_VERSION, "kind": "StakePosition",
        "metadata": {"name": "stake-1", "namespace": "provider", "generation": 1},
        "spec": {"nodeName": "gpu-1", "amount": 1000, "ownerSecretRef": {"name": "owner"}},
    }))
    .unwrap();
    let mut out = vec![];
    for (p, ks, ready, argo) in [
        (Pending, "InProgress", false, "Progressing"),
        (Active, "Current", true, "Healthy"),
        (Unbonding, "InProgress", false, "Progressing"),
        (Withdrawn, "Current", true, "Healthy"),
        (Slashed, "Failed", false, "Degraded"),
    ] {
        match p {
            Pending | Active | Unbonding | Withdrawn | Slashed => {}
        }
        let st = StakePositionStatus {
            phase: p,
            message: Some(format!("{p:?}")),
            conditions: vec![cond("WalletReady", true, "SecretRead", 2)],
            observed_generation: Some(1),
            ..Default::default()
        };
        let mut obj = solgrid_operator::stake::store::status_apply(&sp, &st, false);
        obj["metadata"]["generation"] = json!(1);
        out.push(Case {
            what: format!("StakePosition {p:?}"),
            obj,
            kstatus: ks,
            ready: Some(ready),
            argo,
        });
    }
    out
}

#[test]
fn kstatus_reads_every_phase_as_documented() {
    for c in job_cases()
        .into_iter()
        .chain(gpunode_cases())
        .chain(stake_cases())
    {
        assert_eq!(
            kstatus_of(&c.obj),
            c.kstatus,
            "{}: {}",
            c.what,
            c.obj["status"]
        );
        if let Some(ready) = c.ready {
            assert_eq!(
                condition_status(&c.obj, "Ready"),
                Some(if ready { "True" } else { "False" }),
                "{}: Ready ({})",
                c.what,
                c.obj["status"]["conditions"]
            );
        }
        // kstatus wants both, never both True
        let r = condition_status(&c.obj, "Reconciling");
        let s = condition_status(&c.obj, "Stalled");
        assert!(r.is_some() && s.is_some(), "{}", c.what);
        assert!(!(r == Some("True") && s == Some("True")), "{}", c.what);
        for cnd in c.obj["status"]["conditions"].as_array().unwrap() {
            assert!(!cnd["reason"].as_str().unwrap().is_empty(), "{}", c.what);
            assert_eq!(cnd["observedGeneration"], 1, "{}", c.what);
        }
    }
}

#[test]
fn argo_cd_health_of_every_phase() {
    let Some(lua51) = lua5_1() else {
        eprintln!(
            "SKIP argo_cd_health_of_every_phase: lua5.1 not installed (apt-get install lua5.1; .ci/run does)"
        );
        return;
    };
    for (file, cases) in [
        ("computejob.lua", job_cases()),
        ("gpunode.lua", gpunode_cases()),
        ("stakeposition.lua", stake_cases()),
    ] {
        let objects: Vec<Value> = cases.iter().map(|c| c.obj.clone()).collect();
        let got = argo_health(&lua51, file, &objects);
        for (c, (status, message)) in cases.iter().zip(got) {
            assert_eq!(status, c.argo, "{file} on {}: {message}", c.what);
            assert!(!message.is_empty(), "{file} on {}: no message", c.what);
        }
        // no status yet: the operator has not seen it
        let mut bare = objects[0].clone();
        bare.as_object_mut().unwrap().remove("status");
        let got = argo_health(&lua51, file, &[bare]);
        assert_eq!(got[0].0, "Progressing", "{file} without a status");
    }
}

/// A status serialized again is the same (no write of an unchanged status), and
/// the kstatus conditions' transition times move only when they flip.
#[test]
fn stamping_is_idempotent_and_keeps_transition_times() {
    let mut st = ComputeJobStatus {
        phase: ComputeJobPhase::Running,
        message: Some("running".into()),
        conditions: vec![cond("Running", true, "GangRunning", 10)],
        observed_generation: Some(1),
        ..Default::default()
    };
    let once = kstatus::computejob(&st);
    assert_eq!(kstatus::computejob(&once), once);
    let rec = |s: &ComputeJobStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Reconciling")
            .cloned()
            .unwrap()
    };
    assert_eq!(rec(&once).last_transition_time, t(10));
    // the same phase, a new message, a later condition: Reconciling stays put
    st = once.clone();
    st.message = Some("still running".into());
    st.conditions
        .push(cond("Scheduled", true, "GangRunning", 20));
    let twice = kstatus::computejob(&st);
    assert_eq!(rec(&twice).last_transition_time, t(10));
    assert_eq!(rec(&twice).message, "still running");
    // finished and settled: flips at the controller's transition
    st = twice.clone();
    st.phase = ComputeJobPhase::Settled;
    st.conditions.push(cond("Settled", true, "Settled", 30));
    let done = kstatus::computejob(&st);
    assert_eq!(rec(&done).status, "False");
    assert_eq!(rec(&done).last_transition_time, t(30));
    assert_eq!(kstatus::computejob(&done), done);
    // the GpuNode and StakePosition serializers too
    let gst = GpuNodeStatus {
        phase: GpuNodePhase::Verifying,
        conditions: vec![cond("Ready", false, "Verifying", 4)],
        ..Default::default()
    };
    let g = kstatus::gpunode(&gst);
    assert_eq!(kstatus::gpunode(&g), g);
    let types: Vec<&str> = g.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Reconciling", "Stalled"], "sorted by type");
    let sst = StakePositionStatus {
        phase: StakePhase::Unbonding,
        ..Default::default()
    };
    let s = kstatus::stake(&sst);
    assert_eq!(kstatus::stake(&s), s);
}

/// docs/gitops.md gives each health check exactly as gitops/argocd/*.lua has it,
/// under the key Argo CD reads (`resource.customizations.health.<group>_<Kind>`).
#[test]
fn the_docs_carry_the_tested_lua() {
    let doc = std::fs::read_to_string(root().join("docs/gitops.md")).unwrap();
    for (kind, file) in [
        ("ComputeJob", "computejob.lua"),
        ("GpuNode", "gpunode.lua"),
        ("StakePosition", "stakeposition.lua"),
    ] {
        let key = format!("resource.customizations.health.{GROUP}_{kind}: |");
        let mut lines = doc.lines().skip_while(|l| l.trim() != key);
        let header = lines
            .next()
            .unwrap_or_else(|| panic!("docs/gitops.md has no `{key}`"));
        let indent = header.len() - header.trim_start().len() + 2;
        let block: Vec<&str> = lines
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
            .collect();
        let text: String = block
            .iter()
            .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
            .collect::<String>();
        let lua = std::fs::read_to_string(root().join("gitops/argocd").join(file)).unwrap();
        assert_eq!(
            text.trim_end(),
            lua.trim_end(),
            "docs/gitops.md's {kind} health check is not gitops/argocd/{file}"
        );
    }
}
