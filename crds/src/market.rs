//! The API's enums and objects as the market library's inputs: one mapping, used by the operator,
//! the scheduler extender and the kubectl plugin alike.

use crate::{ComputeJobSpec, GpuNode, GpuVendor, PaymentToken, Quote};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use solgrid_market::GpuModel;
use solgrid_market::fees::{EscrowAmount, FeeConfig, escrow_max_cost};
use solgrid_market::pricing::{ModelSupply, PricingConfig};
use solgrid_market::supply::{SupplyIndex, SupplyNode};
use solgrid_market::{ledger::Token, pricing};

impl From<PaymentToken> for Token {
    fn from(t: PaymentToken) -> Self {
        match t {
            PaymentToken::Io => Token::Io,
            PaymentToken::Usdc => Token::Usdc,
        }
    }
}

impl From<GpuVendor> for solgrid_market::GpuVendor {
    fn from(v: GpuVendor) -> Self {
        match v {
            GpuVendor::Nvidia => solgrid_market::GpuVendor::Nvidia,
            GpuVendor::Apple => solgrid_market::GpuVendor::Apple,
        }
    }
}

/// A GpuNode as the supply of its GPU class sees it (`status.model`, phase, GPU
/// count, allocated GPUs, the provider's floor); `None` without a status or a
/// model the market knows.
pub fn supply_node(n: &GpuNode) -> Option<SupplyNode> {
    let st = n.status.as_ref()?;
    Some(SupplyNode {
        model: st.model.as_deref().and_then(GpuModel::parse)?,
        phase: st.phase,
        gpus: st.gpu_count,
        allocated: st.allocated_gpus,
        floor_micro_usd: n.spec.floor_micro_usd_per_gpu_hour,
    })
}

/// The supply of every GPU class over these GpuNodes, in one pass.
pub fn supply_index<'a>(nodes: impl IntoIterator<Item = &'a GpuNode>) -> SupplyIndex {
    SupplyIndex::build(nodes.into_iter().filter_map(supply_node))
}

/// The market's quote request for a job spec priced as `model` with its class's
/// supply (`utilization_ppm`, `floor_micro_usd`); the spec's cap is the budget.
pub fn quote_request(
    spec: &ComputeJobSpec,
    model: GpuModel,
    utilization_ppm: u32,
    floor_micro_usd: u64,
) -> pricing::QuoteRequest {
    pricing::QuoteRequest {
        model,
        token: spec.payment_token.into(),
        urgency: spec.urgency,
        gpus_per_worker: spec.gpus.count,
        workers: spec.workers,
        min_vram_mib: spec.gpus.min_vram_mib,
        max_duration_ms: spec.max_duration_seconds.saturating_mul(1000),
        utilization_ppm,
        floor_micro_usd,
        budget_cap_per_gpu_hour: Some(spec.max_price_per_gpu_hour),
    }
}

/// The model an NVIDIA job that lists none is priced as (the operator's
/// `--default-nvidia-model` default).
pub const DEFAULT_NVIDIA_MODEL: GpuModel = GpuModel::Rtx4090;
/// The model an Apple job that lists none is priced as (`--default-apple-model`).
pub const DEFAULT_APPLE_MODEL: GpuModel = GpuModel::AppleM2;

/// Every GPU class a job accepts and is priced for: the models it lists that the
/// market knows for the job's vendor (in order, each once), or, when it lists none,
/// the default of its vendor. Never empty; an error names the unknown models.
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

/// A job's quote and what it puts into escrow (`None` when its cap is below the market).
#[derive(Clone, Debug, PartialEq)]
pub struct SpecQuote {
    /// Priced as `quote.model`, the dearest class the job accepts.
    pub quote: pricing::Quote,
    pub escrow: Option<EscrowAmount>,
}

/// Quotes a job spec that accepts each of `classes` (its [`accepted_models`] with
/// their supply): priced at the dearest class ([`PricingConfig::quote_models`]), so
/// the one locked price and the escrow computed from it cover whichever class the
/// job runs on and are never below any class's provider floor. What the operator
/// locks and `kubectl solgrid quote` shows.
pub fn quote_spec(
    spec: &ComputeJobSpec,
    classes: &[ModelSupply],
    pricing_cfg: &PricingConfig,
    fees: &FeeConfig,
) -> Result<SpecQuote, String> {
    let first = classes.first().ok_or("no GPU model to quote")?;
    let req = quote_request(spec, first.model, 0, 0);
    let quote = pricing_cfg
        .quote_models(&req, classes)
        .map_err(|e| e.to_string())?;
    let escrow = if quote.below_market {
        None
    } else {
        let e = escrow_max_cost(
            spec.workers,
            spec.gpus.count,
            req.max_duration_ms,
            quote.price_per_gpu_hour,
            req.token,
            fees,
        )
        .map_err(|e| e.to_string())?;
        Some(e)
    };
    Ok(SpecQuote { quote, escrow })
}

/// The `status.quote` a job's quote is locked as at `locked_at`; `None` when it
/// is below the market (nothing to lock).
pub fn locked_quote(
    spec: &ComputeJobSpec,
    q: &SpecQuote,
    pricing_cfg: &PricingConfig,
    locked_at: Time,
) -> Result<Option<Quote>, String> {
    let Some(escrow) = &q.escrow else {
        return Ok(None);
    };
    let reference = pricing_cfg
        .rate(spec.payment_token.into())
        .from_micro_usd(q.quote.reference_micro_usd)
        .map_err(|e| e.to_string())?;
    Ok(Some(Quote {
        price_per_gpu_hour: q.quote.price_per_gpu_hour,
        token: spec.payment_token,
        reference_price_per_gpu_hour: reference,
        urgency_factor_bps: q.quote.urgency_bps,
        complexity_factor_bps: q.quote.complexity_bps,
        supply_factor_bps: q.quote.supply_bps,
        max_cost: escrow.total,
        locked_at: Some(locked_at),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_market() {
        for (t, name) in [(PaymentToken::Io, "IO"), (PaymentToken::Usdc, "USDC")] {
            assert_eq!(Token::from(t).to_string(), name);
        }
        assert_eq!(
            solgrid_market::GpuVendor::from(GpuVendor::Apple),
            solgrid_market::GpuVendor::Apple
        );
    }

    #[test]
    fn a_gpunode_as_supply() {
        use crate::GpuNodePhase;
        use solgrid_market::matching::NodePhase;
        let mut n = GpuNode::new("a", Default::default());
        assert_eq!(supply_node(&n), None);
        n.spec.floor_micro_usd_per_gpu_hour = 7;
        n.status = Some(crate::GpuNodeStatus {
            model: Some("NVIDIA H100 80GB HBM3".into()),
            phase: GpuNodePhase::Active,
            gpu_count: 8,
            allocated_gpus: 3,
            ..Default::default()
        });
        let s = supply_node(&n).unwrap();
        assert_eq!(
            (s.model, s.phase, s.gpus, s.allocated, s.floor_micro_usd),
            (GpuModel::H100, NodePhase::Active, 8, 3, 7)
        );
        assert_eq!(supply_index([&n, &n]).get(GpuModel::H100), (375_000, 7));
        n.status.as_mut().unwrap().model = Some("Radeon".into());
        assert_eq!(supply_node(&n), None);
    }
}
