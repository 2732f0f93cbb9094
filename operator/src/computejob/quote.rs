//! The dynamic quote of a job, from `solgrid_market::pricing` and the supply of its
//! GPU class (`solgrid_market::supply`, built from the GpuNode cache by `Context::supply`).

use crate::conditions;
use chrono::{DateTime, Utc};
use solgrid_crds::market::quote_request;
use solgrid_crds::{ComputeJobSpec, GpuVendor, Quote};
use solgrid_market::GpuModel;
use solgrid_market::fees::{FeeConfig, escrow_max_cost};
use solgrid_market::pricing::{ModelSupply, PricingConfig};

/// The GPU class a job is first described by: the first of [`accepted_models`].
pub fn target_model(
    spec: &ComputeJobSpec,
    default_nvidia: GpuModel,
    default_apple: GpuModel,
) -> Result<GpuModel, String> {
    accepted_models(spec, default_nvidia, default_apple).map(|m| m[0])
}

/// Every GPU class a job accepts and is priced for: the models it lists that the
/// market knows for the job's vendor (in order, each once), or, when it lists none,
/// the configured default of its vendor. Never empty.
pub fn accepted_models(
    spec: &ComputeJobSpec,
    default_nvidia: GpuModel,
    default_apple: GpuModel,
) -> Result<Vec<GpuModel>, String> {
    if spec.gpus.models.is_empty() {
        return Ok(vec![match spec.gpus.vendor {
            GpuVendor::Nvidia => default_nvidia,
            GpuVendor::Apple => default_apple,
        }]);
    }
    let vendor: solgrid_market::GpuVendor = spec.gpus.vendor.into();
    let mut out: Vec<GpuModel> = Vec::new();
    for m in spec.gpus.models.iter().filter_map(|m| GpuModel::parse(m)) {
        if m.vendor() == vendor && !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "none of gpus.models {:?} is a known {} GPU model",
            spec.gpus.models, spec.gpus.vendor
        ));
    }
    Ok(out)
}

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
/// supply): priced at the dearest class (`PricingConfig::quote_models`), so the one
/// locked price, and the escrow computed from it, cover whichever class the job runs
/// on, and are never below any class's provider floor. Also returns the class priced.
pub fn quote_models(
    spec: &ComputeJobSpec,
    classes: &[ModelSupply],
    pricing_cfg: &PricingConfig,
    fees: &FeeConfig,
    now: DateTime<Utc>,
) -> Result<(QuoteOutcome, GpuModel), String> {
    let first = classes.first().ok_or("no GPU model to quote")?;
    let req = quote_request(spec, first.model, 0, 0);
    let (t, max_duration_ms) = (req.token, req.max_duration_ms);
    let q = pricing_cfg
        .quote_models(&req, classes)
        .map_err(|e| e.to_string())?;
    if q.below_market {
        let msg = q
            .below_market_message()
            .unwrap_or_else(|| "budget cap below the market price".into());
        return Ok((QuoteOutcome::BelowMarket(msg), q.model));
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
    let locked = QuoteOutcome::Locked(Quote {
        price_per_gpu_hour: q.price_per_gpu_hour,
        token: spec.payment_token,
        reference_price_per_gpu_hour: reference,
        urgency_factor_bps: q.urgency_bps,
        complexity_factor_bps: q.complexity_bps,
        supply_factor_bps: q.supply_bps,
        max_cost: esc.total,
        locked_at: Some(conditions::time(now)),
    });
    Ok((locked, q.model))
}
