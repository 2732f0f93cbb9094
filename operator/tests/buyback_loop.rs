//! The scheduled buyback against an in-memory API server (tower-test) and the
//! embedded ledger: once per period the treasury's stablecoin pays the buyback
//! wallet and that much IO (at the configured price) is burned from the treasury's
//! reserve, under `buyback/<period>`, recorded in the ConfigMap before anything is
//! sent; a tick later in the period, a restarted operator, or a crash after sending
//! never buy back twice; the metrics say so, and pass `promtool check metrics`
//! (the real promtool: `scripts/install-promtool.sh`).

mod apiserver;

use apiserver::*;
use serde_json::json;
use solgrid_market::ledger::{Account, Ledger, Token};
use solgrid_operator::buyback::{BuybackRound, BuybackState, key, plan_round, tick};
use solgrid_operator::config::OperatorConfig;
use solgrid_operator::context::Context;
use solgrid_settlement::SettlementState;
use std::sync::Arc;

const CM: &str = "/api/v1/namespaces/solgrid-system/configmaps/solgrid-buyback";
const CMS: &str = "/api/v1/namespaces/solgrid-system/configmaps";
const IO: u64 = 1_000_000_000;
const USDC: u64 = 1_000_000;
const DAY: u64 = 86_400_000;

fn config() -> OperatorConfig {
    let mut c = OperatorConfig::default();
    c.buyback.buyback_wallet = Some(WALLET_B.into());
    c
}

/// Mints into the treasury (fees, reserve) under `tag`.
fn treasury(ctx: &Context, token: Token, amount: u64, tag: &str) {
    mint(
        ctx,
        &format!("test-mint/{tag}"),
        token,
        Account::Treasury,
        amount,
    );
}

fn bal(ctx: &Context, a: Account, t: Token) -> u64 {
    ctx.ledger.balance(&a, t).unwrap()
}

fn state(server: &ApiServer) -> BuybackState {
    configmap_state(&server.get(CM).unwrap())
}

/// Stores a recorded round in the buyback ConfigMap (as a crashed operator left it).
fn put_round(server: &ApiServer, round: BuybackRound) {
    let st = BuybackState {
        round: Some(round),
        ..Default::default()
    };
    server.put(
        CM,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "solgrid-buyback", "namespace": "solgrid-system"},
               "data": {"state.json": serde_json::to_string(&st).unwrap()}}),
    );
}

/// The round a run plans for `period` from `usdc` of fees and an `io` reserve.
fn plan_of(ctx: &Context, period: u64, usdc: u64, io: u64) -> BuybackRound {
    let pricing = &ctx.config.market.pricing;
    plan_round(
        period,
        WALLET_B,
        usdc,
        io,
        pricing.usdc_rate,
        pricing.io_rate,
    )
    .unwrap()
}

fn confirmed(ctx: &Context, period: u64) -> usize {
    ctx.ledger.embedded().unwrap().confirmed_key_counts()[&key(period)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_is_bought_back_and_burned_exactly_once() {
    let Env { ctx, server, clock } = env(config());
    // 12.345678 USDC of fees and a 1,000 IO reserve in the treasury
    treasury(&ctx, Token::Usdc, 12_345_678, "fees");
    treasury(&ctx, Token::Io, 1_000 * IO, "reserve");
    let supply0 = ctx.ledger.supply(Token::Io).unwrap();
    let period = T0_MS as u64 / DAY - 1;

    let r = tick(&ctx).await.unwrap();
    assert_eq!(r.planned, Some(period));
    assert_eq!(r.closed, Some((period, "completed")));

    // the round was recorded before anything was sent
    let planned: BuybackState = configmap_state(&server.created(CMS));
    let round = planned.round.unwrap();
    one_planned(&round.settlements, &format!("buyback/{period}"));
    assert_eq!(round.io_price_micro_usd, 500_000);

    // at 0.50 $ per IO: 24.691356 IO burned, the USDC to the buyback wallet
    let burned = 24_691_356_000;
    assert_eq!(round.plan.io_burned, burned);
    assert_eq!(ctx.ledger.supply(Token::Io).unwrap(), supply0 - burned);
    assert_eq!(bal(&ctx, Account::Treasury, Token::Io), 1_000 * IO - burned);
    assert_eq!(bal(&ctx, Account::Treasury, Token::Usdc), 0);
    assert_eq!(
        bal(&ctx, Account::Wallet(WALLET_B.into()), Token::Usdc),
        12_345_678
    );
    assert_eq!(confirmed(&ctx, period), 1);
    let st = state(&server);
    assert_eq!(st.last_period, Some(period));
    assert_eq!((st.swapped_total, st.burned_total), (12_345_678, burned));
    assert!(st.round.is_none());

    // metrics
    let text = ctx.metrics.render();
    for line in [
        "solgrid_operator_buyback_swapped_base_units_total{token=\"USDC\"} 12345678".to_string(),
        format!("solgrid_operator_buyback_burned_base_units_total{{token=\"IO\"}} {burned}"),
        "solgrid_operator_buyback_rounds_total{outcome=\"completed\"} 1".to_string(),
        format!("solgrid_operator_buyback_last_period {period}"),
    ] {
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
    solgrid_helm_tests::promtool_check_metrics("operator", &text);

    // more fees later in the same period: not bought back again in this period
    treasury(&ctx, Token::Usdc, 2 * USDC, "fees-2");
    server.clear_calls();
    let txs = ctx.ledger.embedded().unwrap().tx_count();
    // a minute before the period ends
    let left = DAY - T0_MS as u64 % DAY;
    clock.advance(chrono::Duration::milliseconds((left - 60_000) as i64));
    assert_eq!(tick(&ctx).await.unwrap(), Default::default());
    assert_eq!(ctx.ledger.embedded().unwrap().tx_count(), txs);
    assert!(server.writes().is_empty());

    // a restarted operator (fresh process: new metrics, same API server and ledger)
    let restarted = Arc::new(
        Context::builder(ctx.client.clone())
            .config((*ctx.config).clone())
            .ledger(ctx.ledger.clone())
            .clock(clock.clone())
            .build(),
    );
    assert_eq!(tick(&restarted).await.unwrap(), Default::default());
    assert_eq!(ctx.ledger.embedded().unwrap().tx_count(), txs);
    assert!(
        restarted
            .metrics
            .render()
            .contains(&format!("solgrid_operator_buyback_last_period {period}"))
    );

    // the next period buys back what came in since
    clock.advance(chrono::Duration::minutes(1));
    let r = tick(&restarted).await.unwrap();
    assert_eq!(r.closed, Some((period + 1, "completed")));
    assert_eq!(confirmed(&ctx, period + 1), 1);
    assert_eq!(confirmed(&ctx, period), 1);
    assert_eq!(
        bal(&ctx, Account::Wallet(WALLET_B.into()), Token::Usdc),
        14_345_678
    );
    let st = state(&server);
    assert_eq!(st.burned_total, burned + 4 * IO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_sending_resumes_the_recorded_round_without_resending() {
    let Env { ctx, server, .. } = env(config());
    treasury(&ctx, Token::Usdc, 3 * USDC, "fees");
    treasury(&ctx, Token::Io, 100 * IO, "reserve");
    let period = T0_MS as u64 / DAY - 1;
    // a previous run planned 3 USDC → 6 IO, sent it, and crashed before recording
    // the confirmation
    let mut round = plan_of(&ctx, period, 3 * USDC, 100 * IO);
    let tx = ctx
        .ledger
        .prepare(&[round.settlements[0].intent.clone()])
        .unwrap();
    ctx.ledger.send(&tx).unwrap();
    round.settlements[0].state = SettlementState::Sent {
        signature: tx.signature.clone(),
        last_valid_block_height: tx.last_valid_block_height,
    };
    put_round(&server, round);
    // meanwhile more fees came in: the recorded round is what is closed, not a new plan
    treasury(&ctx, Token::Usdc, 5 * USDC, "fees-2");
    let txs = ctx.ledger.embedded().unwrap().tx_count();
    let r = tick(&ctx).await.unwrap();
    assert_eq!(r.planned, None);
    assert_eq!(r.closed, Some((period, "completed")));
    assert_eq!(ctx.ledger.embedded().unwrap().tx_count(), txs, "not resent");
    assert_eq!(confirmed(&ctx, period), 1);
    assert_eq!(bal(&ctx, Account::Treasury, Token::Usdc), 5 * USDC);
    assert_eq!(bal(&ctx, Account::Treasury, Token::Io), 94 * IO);
    let st = state(&server);
    assert_eq!((st.last_period, st.burned_total), (Some(period), 6 * IO));
    // and the period is done
    assert_eq!(tick(&ctx).await.unwrap(), Default::default());
    assert_eq!(confirmed(&ctx, period), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_reserve_burns_nothing_and_keeps_the_stablecoin() {
    let Env { ctx, server, .. } = env(config());
    treasury(&ctx, Token::Usdc, 7 * USDC, "fees");
    let period = T0_MS as u64 / DAY - 1;
    let r = tick(&ctx).await.unwrap();
    assert_eq!(r.closed, Some((period, "empty")));
    assert_eq!(bal(&ctx, Account::Treasury, Token::Usdc), 7 * USDC);
    assert!(
        !ctx.ledger
            .embedded()
            .unwrap()
            .confirmed_key_counts()
            .contains_key(&key(period))
    );
    assert_eq!(state(&server).last_period, Some(period));
    assert!(
        ctx.metrics
            .render()
            .contains("solgrid_operator_buyback_rounds_total{outcome=\"empty\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_price_is_used_and_no_wallet_means_no_buyback() {
    let mut cfg = config();
    cfg.buyback.buyback_io_price_micro_usd = Some(250_000); // 0.25 $ per IO
    let Env { ctx, .. } = env(cfg);
    treasury(&ctx, Token::Usdc, USDC, "fees");
    treasury(&ctx, Token::Io, 100 * IO, "reserve");
    tick(&ctx).await.unwrap();
    assert_eq!(bal(&ctx, Account::Treasury, Token::Io), 96 * IO);

    let Env {
        ctx: off, server, ..
    } = env(OperatorConfig::default());
    treasury(&off, Token::Usdc, USDC, "fees");
    assert_eq!(tick(&off).await.unwrap(), Default::default());
    assert!(server.calls().is_empty(), "off: not even a read");
    assert_eq!(bal(&off, Account::Treasury, Token::Usdc), USDC);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_the_ledger_rejects_moves_nothing_and_closes_the_period() {
    let Env { ctx, server, .. } = env(config());
    treasury(&ctx, Token::Usdc, 3 * USDC, "fees");
    let period = T0_MS as u64 / DAY - 1;
    // recorded by a previous run against a reserve that is gone since
    let round = plan_of(&ctx, period, 3 * USDC, 100 * IO);
    put_round(&server, round);
    let r = tick(&ctx).await.unwrap();
    assert_eq!(r.closed, Some((period, "failed")));
    assert_eq!(bal(&ctx, Account::Treasury, Token::Usdc), 3 * USDC);
    assert_eq!(bal(&ctx, Account::Wallet(WALLET_B.into()), Token::Usdc), 0);
    let st = state(&server);
    assert_eq!((st.last_period, st.swapped_total), (Some(period), 0));
    assert!(st.round.is_none());
    assert!(
        ctx.metrics
            .render()
            .contains("solgrid_operator_buyback_rounds_total{outcome=\"failed\"} 1")
    );
}
