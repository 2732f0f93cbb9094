//! The alert rules, checked with the real `promtool`: the PrometheusRule the chart
//! renders is extracted to a rules file, `promtool check rules` validates it, and
//! `promtool test rules` runs unit tests of the main alerts against synthetic series
//! (fixtures/alerts-test.yaml). A test also checks that every `solgrid_*` metric the
//! rules and the dashboard use is one a component defines.
//!
//! Without promtool these tests fail with a message naming
//! `scripts/install-promtool.sh`.

use serde_json::Value;
use solgrid_helm_tests::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The rule groups of the rendered PrometheusRule (default thresholds), as a
/// Prometheus rules file.
fn rules_file(extra_sets: &[&str]) -> String {
    let mut sets = vec!["metrics.prometheusRule.enabled=true"];
    sets.extend_from_slice(extra_sets);
    let docs = render(&[], &sets);
    let rule = find(&docs, "PrometheusRule", "-alerts");
    let typed: monitoring::PrometheusRule = strict(rule).unwrap();
    assert!(!typed.spec.groups.is_empty());
    serde_yaml_ng::to_string(&serde_json::json!({ "groups": rule["spec"]["groups"] })).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn promtool_check_rules() {
    let dir = tempfile::tempdir().unwrap();
    for (name, sets) in [
        ("default.rules.yaml", vec![]),
        (
            "tuned.rules.yaml",
            vec![
                "metrics.prometheusRule.settlementPendingThreshold=1h30m",
                "metrics.prometheusRule.rpcErrorRate=2",
            ],
        ),
    ] {
        let path = write(dir.path(), name, &rules_file(&sets));
        let out = run(Command::new(promtool())
            .arg("check")
            .arg("rules")
            .arg(&path));
        assert!(
            out.success,
            "promtool check rules {name}:\n{}\n{}",
            out.stdout, out.stderr
        );
        assert!(out.stdout.contains("SUCCESS"), "{}", out.stdout);
    }
    // The thresholds reach the expressions.
    let tuned = rules_file(&[
        "metrics.prometheusRule.settlementPendingThreshold=1h30m",
        "metrics.prometheusRule.rpcErrorRate=2",
    ]);
    assert!(tuned.contains("[1h30m]"), "{tuned}");
    assert!(tuned.contains("[5m])) > 2"), "{tuned}");
}

#[test]
fn promtool_alert_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "solgrid.rules.yaml", &rules_file(&[]));
    let tests = std::fs::read_to_string(fixtures_dir().join("alerts-test.yaml")).unwrap();
    let path = write(dir.path(), "alerts-test.yaml", &tests);
    let out = run(Command::new(promtool())
        .arg("test")
        .arg("rules")
        .arg(&path)
        .current_dir(dir.path()));
    assert!(
        out.success,
        "promtool test rules:\n{}\n{}",
        out.stdout, out.stderr
    );
}

#[test]
fn promtool_parses_a_metrics_exposition() {
    // scripts/check-metrics.sh pipes a component's /metrics into `promtool check
    // metrics`; make sure this promtool reads the exposition format the components
    // write (prometheus crate, text format 0.0.4).
    let sample = "# HELP solgrid_device_plugin_devices GPUs advertised, by resource and health.\n\
                  # TYPE solgrid_device_plugin_devices gauge\n\
                  solgrid_device_plugin_devices{health=\"Healthy\",resource=\"solgrid.dev/nvidia-gpu\"} 2\n";
    solgrid_helm_tests::promtool_check_metrics("a device plugin sample", sample);
}

/// Metric names defined in a component's Rust sources (string literals `"solgrid_..."`).
fn defined_metrics(dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let mut rest = text.as_str();
                while let Some(i) = rest.find("\"solgrid_") {
                    let s = &rest[i + 1..];
                    let end = s
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(s.len());
                    out.insert(s[..end].to_string());
                    rest = &s[end..];
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, &mut out);
    out
}

/// Which component exports a metric, by its prefix.
fn component_of(metric: &str) -> &'static str {
    if metric.starts_with("solgrid_device_plugin_") {
        "device-plugin"
    } else if metric.starts_with("solgrid_scheduler_") {
        "scheduler"
    } else {
        "operator"
    }
}

/// Metrics the alerts and the dashboard use that no component exports yet. Each entry
/// would be reported instead of failing; the list is empty: every name is checked.
const REQUESTED: &[&str] = &[];

#[test]
fn alert_and_dashboard_metrics_are_defined_by_components() {
    let docs = render(
        &[],
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    let mut used = BTreeSet::new();
    let rule = find(&docs, "PrometheusRule", "-alerts");
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            used.extend(metric_names(r["expr"].as_str().unwrap()));
        }
    }
    let dash = find(&docs, "ConfigMap", "-dashboard");
    let json: Value = serde_json::from_str(dash["data"]["solgrid.json"].as_str().unwrap()).unwrap();
    for p in json["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            used.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    assert!(used.len() >= 8, "{used:?}");
    let root = workspace_root();
    let mut missing = Vec::new();
    for component in ["operator", "scheduler", "device-plugin"] {
        let defined = defined_metrics(&root.join(component).join("src"));
        let wanted: Vec<&String> = used
            .iter()
            .filter(|m| component_of(m) == component)
            .collect();
        if defined.is_empty() {
            // The component does not export metrics yet: nothing to compare with.
            eprintln!(
                "note: {component}/src defines no solgrid_* metrics yet; not checked: {wanted:?}"
            );
            continue;
        }
        for m in wanted {
            // A histogram's `_seconds` family, a counter's `_total`: defined as written.
            if defined.contains(m.as_str()) {
                continue;
            }
            if REQUESTED.contains(&m.as_str()) {
                eprintln!("warning: {m} is used by the chart but not yet exported by {component}");
                continue;
            }
            {
                missing.push(format!(
                    "{m} (expected in {component}/src; it defines {defined:?})"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics used by the alerts or the dashboard but defined by no component:\n{}",
        missing.join("\n")
    );
}

/// GitHub's anchor of a Markdown heading: lowercase, spaces to `-`, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_runbook_url_has_its_section_in_troubleshooting_md() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/troubleshooting.md"))
        .expect("docs/troubleshooting.md");
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    let docs = render(&[], &["metrics.prometheusRule.enabled=true"]);
    let rule = find(&docs, "PrometheusRule", "-alerts");
    let mut missing = Vec::new();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let alert = r["alert"].as_str().unwrap_or("?");
            let url = r["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
            let (_, frag) = url
                .split_once("docs/troubleshooting.md#")
                .unwrap_or_else(|| {
                    panic!("{alert}: runbook {url} is not in docs/troubleshooting.md")
                });
            if !anchors.contains(frag) {
                missing.push(format!("{alert}: #{frag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "runbook anchors without a section in docs/troubleshooting.md: {missing:?} (sections: {anchors:?})"
    );
}
