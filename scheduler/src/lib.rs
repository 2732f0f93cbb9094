//! solgrid's kube-scheduler HTTP extender.
//!
//! kube-scheduler calls `POST /filter` and `POST /prioritize` (wire format of
//! `k8s.io/kube-scheduler/extender/v1`, see [`wire`]) for every pod of the
//! `solgrid-scheduler` profile. The extender answers from an in-memory [`cache`] of
//! GpuNodes, Nodes and ComputeJobs kept current by watches ([`watch`]) or read from
//! a file ([`snapshot`]); the decisions themselves are the market library's
//! ([`solgrid_market::matching`]), applied in [`extender`]. See docs/scheduler.md.

#![forbid(unsafe_code)]

pub mod cache;
pub mod convert;
pub mod extender;
pub mod metrics;
pub mod reason;
pub mod requeue;
pub mod server;
pub mod snapshot;
pub mod watch;
pub mod wire;

/// The default address of filter/prioritize (`--listen`, env
/// `SOLGRID_SCHEDULER_LISTEN`): loopback, since the extender is a sidecar of
/// kube-scheduler and no one else should reach it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8888";
/// The default address of /healthz, /readyz and /metrics (`--metrics-listen`, env
/// `SOLGRID_SCHEDULER_METRICS_LISTEN`): all interfaces, for the kubelet's probes and
/// Prometheus.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:8889";
/// The verbs kube-scheduler is configured with (deploy/kube-scheduler-config.yaml).
pub const FILTER_VERB: &str = "filter";
pub const PRIORITIZE_VERB: &str = "prioritize";
