//! Upgrades keep the objects that exist: the chart's CRDs stay backward compatible
//! with those of the last released chart (fixtures/crds-released/<version>/, the
//! CRDs as that release shipped them) within v1alpha1. An object the old CRDs
//! accepted — and the statuses the old operator wrote — must still be stored, read
//! and updated as they are: no served version dropped, no field removed (the API
//! server would prune it from every stored object), no type changed, no new required
//! field on an existing object, no enum value removed, no bound tightened. Adding is
//! always fine. A change that must break goes with a conversion plan
//! (docs/install.md, "CRD compatibility") and a new released baseline.

use serde_json::Value;
use solgrid_helm_tests::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Every `*.yaml` CRD of a directory, by name.
fn crds(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            for d in documents(&std::fs::read_to_string(&p).unwrap()).unwrap() {
                if d["kind"] == "CustomResourceDefinition" {
                    out.insert(d["metadata"]["name"].as_str().unwrap().to_string(), d);
                }
            }
        }
    }
    out
}

/// The released baselines, oldest first (one directory per chart version).
fn baselines() -> Vec<(String, BTreeMap<String, Value>)> {
    let dir = fixtures_dir().join("crds-released");
    let mut out: Vec<(String, BTreeMap<String, Value>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                crds(&e.path()),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no baseline under {}", dir.display());
    // the previous releases themselves, as `helm upgrade` starts from them
    for (version, tgz) in previous_releases() {
        out.push((format!("{version} (packaged)"), by_name(chart_crds(&tgz))));
    }
    out
}

fn by_name(docs: Vec<Value>) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|d| (d["metadata"]["name"].as_str().unwrap().to_string(), d))
        .collect()
}

/// The two baselines agree: the CRDs kept under crds-released/<version>/ are those
/// the packaged release of that version ships (fixtures/releases/).
#[test]
fn the_released_crd_baselines_are_the_packaged_releases_crds() {
    for (version, tgz) in previous_releases() {
        let dir = fixtures_dir()
            .join("crds-released")
            .join(version.to_string());
        assert!(
            dir.is_dir(),
            "{} has no CRD baseline at {}",
            tgz.display(),
            dir.display()
        );
        let kept = crds(&dir);
        let packaged = by_name(chart_crds(&tgz));
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            packaged.keys().collect::<Vec<_>>(),
            "{version}"
        );
        for (name, crd) in &packaged {
            let (a, b) = (without_nulls(&kept[name]), without_nulls(crd));
            assert!(
                a == b,
                "crds-released/{version}/ differs from the CRDs of {}: {:?}",
                tgz.display(),
                first_difference(&a, &b, name).or_else(|| first_difference(&b, &a, name))
            );
        }
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// What an object valid under `old` may meet under `new`, at `path`.
fn compare(old: &Value, new: &Value, path: &str, problems: &mut Vec<String>) {
    // an open schema (x-kubernetes-preserve-unknown-fields / int-or-string) stays open
    for flag in [
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
    ] {
        if old[flag] == true && new[flag] != true {
            problems.push(format!("{path}: no longer {flag}"));
        }
    }
    if !old["type"].is_null() && old["type"] != new["type"] {
        problems.push(format!(
            "{path}: type {} became {}",
            old["type"], new["type"]
        ));
        return;
    }
    // bounds may only widen
    for (k, looser_is_lower) in [
        ("minimum", true),
        ("minLength", true),
        ("minItems", true),
        ("minProperties", true),
        ("maximum", false),
        ("maxLength", false),
        ("maxItems", false),
        ("maxProperties", false),
    ] {
        match (num(&old[k]), num(&new[k])) {
            (_, None) => {}
            (None, Some(n)) => problems.push(format!("{path}: new bound {k}={n}")),
            (Some(o), Some(n)) if (looser_is_lower && n > o) || (!looser_is_lower && n < o) => {
                problems.push(format!("{path}: {k} tightened from {o} to {n}"))
            }
            _ => {}
        }
    }
    if !new["pattern"].is_null() && old["pattern"] != new["pattern"] {
        problems.push(format!(
            "{path}: pattern {} became {}",
            old["pattern"], new["pattern"]
        ));
    }
    if let Some(new_enum) = new["enum"].as_array() {
        match old["enum"].as_array() {
            None => problems.push(format!("{path}: new enum {new_enum:?}")),
            Some(old_enum) => {
                for v in old_enum {
                    if !new_enum.contains(v) {
                        problems.push(format!("{path}: enum value {v} removed"));
                    }
                }
            }
        }
    }
    // required: only what was required before (an old object lacks anything new)
    let old_req: Vec<&Value> = old["required"].as_array().into_iter().flatten().collect();
    for r in new["required"].as_array().into_iter().flatten() {
        if !old_req.contains(&r) {
            problems.push(format!("{path}: {r} is newly required"));
        }
    }
    if let Some(props) = old["properties"].as_object() {
        for (name, o) in props {
            let p = format!("{path}.{name}");
            match new["properties"].get(name) {
                Some(n) => compare(o, n, &p, problems),
                None if new["x-kubernetes-preserve-unknown-fields"] == true => {}
                None => problems.push(format!(
                    "{p}: removed (the API server would prune it from stored objects)"
                )),
            }
        }
    }
    for k in ["items", "additionalProperties"] {
        if old[k].is_object() {
            if new[k].is_object() {
                compare(&old[k], &new[k], &format!("{path}[{k}]"), problems);
            } else if new[k] != true {
                problems.push(format!("{path}: {k} schema removed"));
            }
        }
    }
    // list/map semantics of server-side apply
    for k in [
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    ] {
        if old[k] != new[k] && !old[k].is_null() {
            problems.push(format!("{path}: {k} {} became {}", old[k], new[k]));
        }
    }
}

fn check(old: &Value, new: &Value) -> Vec<String> {
    let mut problems = vec![];
    let name = old["metadata"]["name"].as_str().unwrap();
    for k in ["group", "scope"] {
        if old["spec"][k] != new["spec"][k] {
            problems.push(format!("{name}: spec.{k} changed"));
        }
    }
    for k in ["kind", "plural", "singular", "listKind"] {
        if old["spec"]["names"][k] != new["spec"]["names"][k] && !old["spec"]["names"][k].is_null()
        {
            problems.push(format!("{name}: names.{k} changed"));
        }
    }
    for ov in old["spec"]["versions"].as_array().unwrap() {
        let vname = ov["name"].as_str().unwrap();
        let Some(nv) = new["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == vname)
        else {
            problems.push(format!("{name}: version {vname} dropped"));
            continue;
        };
        if ov["served"] == true && nv["served"] != true {
            problems.push(format!("{name}: version {vname} no longer served"));
        }
        if ov["subresources"]["status"].is_object() && !nv["subresources"]["status"].is_object() {
            problems.push(format!("{name}: {vname} lost its status subresource"));
        }
        compare(
            &ov["schema"]["openAPIV3Schema"],
            &nv["schema"]["openAPIV3Schema"],
            &format!("{name}/{vname}"),
            &mut problems,
        );
    }
    problems
}

#[test]
fn crds_stay_compatible_with_every_released_chart() {
    let current = crds(&chart_dir().join("crds"));
    for (version, released) in baselines() {
        for (name, old) in &released {
            let new = current
                .get(name)
                .unwrap_or_else(|| panic!("CRD {name} of chart {version} is gone"));
            let problems = check(old, new);
            assert!(
                problems.is_empty(),
                "helm/solgrid/crds/ breaks objects stored under chart {version}'s CRDs \
                 (docs/install.md, CRD compatibility):\n  {}",
                problems.join("\n  ")
            );
        }
    }
}

/// The checker itself: each kind of break is caught, additions are not.
#[test]
fn the_compatibility_check_catches_breaks() {
    let released = &baselines()[0].1;
    let old = &released["computejobs.solgrid.dev"];
    let schema = "/spec/versions/0/schema/openAPIV3Schema";
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut new = old.clone();
        f(new.pointer_mut(schema).unwrap());
        check(old, &new)
    };
    assert!(check(old, old).is_empty());
    // an added optional field is fine
    assert!(
        mutate(&|s| {
            s["properties"]["spec"]["properties"]["newField"] =
                serde_json::json!({"type": "string"})
        })
        .is_empty()
    );
    // removed field
    let p = mutate(&|s| {
        s["properties"]["spec"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("cancel");
    });
    assert!(
        p.iter().any(|p| p.contains(".spec.cancel: removed")),
        "{p:?}"
    );
    // type change
    let p = mutate(&|s| s["properties"]["spec"]["properties"]["cancel"]["type"] = "string".into());
    assert!(p.iter().any(|p| p.contains("type")), "{p:?}");
    // newly required
    let p = mutate(&|s| {
        s["properties"]["spec"]["required"]
            .as_array_mut()
            .unwrap()
            .push("cancel".into())
    });
    assert!(p.iter().any(|p| p.contains("newly required")), "{p:?}");
    // enum value removed
    let p = mutate(&|s| {
        let e = s["properties"]["status"]["properties"]["phase"]["enum"]
            .as_array_mut()
            .unwrap();
        e.retain(|v| v != "Expired");
    });
    assert!(p.iter().any(|p| p.contains("\"Expired\" removed")), "{p:?}");
    // version dropped
    let mut new = old.clone();
    new["spec"]["versions"][0]["served"] = false.into();
    assert!(!check(old, &new).is_empty());
}
