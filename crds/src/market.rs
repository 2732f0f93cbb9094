//! The API's enums and objects as the market library's inputs: one mapping, used by the operator,
//! the scheduler extender and the kubectl plugin alike.

use crate::{ComputeJobSpec, GpuNode, GpuNodePhase, GpuVendor, PaymentToken, Preference, Urgency};
use solgrid_market::GpuModel;
use solgrid_market::matching::{self, NodePhase};
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

impl From<Urgency> for pricing::Urgency {
    fn from(u: Urgency) -> Self {
        match u {
            Urgency::Low => pricing::Urgency::Low,
            Urgency::Normal => pricing::Urgency::Normal,
            Urgency::High => pricing::Urgency::High,
            Urgency::Critical => pricing::Urgency::Critical,
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

impl From<GpuNodePhase> for NodePhase {
    fn from(p: GpuNodePhase) -> Self {
        match p {
            GpuNodePhase::Pending => NodePhase::Pending,
            GpuNodePhase::Verifying => NodePhase::Verifying,
            GpuNodePhase::Active => NodePhase::Active,
            GpuNodePhase::Draining => NodePhase::Draining,
            GpuNodePhase::Offline => NodePhase::Offline,
            GpuNodePhase::Slashed => NodePhase::Slashed,
        }
    }
}

impl From<Preference> for matching::Preference {
    fn from(p: Preference) -> Self {
        match p {
            Preference::Cheapest => matching::Preference::Cheapest,
            Preference::Fastest => matching::Preference::Fastest,
            Preference::Balanced => matching::Preference::Balanced,
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
        phase: st.phase.into(),
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
        urgency: spec.urgency.into(),
        gpus_per_worker: spec.gpus.count,
        workers: spec.workers,
        min_vram_mib: spec.gpus.min_vram_mib,
        max_duration_ms: spec.max_duration_seconds.saturating_mul(1000),
        utilization_ppm,
        floor_micro_usd,
        budget_cap_per_gpu_hour: Some(spec.max_price_per_gpu_hour),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_market() {
        for (t, name) in [(PaymentToken::Io, "IO"), (PaymentToken::Usdc, "USDC")] {
            assert_eq!(Token::from(t).to_string(), name);
        }
        assert!(pricing::Urgency::from(Urgency::Low) < pricing::Urgency::from(Urgency::Critical));
        assert_eq!(
            solgrid_market::GpuVendor::from(GpuVendor::Apple),
            solgrid_market::GpuVendor::Apple
        );
        assert_eq!(NodePhase::from(GpuNodePhase::Slashed), NodePhase::Slashed);
        assert_eq!(
            matching::Preference::from(Preference::Fastest),
            matching::Preference::Fastest
        );
    }

    #[test]
    fn a_gpunode_as_supply() {
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
