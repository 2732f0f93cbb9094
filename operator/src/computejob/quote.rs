//! The dynamic quote of a job, from `solgrid_market::pricing` and the supply of its
//! GPU class (`solgrid_market::supply`, built from the GpuNode cache by `Context::supply`).

use crate::conditions;
use chrono::{DateTime, Utc};
use solgrid_crds::market::quote_request;
use solgrid_crds::{ComputeJobSpec, GpuVendor, Quote};
use solgrid_market::GpuModel;
use solgrid_market::fees::{FeeConfig, escrow_max_cost};
use solgrid_market::pricing::PricingConfig;

/// The GPU class a job is quoted for: the first model it allows that the market
/// knows (for the job's vendor), or the configured default of its vendor.
pub fn target_model(
    spec: &ComputeJobSpec,
    default_nvidia: GpuModel,
    default_apple: GpuModel,
) -> Result<GpuModel, String> {
    if spec.gpus.models.is_empty() {
        return Ok(match spec.gpus.vendor {
            GpuVendor::Nvidia => default_nvidia,
            GpuVendor::Apple => default_apple,
        });
    }
    let vendor: solgrid_market::GpuVendor = spec.gpus.vendor.into();
    spec.gpus
        .models
        .iter()
        .filter_map(|m| GpuModel::parse(m))
        .find(|m| m.vendor() == vendor)
        .ok_or_else(|| {
            format!(
                "none of gpus.models {:?} is a known {} GPU model",
                spec.gpus.models, spec.gpus.vendor
            )
        })
}

/// The outcome of quoting.
#[derive(Clone, Debug, PartialEq)]
pub enum QuoteOutcome {
    /// Lock this quote.
    Locked(Quote),
    /// The budget cap is below the market price (message for the condition).
    BelowMarket(String),
}

/// Quotes a job. Errors are a malformed job or configuration (not retried hot).
pub fn quote(
    spec: &ComputeJobSpec,
    model: GpuModel,
    utilization_ppm: u32,
    floor_micro_usd: u64,
    pricing_cfg: &PricingConfig,
    fees: &FeeConfig,
    now: DateTime<Utc>,
) -> Result<QuoteOutcome, String> {
    let req = quote_request(spec, model, utilization_ppm, floor_micro_usd);
    let (t, max_duration_ms) = (req.token, req.max_duration_ms);
    let q = pricing_cfg.quote(&req).map_err(|e| e.to_string())?;
    if q.below_market {
        return Ok(QuoteOutcome::BelowMarket(
            q.below_market_message()
                .unwrap_or_else(|| "budget cap below the market price".into()),
        ));
    }
    let esc = escrow_max_cost(
        spec.workers,
        spec.gpus.count,
        max_duration_ms,
        q.price_per_gpu_hour,
        t,
        fees,
    )
    .map_err(|e| e.to_string())?;
    let reference = pricing_cfg
        .rate(t)
        .from_micro_usd(q.reference_micro_usd)
        .map_err(|e| e.to_string())?;
    Ok(QuoteOutcome::Locked(Quote {
        price_per_gpu_hour: q.price_per_gpu_hour,
        token: spec.payment_token,
        reference_price_per_gpu_hour: reference,
        urgency_factor_bps: q.urgency_bps,
        complexity_factor_bps: q.complexity_bps,
        supply_factor_bps: q.supply_bps,
        max_cost: esc.total,
        locked_at: Some(conditions::time(now)),
    }))
}
