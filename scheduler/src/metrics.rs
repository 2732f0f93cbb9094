//! Prometheus metrics of the extender.
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `solgrid_scheduler_requests_total` | counter | `verb`, `code` |
//! | `solgrid_scheduler_request_duration_seconds` | histogram | `verb` |
//! | `solgrid_scheduler_filter_decisions_total` | counter | `reason` (`passed` or a [`Reason`] label) |
//! | `solgrid_scheduler_passthrough_pods_total` | counter | `verb` |
//! | `solgrid_scheduler_cache_objects` | gauge | `kind` (`gpunode`, `node`, `computejob`) |
//! | `solgrid_scheduler_cache_rebuilds_total` | counter | |
//! | `solgrid_scheduler_cache_ready` | gauge | |
//! | `solgrid_scheduler_requests_rejected_total` | counter | `verb`, `reason` (`timeout`, `busy`, `too_large`) |
//! | `solgrid_scheduler_requests_in_flight` | gauge | |

use crate::reason::Reason;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The verbs served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Filter,
    Prioritize,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Filter => "filter",
            Verb::Prioritize => "prioritize",
        }
    }
}

/// All metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    decisions_passed: IntCounter,
    decisions: Vec<IntCounter>,
    passthrough: IntCounterVec,
    pub cache_gpunodes: IntGauge,
    pub cache_nodes: IntGauge,
    pub cache_jobs: IntGauge,
    pub cache_rebuilds: IntCounter,
    pub cache_ready: IntGauge,
    rejected: IntCounterVec,
    /// filter/prioritize requests holding a concurrency slot.
    pub in_flight: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "solgrid_scheduler_requests_total",
                "Extender requests by verb and HTTP status code",
            ),
            &["verb", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "solgrid_scheduler_request_duration_seconds",
                "Extender request latency (body read, parse, decide, encode) by verb",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["verb"],
        )
        .expect("valid metric");
        let decisions_vec = IntCounterVec::new(
            Opts::new(
                "solgrid_scheduler_filter_decisions_total",
                "Per-node filter decisions: passed, or the reason the node was filtered out",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let passthrough = IntCounterVec::new(
            Opts::new(
                "solgrid_scheduler_passthrough_pods_total",
                "Requests for pods that belong to no ComputeJob (all nodes pass, equal scores)",
            ),
            &["verb"],
        )
        .expect("valid metric");
        let cache = IntGaugeVec::new(
            Opts::new(
                "solgrid_scheduler_cache_objects",
                "Objects in the extender's cache by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let cache_rebuilds = IntCounter::new(
            "solgrid_scheduler_cache_rebuilds_total",
            "Times the cache index was rebuilt from the watches",
        )
        .expect("valid metric");
        let cache_ready = IntGauge::new(
            "solgrid_scheduler_cache_ready",
            "1 once every watch has listed its objects",
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "solgrid_scheduler_requests_rejected_total",
                "filter/prioritize requests answered with an error before a decision: timeout (no answer within --request-timeout-ms), busy (no concurrency slot in time), too_large (body over --max-body-bytes)",
            ),
            &["verb", "reason"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "solgrid_scheduler_requests_in_flight",
            "filter/prioritize requests holding one of the --max-concurrent-requests slots",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rejected.clone()),
            Box::new(in_flight.clone()),
            Box::new(duration.clone()),
            Box::new(decisions_vec.clone()),
            Box::new(passthrough.clone()),
            Box::new(cache.clone()),
            Box::new(cache_rebuilds.clone()),
            Box::new(cache_ready.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        let decisions = Reason::ALL
            .iter()
            .map(|r| decisions_vec.with_label_values(&[r.label()]))
            .collect();
        // pre-create the per-verb series so they show before the first request
        for v in [Verb::Filter, Verb::Prioritize] {
            duration.with_label_values(&[v.as_str()]);
            passthrough.with_label_values(&[v.as_str()]);
        }
        Metrics {
            registry,
            requests,
            duration,
            decisions_passed: decisions_vec.with_label_values(&["passed"]),
            decisions,
            passthrough,
            cache_gpunodes: cache.with_label_values(&["gpunode"]),
            cache_nodes: cache.with_label_values(&["node"]),
            cache_jobs: cache.with_label_values(&["computejob"]),
            cache_rebuilds,
            cache_ready,
            rejected,
            in_flight,
        }
    }

    /// A filter/prioritize request answered with an error before a decision.
    pub fn rejected(&self, verb: Verb, reason: &str) {
        self.rejected
            .with_label_values(&[verb.as_str(), reason])
            .inc();
    }

    pub fn observe_request(&self, verb: &str, code: u16, seconds: f64) {
        self.requests
            .with_label_values(&[verb, code.to_string().as_str()])
            .inc();
        if verb == "filter" || verb == "prioritize" {
            self.duration.with_label_values(&[verb]).observe(seconds);
        }
    }

    /// Adds one request's per-reason counts (indexed like [`Reason::ALL`]).
    pub fn add_decisions(&self, passed: u64, by_reason: &[u32]) {
        if passed > 0 {
            self.decisions_passed.inc_by(passed);
        }
        for (c, n) in self.decisions.iter().zip(by_reason) {
            if *n > 0 {
                c.inc_by(*n as u64);
            }
        }
    }

    pub fn passthrough(&self, verb: Verb) {
        self.passthrough.with_label_values(&[verb.as_str()]).inc();
    }

    pub fn set_cache_sizes(&self, gpunodes: usize, nodes: usize, jobs: usize) {
        self.cache_gpunodes.set(gpunodes as i64);
        self.cache_nodes.set(nodes as i64);
        self.cache_jobs.set(jobs as i64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
