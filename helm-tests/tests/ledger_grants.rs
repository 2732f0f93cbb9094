//! Funding on the embedded ledger is an admin action: the chart lets the operator
//! read LedgerGrants and write their status, and gives no other role (tenants, the
//! device plugin, the scheduler) any verb on them.

use serde_json::Value;
use solgrid_helm_tests::*;

fn grant_rules(role: &Value) -> Vec<&Value> {
    role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["resources"].as_array().is_some_and(|res| {
                res.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.starts_with("ledgergrants")))
            })
        })
        .collect()
}

#[test]
fn only_the_operator_touches_ledger_grants_and_only_to_read_and_record() {
    let docs = render(&[], &[]);
    let mut operator_seen = false;
    for doc in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let rules = grant_rules(doc);
        if name.ends_with("-operator") && doc["kind"] == "ClusterRole" {
            operator_seen = true;
            let objects = rules
                .iter()
                .find(|r| r["resources"] == serde_json::json!(["ledgergrants"]))
                .expect("the operator watches LedgerGrants");
            assert_eq!(verbs(objects), ["get", "list", "watch"]);
            let status = rules
                .iter()
                .find(|r| r["resources"] == serde_json::json!(["ledgergrants/status"]))
                .expect("the operator records a grant's execution");
            assert_eq!(verbs(status), ["get", "patch", "update"]);
        } else {
            assert!(
                rules.is_empty(),
                "{} {name} may touch LedgerGrants: {rules:?}",
                doc["kind"]
            );
        }
    }
    assert!(operator_seen, "no operator ClusterRole rendered");
}
