//! Market gauges for dashboards and alerts, recomputed from the GpuNode cache:
//!
//! - `solgrid_operator_gpunodes{phase}`: GpuNodes by phase;
//! - `solgrid_operator_gpus{model,state}`: GPUs of Active nodes that are `allocated`
//!   or `idle`, and GPUs of any node reported `unhealthy`;
//! - `solgrid_operator_market_price_micro_usd{model}`: what one GPU-hour of the model
//!   would be quoted now (normal urgency, one GPU, one hour, at the class's current
//!   utilization and lowest floor), in micro-USD.
//!
//! The numbers come from the same market library the ComputeJob controller quotes
//! with; this module only counts and labels.

use crate::context::Context;
use solgrid_crds::{GpuHealth, GpuNode, GpuNodePhase};
use solgrid_market::GpuModel;
use solgrid_market::ledger::Token;
use solgrid_market::pricing::{PricingConfig, QuoteRequest, Urgency};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The gauges' values, computed from a set of GpuNodes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MarketGauges {
    pub nodes_by_phase: BTreeMap<&'static str, i64>,
    /// `(model, state) -> GPUs`.
    pub gpus: BTreeMap<(String, &'static str), i64>,
    /// `model -> micro-USD per GPU-hour`.
    pub price_micro_usd: BTreeMap<String, i64>,
}

const PHASES: [(GpuNodePhase, &str); 6] = [
    (GpuNodePhase::Pending, "Pending"),
    (GpuNodePhase::Verifying, "Verifying"),
    (GpuNodePhase::Active, "Active"),
    (GpuNodePhase::Draining, "Draining"),
    (GpuNodePhase::Offline, "Offline"),
    (GpuNodePhase::Slashed, "Slashed"),
];

fn phase_name(p: GpuNodePhase) -> &'static str {
    PHASES
        .iter()
        .find(|(q, _)| *q == p)
        .map_or("Pending", |(_, n)| n)
}

/// Counts and prices over `nodes`.
pub fn compute(nodes: &[Arc<GpuNode>], pricing: &PricingConfig) -> MarketGauges {
    let mut g = MarketGauges::default();
    for (_, name) in PHASES {
        g.nodes_by_phase.insert(name, 0);
    }
    for node in nodes {
        let status = node.status.clone().unwrap_or_default();
        *g.nodes_by_phase
            .entry(phase_name(status.phase))
            .or_default() += 1;
        let model = status
            .model
            .as_deref()
            .map(|m| GpuModel::parse(m).map_or_else(|| m.to_string(), |gm| gm.to_string()))
            .unwrap_or_else(|| "unknown".to_string());
        let unhealthy = status
            .gpus
            .iter()
            .filter(|d| d.health == GpuHealth::Unhealthy)
            .count() as i64;
        if unhealthy > 0 {
            *g.gpus.entry((model.clone(), "unhealthy")).or_default() += unhealthy;
        }
        if status.phase == GpuNodePhase::Active {
            let usable = (status.gpu_count as i64 - unhealthy).max(0);
            let allocated = (status.allocated_gpus as i64).min(usable);
            *g.gpus.entry((model.clone(), "allocated")).or_default() += allocated;
            *g.gpus.entry((model, "idle")).or_default() += usable - allocated;
        }
    }
    let supply = solgrid_crds::market::supply_index(nodes.iter().map(|n| n.as_ref()));
    for model in GpuModel::ALL {
        let label = model.to_string();
        if !g.gpus.keys().any(|(m, _)| *m == label) {
            continue;
        }
        let (utilization_ppm, floor_micro_usd) = supply.get(*model);
        let req = QuoteRequest {
            model: *model,
            token: Token::Io,
            urgency: Urgency::Normal,
            gpus_per_worker: 1,
            workers: 1,
            min_vram_mib: 0,
            max_duration_ms: 3_600_000,
            utilization_ppm,
            floor_micro_usd,
            budget_cap_per_gpu_hour: None,
        };
        if let Ok(q) = pricing.quote(&req) {
            g.price_micro_usd
                .insert(label, i64::try_from(q.price_micro_usd).unwrap_or(i64::MAX));
        }
    }
    g
}

/// Recomputes the gauges every 15 s while this replica leads.
pub async fn run(ctx: Arc<Context>) {
    let Some(store) = ctx.caches.gpunodes.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        let g = compute(&store.state(), &ctx.config.market.pricing);
        let m = &ctx.metrics;
        for (phase, n) in &g.nodes_by_phase {
            m.gpunodes_by_phase.with_label_values(&[phase]).set(*n);
        }
        m.gpus.reset();
        for ((model, state), n) in &g.gpus {
            m.gpus.with_label_values(&[model.as_str(), state]).set(*n);
        }
        m.market_price.reset();
        for (model, p) in &g.price_micro_usd {
            m.market_price.with_label_values(&[model.as_str()]).set(*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_crds::{GpuDevice, GpuNodeSpec, GpuNodeStatus};

    fn node(
        phase: GpuNodePhase,
        model: &str,
        count: u32,
        allocated: u32,
        unhealthy: u32,
    ) -> Arc<GpuNode> {
        let gpus = (0..count)
            .map(|i| GpuDevice {
                id: format!("gpu-{i}"),
                model: model.into(),
                health: if i < unhealthy {
                    GpuHealth::Unhealthy
                } else {
                    GpuHealth::Healthy
                },
                ..Default::default()
            })
            .collect();
        let mut n = GpuNode::new("n", GpuNodeSpec::default());
        n.status = Some(GpuNodeStatus {
            phase,
            gpus,
            gpu_count: count,
            allocated_gpus: allocated,
            model: Some(model.into()),
            ..Default::default()
        });
        Arc::new(n)
    }

    #[test]
    fn counts_phases_states_and_prices() {
        let nodes = vec![
            node(GpuNodePhase::Active, "NVIDIA GeForce RTX 4090", 4, 3, 0),
            node(GpuNodePhase::Active, "NVIDIA GeForce RTX 4090", 2, 0, 1),
            node(GpuNodePhase::Offline, "NVIDIA H100 80GB HBM3", 8, 0, 0),
        ];
        let g = compute(&nodes, &PricingConfig::default());
        assert_eq!(g.nodes_by_phase["Active"], 2);
        assert_eq!(g.nodes_by_phase["Offline"], 1);
        assert_eq!(g.nodes_by_phase["Slashed"], 0);
        let m = GpuModel::parse("NVIDIA GeForce RTX 4090")
            .unwrap()
            .to_string();
        assert_eq!(g.gpus[&(m.clone(), "allocated")], 3);
        assert_eq!(g.gpus[&(m.clone(), "idle")], 2);
        assert_eq!(g.gpus[&(m.clone(), "unhealthy")], 1);
        let h100 = GpuModel::parse("NVIDIA H100 80GB HBM3")
            .unwrap()
            .to_string();
        assert!(
            !g.gpus.contains_key(&(h100.clone(), "idle")),
            "offline GPUs are not idle supply"
        );
        // A priced class costs at least its reference price; a class with no GPUs has no price.
        assert!(g.price_micro_usd[&m] > 0);
        assert!(!g.price_micro_usd.contains_key(&h100));
    }

    #[test]
    fn fuller_class_is_dearer() {
        // one active node of 10 RTX 4090s, `allocated` of them busy
        let with_allocated = |allocated| {
            compute(
                &[node(
                    GpuNodePhase::Active,
                    "NVIDIA GeForce RTX 4090",
                    10,
                    allocated,
                    0,
                )],
                &PricingConfig::default(),
            )
        };
        let idle = with_allocated(0);
        let full = with_allocated(9);
        let m = GpuModel::parse("NVIDIA GeForce RTX 4090")
            .unwrap()
            .to_string();
        assert!(full.price_micro_usd[&m] > idle.price_micro_usd[&m]);
    }
}
