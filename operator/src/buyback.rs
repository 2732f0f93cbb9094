//! The scheduled buyback (ECONOMICS.md): once per period (`--buyback-interval-seconds`,
//! daily by default) the stablecoin fees waiting in the treasury are converted to IO
//! at the configured IO price (`--buyback-io-price-micro-usd`, else the market's IO
//! rate, `pricing.ioRate`), and that much IO is burned from the treasury's reserve.
//!
//! **What the swap is** (the same on the embedded ledger and on Solana): one
//! transaction under the key `buyback/<period>` that moves
//! 1. the stablecoin paid, from the treasury's stablecoin account to the buyback
//!    counterparty's wallet (`--buyback-wallet`: the desk that sells the protocol the
//!    IO, and replenishes the treasury's IO reserve), and
//! 2. burns the IO bought from the treasury's IO reserve (custody account
//!    `treasury`), so the mint's supply falls by as much.
//!
//! Both legs land together or not at all. The amounts are
//! [`solgrid_market::buyback::plan`]'s: IO rounded down, stablecoin rounded up, at
//! most the reserve; what is left (dust, or what the reserve could not cover) stays
//! in the treasury for the next period. Without `--buyback-wallet` the task is off.
//!
//! **Exactly once per period**: the state is the ConfigMap `solgrid-buyback`
//! ([`BuybackState`], through [`crate::cmstore`], the store the idle rewards use):
//! the round (its plan and settlement) is recorded before anything is sent, paid by
//! the `solgrid_settlement` executor, and the period is marked done once it is
//! confirmed. A restart resumes the recorded round (never replans it), and a period
//! already done is never bought back again. A settlement the ledger rejects moved
//! nothing: the period is closed with nothing bought, and the stablecoin waits for
//! the next one. Missed periods are not caught up one by one: the next round buys
//! back everything the treasury holds.
//!
//! Metrics: `solgrid_operator_buyback_swapped_base_units_total{token}`,
//! `solgrid_operator_buyback_burned_base_units_total{token}`,
//! `solgrid_operator_buyback_rounds_total{outcome}` and
//! `solgrid_operator_buyback_last_period`.

use crate::cmstore::{Rounds, settle_pass};
use crate::{Context, Error, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde::{Deserialize, Serialize};
use solgrid_market::buyback::{BuybackPlan, plan};
use solgrid_market::ledger::{Account, Ledger, Token};
use solgrid_market::pricing::TokenRate;
use solgrid_settlement::{Settlement, SettlementState};
use std::sync::Arc;
use std::time::Duration;

/// The ConfigMap holding the state.
pub const CONFIGMAP: &str = "solgrid-buyback";

pub use crate::config::BuybackArgs;

/// A round in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuybackRound {
    pub period: u64,
    /// The IO price used, micro-USD per whole IO.
    pub io_price_micro_usd: u64,
    pub plan: BuybackPlan,
    pub settlements: Vec<Settlement>,
}

/// The durable state (ConfigMap `solgrid-buyback`, key `state.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BuybackState {
    /// The last period done (bought back, or found nothing to buy).
    pub last_period: Option<u64>,
    /// Stablecoin paid for IO so far, base units.
    pub swapped_total: u64,
    /// IO burned by buybacks so far, base units.
    pub burned_total: u64,
    pub round: Option<BuybackRound>,
}

impl Rounds for BuybackState {
    fn settlements(&self) -> Option<&Vec<Settlement>> {
        self.round.as_ref().map(|r| &r.settlements)
    }
    fn settlements_mut(&mut self) -> Option<&mut Vec<Settlement>> {
        self.round.as_mut().map(|r| &mut r.settlements)
    }
}

/// The idempotency key of a period's buyback.
pub fn key(period: u64) -> String {
    format!("buyback/{period}")
}

/// What a tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// The period planned this tick (a round recorded), if any.
    pub planned: Option<u64>,
    /// The period closed this tick (`outcome`: `completed`, `empty` or `failed`).
    pub closed: Option<(u64, &'static str)>,
    /// Settlements confirmed this tick.
    pub confirmed: usize,
}

/// Runs the buyback loop (under the leader lease) until the process stops; does
/// nothing without `--buyback-wallet`.
pub async fn run(ctx: Arc<Context>) {
    if ctx.config.buyback.buyback_wallet.is_none() {
        return;
    }
    let period = Duration::from_secs(ctx.config.buyback.buyback_interval_seconds);
    let every = period.min(Duration::from_secs(60));
    crate::toolkit::every(&ctx, "buyback", "buyback", every, || tick(&ctx), |r| {
        if r.planned.is_some() || r.closed.is_some() {
            tracing::info!(planned = ?r.planned, closed = ?r.closed, confirmed = r.confirmed, "buyback");
        }
    })
    .await;
}

/// Plans the buyback of `period` from the treasury's balances (pure).
pub fn plan_round(
    period: u64,
    wallet: &str,
    stable: u64,
    io_reserve: u64,
    stable_price: TokenRate,
    io_price: TokenRate,
) -> Result<BuybackRound> {
    let p = plan(stable, stable_price, io_price, io_reserve).map_err(Error::market)?;
    let settlements = if p.is_empty() {
        Vec::new()
    } else {
        vec![Settlement {
            intent: p.intent(key(period), wallet),
            state: SettlementState::Planned,
            payload: None,
        }]
    };
    Ok(BuybackRound {
        period,
        io_price_micro_usd: io_price.micro_usd_per_token,
        plan: p,
        settlements,
    })
}

/// One step of the loop: resume the round in progress, or plan the last ended
/// period's buyback when it is due; then pay it and close the period.
pub async fn tick(ctx: &Context) -> Result<TickReport> {
    let mut report = TickReport::default();
    let Some(wallet) = ctx.config.buyback.buyback_wallet.clone() else {
        return Ok(report);
    };
    let _timer = ctx.metrics.reconcile("buyback");
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.config.lease_namespace);
    let mut store = crate::cmstore::load::<BuybackState>(cms, CONFIGMAP).await?;
    if let Some(l) = store.state.last_period {
        ctx.metrics.buyback_last_period.set(l as i64);
    }
    let period_ms = ctx
        .config
        .buyback
        .buyback_interval_seconds
        .saturating_mul(1000)
        .max(1);
    let current = crate::toolkit::now_ms(ctx) / period_ms;
    let Some(ended) = current.checked_sub(1) else {
        return Ok(report);
    };
    if store.state.round.is_none() {
        if store.state.last_period.is_some_and(|l| l >= ended) {
            return Ok(report);
        }
        let round = plan_from_ledger(ctx, ended, &wallet).await?;
        store.state.round = Some(round);
        store.save().await?; // the plan is recorded before anything is sent
        report.planned = Some(ended);
    }
    let (store, confirmed) = settle_pass(ctx, "buyback", store).await?;
    report.confirmed = confirmed;
    let mut store = store;
    let Some(round) = store.state.round.clone() else {
        return Ok(report);
    };
    let failed = round.settlements.iter().find_map(|s| match &s.state {
        SettlementState::Failed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let outcome = if let Some(reason) = failed {
        // rejected by the ledger: nothing moved; the stablecoin waits for the next period
        tracing::error!(key = %key(round.period), reason = %reason, "buyback failed");
        "failed"
    } else if round.settlements.is_empty() {
        "empty"
    } else if store.all_confirmed() {
        "completed"
    } else {
        return Ok(report); // sent, waiting for the ledger
    };
    if outcome == "completed" {
        let st = &mut store.state;
        st.swapped_total = st.swapped_total.saturating_add(round.plan.stable_in);
        st.burned_total = st.burned_total.saturating_add(round.plan.io_burned);
    }
    store.state.last_period = Some(round.period);
    store.state.round = None;
    store.save().await?;
    let m = &ctx.metrics;
    if outcome == "completed" {
        m.buyback_swapped
            .with_label_values(&[&Token::Usdc.to_string()])
            .inc_by(round.plan.stable_in);
        m.buyback_burned
            .with_label_values(&[&Token::Io.to_string()])
            .inc_by(round.plan.io_burned);
    }
    m.buyback_rounds.with_label_values(&[outcome]).inc();
    m.buyback_last_period.set(round.period as i64);
    report.closed = Some((round.period, outcome));
    Ok(report)
}

/// Reads the treasury's stablecoin and IO reserve and plans the period's round.
async fn plan_from_ledger(ctx: &Context, period: u64, wallet: &str) -> Result<BuybackRound> {
    let ledger = ctx.ledger.clone();
    let (stable, reserve, stable_unit, io_unit) = tokio::task::spawn_blocking(move || {
        let bal = |t: Token| ledger.balance(&Account::Treasury, t);
        Ok::<_, Error>((
            bal(Token::Usdc).map_err(Error::ledger)?,
            bal(Token::Io).map_err(Error::ledger)?,
            ledger.unit(Token::Usdc),
            ledger.unit(Token::Io),
        ))
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))??;
    let pricing = &ctx.config.market.pricing;
    let stable_price = TokenRate {
        micro_usd_per_token: pricing.usdc_rate.micro_usd_per_token,
        unit: stable_unit,
    };
    let io_price = TokenRate {
        micro_usd_per_token: ctx
            .config
            .buyback
            .buyback_io_price_micro_usd
            .unwrap_or(pricing.io_rate.micro_usd_per_token),
        unit: io_unit,
    };
    plan_round(period, wallet, stable, reserve, stable_price, io_price)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        let ok = BuybackArgs {
            buyback_wallet: Some("DgmxzQX61DxkAMkAubrgHVJb637fYYTdh7ouVqZGnJrp".into()),
            buyback_interval_seconds: 60,
            buyback_io_price_micro_usd: None,
        };
        assert!(ok.clone().validated().is_ok());
        let bad_wallet = BuybackArgs {
            buyback_wallet: Some("not a wallet".into()),
            ..ok.clone()
        };
        assert!(bad_wallet.validated().is_err());
        let zero = BuybackArgs {
            buyback_interval_seconds: 0,
            ..ok.clone()
        };
        assert!(zero.validated().is_err());
        let free = BuybackArgs {
            buyback_io_price_micro_usd: Some(0),
            ..ok
        };
        assert!(free.validated().is_err());
    }

    #[test]
    fn an_empty_treasury_plans_no_settlement() {
        let usdc = TokenRate {
            micro_usd_per_token: 1_000_000,
            unit: 1_000_000,
        };
        let io = TokenRate {
            micro_usd_per_token: 500_000,
            unit: 1_000_000_000,
        };
        let r = plan_round(5, "w", 0, 1_000, usdc, io).unwrap();
        assert!(r.settlements.is_empty());
        let r = plan_round(5, "w", 3, u64::MAX, usdc, io).unwrap();
        assert_eq!(r.settlements.len(), 1);
        assert_eq!(r.settlements[0].intent.key, "buyback/5");
        assert_eq!(r.plan.io_burned, 6_000);
    }
}
