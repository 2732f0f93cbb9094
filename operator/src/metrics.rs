//! Prometheus metrics of the operator, served on `/metrics`.
//!
//! Amounts are base units of the token's mint, labelled by `token` (`IO`, `USDC`).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
    pub verification_time_ratio: prometheus::Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    /// A fresh registry with every metric registered. The names are constants, so
    /// registration cannot fail.
    pub fn new() -> Self {
        let r = Registry::new();
        let reconciles = counter(
            &r,
            "solgrid_operator_reconciles_total",
            "Reconciles run",
            &["controller"],
        );
        let reconcile_errors = counter(
            &r,
            "solgrid_operator_reconcile_errors_total",
            "Reconciles that failed",
            &["controller", "error"],
        );
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "solgrid_operator_reconcile_duration_seconds",
                "Reconcile duration",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )
        .expect("valid metric");
        r.register(Box::new(reconcile_duration.clone()))
            .expect("unique metric");
        let jobs_by_phase = IntGaugeVec::new(
            Opts::new("solgrid_operator_jobs", "ComputeJobs by phase"),
            &["phase"],
        )
        .expect("valid metric");
        r.register(Box::new(jobs_by_phase.clone()))
            .expect("unique metric");
        let job_transitions = counter(
            &r,
            "solgrid_operator_job_transitions_total",
            "ComputeJob phase transitions",
            &["from", "to"],
        );
        let escrowed = counter(
            &r,
            "solgrid_operator_escrowed_base_units_total",
            "Base units moved into escrow",
            &["token"],
        );
        let settled = counter(
            &r,
            "solgrid_operator_settled_base_units_total",
            "Base units paid to providers",
            &["token"],
        );
        let burned = counter(
            &r,
            "solgrid_operator_burned_base_units_total",
            "Base units of protocol fees burned",
            &["token"],
        );
        let to_treasury = counter(
            &r,
            "solgrid_operator_treasury_base_units_total",
            "Base units of stablecoin fees sent to the treasury's buyback account",
            &["token"],
        );
        let refunded = counter(
            &r,
            "solgrid_operator_refunded_base_units_total",
            "Base units of escrow refunded",
            &["token"],
        );
        let pending_settlements = IntGauge::new(
            "solgrid_operator_pending_settlements",
            "Settlements planned or sent, not yet confirmed",
        )
        .expect("valid metric");
        r.register(Box::new(pending_settlements.clone()))
            .expect("unique metric");
        let ledger_errors = counter(
            &r,
            "solgrid_operator_ledger_errors_total",
            "Ledger (Solana RPC or embedded) errors",
            &["ledger", "op"],
        );
        let gang_timeouts = counter(
            &r,
            "solgrid_operator_gang_timeouts_total",
            "Gangs released because not all workers ran in time",
            &["outcome"],
        );
        let is_leader = IntGauge::new(
            "solgrid_operator_is_leader",
            "1 while this replica holds the leader lease",
        )
        .expect("valid metric");
        r.register(Box::new(is_leader.clone()))
            .expect("unique metric");
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let gpunodes_by_phase = gauge_vec(
            "solgrid_operator_gpunodes",
            "GpuNodes by phase (from the cache)",
            &["phase"],
        );
        let gpus = gauge_vec(
            "solgrid_operator_gpus",
            "GPUs of Active nodes allocated or idle, and unhealthy GPUs, by model",
            &["model", "state"],
        );
        let market_price = gauge_vec(
            "solgrid_operator_market_price_micro_usd",
            "Quote of one GPU-hour now (normal urgency, one GPU), micro-USD, by model",
            &["model"],
        );
        let buyback_swapped = counter(
            &r,
            "solgrid_operator_buyback_swapped_base_units_total",
            "Base units of stablecoin paid from the treasury for IO by the buyback",
            &["token"],
        );
        let buyback_burned = counter(
            &r,
            "solgrid_operator_buyback_burned_base_units_total",
            "Base units of IO bought back and burned from the treasury's reserve",
            &["token"],
        );
        let buyback_rounds = counter(
            &r,
            "solgrid_operator_buyback_rounds_total",
            "Buyback periods closed, by outcome (completed, empty, failed)",
            &["outcome"],
        );
        let buyback_last_period = IntGauge::new(
            "solgrid_operator_buyback_last_period",
            "The last buyback period closed (unix time / buyback interval)",
        )
        .expect("valid metric");
        r.register(Box::new(buyback_last_period.clone()))
            .expect("unique metric");
        let verifications = counter(
            &r,
            "solgrid_operator_verifications_total",
            "Proof-of-work verdicts (Passed, WrongResult, TooSlow, Inconclusive) and expiries (Expired)",
            &["result"],
        );
        let verification_time_ratio = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "solgrid_operator_verification_time_ratio",
                "A judged proof-of-work run's time (operator's clock) over its limit",
            )
            .buckets(vec![
                0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0, 5.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(verification_time_ratio.clone()))
            .expect("unique metric");
        Self {
            registry: r,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            jobs_by_phase,
            job_transitions,
            escrowed,
            settled,
            burned,
            to_treasury,
            refunded,
            pending_settlements,
            ledger_errors,
            gang_timeouts,
            is_leader,
            gpunodes_by_phase,
            gpus,
            market_price,
            buyback_swapped,
            buyback_burned,
            buyback_rounds,
            buyback_last_period,
            verifications,
            verification_time_ratio,
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
    histogram: prometheus::Histogram,
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
}
