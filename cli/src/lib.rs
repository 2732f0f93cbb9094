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

/// The market tables the CLI prices with: the one [`solgrid_market::MarketConfig`],
/// the same JSON the chart renders into the `<release>-market` ConfigMap
/// (`market.json`) and the operator and extender read.
pub use solgrid_market::MarketConfig;

/// Parses `market.json` (or YAML); any subset of the tables is fine.
pub fn parse_market_config(text: &str) -> anyhow::Result<MarketConfig> {
    Ok(serde_yaml_ng::from_str(text)?)
}
