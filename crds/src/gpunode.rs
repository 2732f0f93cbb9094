//! `GpuNode`: one per Kubernetes Node that has GPUs (cluster-scoped).

use crate::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// What a provider offers: a Node's GPUs, at a floor price, paid to a wallet.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "solgrid.dev",
    version = "v1alpha1",
    kind = "GpuNode",
    plural = "gpunodes",
    shortname = "gn",
    category = "solgrid",
    status = "GpuNodeStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"GPUs","type":"integer","jsonPath":".status.gpuCount"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".status.model"}"#,
    printcolumn = r#"{"name":"Reputation","type":"integer","jsonPath":".status.reputation.score"}"#,
    printcolumn = r#"{"name":"Stake","type":"integer","jsonPath":".status.stakeTotal","description":"IO base units staked on the node"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    selectable = ".spec.nodeName"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.payoutWallet.matches('^[1-9A-HJ-NP-Za-km-z]{32,44}$')").message("payoutWallet must be a base58 Solana address (32-44 characters)").field_path(".payoutWallet"))]
pub struct GpuNodeSpec {
    /// The Kubernetes Node this GpuNode stands for.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("nodeName is immutable"))]
    pub node_name: String,
    /// The provider's payout wallet (base58 Solana address).
    #[schemars(regex(pattern = r"^[1-9A-HJ-NP-Za-km-z]{32,44}$"))]
    pub payout_wallet: String,
    /// Where the node is.
    pub location: Location,
    /// The lowest price the provider accepts, in micro-USD per GPU-hour
    /// (converted to the payment token at the market's rate). 0 = no floor.
    #[serde(default)]
    #[schemars(range(max = 1_000_000_000))]
    pub floor_micro_usd_per_gpu_hour: u64,
    /// The provider's share of the node's idle rewards before stakers, in basis
    /// points (capped by the market's maximum commission).
    #[serde(default)]
    #[schemars(range(max = 10_000))]
    pub staker_commission_bps: u16,
    /// A draining node takes no new jobs; running ones finish.
    #[serde(default)]
    pub draining: bool,
}

/// The lifecycle of a GpuNode: the market's node phase (one definition, used by
/// the API as it is).
pub use solgrid_market::matching::NodePhase as GpuNodePhase;

/// Health of one GPU.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum GpuHealth {
    #[default]
    Healthy,
    Unhealthy,
}

/// One GPU, as the device plugin sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// The device ID advertised to the kubelet.
    pub id: String,
    /// The GPU's UUID (NVIDIA) or a stable id (Apple).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub vendor: GpuVendor,
    /// Model name, e.g. `NVIDIA GeForce RTX 4090`, `NVIDIA H100 80GB HBM3`, `Apple M2 Max`.
    pub model: String,
    /// Memory in MiB.
    #[schemars(range(max = 16_777_216))]
    pub vram_mib: u64,
    pub health: GpuHealth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i32>,
}

/// The reputation of a node, 0–1000, and its components (each 0–1000).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReputationStatus {
    #[schemars(range(max = 1000))]
    pub score: u16,
    #[schemars(range(max = 1000))]
    pub uptime: u16,
    #[schemars(range(max = 1000))]
    pub job_success: u16,
    #[schemars(range(max = 1000))]
    pub verification: u16,
    #[schemars(range(max = 1000))]
    pub age: u16,
}

/// What a node has earned, in base units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Earnings {
    /// Compute paid in IO (after the provider fee), by confirmed settlements.
    #[serde(default)]
    pub compute_io: u64,
    /// Compute paid in the stablecoin (after the provider fee), by confirmed settlements.
    #[serde(default)]
    pub compute_usdc: u64,
    /// Idle rewards (IO) to the provider's commission.
    #[serde(default)]
    pub idle_rewards_io: u64,
}

/// Proof-of-work verification record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Time>,
    /// `Passed`, `Failed` or `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    pub passed: u32,
    pub failed: u32,
    /// Whether the node has passed at least one verification since it was last
    /// slashed, and has not had `--verify-expire-after` inconclusive runs in a row since.
    pub verified: bool,
    /// Inconclusive runs since the last conclusive one (pod never ran, started
    /// late, failed without a report).
    #[serde(default)]
    pub inconclusive: u32,
}

/// A verification the node failed by cheating (a wrong or far-too-slow result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlashIncident {
    /// The incident's id, `p<verification period>`: a stake's slash key is
    /// `<position uid>/slash/<id>`.
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// When the failed verification started: positions locked (`activeSince`)
    /// before it are slashed.
    pub at: Time,
}

/// Job outcomes on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCounts {
    /// Jobs whose workers ended well (Succeeded, Expired at their maximum duration,
    /// or Cancelled by the requester).
    #[serde(default)]
    pub succeeded: u32,
    /// Failures the provider caused (worker lost, pod evicted or lost by the node),
    /// which cost reputation.
    #[serde(default)]
    pub failed_by_provider: u32,
    /// Failures the requester's code caused (a worker exited non-zero); no effect on
    /// reputation.
    #[serde(default)]
    pub failed_by_requester: u32,
    /// Jobs with workers on the node now (the number of `allocations`).
    #[serde(default)]
    pub running: u32,
    /// When the last outcome was counted (reputation decays from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Time>,
}

/// GPUs of the node held by a running job (written by the ComputeJob controller).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The ComputeJob's UID.
    #[schemars(length(max = 64))]
    pub uid: String,
    /// `<namespace>/<name>` of the ComputeJob.
    #[schemars(length(max = 317))]
    pub job: String,
    /// GPUs held: the job's workers on this node × `gpus.count`.
    pub gpus: u32,
    /// Since when (the job's `startTime`).
    pub since: Time,
}

/// A finished allocation: the GPUs a job held over `[from, to)`, kept for a few
/// hours so that idle rewards are weighted by the time a GPU was not allocated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationSpan {
    #[schemars(length(max = 64))]
    pub uid: String,
    pub gpus: u32,
    pub from: Time,
    pub to: Time,
}

/// What the operator and the device plugin know about a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeStatus {
    #[serde(default)]
    pub phase: GpuNodePhase,
    /// The GPU inventory, published by the device plugin.
    #[serde(default)]
    pub gpus: Vec<GpuDevice>,
    /// Number of GPUs (for printing).
    #[serde(default)]
    pub gpu_count: u32,
    /// GPUs currently allocated to jobs (the sum of `allocations`).
    #[serde(default)]
    pub allocated_gpus: u32,
    /// The main GPU model (for printing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub reputation: ReputationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Online without a break since (a restart resets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_since: Option<Time>,
    /// When the node was first seen (12 h before it is hired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Time>,
    /// IO base units staked on the node (Active and Unbonding positions).
    #[serde(default)]
    pub stake_total: u64,
    /// The stake the node needs to earn idle rewards, IO base units.
    #[serde(default)]
    pub minimum_stake: u64,
    /// Whether the node earns idle rewards now.
    #[serde(default)]
    pub reward_eligible: bool,
    /// Why it does or does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligibility_reason: Option<String>,
    #[serde(default)]
    pub earnings: Earnings,
    #[serde(default)]
    pub verification: VerificationStatus,
    /// The last time the node was caught cheating (written by the operator only,
    /// through the status subresource): the StakePosition controller slashes every
    /// position locked on the node before `at`, once per `id`. Kept after an admin
    /// clears the slash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slash_incident: Option<SlashIncident>,
    #[serde(default)]
    pub jobs: JobCounts,
    /// Running jobs holding GPUs here; `allocatedGpus` is their sum and
    /// `jobs.running` their number (written together, by the ComputeJob controller).
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub allocations: Vec<Allocation>,
    /// Allocations that ended in the last hours (idle rewards by time).
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub allocation_history: Vec<AllocationSpan>,
    /// Idempotency keys of the last bookings on this node (job outcomes and
    /// settlement earnings), the most recent last: each is applied exactly once.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub recorded: Vec<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
