//! Idle rewards on the real control plane, by the hour's idle time: two equal
//! nodes, one of them runs a job for several reward periods, and over that time the
//! busy node's idle rewards (`status.earnings.idleRewardsIo`, credited by the
//! operator's rewards loop once each round is paid) grow less than the idle one's.
//!
//! The operator runs with 10-second reward periods and a market config that makes
//! brand-new, unstaked nodes reward-eligible (no uptime, age or stake minimum), so
//! rounds run within the test; its rewards state and Lease live in the scenario's
//! own namespace.

use super::active_market;
use kube::api::Api;
use solgrid_crds::{ComputeJobPhase, GpuNode};
use solgrid_e2e::market::MarketOpts;
use solgrid_e2e::wait_for;
use std::collections::BTreeMap;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);
const NODES: [&str; 2] = ["e2e-reward-a", "e2e-reward-b"];
const PERIOD_S: u64 = 10;

/// Each node's (idle rewards credited so far, eligible, allocated GPUs).
async fn snapshot(api: &Api<GpuNode>) -> BTreeMap<String, (u64, bool, u32)> {
    let mut out = BTreeMap::new();
    for n in NODES {
        if let Ok(g) = api.get(n).await
            && let Some(st) = g.status
        {
            out.insert(
                n.to_string(),
                (
                    st.earnings.idle_rewards_io,
                    st.reward_eligible,
                    st.allocated_gpus,
                ),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_node_earns_less_idle_reward_than_an_idle_one() {
    let mut opts = MarketOpts::new("e2e-reward", &[(NODES[0], 1), (NODES[1], 1)]);
    opts.reward_interval_s = Some(PERIOD_S);
    opts.operator_market = Some(serde_json::json!({
        "matching": {"minNodeAgeMs": 0, "requireStake": false},
        "staking": {"baseStakeIo": 0, "minUptimeMs": 0, "minAgeMs": 0}
    }));
    let Some((_one, m, _)) = active_market("rewards", opts).await else {
        return;
    };
    let gpunodes: Api<GpuNode> = Api::all(m.client.clone());

    // both earn while idle
    let before = snapshot(&gpunodes).await;
    wait_for(MIN, || async {
        let s = snapshot(&gpunodes).await;
        NODES
            .iter()
            .all(|n| {
                s.get(*n).is_some_and(|(earned, eligible, _)| {
                    *eligible && *earned > before.get(*n).map_or(0, |b| b.0)
                })
            })
            .then_some(())
    })
    .await
    .expect("both nodes eligible and credited an idle round (see the operator log)");

    // one of them runs a job for several periods
    let (secret, mut j) = m.example(&["sleep", "45"]).expect("example");
    j["metadata"]["name"] = "busy".into();
    j["spec"]["workers"] = 1.into();
    j["spec"]["gpus"]["count"] = 1.into();
    m.submit(&secret, &j).await.expect("submit");
    m.wait_phase("busy", 2 * MIN, ComputeJobPhase::Running)
        .await
        .expect("running");
    let (busy, start) = wait_for(MIN, || async {
        let s = snapshot(&gpunodes).await;
        let busy = s.iter().find(|(_, v)| v.2 > 0)?.0.clone();
        Some((busy, s))
    })
    .await
    .expect("the allocation is written on one node");
    let idle = NODES.iter().find(|n| **n != busy).unwrap().to_string();

    // until its allocation is cleared
    m.wait_phase("busy", 2 * MIN, ComputeJobPhase::Settled)
        .await
        .expect("settled");
    let end = wait_for(MIN, || async {
        let s = snapshot(&gpunodes).await;
        (s.get(&busy)?.2 == 0).then_some(s)
    })
    .await
    .expect("the allocation is cleared");

    let delta = |n: &str| end[n].0 - start[n].0;
    let (busy_earned, idle_earned) = (delta(&busy), delta(&idle));
    eprintln!(
        "idle rewards while the job ran: busy {busy} +{busy_earned}, idle {idle} +{idle_earned}"
    );
    assert!(
        idle_earned > 0,
        "the idle node earned over the job's periods"
    );
    assert!(
        busy_earned < idle_earned,
        "busy node +{busy_earned} must earn less than the idle node +{idle_earned}"
    );
    m.down().await;
}
