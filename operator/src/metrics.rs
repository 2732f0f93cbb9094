//! Prometheus metrics of the operator, served on `/metrics`.
//!
//! Amounts are base units of the token's mint, labelled by `token` (`IO`, `USDC`).

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::time::Instant;

/// Every metric of the operator.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `solgrid_operator_reconciles_total{controller}`
    pub reconciles: IntCounterVec,
    /// `solgrid_operator_reconcile_errors_total{controller,error}`
    pub reconcile_errors: IntCounterVec,
    /// `solgrid_operator_reconcile_duration_seconds{controller}`
    pub reconcile_duration: HistogramVec,
    /// `solgrid_operator_jobs{phase}`: ComputeJobs by phase (from the cache).
    pub jobs_by_phase: IntGaugeVec,
    /// `solgrid_operator_job_transitions_total{from,to}`
    pub job_transitions: IntCounterVec,
    /// `solgrid_operator_escrowed_base_units_total{token}`
    pub escrowed: IntCounterVec,
    /// `solgrid_operator_settled_base_units_total{token}` (paid to providers)
    pub settled: IntCounterVec,
    /// `solgrid_operator_burned_base_units_total{token}`
    pub burned: IntCounterVec,
    /// `solgrid_operator_treasury_base_units_total{token}` (stablecoin fees to buyback)
    pub to_treasury: IntCounterVec,
    /// `solgrid_operator_refunded_base_units_total{token}`
    pub refunded: IntCounterVec,
    /// `solgrid_operator_pending_settlements`: planned or sent, not confirmed.
    pub pending_settlements: IntGauge,
    /// `solgrid_operator_ledger_errors_total{ledger,op}` (RPC errors on Solana)
    pub ledger_errors: IntCounterVec,
    /// `solgrid_operator_gang_timeouts_total`
    pub gang_timeouts: IntCounterVec,
    /// `solgrid_operator_is_leader`
    pub is_leader: IntGauge,
    /// `solgrid_operator_gpunodes{phase}`: GpuNodes by phase.
    pub gpunodes_by_phase: IntGaugeVec,
    /// `solgrid_operator_gpus{model,state}`: GPUs allocated/idle (Active nodes) and unhealthy.
    pub gpus: IntGaugeVec,
    /// `solgrid_operator_market_price_micro_usd{model}`: the quote of one GPU-hour now.
    pub market_price: IntGaugeVec,
    /// `solgrid_operator_buyback_swapped_base_units_total{token}`: stablecoin paid for IO.
    pub buyback_swapped: IntCounterVec,
    /// `solgrid_operator_buyback_burned_base_units_total{token}`: IO bought back and burned.
    pub buyback_burned: IntCounterVec,
    /// `solgrid_operator_buyback_rounds_total{outcome}`: periods closed (completed, empty, failed).
    pub buyback_rounds: IntCounterVec,
    /// `solgrid_operator_buyback_last_period`: the last buyback period closed.
    pub buyback_last_period: IntGauge,
    /// `solgrid_operator_verifications_total{result}`: proof-of-work verdicts
    /// (`Passed`, `WrongResult`, `TooSlow`, `Inconclusive`) and expiries (`Expired`).
    pub verifications: IntCounterVec,
    /// `solgrid_operator_verification_time_ratio`: a judged run's time (the
    /// operator's, creation to report) over its limit; calibrates `--verify-reference-us`.
    pub verification_time_ratio: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` in `r`. The names are constants, so registration cannot
/// fail.
fn register<M: Collector + Clone + 'static>(r: &Registry, metric: M) -> M {
    r.register(Box::new(metric.clone())).expect("unique metric");
    metric
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram_opts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets.to_vec())
}

/// Reconciles of every controller.
struct ReconcileMetrics {
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: HistogramVec,
}

impl ReconcileMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            reconciles: counter(
                r,
                "solgrid_operator_reconciles_total",
                "Reconciles run",
                &["controller"],
            ),
            reconcile_errors: counter(
                r,
                "solgrid_operator_reconcile_errors_total",
                "Reconciles that failed",
                &["controller", "error"],
            ),
            reconcile_duration: register(
                r,
                HistogramVec::new(
                    histogram_opts(
                        "solgrid_operator_reconcile_duration_seconds",
                        "Reconcile duration",
                        &[
                            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                        ],
                    ),
                    &["controller"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// ComputeJobs: phases, transitions, gangs.
struct JobMetrics {
    jobs_by_phase: IntGaugeVec,
    job_transitions: IntCounterVec,
    gang_timeouts: IntCounterVec,
}

impl JobMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            jobs_by_phase: gauge_vec(
                r,
                "solgrid_operator_jobs",
                "ComputeJobs by phase",
                &["phase"],
            ),
            job_transitions: counter(
                r,
                "solgrid_operator_job_transitions_total",
                "ComputeJob phase transitions",
                &["from", "to"],
            ),
            gang_timeouts: counter(
                r,
                "solgrid_operator_gang_timeouts_total",
                "Gangs released because not all workers ran in time",
                &["outcome"],
            ),
        }
    }
}

/// Money: escrow, settlement (providers, burn, treasury, refund), the ledger.
struct MoneyMetrics {
    escrowed: IntCounterVec,
    settled: IntCounterVec,
    burned: IntCounterVec,
    to_treasury: IntCounterVec,
    refunded: IntCounterVec,
    pending_settlements: IntGauge,
    ledger_errors: IntCounterVec,
}

impl MoneyMetrics {
    fn register(r: &Registry) -> Self {
        let token = |name: &str, help: &str| counter(r, name, help, &["token"]);
        Self {
            escrowed: token(
                "solgrid_operator_escrowed_base_units_total",
                "Base units moved into escrow",
            ),
            settled: token(
                "solgrid_operator_settled_base_units_total",
                "Base units paid to providers",
            ),
            burned: token(
                "solgrid_operator_burned_base_units_total",
                "Base units of protocol fees burned",
            ),
            to_treasury: token(
                "solgrid_operator_treasury_base_units_total",
                "Base units of stablecoin fees sent to the treasury's buyback account",
            ),
            refunded: token(
                "solgrid_operator_refunded_base_units_total",
                "Base units of escrow refunded",
            ),
            pending_settlements: gauge(
                r,
                "solgrid_operator_pending_settlements",
                "Settlements planned or sent, not yet confirmed",
            ),
            ledger_errors: counter(
                r,
                "solgrid_operator_ledger_errors_total",
                "Ledger (Solana RPC or embedded) errors",
                &["ledger", "op"],
            ),
        }
    }
}

/// The fleet and the market: leadership, GpuNodes, GPUs, prices.
struct FleetMetrics {
    is_leader: IntGauge,
    gpunodes_by_phase: IntGaugeVec,
    gpus: IntGaugeVec,
    market_price: IntGaugeVec,
}

impl FleetMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            is_leader: gauge(
                r,
                "solgrid_operator_is_leader",
                "1 while this replica holds the leader lease",
            ),
            gpunodes_by_phase: gauge_vec(
                r,
                "solgrid_operator_gpunodes",
                "GpuNodes by phase (from the cache)",
                &["phase"],
            ),
            gpus: gauge_vec(
                r,
                "solgrid_operator_gpus",
                "GPUs of Active nodes allocated or idle, and unhealthy GPUs, by model",
                &["model", "state"],
            ),
            market_price: gauge_vec(
                r,
                "solgrid_operator_market_price_micro_usd",
                "Quote of one GPU-hour now (normal urgency, one GPU), micro-USD, by model",
                &["model"],
            ),
        }
    }
}

/// The scheduled buyback.
struct BuybackMetrics {
    buyback_swapped: IntCounterVec,
    buyback_burned: IntCounterVec,
    buyback_rounds: IntCounterVec,
    buyback_last_period: IntGauge,
}

impl BuybackMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            buyback_swapped: counter(
                r,
                "solgrid_operator_buyback_swapped_base_units_total",
                "Base units of stablecoin paid from the treasury for IO by the buyback",
                &["token"],
            ),
            buyback_burned: counter(
                r,
                "solgrid_operator_buyback_burned_base_units_total",
                "Base units of IO bought back and burned from the treasury's reserve",
                &["token"],
            ),
            buyback_rounds: counter(
                r,
                "solgrid_operator_buyback_rounds_total",
                "Buyback periods closed, by outcome (completed, empty, failed)",
                &["outcome"],
            ),
            buyback_last_period: gauge(
                r,
                "solgrid_operator_buyback_last_period",
                "The last buyback period closed (unix time / buyback interval)",
            ),
        }
    }
}

/// Proof-of-work verification.
struct VerificationMetrics {
    verifications: IntCounterVec,
    verification_time_ratio: Histogram,
}

impl VerificationMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            verifications: counter(
                r,
                "solgrid_operator_verifications_total",
                "Proof-of-work verdicts (Passed, WrongResult, TooSlow, Inconclusive) and expiries (Expired)",
                &["result"],
            ),
            verification_time_ratio: register(
                r,
                Histogram::with_opts(histogram_opts(
                    "solgrid_operator_verification_time_ratio",
                    "A judged proof-of-work run's time (operator's clock) over its limit",
                    &[
                        0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0, 5.0,
                    ],
                ))
                .expect("valid metric"),
            ),
        }
    }
}

impl Metrics {
    /// A fresh registry with every metric registered, group by group.
    pub fn new() -> Self {
        let r = Registry::new();
        let rec = ReconcileMetrics::register(&r);
        let job = JobMetrics::register(&r);
        let money = MoneyMetrics::register(&r);
        let fleet = FleetMetrics::register(&r);
        let buyback = BuybackMetrics::register(&r);
        let pow = VerificationMetrics::register(&r);
        Self {
            registry: r,
            reconciles: rec.reconciles,
            reconcile_errors: rec.reconcile_errors,
            reconcile_duration: rec.reconcile_duration,
            jobs_by_phase: job.jobs_by_phase,
            job_transitions: job.job_transitions,
            gang_timeouts: job.gang_timeouts,
            escrowed: money.escrowed,
            settled: money.settled,
            burned: money.burned,
            to_treasury: money.to_treasury,
            refunded: money.refunded,
            pending_settlements: money.pending_settlements,
            ledger_errors: money.ledger_errors,
            is_leader: fleet.is_leader,
            gpunodes_by_phase: fleet.gpunodes_by_phase,
            gpus: fleet.gpus,
            market_price: fleet.market_price,
            buyback_swapped: buyback.buyback_swapped,
            buyback_burned: buyback.buyback_burned,
            buyback_rounds: buyback.buyback_rounds,
            buyback_last_period: buyback.buyback_last_period,
            verifications: pow.verifications,
            verification_time_ratio: pow.verification_time_ratio,
        }
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile(&self, controller: &str) -> ReconcileTimer {
        self.reconciles.with_label_values(&[controller]).inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.with_label_values(&[controller]),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failure(&self, controller: &str, error: &str) {
        self.reconcile_errors
            .with_label_values(&[controller, error])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names() {
        let m = Metrics::new();
        drop(m.reconcile("computejob"));
        m.escrowed.with_label_values(&["IO"]).inc_by(5);
        let text = m.render();
        assert!(text.contains("solgrid_operator_reconciles_total{controller=\"computejob\"} 1"));
        assert!(text.contains("solgrid_operator_escrowed_base_units_total{token=\"IO\"} 5"));
    }

    /// Every group registers every one of its metrics, under its own name.
    #[test]
    fn every_metric_is_registered() {
        let m = Metrics::new();
        let one = |c: &IntCounterVec| c.with_label_values(&vec!["x"; c_labels(c)]).inc();
        for c in [
            &m.reconciles,
            &m.reconcile_errors,
            &m.job_transitions,
            &m.gang_timeouts,
            &m.escrowed,
            &m.settled,
            &m.burned,
            &m.to_treasury,
            &m.refunded,
            &m.ledger_errors,
            &m.buyback_swapped,
            &m.buyback_burned,
            &m.buyback_rounds,
            &m.verifications,
        ] {
            one(c);
        }
        for g in [&m.jobs_by_phase, &m.gpunodes_by_phase, &m.market_price] {
            g.with_label_values(&["x"]).set(1);
        }
        m.gpus.with_label_values(&["x", "y"]).set(1);
        m.reconcile_duration.with_label_values(&["x"]).observe(0.1);
        m.verification_time_ratio.observe(0.5);
        let names: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(names.len(), 23, "{names:?}");
        for name in [
            "solgrid_operator_reconcile_duration_seconds",
            "solgrid_operator_jobs",
            "solgrid_operator_pending_settlements",
            "solgrid_operator_is_leader",
            "solgrid_operator_gpus",
            "solgrid_operator_buyback_last_period",
            "solgrid_operator_verification_time_ratio",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
    }

    /// How many labels the counter takes.
    fn c_labels(c: &IntCounterVec) -> usize {
        c.desc()[0].variable_labels.len()
    }
}
