//! The dynamic quote of a job, from `solgrid_market::pricing` and the GpuNode cache
//! (utilization and provider floors of the GPU class).

use crate::conditions;
use chrono::{DateTime, Utc};
use solgrid_crds::{ComputeJobSpec, GpuNode, GpuNodePhase, GpuVendor, Quote};
use solgrid_market::GpuModel;
use solgrid_market::fees::{FeeConfig, escrow_max_cost};
use solgrid_market::pricing::{PricingConfig, QuoteRequest};

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

/// Utilization (ppm) and the lowest provider floor (micro-USD) of a GPU class,
/// over Active nodes whose model is `model`.
pub fn supply<'a>(model: GpuModel, nodes: impl Iterator<Item = &'a GpuNode>) -> (u32, u64) {
    let (mut total, mut busy, mut floor) = (0u64, 0u64, None::<u64>);
    for n in nodes {
        let Some(st) = &n.status else { continue };
        if st.phase != GpuNodePhase::Active {
            continue;
        }
        if st.model.as_deref().and_then(GpuModel::parse) != Some(model) {
            continue;
        }
        total += st.gpu_count as u64;
        busy += (st.allocated_gpus.min(st.gpu_count)) as u64;
        let f = n.spec.floor_micro_usd_per_gpu_hour;
        floor = Some(floor.map_or(f, |x: u64| x.min(f)));
    }
    let ppm = (busy * 1_000_000)
        .checked_div(total)
        .map_or(0, |x| x.min(1_000_000) as u32);
    (ppm, floor.unwrap_or(0))
}

/// Utilization and lowest floor of every GPU class, built in one pass over the
/// GpuNode cache (each node's model parsed once), so that a quote costs O(1).
#[derive(Clone, Debug, Default)]
pub struct SupplyIndex {
    by_model: std::collections::HashMap<GpuModel, (u64, u64, u64)>,
}

impl SupplyIndex {
    pub fn build<'a>(nodes: impl Iterator<Item = &'a GpuNode>) -> Self {
        let mut by_model: std::collections::HashMap<GpuModel, (u64, u64, u64)> =
            std::collections::HashMap::new();
        for n in nodes {
            let Some(st) = &n.status else { continue };
            if st.phase != GpuNodePhase::Active {
                continue;
            }
            let Some(model) = st.model.as_deref().and_then(GpuModel::parse) else {
                continue;
            };
            let e = by_model.entry(model).or_insert((0, 0, u64::MAX));
            e.0 += st.gpu_count as u64;
            e.1 += st.allocated_gpus.min(st.gpu_count) as u64;
            e.2 = e.2.min(n.spec.floor_micro_usd_per_gpu_hour);
        }
        Self { by_model }
    }

    /// `(utilization ppm, lowest floor micro-USD)` of a class; `(0, 0)` when no node has it.
    pub fn get(&self, model: GpuModel) -> (u32, u64) {
        match self.by_model.get(&model) {
            Some(&(total, busy, floor)) => (
                (busy * 1_000_000)
                    .checked_div(total)
                    .map_or(0, |x| x.min(1_000_000) as u32),
                if floor == u64::MAX { 0 } else { floor },
            ),
            None => (0, 0),
        }
    }
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
    let t = spec.payment_token.into();
    let max_duration_ms = spec.max_duration_seconds.saturating_mul(1000);
    let q = pricing_cfg
        .quote(&QuoteRequest {
            model,
            token: t,
            urgency: spec.urgency.into(),
            gpus_per_worker: spec.gpus.count,
            workers: spec.workers,
            min_vram_mib: spec.gpus.min_vram_mib,
            max_duration_ms,
            utilization_ppm,
            floor_micro_usd,
            budget_cap_per_gpu_hour: Some(spec.max_price_per_gpu_hour),
        })
        .map_err(|e| e.to_string())?;
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
