//! solgrid's market library: every number the market computes is computed here,
//! once, with no I/O, no async and no clock of its own (time is always passed in).
//!
//! Money is integer base units (`u64`, widened to `u128` inside arithmetic); no
//! floating point decides an amount. Modules:
//!
//! - [`money`]: checked integer arithmetic (mul-div with stated rounding).
//! - [`fees`]: compute cost, requester/provider fees, stablecoin surcharge, escrow.
//! - [`settlement`]: the settlement plan of a job period (payouts, burn, refund) as a ledger [`ledger::Intent`].
//! - [`buyback`]: the scheduled buyback of IO with the treasury's stablecoin fees (amounts, rounding, carry).
//! - [`emission`]: the 240-month emission schedule, hourly amounts exact to the unit.
//! - [`staking`]: minimum stake, reward eligibility, hourly idle-reward split, unbonding, slashing.
//! - [`pricing`]: reference prices and the dynamic quote (urgency, complexity, supply, floor, cap).
//! - [`reputation`]: the 0–1000 node score and the uptime track it reads.
//! - [`supply`]: utilization and lowest floor of a GPU class (the quote's supply input).
//! - [`idle`]: the time-weighted idle fraction of a node's GPUs over a reward period.
//! - [`matching`]: the scheduler extender's filter and score.
//! - [`gpu`]: GPU vendors, models and per-model tables.
//! - [`ledger`]: the ledger abstraction implemented by the embedded and Solana ledgers.
#![forbid(unsafe_code)]

pub mod buyback;
pub mod emission;
pub mod fees;
pub mod gpu;
pub mod idle;
pub mod ledger;
pub mod matching;
pub mod money;
pub mod pricing;
pub mod reputation;
pub mod settlement;
pub mod staking;
pub mod supply;

pub use gpu::{GpuModel, GpuVendor, ModelSet, ModelTable};
pub use ledger::{Account, Amount, Intent, Movement, Op, Token};

/// Every market table, each defaulting to this library's defaults: the one
/// configuration the operator, the scheduler extender, `kubectl solgrid` and the
/// simulator read (the chart's `market.json`; any subset of it parses).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MarketConfig {
    pub fees: fees::FeeConfig,
    pub pricing: pricing::PricingConfig,
    pub staking: staking::StakingConfig,
    pub reputation: reputation::ReputationConfig,
    pub matching: matching::MatchConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_market_config_keeps_the_other_defaults() {
        let c: MarketConfig =
            serde_json::from_str(r#"{"fees":{"requesterFeeBps":100},"staking":{"slashBps":2500}}"#)
                .unwrap();
        assert_eq!(c.fees.requester_fee_bps, 100);
        assert_eq!(c.staking.slash_bps, 2_500);
        assert_eq!(c.pricing, pricing::PricingConfig::default());
        assert_eq!(c.matching, matching::MatchConfig::default());
        let back: MarketConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
