//! Prices per model and the scheduled buyback on the real control plane.
//!
//! - The example job lists `RTX 4090` and `A100 80GB`: it is quoted at the dearest
//!   class it accepts (the A100's price, not the RTX 4090's), runs and settles.
//! - The operator runs with `--buyback-wallet` and 15-second buyback periods; the
//!   treasury holds stablecoin fees and an IO reserve (minted into the journal while
//!   the operator is stopped). At its first tick the operator buys the stablecoin
//!   back at the market's IO price and burns that IO, under `buyback/<period>`; a
//!   restart in the same period buys nothing more, the next period buys what came
//!   in since; every key is confirmed once; the buyback metrics are served (their
//!   exposition is promtool-checked by operator/tests/buyback_loop.rs).

use super::active_market;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use solgrid_crds::ComputeJobPhase;
use solgrid_e2e::cluster::http_get;
use solgrid_e2e::market::{Market, MarketOpts, mint_journal, read_journal};
use solgrid_e2e::wait_for;
use solgrid_ledger::embedded::EmbeddedLedger;
use solgrid_market::GpuModel;
use solgrid_market::ledger::{Account, Ledger as _, Token};
use solgrid_market::pricing::PricingConfig;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MIN: Duration = Duration::from_secs(60);
const PERIOD_S: u64 = 15;
/// The buyback counterparty (a fresh address; only receives USDC).
const DESK: &str = "BuybackDesk1111111111111111111111111111111";
const IO: u64 = 1_000_000_000;
const USDC: u64 = 1_000_000;

/// The operator's buyback state: (last period closed, stablecoin swapped, IO burned).
async fn buyback_state(cms: &Api<ConfigMap>) -> Option<(u64, u64, u64)> {
    let cm = cms.get_opt("solgrid-buyback").await.ok()??;
    let v: serde_json::Value = serde_json::from_str(cm.data?.get("state.json")?).ok()?;
    Some((
        v["lastPeriod"].as_u64()?,
        v["swappedTotal"].as_u64()?,
        v["burnedTotal"].as_u64()?,
    ))
}

/// The buyback state once more than `swapped` stablecoin was swapped in all, within
/// `timeout` (else fails with `what` and the logs).
async fn bought_beyond(
    m: &Market,
    cms: &Api<ConfigMap>,
    swapped: u64,
    timeout: Duration,
    what: &str,
) -> (u64, u64, u64) {
    wait_for(timeout, || async {
        buyback_state(cms).await.filter(|s| s.1 > swapped)
    })
    .await
    .ok_or_else(|| m.with_logs(what.into()))
    .unwrap()
}

/// The stablecoin the buyback desk holds in (a read of) the operator's journal.
fn desk_usdc(l: &EmbeddedLedger) -> u64 {
    l.balance(&Account::Wallet(DESK.into()), Token::Usdc)
        .unwrap()
}

/// The `/metrics` address the operator logged.
fn metrics_addr(m: &Market) -> Option<std::net::SocketAddr> {
    let log = std::fs::read_to_string(m.operators[0].log_path()).ok()?;
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("http server listening"))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    addr.parse().ok()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_model_job_pays_the_dearest_and_the_treasury_is_bought_back_once_per_period() {
    let mut opts = MarketOpts::new("e2e-buyback", &[("e2e-buyback-a", 2)]);
    opts.operator_args = vec![
        format!("--buyback-wallet={DESK}"),
        format!("--buyback-interval-seconds={PERIOD_S}"),
    ];
    let Some((_one, mut m, _)) = active_market("buyback", opts).await else {
        return;
    };

    // 1. the example lists RTX 4090 then A100 80GB: priced as the A100
    let (secret, mut j) = m.example(&["sleep", "1"]).expect("example");
    j["metadata"]["name"] = "two-models".into();
    let spec: solgrid_crds::ComputeJobSpec =
        serde_json::from_value(j["spec"].clone()).expect("spec");
    m.submit(&secret, &j).await.expect("submit");
    let st = m
        .wait_phase("two-models", 2 * MIN, ComputeJobPhase::Settled)
        .await
        .expect("settled");
    let q = st.quote.expect("quote");
    let pricing = PricingConfig::default();
    let quote = |model| {
        let req = solgrid_crds::market::quote_request(&spec, model, 0, 0);
        pricing.quote(&req).unwrap().price_per_gpu_hour
    };
    let (a100, rtx) = (quote(GpuModel::A100_80), quote(GpuModel::Rtx4090));
    eprintln!(
        "locked {} IO base units per GPU-hour; A100 80GB {a100}, RTX 4090 {rtx}",
        q.price_per_gpu_hour
    );
    assert_eq!(q.price_per_gpu_hour, a100, "priced as the dearest class");
    assert!(a100 > rtx);

    // 2. the treasury: 5 USDC of fees and a 100 IO reserve, minted while the
    // operator is stopped (it holds the journal)
    m.operators[0].stop(Duration::from_secs(5));
    let mint = |key: &str, token, amount| {
        mint_journal(&m.journal, key, token, Account::Treasury, amount).expect("mint")
    };
    mint("e2e-fees-1", Token::Usdc, 5 * USDC);
    mint("e2e-reserve", Token::Io, 100 * IO);
    let supply0 = read_journal(&m.journal).unwrap().supply(Token::Io).unwrap();
    // restart just after a period boundary, so that the same-period restart below
    // has most of the period to run in
    let next = (now_s() / PERIOD_S + 1) * PERIOD_S;
    tokio::time::sleep(Duration::from_secs(next - now_s())).await;
    m.operators[0] = m.start_operator(0).expect("restart");
    let cms: Api<ConfigMap> = Api::namespaced(m.client.clone(), "solgrid-system");
    let (p1, swapped, burned) = bought_beyond(&m, &cms, 0, MIN, "no buyback in a minute").await;
    // 5 USDC at 0.50 $ per IO: 10 IO burned, the USDC to the desk
    assert_eq!((swapped, burned), (5 * USDC, 10 * IO));
    let l = read_journal(&m.journal).unwrap();
    assert_eq!(desk_usdc(&l), 5 * USDC);
    assert_eq!(l.balance(&Account::Treasury, Token::Io).unwrap(), 90 * IO);
    assert_eq!(l.supply(Token::Io).unwrap(), supply0 - 10 * IO);
    assert_eq!(l.confirmed_key_counts()[&format!("buyback/{p1}")], 1);

    // metrics, scraped from the operator
    let addr = metrics_addr(&m).expect("the operator logs its http address");
    let text = http_get(addr, "/metrics").expect("/metrics");
    for want in [
        format!(
            "solgrid_operator_buyback_swapped_base_units_total{{token=\"USDC\"}} {}",
            5 * USDC
        ),
        format!(
            "solgrid_operator_buyback_burned_base_units_total{{token=\"IO\"}} {}",
            10 * IO
        ),
        format!("solgrid_operator_buyback_last_period {p1}"),
    ] {
        assert!(text.contains(&want), "{want} not served:\n{text}");
    }
    // 3. more fees, and a restart in the same period: nothing more until it ends
    m.operators[0].stop(Duration::from_secs(5));
    mint("e2e-fees-2", Token::Usdc, 3 * USDC);
    m.operators[0] = m.start_operator(0).expect("restart");
    let period_end = (p1 + 2) * PERIOD_S;
    tokio::time::sleep(Duration::from_secs(3)).await; // its first tick
    let l = read_journal(&m.journal).unwrap();
    let checked_at = now_s();
    assert!(
        checked_at < period_end,
        "the restart took the whole period ({checked_at} >= {period_end})"
    );
    assert_eq!(
        desk_usdc(&l),
        5 * USDC,
        "a restart in the period buys nothing more"
    );
    eprintln!(
        "restarted in period {}: nothing more bought, {} s before its end",
        p1 + 1,
        period_end - checked_at
    );
    // the next period buys back the 3 USDC
    let (p2, swapped, burned) =
        bought_beyond(&m, &cms, 5 * USDC, 2 * MIN, "no second buyback").await;
    assert!(p2 > p1);
    assert_eq!((swapped, burned), (8 * USDC, 16 * IO));
    let l = read_journal(&m.journal).unwrap();
    assert_eq!(desk_usdc(&l), 8 * USDC);
    assert_eq!(l.balance(&Account::Treasury, Token::Usdc).unwrap(), 0);
    assert_eq!(l.confirmed_key_counts()[&format!("buyback/{p2}")], 1);
    m.confirmed_once().expect("every key confirmed once");
    m.down().await;
}
