//! A job accepting several GPU models is priced at the dearest of them, each class
//! with its own utilization and provider floor, against a mocked API server
//! (tower-test): the locked price, the escrow (maxCost) it implies, and the
//! below-market condition all follow the dearest class, never the first listed.

mod apiserver;

use apiserver::*;
use serde_json::Value;
use solgrid_crds::*;
use solgrid_market::GpuModel;
use solgrid_market::fees::escrow_max_cost;
use solgrid_market::ledger::Token;
use solgrid_market::pricing::{QuoteRequest, Urgency as MUrgency};
use solgrid_operator::config::OperatorConfig;

/// An Active node of `model` with `gpus` GPUs, `allocated` of them held, and a floor.
fn node(name: &str, model: &str, gpus: u32, allocated: u32, floor: u64) -> GpuNode {
    let mut n = gpunode_with(
        name,
        PROVIDER1,
        GpuNodeStatus {
            phase: GpuNodePhase::Active,
            model: Some(model.into()),
            gpu_count: gpus,
            allocated_gpus: allocated,
            ..Default::default()
        },
    );
    n.spec.floor_micro_usd_per_gpu_hour = floor;
    n
}

/// The spec's quote for one class, straight from the market library (IO, 1 worker
/// of 2 GPUs for an hour, normal urgency: the fixture job).
fn market_quote(
    model: GpuModel,
    utilization_ppm: u32,
    floor: u64,
) -> solgrid_market::pricing::Quote {
    OperatorConfig::default()
        .market
        .pricing
        .quote(&QuoteRequest {
            model,
            token: Token::Io,
            urgency: MUrgency::Normal,
            gpus_per_worker: 2,
            workers: 1,
            min_vram_mib: 0,
            max_duration_ms: 3_600_000,
            utilization_ppm,
            floor_micro_usd: floor,
            budget_cap_per_gpu_hour: None,
        })
        .unwrap()
}

fn two_model_job(cap: u64) -> ComputeJob {
    let mut j = job(1, None, true);
    j.spec.gpus.models = vec!["rtx-3060".into(), "h100".into()];
    j.spec.max_price_per_gpu_hour = cap;
    j
}

/// Reconciles a fresh two-model job over `nodes`; returns the status it wrote.
async fn quoted(nodes: Vec<GpuNode>, cap: u64) -> Value {
    let mut env = scripted_with(OperatorConfig::default(), gpunode_cache(nodes));
    let j = two_model_job(cap);
    let jj = j.clone();
    let (reconciled, st) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            let st = srv.status_patch(&jj).await;
            let _ = srv.event().await;
            if st["phase"] == "Quoted" {
                // funding goes on: no payer Secret in this test
                srv.expect_payer_secret().await.not_found();
                let _ = srv.status_patch(&jj).await;
                let _ = srv.event().await;
            }
            st
        })
        .await;
    reconciled.unwrap();
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_listing_a_cheap_model_first_pays_the_dearest_it_accepts() {
    // the H100 class half busy, floors below the market
    let nodes = vec![
        node("rtx", "rtx-3060", 4, 0, 10_000),
        node("h1", "h100", 2, 1, 1_000_000),
        node("h2", "h100", 2, 1, 1_200_000),
    ];
    let st = quoted(nodes, u64::MAX).await;
    assert_eq!(st["phase"], "Quoted", "{st}");
    let h100 = market_quote(GpuModel::H100, 500_000, 1_000_000);
    let rtx = market_quote(GpuModel::Rtx3060, 0, 10_000);
    let price = st["quote"]["pricePerGpuHour"].as_u64().unwrap();
    assert_eq!(price, h100.price_per_gpu_hour, "priced as the H100 class");
    assert!(price > rtx.price_per_gpu_hour);
    assert_eq!(st["quote"]["supplyFactorBps"], h100.supply_bps);
    // the escrow covers an hour on the dearest class
    let esc = escrow_max_cost(1, 2, 3_600_000, price, Token::Io, &Default::default()).unwrap();
    assert_eq!(st["quote"]["maxCost"].as_u64().unwrap(), esc.total);
    let msg = cond(&st, "Quoted")["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("for h100 (the dearest of rtx-3060, h100)"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cheaper_models_high_floor_sets_the_price() {
    // RTX 3060 providers ask more than the idle H100 market: their floor is the price
    let floor = 3_000_000;
    let nodes = vec![
        node("rtx", "rtx-3060", 4, 0, floor),
        node("h1", "h100", 2, 0, 0),
    ];
    let st = quoted(nodes, u64::MAX).await;
    assert_eq!(st["phase"], "Quoted", "{st}");
    let price = st["quote"]["pricePerGpuHour"].as_u64().unwrap();
    let h100 = market_quote(GpuModel::H100, 0, 0);
    assert!(price > h100.price_per_gpu_hour);
    assert_eq!(
        price,
        market_quote(GpuModel::Rtx3060, 0, floor).price_per_gpu_hour
    );
    // never below the floor, in micro-USD at the configured IO rate
    let io = OperatorConfig::default().market.pricing.io_rate;
    assert!(io.to_micro_usd(price).unwrap() >= floor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_enough_for_the_first_model_but_not_the_dearest_waits() {
    let nodes = vec![
        node("rtx", "rtx-3060", 4, 0, 0),
        node("h1", "h100", 2, 0, 0),
    ];
    let rtx = market_quote(GpuModel::Rtx3060, 0, 0);
    let h100 = market_quote(GpuModel::H100, 0, 0);
    let cap = rtx.price_per_gpu_hour;
    assert!(cap < h100.price_per_gpu_hour);
    let st = quoted(nodes, cap).await;
    assert_eq!(st["phase"], "Pending", "{st}");
    let c = cond(&st, "Quoted");
    assert_eq!(c["reason"], "BudgetBelowMarket");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(&h100.price_per_gpu_hour.to_string()) && msg.contains("h100"),
        "{msg}"
    );
    assert!(st.get("quote").is_none_or(|q| q.is_null()));
}
