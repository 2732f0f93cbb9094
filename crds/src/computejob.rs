//! `ComputeJob`: a developer's request for GPUs (namespaced).

use crate::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A job: N workers of G GPUs each, run all together, paid by the GPU-second at a
/// locked price.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "solgrid.dev",
    version = "v1alpha1",
    kind = "ComputeJob",
    plural = "computejobs",
    shortname = "cjob",
    category = "solgrid",
    namespaced,
    status = "ComputeJobStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"GPUs","type":"integer","jsonPath":".spec.gpus.count","description":"GPUs per worker"}"#,
    printcolumn = r#"{"name":"Workers","type":"integer","jsonPath":".spec.workers"}"#,
    printcolumn = r#"{"name":"Price","type":"integer","jsonPath":".status.quote.pricePerGpuHour","description":"locked price per GPU-hour, base units"}"#,
    printcolumn = r#"{"name":"Token","type":"string","jsonPath":".spec.paymentToken","priority":1}"#,
    printcolumn = r#"{"name":"Cost","type":"integer","jsonPath":".status.cost.paid","description":"paid by the requester, base units"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.workers >= 1 && self.gpus.count >= 1 && self.gpus.count * self.workers <= 1024").message("workers x gpus.count must be between 1 and 1024 GPUs").field_path(".workers"))]
#[x_kube(validation = kube::core::Rule::new("self.maxPricePerGpuHour > 0").message("maxPricePerGpuHour must be above 0").field_path(".maxPricePerGpuHour"))]
#[x_kube(validation = kube::core::Rule::new("self.regionPolicy != 'Require' || size(self.preferredRegions) > 0").message("regionPolicy Require needs at least one preferredRegions entry").field_path(".preferredRegions"))]
pub struct ComputeJobSpec {
    /// What each worker runs.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("template is immutable: create a new ComputeJob"))]
    pub template: WorkerTemplate,
    /// GPUs each worker needs.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("gpus is immutable: create a new ComputeJob"))]
    pub gpus: GpuRequest,
    /// Number of workers; all run together or none (gang).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("workers is immutable: create a new ComputeJob"))]
    pub workers: u32,
    /// The longest the job may run; escrow covers this much.
    #[schemars(range(min = 60, max = 2_592_000))]
    #[x_kube(validation = kube::core::Rule::new("self <= oldSelf").message("maxDurationSeconds can only be shortened (escrow was sized for it)"))]
    pub max_duration_seconds: u64,
    #[serde(default)]
    pub urgency: Urgency,
    /// The most the developer pays per GPU-hour, in base units of the payment token.
    /// A job whose cap is below the market price waits (condition `Quoted=False`).
    #[schemars(range(min = 1))]
    pub max_price_per_gpu_hour: u64,
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("paymentToken is immutable"))]
    pub payment_token: PaymentToken,
    /// The Secret (in this namespace) holding the payer's wallet.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("payerSecretRef is immutable"))]
    pub payer_secret_ref: WalletSecretRef,
    /// Regions the job prefers (or requires, per `regionPolicy`).
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub preferred_regions: Vec<String>,
    #[serde(default)]
    pub region_policy: RegionPolicy,
    /// Where the requester is, for proximity scoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Coordinates>,
    /// Nodes below this reputation (0–1000) are not used.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub min_reputation: u16,
    /// How placement leans: on price, on speed, or balanced.
    #[serde(default)]
    pub preference: Preference,
    /// How long all workers have to be running before the gang is released and retried.
    #[serde(default = "default_gang_timeout")]
    #[schemars(range(min = 10, max = 3600))]
    pub gang_timeout_seconds: u32,
    /// Set to cancel the job: running workers stop, used time is paid, the rest refunded.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("!oldSelf || self").message("a cancelled job cannot be resumed"))]
    pub cancel: bool,
}

fn one() -> u32 {
    1
}

fn default_gang_timeout() -> u32 {
    300
}

/// An environment variable of a worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct EnvVar {
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    )]
    pub name: String,
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// The container each worker runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// Container image.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub args: Vec<String>,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub env: Vec<EnvVar>,
}

/// GPUs per worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.vendor != 'apple' || self.count == 1").message("Apple GPUs are allocated one per worker"))]
pub struct GpuRequest {
    /// GPUs per worker.
    #[schemars(range(min = 1, max = 16))]
    pub count: u32,
    #[serde(default)]
    pub vendor: GpuVendor,
    /// Allowed models (e.g. `RTX 4090`, `A100 80GB`, `H100`); empty means any.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    pub models: Vec<String>,
    /// Minimum memory per GPU, MiB.
    #[serde(default)]
    #[schemars(range(max = 1_048_576))]
    pub min_vram_mib: u64,
}

/// How soon the developer needs the GPUs, and how placement weighs price against
/// speed: the market's own enums (one definition, used by the API as they are).
pub use solgrid_market::matching::Preference;
pub use solgrid_market::pricing::Urgency;

/// Whether `preferredRegions` only scores nodes or also excludes the others.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum RegionPolicy {
    /// Nodes in preferred regions score higher.
    #[default]
    Prefer,
    /// Only nodes in preferred regions are used.
    Require,
}

/// The lifecycle of a job.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ComputeJobPhase {
    #[default]
    Pending,
    /// Price locked.
    Quoted,
    /// Maximum cost in escrow.
    Funded,
    /// Worker pods created, waiting for all of them to run.
    Scheduling,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Stopped at its maximum duration or budget.
    Expired,
    /// Paid, fees burned, escrow refunded.
    Settled,
}

impl ComputeJobPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [ComputeJobPhase; 10] = [
        Self::Pending,
        Self::Quoted,
        Self::Funded,
        Self::Scheduling,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
        Self::Settled,
    ];

    /// Whether the job has stopped running (it still has to settle unless `Settled`).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Expired | Self::Settled
        )
    }
}

/// The locked quote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// Locked price per GPU-hour, base units of `token`.
    pub price_per_gpu_hour: u64,
    pub token: PaymentToken,
    /// The model's reference price before factors, base units of `token`.
    pub reference_price_per_gpu_hour: u64,
    /// Factors applied, in basis points (10,000 = ×1).
    pub urgency_factor_bps: u32,
    pub complexity_factor_bps: u32,
    pub supply_factor_bps: u32,
    /// The most the job can cost (what goes into escrow), base units.
    pub max_cost: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_at: Option<Time>,
}

/// One worker pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub index: u32,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The pod's phase.
    #[serde(default)]
    pub phase: String,
    /// The node's payout wallet, snapshotted when the job started: a later change of
    /// the GpuNode's `spec.payoutWallet` never redirects money already earned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_wallet: Option<String>,
}

/// GPU time a node delivered to the job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    /// The GpuNode.
    pub node: String,
    /// Its payout wallet.
    pub wallet: String,
    /// GPU-milliseconds delivered.
    pub gpu_ms: u64,
}

/// What the job cost, base units of its token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostBreakdown {
    /// Compute cost C.
    pub compute: u64,
    /// Requester fee Fr.
    pub requester_fee: u64,
    /// Provider fee Fp.
    pub provider_fee: u64,
    /// Stablecoin surcharge S.
    pub surcharge: u64,
    /// Paid by the requester: C + Fr + S.
    pub paid: u64,
    /// Received by providers: C − Fp.
    pub received: u64,
    /// Burned (IO) — the protocol's share.
    pub burned: u64,
    /// Sent to the treasury's buyback account (stablecoin).
    pub to_treasury: u64,
    /// Escrow returned to the payer.
    pub refunded: u64,
}

/// One settlement period of a job (an hour of a long one, or the whole job).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSettlement {
    /// 0-based period.
    pub period: u32,
    /// The exactly-once record (key `<job uid>/<period>`).
    pub record: LedgerRecord,
    /// Usage settled in this period.
    pub usage: Vec<NodeUsage>,
    /// The plan: payouts to providers.
    pub payouts: Vec<Payout>,
    pub cost: CostBreakdown,
    /// A settlement too large for one transaction is sent as several parts, each
    /// exactly once: `record` is part 0, these are parts 1, 2, ... (empty: the
    /// whole settlement is one transaction, as before parts existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<SettlementPart>,
}

/// A further transaction of a settlement too large for one (part 0 is the
/// settlement's own `record`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettlementPart {
    /// Its exactly-once record (key `<job uid>/<period>/<part>`).
    pub record: LedgerRecord,
    /// The first of the settlement's movements that this part carries, in plan
    /// order (provider payouts, burn, treasury, refund); it carries them up to the
    /// next part's first (or the end).
    pub first_movement: u32,
}

impl JobSettlement {
    /// The exactly-once records of every part, in order (`record` first).
    pub fn records(&self) -> impl Iterator<Item = &LedgerRecord> {
        std::iter::once(&self.record).chain(self.parts.iter().map(|p| &p.record))
    }

    /// The settlement's state as a whole: `Planned`/`Sent` while any part is (the
    /// one furthest along: `Sent` if any is), else `Failed` if any part failed, else
    /// `Confirmed` (every part confirmed).
    pub fn state(&self) -> SettlementState {
        let mut any_planned = false;
        let mut any_failed = false;
        for r in self.records() {
            match r.state {
                SettlementState::Sent => return SettlementState::Sent,
                SettlementState::Planned => any_planned = true,
                SettlementState::Failed => any_failed = true,
                SettlementState::Confirmed => {}
            }
        }
        if any_planned {
            SettlementState::Planned
        } else if any_failed {
            SettlementState::Failed
        } else {
            SettlementState::Confirmed
        }
    }
}

/// How a job ended, as its GpuNodes count it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum JobOutcome {
    /// Not counted (the job never ran, or its workers never formed a gang).
    #[default]
    None,
    /// Succeeded, Expired or Cancelled.
    Succeeded,
    /// A worker was lost or failed for a node-side reason.
    FailedByProvider,
    /// A worker exited non-zero.
    FailedByRequester,
}

/// What a job has recorded on its GpuNodes: each step at most once (the GpuNodes
/// also keep the keys, so a step replayed after a crash changes nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeBook {
    /// The allocation is written on every node of the job.
    #[serde(default)]
    pub allocated: bool,
    /// How the job ended (decided when it finished).
    #[serde(default)]
    pub outcome: JobOutcome,
    /// The nodes whose fault a `FailedByProvider` was (the others count nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faulty_nodes: Vec<String>,
    /// The allocation is released and the outcome counted on every node.
    #[serde(default)]
    pub released: bool,
    /// How many of `settlements` (in order) have their earnings added to the nodes.
    #[serde(default)]
    pub settlements_booked: u32,
}

impl NodeBook {
    /// Nothing recorded yet.
    pub fn is_empty(&self) -> bool {
        *self == NodeBook::default()
    }
}

/// What the operator knows about a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeJobStatus {
    #[serde(default)]
    pub phase: ComputeJobPhase,
    /// A one-line reason for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// The payer's wallet address (never its keypair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_wallet: Option<String>,
    /// The escrow funding record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<LedgerRecord>,
    /// Base units in escrow for this job now.
    #[serde(default)]
    pub escrowed: u64,
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
    /// Nodes the job ran on.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Gang placements tried.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_since: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// When a running job ends at the latest: `startTime + maxDurationSeconds`. A
    /// shorter `maxDurationSeconds` seen while the job runs moves it to no earlier
    /// than the moment the operator observed the change, so time already used is
    /// always billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
    /// The `maxDurationSeconds` that `deadline` was last computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub deadline_duration_seconds: Option<u64>,
    /// GPU-seconds used so far.
    #[serde(default)]
    pub gpu_seconds: u64,
    /// Usage per node, GPU-milliseconds (not yet settled).
    #[serde(default)]
    pub usage: Vec<NodeUsage>,
    /// Totals over all settled periods.
    #[serde(default)]
    pub cost: CostBreakdown,
    #[serde(default)]
    pub settlements: Vec<JobSettlement>,
    /// What the job has recorded on its GpuNodes.
    #[serde(default, skip_serializing_if = "NodeBook::is_empty")]
    pub node_book: NodeBook,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
