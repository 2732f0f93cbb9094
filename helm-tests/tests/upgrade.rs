//! `helm upgrade` from each previous release (fixtures/releases/solgrid-<v>.tgz) to
//! this chart keeps what a running market is made of (docs/upgrades.md):
//!
//! - the values the previous release was installed with still validate and render;
//! - no object of the previous release disappears (helm deletes those on upgrade);
//! - no workload's selector changes (immutable: the upgrade would fail half-way);
//! - the ledger's PVC keeps its name, access modes, class and keep policy, and the
//!   operator mounts it at the same journal path;
//! - the operators elect their leader on the same Lease, so a new replica waits for
//!   the old leader instead of acting beside it;
//! - the admission policies of the new release still trust the previous release's
//!   operator identity, so the old leader is not refused its status writes while
//!   the rollout replaces it.
//!
//! The real upgrade, with a job running through it, is
//! `e2e/tests/upgrade.rs` on the local control plane.

use serde_json::Value;
use solgrid_helm_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Objects this chart deliberately no longer ships, by `kind/name` (each needs a
/// line in docs/upgrades.md). None so far.
const REMOVED_ON_PURPOSE: &[&str] = &[];

/// A packaged release unpacked into a temporary directory (its `ci/` values too).
fn unpack(tgz: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new("tar")
        .arg("-xzf")
        .arg(tgz)
        .arg("-C")
        .arg(dir.path()));
    assert!(out.success, "tar -xzf {}: {}", tgz.display(), out.stderr);
    let chart = dir.path().join("solgrid");
    assert!(chart.join("Chart.yaml").is_file(), "{}", tgz.display());
    (dir, chart)
}

fn render_of(chart: &Path, values: &[PathBuf]) -> Vec<Value> {
    let out = helm_template_of(chart, values, &[]);
    assert!(
        out.success,
        "helm template {} {values:?}:\n{}",
        chart.display(),
        out.stderr
    );
    documents(&out.stdout).unwrap()
}

/// `(kind, namespace, name)` of a rendered object.
fn key(d: &Value) -> String {
    format!(
        "{}/{}/{}",
        d["kind"].as_str().unwrap_or("?"),
        d["metadata"]["namespace"].as_str().unwrap_or(""),
        d["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn lookup<'a>(docs: &'a [Value], k: &str) -> Option<&'a Value> {
    docs.iter().find(|d| key(d) == k)
}

/// `--flag=value` of the operator container, if the release deploys an operator.
fn operator_arg(docs: &[Value], flag: &str) -> Option<String> {
    let dep = of_kind(docs, "Deployment").into_iter().find(|d| {
        d["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-operator"))
    })?;
    let c = dep["spec"]["template"]["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "operator")?;
    c["args"].as_array()?.iter().find_map(|a| {
        a.as_str()?
            .strip_prefix(flag)?
            .strip_prefix('=')
            .map(String::from)
    })
}

/// What must hold between the previous release's objects and this chart's, both
/// rendered with the values the previous release was installed with.
fn upgrade_problems(old: &[Value], new: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for o in old
        .iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
    {
        let k = key(o);
        let Some(n) = lookup(new, &k) else {
            let short = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            );
            if !REMOVED_ON_PURPOSE.contains(&short.as_str()) {
                problems.push(format!("{k}: gone (helm upgrade would delete it)"));
            }
            continue;
        };
        match o["kind"].as_str() {
            Some("Deployment" | "DaemonSet" | "StatefulSet")
                if o["spec"]["selector"] != n["spec"]["selector"] =>
            {
                problems.push(format!(
                    "{k}: spec.selector {} became {} (immutable)",
                    o["spec"]["selector"], n["spec"]["selector"]
                ));
            }
            Some("PersistentVolumeClaim") => {
                for f in ["accessModes", "storageClassName"] {
                    if o["spec"][f] != n["spec"][f] {
                        problems.push(format!(
                            "{k}: spec.{f} {} became {}",
                            o["spec"][f], n["spec"][f]
                        ));
                    }
                }
                let keep =
                    |d: &Value| d["metadata"]["annotations"]["helm.sh/resource-policy"].clone();
                if keep(o) == "keep" && keep(n) != "keep" {
                    problems.push(format!("{k}: lost helm.sh/resource-policy: keep"));
                }
            }
            _ => {}
        }
    }
    // the ledger and the leader
    for flag in [
        "--ledger-path",
        "--leader-election",
        "--lease-name",
        "--lease-namespace",
    ] {
        let (o, n) = (operator_arg(old, flag), operator_arg(new, flag));
        if o.is_some() && o != n {
            problems.push(format!("operator {flag}: {o:?} became {n:?}"));
        }
    }
    let claims = |docs: &[Value]| -> Vec<Value> {
        of_kind(docs, "Deployment")
            .into_iter()
            .flat_map(|d| {
                d["spec"]["template"]["spec"]["volumes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|v| {
                v["persistentVolumeClaim"]["claimName"]
                    .as_str()
                    .map(Value::from)
            })
            .collect()
    };
    for c in claims(old) {
        if !claims(new).contains(&c) {
            problems.push(format!(
                "the operator no longer mounts the ledger claim {c}"
            ));
        }
    }
    // the old operator identity stays trusted by the new policies during the rollout
    let operator_sa = |docs: &[Value]| {
        of_kind(docs, "ServiceAccount")
            .into_iter()
            .find(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-operator"))
            })
            .map(|d| {
                format!(
                    "system:serviceaccount:{}:{}",
                    d["metadata"]["namespace"].as_str().unwrap_or(""),
                    d["metadata"]["name"].as_str().unwrap_or("")
                )
            })
    };
    if let Some(user) = operator_sa(old) {
        let exempts = |p: &Value| names_user(&p["spec"]["matchConditions"].to_string(), &user);
        for p in of_kind(old, "ValidatingAdmissionPolicy")
            .into_iter()
            .filter(|p| exempts(p))
        {
            if lookup(new, &key(p)).is_some_and(|n| !exempts(n)) {
                problems.push(format!(
                    "{}: no longer exempts the previous operator {user}",
                    key(p)
                ));
            }
        }
    }
    problems
}

/// Whether `text` names `user` as a whole name (not as the prefix of a longer one).
fn names_user(text: &str, user: &str) -> bool {
    text.match_indices(user).any(|(i, _)| {
        !text[i + user.len()..]
            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    })
}

#[test]
fn every_previous_release_is_older_than_this_chart() {
    let current = chart_metadata(&chart_dir());
    let version = |m: &Value, k: &str| {
        Version::parse(m[k].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("{k} {} is not MAJOR.MINOR.PATCH", m[k]))
    };
    let (this, this_app) = (
        version(&current, "version"),
        version(&current, "appVersion"),
    );
    for (v, tgz) in previous_releases() {
        let m = chart_metadata(&tgz);
        assert_eq!(m["name"], "solgrid", "{}", tgz.display());
        assert_eq!(
            version(&m, "version"),
            v,
            "{} is named after another version",
            tgz.display()
        );
        assert!(
            v < this,
            "released {v} is not older than the chart's {this}: bump Chart.yaml"
        );
        assert!(version(&m, "appVersion") <= this_app, "{}", tgz.display());
    }
}

#[test]
fn helm_upgrade_from_each_previous_release_keeps_the_ledger_the_leader_and_every_object() {
    for (v, tgz) in previous_releases() {
        let (_tmp, old_chart) = unpack(&tgz);
        // the defaults, and each values file the previous release was tested with
        let mut sets: Vec<Vec<PathBuf>> = vec![vec![]];
        for e in std::fs::read_dir(old_chart.join("ci")).unwrap().flatten() {
            sets.push(vec![e.path()]);
        }
        for values in sets {
            let old = render_of(&old_chart, &values);
            let new = render_of(&chart_dir(), &values);
            assert!(
                lookup(&old, "Deployment/solgrid-system/solgrid-operator").is_some(),
                "{v}: the previous release renders no operator ({values:?})"
            );
            let problems = upgrade_problems(&old, &new);
            assert!(
                problems.is_empty(),
                "helm upgrade from {v} with {values:?} (docs/upgrades.md):\n  {}",
                problems.join("\n  ")
            );
        }
    }
}

/// The check itself catches each kind of break.
#[test]
fn the_upgrade_check_catches_breaks() {
    let (_v, tgz) = previous_releases().pop().unwrap();
    let (_tmp, old_chart) = unpack(&tgz);
    let old = render_of(&old_chart, &[]);
    assert!(upgrade_problems(&old, &old).is_empty());
    let mutated = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut new = old.clone();
        f(&mut new);
        upgrade_problems(&old, &new).join("\n")
    };
    let pos = |docs: &[Value], k: &str| docs.iter().position(|d| key(d) == k).unwrap();
    let pvc = "PersistentVolumeClaim/solgrid-system/solgrid-ledger";
    let dep = "Deployment/solgrid-system/solgrid-operator";
    let p = mutated(&|d| {
        let i = pos(d, pvc);
        d.remove(i);
    });
    assert!(p.contains("solgrid-ledger: gone"), "{p}");
    let p = mutated(&|d| {
        let i = pos(d, pvc);
        d[i]["metadata"]["annotations"] = Value::Null;
    });
    assert!(p.contains("resource-policy"), "{p}");
    let p = mutated(&|d| {
        let i = pos(d, dep);
        d[i]["spec"]["selector"]["matchLabels"]["tier"] = "x".into();
    });
    assert!(p.contains("spec.selector"), "{p}");
    let p = mutated(&|d| {
        let i = pos(d, dep);
        let args = d[i]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array_mut()
            .unwrap();
        for a in args.iter_mut() {
            if a.as_str().is_some_and(|s| s.starts_with("--lease-name=")) {
                *a = "--lease-name=solgrid-operator-v2".into();
            }
        }
    });
    assert!(p.contains("--lease-name"), "{p}");
    let p = mutated(&|d| {
        let i = pos(d, "ServiceAccount/solgrid-system/solgrid-operator");
        d[i]["metadata"]["name"] = "solgrid-operator-v2".into();
        for doc in d
            .iter_mut()
            .filter(|x| x["kind"] == "ValidatingAdmissionPolicy")
        {
            let text = doc["spec"]["matchConditions"].to_string().replace(
                "solgrid-system:solgrid-operator",
                "solgrid-system:solgrid-operator-v2",
            );
            doc["spec"]["matchConditions"] = serde_json::from_str(&text).unwrap();
        }
    });
    assert!(p.contains("no longer exempts the previous operator"), "{p}");
}
