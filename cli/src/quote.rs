//! What a ComputeJob would cost now: the same computation the operator makes when it
//! quotes a job (ECONOMICS.md, "Dynamic pricing"): `solgrid_crds::market::quote_spec`
//! over the classes the job accepts, each with its supply read from the cluster's
//! GpuNodes (`solgrid_crds::market::supply_index`), priced at the dearest.

use solgrid_crds::market::{
    DEFAULT_APPLE_MODEL, DEFAULT_NVIDIA_MODEL, accepted_models, quote_spec, supply_index,
};
use solgrid_crds::{ComputeJobSpec, GpuNode};
use solgrid_market::GpuModel;
use solgrid_market::fees::{EscrowAmount, FeeConfig};
use solgrid_market::pricing::{self, PricingConfig};
use solgrid_market::supply::ClassSupply;

/// The supply of one GPU class over the Active GpuNodes (the market's
/// [`solgrid_market::supply`], as the operator reads it).
pub type Supply = ClassSupply;

/// Utilization and the lowest floor of `model` over Active GpuNodes.
pub fn supply<'a>(model: GpuModel, nodes: impl IntoIterator<Item = &'a GpuNode>) -> Supply {
    supply_index(nodes).class(model)
}

/// A quote with the numbers behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobQuote {
    pub model: GpuModel,
    pub supply: Supply,
    pub quote: pricing::Quote,
    /// What goes into escrow before the job is scheduled (`None` when below market).
    pub escrow: Option<EscrowAmount>,
}

/// Quotes `spec` against the GpuNodes, as the operator would now.
pub fn quote_job(
    spec: &ComputeJobSpec,
    nodes: &[GpuNode],
    pricing_cfg: &PricingConfig,
    fees: &FeeConfig,
) -> Result<JobQuote, String> {
    let models = accepted_models(spec, DEFAULT_NVIDIA_MODEL, DEFAULT_APPLE_MODEL)?;
    let index = supply_index(nodes);
    let classes: Vec<_> = models.iter().map(|m| index.model_supply(*m)).collect();
    let q = quote_spec(spec, &classes, pricing_cfg, fees)?;
    let model = q.quote.model;
    Ok(JobQuote {
        model,
        supply: index.class(model),
        quote: q.quote,
        escrow: q.escrow,
    })
}

/// The human-readable report of a quote.
pub fn render(
    name: &str,
    spec: &ComputeJobSpec,
    q: &JobQuote,
    pricing_cfg: &PricingConfig,
) -> String {
    use crate::format::{amount, factor, usd};
    let tok = spec.payment_token.to_string();
    let unit = crate::format::unit(spec.payment_token, pricing_cfg);
    let a = |x: u64| amount(x, unit, &tok);
    let p = &q.quote;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    line("Job:", name.to_string());
    line(
        "GPUs:",
        format!(
            "{} worker(s) x {} {} GPU(s), priced as {} (max {} h)",
            spec.workers,
            spec.gpus.count,
            spec.gpus.vendor,
            q.model.name(),
            spec.max_duration_seconds.div_ceil(3600)
        ),
    );
    line(
        "Supply:",
        format!(
            "{} Active node(s), {} GPU(s), {} allocated: utilization {:.1} %{}",
            q.supply.nodes,
            q.supply.gpus,
            q.supply.allocated,
            q.supply.utilization_ppm() as f64 / 10_000.0,
            if q.supply.floor_micro_usd() > 0 {
                format!(", lowest floor {}", usd(q.supply.floor_micro_usd()))
            } else {
                String::new()
            }
        ),
    );
    line(
        "Factors:",
        format!(
            "reference {} x urgency {} x complexity {} x supply {}",
            usd(p.reference_micro_usd),
            factor(p.urgency_bps),
            factor(p.complexity_bps),
            factor(p.supply_bps)
        ),
    );
    line(
        "Price:",
        format!(
            "{} per GPU-hour = {} ({} base units){}",
            usd(p.price_micro_usd),
            a(p.price_per_gpu_hour),
            p.price_per_gpu_hour,
            if p.floor_applied {
                " (provider floor)"
            } else {
                ""
            }
        ),
    );
    line(
        "Budget cap:",
        format!(
            "{} per GPU-hour: {}",
            a(spec.max_price_per_gpu_hour),
            if p.below_market {
                "BELOW THE MARKET, the job would wait (condition Quoted=False)"
            } else {
                "ok"
            }
        ),
    );
    if let Some(e) = &q.escrow {
        line(
            "Escrow (max):",
            format!(
                "{} = compute {} + requester fee {}{}",
                a(e.total),
                a(e.max_compute),
                a(e.requester_fee),
                if e.surcharge > 0 {
                    format!(" + stablecoin surcharge {}", a(e.surcharge))
                } else {
                    String::new()
                }
            ),
        );
        line(
            "",
            "billed by the GPU-second at the locked price; the unused escrow is refunded".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_crds::*;

    pub(crate) fn node(
        name: &str,
        model: &str,
        gpus: u32,
        allocated: u32,
        floor: u64,
        phase: GpuNodePhase,
    ) -> GpuNode {
        let mut n = GpuNode::new(
            name,
            GpuNodeSpec {
                node_name: name.into(),
                payout_wallet: "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU".into(),
                location: Location {
                    region: "eu-west".into(),
                    country: "DE".into(),
                    coordinates: None,
                },
                floor_micro_usd_per_gpu_hour: floor,
                ..Default::default()
            },
        );
        n.status = Some(GpuNodeStatus {
            phase,
            gpu_count: gpus,
            allocated_gpus: allocated,
            model: Some(model.into()),
            ..Default::default()
        });
        n
    }

    /// `spec` quoted against `nodes` with the default pricing and fees.
    fn quoted(spec: &ComputeJobSpec, nodes: &[GpuNode]) -> Result<JobQuote, String> {
        quote_job(
            spec,
            nodes,
            &PricingConfig::default(),
            &FeeConfig::default(),
        )
    }

    fn spec() -> ComputeJobSpec {
        ComputeJobSpec {
            gpus: GpuRequest {
                count: 1,
                vendor: GpuVendor::Nvidia,
                models: vec!["H100".into()],
                min_vram_mib: 0,
            },
            workers: 1,
            max_duration_seconds: 3600,
            max_price_per_gpu_hour: 10_000_000,
            payment_token: PaymentToken::Usdc,
            ..Default::default()
        }
    }

    #[test]
    fn idle_h100_in_usdc_matches_the_market_library() {
        let nodes = vec![node(
            "a",
            "NVIDIA H100 80GB HBM3",
            8,
            0,
            0,
            GpuNodePhase::Active,
        )];
        let q = quoted(&spec(), &nodes).unwrap();
        assert_eq!(q.model, GpuModel::H100);
        // $2.20 reference x 1.0 urgency x 1.0025 complexity (1 h) x 0.70 idle supply.
        assert_eq!(q.quote.complexity_bps, 10_025);
        assert_eq!(q.quote.supply_bps, 7_000);
        assert_eq!(q.quote.price_micro_usd, 1_543_850);
        assert_eq!(q.quote.price_per_gpu_hour, 1_543_850);
        let e = q.escrow.unwrap();
        // One GPU-hour: C = P, Fr = ceil(0.25 %), S = ceil(2 %).
        assert_eq!(e.max_compute, 1_543_850);
        assert_eq!(e.requester_fee, 3_860);
        assert_eq!(e.surcharge, 30_877);
        assert_eq!(e.total, 1_543_850 + 3_860 + 30_877);
    }

    #[test]
    fn supply_counts_active_nodes_of_the_class_only() {
        let nodes = vec![
            node("a", "h100", 8, 6, 2_000_000, GpuNodePhase::Active),
            node("b", "h100", 8, 2, 1_500_000, GpuNodePhase::Active),
            node("c", "h100", 8, 8, 100, GpuNodePhase::Offline),
            node("d", "rtx-4090", 4, 4, 100, GpuNodePhase::Active),
        ];
        let s = supply(GpuModel::H100, &nodes);
        assert_eq!((s.nodes, s.gpus, s.allocated), (2, 16, 8));
        assert_eq!(s.utilization_ppm(), 500_000);
        assert_eq!(s.floor_micro_usd(), 1_500_000);
        let busy = quoted(&spec(), &nodes).unwrap();
        assert_eq!(busy.quote.supply_bps, 7_000 + 2_500 + 2_250);
    }

    #[test]
    fn below_market_has_no_escrow_and_says_so() {
        let mut s = spec();
        s.max_price_per_gpu_hour = 1;
        let q = quoted(&s, &[]).unwrap();
        assert!(q.quote.below_market);
        assert!(q.escrow.is_none());
        let text = render("j", &s, &q, &PricingConfig::default());
        assert!(text.contains("BELOW THE MARKET"), "{text}");
    }

    #[test]
    fn unknown_models_and_defaults() {
        let target = |s: &ComputeJobSpec| {
            accepted_models(s, DEFAULT_NVIDIA_MODEL, DEFAULT_APPLE_MODEL).map(|m| m[0])
        };
        let mut s = spec();
        s.gpus.models = vec!["Voodoo 5".into()];
        assert!(target(&s).unwrap_err().contains("Voodoo 5"));
        let e = quoted(&s, &[]);
        assert!(e.unwrap_err().contains("Voodoo 5"));
        s.gpus.models.clear();
        assert_eq!(target(&s).unwrap(), GpuModel::Rtx4090);
        s.gpus.vendor = GpuVendor::Apple;
        assert_eq!(target(&s).unwrap(), GpuModel::AppleM2);
        s.gpus.models = vec!["Apple M3 Max".into()];
        assert_eq!(target(&s).unwrap(), GpuModel::AppleM3);
    }

    #[test]
    fn a_multi_model_job_is_priced_at_the_dearest_class_as_the_operator_does() {
        let mut s = spec();
        s.gpus.models = vec!["rtx-3060".into(), "h100".into()];
        let nodes = vec![
            node("a", "rtx-3060", 4, 0, 0, GpuNodePhase::Active),
            node("b", "h100", 8, 4, 0, GpuNodePhase::Active),
        ];
        let q = quoted(&s, &nodes).unwrap();
        assert_eq!(q.model, GpuModel::H100);
        assert_eq!(q.supply.utilization_ppm(), 500_000);
        let h100_only = {
            let mut h = s.clone();
            h.gpus.models = vec!["h100".into()];
            quoted(&h, &nodes).unwrap()
        };
        assert_eq!(
            q.quote.price_per_gpu_hour,
            h100_only.quote.price_per_gpu_hour
        );
        assert_eq!(q.escrow, h100_only.escrow);
    }
}
