//! Why the extender filtered a node out: a stable metric label, whether preemption
//! could help, and the sentence `kubectl describe pod` shows. Used by the
//! [`crate::extender`] (which decides) and [`crate::metrics`] (which counts), so it
//! sits below both.
//!
//! Reasons are worded per *job*, never per node (no node's own numbers in them):
//! kube-scheduler folds identical reasons into one line, so a per-node wording
//! would print thousands of lines.

use solgrid_market::matching::{JobRequirements, MatchConfig, NodePhase, RejectReason, Rejection};

/// Why a node was filtered out: a stable label (for metrics) and whether
/// preemption could not help (`FailedAndUnresolvableNodes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    UnknownNode,
    NotGpuNode,
    NotReady,
    Cordoned,
    Slashed,
    Offline,
    Draining,
    NotActive,
    TooNew,
    Understaked,
    Reputation,
    FloorAbovePrice,
    Region,
    NoGpus,
    Vendor,
    Model,
    Vram,
    NotEnoughFreeGpus,
    NotEnoughHealthyGpus,
    JobNotCached,
    JobRefused,
}

impl Reason {
    pub const ALL: [Reason; 21] = [
        Reason::UnknownNode,
        Reason::NotGpuNode,
        Reason::NotReady,
        Reason::Cordoned,
        Reason::Slashed,
        Reason::Offline,
        Reason::Draining,
        Reason::NotActive,
        Reason::TooNew,
        Reason::Understaked,
        Reason::Reputation,
        Reason::FloorAbovePrice,
        Reason::Region,
        Reason::NoGpus,
        Reason::Vendor,
        Reason::Model,
        Reason::Vram,
        Reason::NotEnoughFreeGpus,
        Reason::NotEnoughHealthyGpus,
        Reason::JobNotCached,
        Reason::JobRefused,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::UnknownNode => "unknown_node",
            Reason::NotGpuNode => "not_gpu_node",
            Reason::NotReady => "node_not_ready",
            Reason::Cordoned => "node_cordoned",
            Reason::Slashed => "slashed",
            Reason::Offline => "offline",
            Reason::Draining => "draining",
            Reason::NotActive => "not_active",
            Reason::TooNew => "too_new",
            Reason::Understaked => "understaked",
            Reason::Reputation => "reputation",
            Reason::FloorAbovePrice => "floor_above_price",
            Reason::Region => "region",
            Reason::NoGpus => "no_gpus",
            Reason::Vendor => "vendor",
            Reason::Model => "model",
            Reason::Vram => "vram",
            Reason::NotEnoughFreeGpus => "not_enough_free_gpus",
            Reason::NotEnoughHealthyGpus => "not_enough_healthy_gpus",
            Reason::JobNotCached => "job_not_cached",
            Reason::JobRefused => "job_refused",
        }
    }

    /// True for reasons no preemption can fix (→ `FailedAndUnresolvableNodes`).
    /// Transient states of the node (offline, draining, cordoned, not Ready, still
    /// verifying or too new, under-staked) and busy GPUs go to `FailedNodes`.
    pub fn unresolvable(self) -> bool {
        matches!(
            self,
            Reason::UnknownNode
                | Reason::NotGpuNode
                | Reason::Slashed
                | Reason::Reputation
                | Reason::FloorAbovePrice
                | Reason::Region
                | Reason::NoGpus
                | Reason::Vendor
                | Reason::Model
                | Reason::Vram
                | Reason::NotEnoughHealthyGpus
                | Reason::JobRefused
        )
    }

    /// Classifies a market rejection.
    pub fn of_rejection(r: &Rejection) -> Reason {
        match r.reason {
            RejectReason::NotActive { phase } => match phase {
                NodePhase::Slashed => Reason::Slashed,
                NodePhase::Offline => Reason::Offline,
                NodePhase::Draining => Reason::Draining,
                _ => Reason::NotActive,
            },
            RejectReason::Draining => Reason::Draining,
            RejectReason::TooNew { .. } => Reason::TooNew,
            RejectReason::Understaked { .. } => Reason::Understaked,
            RejectReason::Reputation { .. } => Reason::Reputation,
            RejectReason::FloorAbovePrice { .. } => Reason::FloorAbovePrice,
            RejectReason::Region => Reason::Region,
            RejectReason::NoGpus => Reason::NoGpus,
            RejectReason::Vendor { .. } => Reason::Vendor,
            RejectReason::Model { .. } => Reason::Model,
            RejectReason::Vram { .. } => Reason::Vram,
            RejectReason::NotEnoughGpus { .. } if r.unresolvable => Reason::NotEnoughHealthyGpus,
            RejectReason::NotEnoughGpus { .. } => Reason::NotEnoughFreeGpus,
        }
    }

    /// The sentence shown in `kubectl describe pod` (job-level values only).
    pub fn message(self, job: Option<&JobRequirements>, cfg: &MatchConfig) -> String {
        let need = job.map_or(1, |j| j.gpus_per_worker.max(1));
        let m = match self {
            Reason::UnknownNode => {
                "node is unknown to the solgrid scheduler's cache (no GpuNode for it)".to_string()
            }
            Reason::NotGpuNode => "node has no GpuNode (not a solgrid GPU node)".into(),
            Reason::NotReady => "node is not Ready".into(),
            Reason::Cordoned => "node is cordoned (unschedulable)".into(),
            Reason::Slashed => "node is Slashed (caught cheating)".into(),
            Reason::Offline => "node is Offline (heartbeats stopped)".into(),
            Reason::Draining => "node is draining".into(),
            Reason::NotActive => "node is not Active yet (pending or verifying)".into(),
            Reason::TooNew => format!(
                "node is too new: nodes are hired {} h after they are first seen",
                cfg.min_node_age_ms / 3_600_000
            ),
            Reason::Understaked => "node stake is below its minimum".into(),
            Reason::Reputation => format!(
                "node reputation is below the job's minimum {}",
                job.map_or(0, |j| j.min_reputation)
            ),
            Reason::FloorAbovePrice => format!(
                "provider floor price is above the job's locked price ({} micro-USD/GPU-hour)",
                job.map_or(0, |j| j.price_micro_usd)
            ),
            Reason::Region => format!(
                "node region is not among the job's required regions ({})",
                job.map_or(String::new(), |j| j.preferred_regions.join(", "))
            ),
            Reason::NoGpus => "node has no GPUs the market knows".into(),
            Reason::Vendor => format!(
                "node GPUs are not {}",
                job.and_then(|j| j.vendor)
                    .map_or("the job's vendor".to_string(), |v| v.to_string())
            ),
            Reason::Model => format!(
                "node GPU model is not among the job's models ({})",
                job.map_or("any".to_string(), |j| j.models.to_string())
            ),
            Reason::Vram => format!(
                "node GPU memory is below the job's minimum {} MiB",
                job.map_or(0, |j| j.min_vram_mib)
            ),
            Reason::NotEnoughFreeGpus => {
                format!("not enough free GPUs (the job needs {need} per worker)")
            }
            Reason::NotEnoughHealthyGpus => {
                format!(
                    "not enough healthy GPUs of the job's kind (the job needs {need} per worker)"
                )
            }
            Reason::JobNotCached => "the pod's ComputeJob is not in the cache yet".into(),
            Reason::JobRefused => "the pod's ComputeJob cannot be placed".into(),
        };
        format!("solgrid: {m}")
    }
}
