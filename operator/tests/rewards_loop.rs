//! The hourly idle-reward loop against an in-memory API server (tower-test) and the
//! embedded ledger: the round is recorded in the ConfigMap before anything is
//! sent, paid exactly once under `rewards/<period>`, credited to the GpuNode and
//! StakePositions, and the dust carried.

mod apiserver;

use apiserver::*;
use serde_json::{Value, json};
use solgrid_market::emission::EmissionSchedule;
use solgrid_market::ledger::{Account, Ledger, Token};
use solgrid_operator::config::OperatorConfig;
use solgrid_operator::rewards::{RewardState, tick};

const CM: &str = "/api/v1/namespaces/solgrid-system/configmaps/solgrid-rewards";
const CMS: &str = "/api/v1/namespaces/solgrid-system/configmaps";
const IO: u64 = 1_000_000_000;
const H: u64 = 3_600_000;

fn gpunode(name: &str, eligible: bool) -> Value {
    json!({
        "apiVersion": "solgrid.dev/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": name},
        "spec": {"nodeName": name, "payoutWallet": WALLET_PROV,
                 "location": {"region": "eu-west", "country": "DE"}, "stakerCommissionBps": 1000},
        "status": {
            "phase": "Active", "rewardEligible": eligible, "allocatedGpus": 0, "gpuCount": 2,
            "gpus": [
                {"id": "g0", "vendor": "nvidia", "model": "h100", "vramMib": 81559, "health": "Healthy"},
                {"id": "g1", "vendor": "nvidia", "model": "h100", "vramMib": 81559, "health": "Healthy"}
            ],
            "earnings": {"computeIo": 5, "computeUsdc": 6, "idleRewardsIo": 0},
        },
    })
}

fn stake(name: &str, wallet: &str, phase: &str, locked: u64) -> Value {
    json!({
        "apiVersion": "solgrid.dev/v1alpha1", "kind": "StakePosition",
        "metadata": {"name": name, "namespace": "stakers"},
        "spec": {"nodeName": "gpu-1", "amount": locked, "ownerSecretRef": {"name": "s"}},
        "status": {"phase": phase, "ownerWallet": wallet, "locked": locked, "rewardsAccrued": 0},
    })
}

fn state(server: &ApiServer) -> RewardState {
    configmap_state(&server.get(CM).unwrap())
}

fn bal(ctx: &solgrid_operator::Context, a: Account) -> u64 {
    ctx.ledger.balance(&a, Token::Io).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_is_paid_exactly_once_credited_and_its_dust_carried() {
    let Env { ctx, server, clock } = env(OperatorConfig::default());
    server.put(
        "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-1",
        gpunode("gpu-1", true),
    );
    server.put(
        "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-2",
        gpunode("gpu-2", false),
    );
    server.put(
        "/apis/solgrid.dev/v1alpha1/namespaces/stakers/stakepositions/sp-a",
        stake("sp-a", WALLET_A, "Active", 3_000 * IO),
    );
    server.put(
        "/apis/solgrid.dev/v1alpha1/namespaces/stakers/stakepositions/sp-b",
        stake("sp-b", WALLET_B, "Unbonding", 1_000 * IO),
    );
    let period = T0_MS as u64 / H - 1;
    let supply0 = ctx.ledger.supply(Token::Io).unwrap();

    let r = tick(&ctx).await.unwrap();
    assert_eq!(r.planned, Some(period));
    assert_eq!(r.completed, Some(period));

    // the round is recorded before anything is sent
    let calls = server.calls();
    let planned: RewardState = configmap_state(&server.created(CMS));
    let round = planned.round.unwrap();
    one_planned(&round.settlements, &format!("rewards/{period}"));
    // then Sent, Confirmed (replaces guarded by resourceVersion)
    let puts: Vec<_> = calls.iter().filter(|c| c.is("PUT", CM)).collect();
    assert!(
        puts.iter()
            .all(|c| c.body["metadata"]["resourceVersion"].is_string())
    );
    assert!(
        puts[0].body["data"]["state.json"]
            .as_str()
            .unwrap()
            .contains("Sent")
    );

    // the money: emission of hour 0 minted, split 10 % commission, 3:1 stakers
    let schedule = EmissionSchedule::new(9).unwrap();
    let e = schedule.hourly(0);
    assert_eq!(ctx.ledger.supply(Token::Io).unwrap(), supply0 + e);
    let commission = e / 10;
    let rest = e - commission;
    assert_eq!(bal(&ctx, Account::Wallet(WALLET_PROV.into())), commission);
    assert_eq!(bal(&ctx, Account::Wallet(WALLET_A.into())), rest * 3 / 4);
    assert_eq!(bal(&ctx, Account::Wallet(WALLET_B.into())), rest / 4);
    let dust = e - commission - rest * 3 / 4 - rest / 4;
    assert_eq!(bal(&ctx, Account::EmissionPool), dust);
    assert_eq!(
        ctx.ledger.embedded().unwrap().confirmed_key_counts()[&format!("rewards/{period}")],
        1
    );

    // the display counters
    let gn = server
        .get("/apis/solgrid.dev/v1alpha1/gpunodes/gpu-1")
        .unwrap();
    assert_eq!(gn["status"]["earnings"]["idleRewardsIo"], commission);
    assert_eq!(
        gn["status"]["earnings"]["computeIo"], 5,
        "other earnings untouched"
    );
    let gpatch = calls
        .iter()
        .find(|c| c.is("PATCH", "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-1/status"))
        .unwrap();
    assert!(gpatch.body["metadata"]["resourceVersion"].is_string());
    let a = server
        .get("/apis/solgrid.dev/v1alpha1/namespaces/stakers/stakepositions/sp-a")
        .unwrap();
    assert_eq!(a["status"]["rewardsAccrued"], rest * 3 / 4);
    let st = state(&server);
    assert_eq!(st.last_period, Some(period));
    assert_eq!(st.genesis_period, Some(period));
    assert_eq!(st.dust, dust);
    assert!(st.round.is_none());

    // the same period again: nothing
    server.clear_calls();
    let txs = ctx.ledger.embedded().unwrap().tx_count();
    let r = tick(&ctx).await.unwrap();
    assert_eq!(r, Default::default());
    assert_eq!(ctx.ledger.embedded().unwrap().tx_count(), txs);
    assert!(server.writes().is_empty());

    // the next period: hour 1's emission plus the carried dust
    clock.advance(chrono::Duration::hours(1));
    let r = tick(&ctx).await.unwrap();
    assert_eq!(r.completed, Some(period + 1));
    let st2 = state(&server);
    let e1 = schedule.hourly(1);
    assert_eq!(ctx.ledger.supply(Token::Io).unwrap(), supply0 + e + e1);
    assert_eq!(bal(&ctx, Account::EmissionPool), st2.dust);
    assert_eq!(st2.distributed_total + st2.dust, e + e1, "nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_eligible_node_carries_everything() {
    let Env { ctx, server, .. } = env(OperatorConfig::default());
    server.put(
        "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-2",
        gpunode("gpu-2", false),
    );
    let r = tick(&ctx).await.unwrap();
    assert!(r.completed.is_some());
    let e = EmissionSchedule::new(9).unwrap().hourly(0);
    assert_eq!(state(&server).dust, e);
    assert_eq!(bal(&ctx, Account::EmissionPool), e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_recorded_before_a_crash_is_resumed_not_replanned() {
    let Env { ctx, server, .. } = env(OperatorConfig::default());
    server.put(
        "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-1",
        gpunode("gpu-1", true),
    );
    // a previous run recorded the round and crashed before sending
    let period = T0_MS as u64 / H - 1;
    let schedule = EmissionSchedule::new(9).unwrap();
    let nodes: Vec<solgrid_crds::GpuNode> =
        vec![serde_json::from_value(gpunode("gpu-1", true)).unwrap()];
    let rn = solgrid_operator::rewards::reward_nodes(
        &ctx.config.market.staking,
        &nodes,
        &[],
        (period * H, (period + 1) * H),
    );
    let round = solgrid_operator::rewards::plan_round(
        &ctx.config.market.staking,
        &schedule,
        &RewardState::default(),
        period,
        &rn,
        |_| true,
    )
    .unwrap();
    let st = RewardState {
        genesis_period: Some(period),
        round: Some(round),
        ..Default::default()
    };
    server.put(
        CM,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "solgrid-rewards", "namespace": "solgrid-system"},
               "data": {"state.json": serde_json::to_string(&st).unwrap()}}),
    );
    // the node is no longer eligible: the recorded round is still what is paid
    server.put(
        "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-1",
        gpunode("gpu-1", false),
    );
    let r = tick(&ctx).await.unwrap();
    assert_eq!(r.planned, None);
    assert_eq!(r.completed, Some(period));
    let e = schedule.hourly(0);
    assert_eq!(bal(&ctx, Account::Wallet(WALLET_PROV.into())), e);
    assert_eq!(
        ctx.ledger.embedded().unwrap().confirmed_key_counts()[&format!("rewards/{period}")],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_node_earns_less_idle_reward_than_an_idle_one() {
    let Env { ctx, server, .. } = env(OperatorConfig::default());
    let period = T0_MS as u64 / H - 1;
    let at = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .unwrap()
            .to_rfc3339()
    };
    let start = period * H;
    let mut busy = gpunode("gpu-busy", true);
    // one GPU held by a running job since before the hour, the other by a job that
    // ended 15 minutes into it: (60 + 15) of 120 GPU-minutes busy
    busy["status"]["allocatedGpus"] = json!(1);
    busy["status"]["allocations"] =
        json!([{"uid": "j1", "job": "ml/j1", "gpus": 1, "since": at(start - H)}]);
    busy["status"]["allocationHistory"] =
        json!([{"uid": "j2", "gpus": 1, "from": at(start - H), "to": at(start + H / 4)}]);
    server.put("/apis/solgrid.dev/v1alpha1/gpunodes/gpu-busy", busy);
    server.put(
        "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-idle",
        gpunode("gpu-idle", true),
    );
    let r = tick(&ctx).await.unwrap();
    assert_eq!(r.completed, Some(period));
    let credited = |name: &str| {
        server
            .get(&format!("/apis/solgrid.dev/v1alpha1/gpunodes/{name}"))
            .unwrap()["status"]["earnings"]["idleRewardsIo"]
            .as_u64()
            .unwrap()
    };
    let (b, i) = (credited("gpu-busy"), credited("gpu-idle"));
    assert!(b > 0 && b < i, "busy {b}, idle {i}");
    // weights 45 : 120 (idle GPU-minutes), floors only
    let e = EmissionSchedule::new(9).unwrap().hourly(0) as u128;
    assert_eq!(b as u128, e * 375_000 / 1_375_000);
    assert_eq!(i as u128, e * 1_000_000 / 1_375_000);
}
