//! `kubectl solgrid`: the commands a provider or a developer types every day.
//!
//! The pure parts live here (tables, amounts, ages, the quote, validation) so that
//! they are tested without a cluster; `main.rs` reads the cluster through kube and
//! prints what these functions make of it.

#![forbid(unsafe_code)]

pub mod format;
pub mod quote;
pub mod validate;
pub mod views;
pub mod wallet;

use solgrid_market::fees::FeeConfig;
use solgrid_market::pricing::PricingConfig;

/// The market tables the CLI prices with: the same JSON the chart renders into the
/// `<release>-market` ConfigMap (`market.json`) and the operator reads.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MarketConfig {
    pub fees: FeeConfig,
    pub pricing: PricingConfig,
}

impl MarketConfig {
    /// Parses `market.json` (or YAML); sections the CLI does not use are ignored.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(serde_yaml_ng::from_str(text)?)
    }
}
