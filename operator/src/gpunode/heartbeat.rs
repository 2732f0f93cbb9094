//! Heartbeats: a `coordination.k8s.io/v1` Lease per node decides online/offline.
//!
//! **Which lease.** By default the kubelet's own node lease: namespace
//! `kube-node-lease`, named after the Node, renewed every 10 s by every kubelet
//! (`leaseDurationSeconds` 40). It exists on every cluster without any solgrid
//! component having to renew it, and it stops exactly when the node stops. A
//! deployment that wants the heartbeat to prove the *device plugin* alive instead
//! points the operator at a lease the plugin renews (`--heartbeat-lease-namespace
//! <operator namespace> --heartbeat-lease-prefix solgrid-node-`, lease
//! `solgrid-node-<node>`); the logic is the same.
//!
//! **Online** means: the Node exists and the lease has a `renewTime` with
//! `now <= renewTime + max(leaseDurationSeconds, heartbeat timeout)` (the timeout,
//! `--heartbeat-timeout-seconds`, default 120 s, absorbs clock skew and API-server
//! hiccups). Missing or expired ⇒ offline.
//!
//! **Restart signals** (they reset `onlineSince`): the Node's `Ready` condition
//! becoming true again (its `lastTransitionTime`) after a reboot or kubelet restart,
//! and the lease's `acquireTime` (a lease re-acquired by its holder).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;

/// What the lease and the Node say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    pub online: bool,
    /// The lease's last renewal, ms since the epoch.
    pub renew_ms: Option<u64>,
    /// When the Node's `Ready` condition last became `True`.
    pub ready_since_ms: Option<u64>,
    /// The lease's `acquireTime`.
    pub acquired_ms: Option<u64>,
}

use crate::toolkit::ts_ms as ms;

/// The lease's name for a node.
pub fn lease_name(prefix: &str, node: &str) -> String {
    format!("{prefix}{node}")
}

/// Evaluates a node's heartbeat at `now_ms`: online while
/// `now <= renewTime + max(leaseDurationSeconds, timeout)`. `default_duration_s` is
/// used when the lease has no `leaseDurationSeconds`.
pub fn evaluate(
    lease: Option<&Lease>,
    node: Option<&Node>,
    now_ms: u64,
    timeout_ms: u64,
    default_duration_s: u64,
) -> Heartbeat {
    let spec = lease.and_then(|l| l.spec.as_ref());
    let renew_ms = spec.and_then(|s| s.renew_time.as_ref()).map(|t| ms(&t.0));
    let acquired_ms = spec.and_then(|s| s.acquire_time.as_ref()).map(|t| ms(&t.0));
    let duration_ms = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|d| u64::try_from(d).ok())
        .unwrap_or(default_duration_s)
        .saturating_mul(1000);
    let lease_ok =
        renew_ms.is_some_and(|r| now_ms <= r.saturating_add(duration_ms.max(timeout_ms)));
    let ready_since_ms = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| ms(&t.0));
    Heartbeat {
        online: node.is_some() && lease_ok,
        renew_ms,
        ready_since_ms,
        acquired_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(ms: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap()
    }

    fn lease(renew: Option<i64>, dur: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: renew.map(|r| MicroTime(t(r))),
                lease_duration_seconds: dur,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(ready: Option<(&str, i64)>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: ready.map(|(s, at)| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        last_transition_time: Some(Time(t(at))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn lease_freshness() {
        let n = node(Some(("True", 5_000)));
        let l = lease(Some(100_000), Some(40));
        let hb = evaluate(Some(&l), Some(&n), 140_000, 20_000, 40);
        assert!(hb.online);
        assert_eq!(hb.ready_since_ms, Some(5_000));
        assert!(!evaluate(Some(&l), Some(&n), 140_001, 20_000, 40).online);
        // a timeout longer than the lease duration wins
        assert!(evaluate(Some(&l), Some(&n), 220_000, 120_000, 40).online);
        assert!(!evaluate(Some(&l), Some(&n), 220_001, 120_000, 40).online);
        // no lease, no renew time, no node
        assert!(!evaluate(None, Some(&n), 0, 20_000, 40).online);
        assert!(!evaluate(Some(&lease(None, Some(40))), Some(&n), 0, 0, 40).online);
        assert!(!evaluate(Some(&l), None, 100_000, 0, 40).online);
        // default duration when the lease has none
        let l2 = lease(Some(100_000), None);
        assert!(evaluate(Some(&l2), Some(&n), 110_000, 0, 10).online);
        assert!(!evaluate(Some(&l2), Some(&n), 110_001, 0, 10).online);
        // NotReady: no ready_since
        let nr = node(Some(("False", 5_000)));
        assert_eq!(
            evaluate(Some(&l), Some(&nr), 100_000, 0, 40).ready_since_ms,
            None
        );
        assert_eq!(lease_name("solgrid-node-", "a"), "solgrid-node-a");
    }
}
