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
pub mod server;
pub mod snapshot;
pub mod watch;
pub mod wire;

/// The default listen address (`--listen`, env `SOLGRID_SCHEDULER_LISTEN`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8888";
/// The verbs kube-scheduler is configured with (deploy/kube-scheduler-config.yaml).
pub const FILTER_VERB: &str = "filter";
pub const PRIORITIZE_VERB: &str = "prioritize";
