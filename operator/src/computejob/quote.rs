//! The dynamic quote of a job, from `solgrid_market::pricing` and the supply of its
//! GPU class (`solgrid_market::supply`, built from the GpuNode cache by `Context::supply`).

use crate::conditions;
use chrono::{DateTime, Utc};
use solgrid_crds::market::{locked_quote, quote_spec};
use solgrid_crds::{ComputeJobSpec, Quote};
use solgrid_market::GpuModel;
use solgrid_market::fees::FeeConfig;
use solgrid_market::pricing::{ModelSupply, PricingConfig};

/// The GPU class a job is first described by: the first of [`accepted_models`].
pub fn target_model(
    spec: &ComputeJobSpec,
    default_nvidia: GpuModel,
    default_apple: GpuModel,
) -> Result<GpuModel, String> {
    accepted_models(spec, default_nvidia, default_apple).map(|m| m[0])
}

pub use solgrid_crds::market::accepted_models;

/// The accepted classes with their supply (`supply(model)`: utilization ppm and
/// lowest provider floor, as `SupplyIndex::get` answers).
pub fn classes(models: &[GpuModel], supply: impl Fn(GpuModel) -> (u32, u64)) -> Vec<ModelSupply> {
    models
        .iter()
        .map(|&model| {
            let (utilization_ppm, floor_micro_usd) = supply(model);
            ModelSupply {
                model,
                utilization_ppm,
                floor_micro_usd,
            }
        })
        .collect()
}

/// The outcome of quoting.
#[derive(Clone, Debug, PartialEq)]
pub enum QuoteOutcome {
    /// Lock this quote.
    Locked(Quote),
    /// The budget cap is below the market price (message for the condition).
    BelowMarket(String),
}

/// Quotes a job for one GPU class. Errors are a malformed job or configuration
/// (not retried hot).
pub fn quote(
    spec: &ComputeJobSpec,
    model: GpuModel,
    utilization_ppm: u32,
    floor_micro_usd: u64,
    pricing_cfg: &PricingConfig,
    fees: &FeeConfig,
    now: DateTime<Utc>,
) -> Result<QuoteOutcome, String> {
    let class = ModelSupply {
        model,
        utilization_ppm,
        floor_micro_usd,
    };
    quote_models(spec, &[class], pricing_cfg, fees, now).map(|(o, _)| o)
}

/// Quotes a job that accepts each of `classes` (its [`accepted_models`] with their
/// supply): priced at the dearest class (`solgrid_crds::market::quote_spec`, what
/// `kubectl solgrid quote` shows too), so the one locked price, and the escrow
/// computed from it, cover whichever class the job runs on, and are never below any
/// class's provider floor. Also returns the class priced.
pub fn quote_models(
    spec: &ComputeJobSpec,
    classes: &[ModelSupply],
    pricing_cfg: &PricingConfig,
    fees: &FeeConfig,
    now: DateTime<Utc>,
) -> Result<(QuoteOutcome, GpuModel), String> {
    let q = quote_spec(spec, classes, pricing_cfg, fees)?;
    let model = q.quote.model;
    let outcome = match locked_quote(spec, &q, pricing_cfg, conditions::time(now))? {
        Some(locked) => QuoteOutcome::Locked(locked),
        None => QuoteOutcome::BelowMarket(
            q.quote
                .below_market_message()
                .unwrap_or_else(|| "budget cap below the market price".into()),
        ),
    };
    Ok((outcome, model))
}
