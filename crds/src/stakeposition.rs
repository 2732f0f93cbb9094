//! `StakePosition`: tokens locked on a GpuNode (namespaced).

use crate::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Stake backing a node: it earns a share of the node's idle rewards and is what
/// is lost when the node cheats.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "solgrid.dev",
    version = "v1alpha1",
    kind = "StakePosition",
    plural = "stakepositions",
    shortname = "sp",
    category = "solgrid",
    namespaced,
    status = "StakePositionStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Amount","type":"integer","jsonPath":".spec.amount","description":"IO base units"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    selectable = ".spec.nodeName"
)]
#[serde(rename_all = "camelCase")]
pub struct StakePositionSpec {
    /// The GpuNode this stake backs.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("nodeName is immutable: create another StakePosition"))]
    pub node_name: String,
    /// IO base units to lock.
    #[schemars(range(min = 1))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("amount is immutable: create another StakePosition"))]
    pub amount: u64,
    /// The Secret (in this namespace) holding the owner's wallet.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("ownerSecretRef is immutable"))]
    pub owner_secret_ref: WalletSecretRef,
    /// Set to start unbonding; the stake still backs the node (and can be slashed)
    /// until the unbonding period ends, then it is withdrawn to the owner.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("!oldSelf || self").message("unbonding cannot be undone: create a new StakePosition"))]
    pub unbond: bool,
}

/// The lifecycle of a stake.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum StakePhase {
    #[default]
    Pending,
    Active,
    Unbonding,
    Withdrawn,
    Slashed,
}

/// What the operator knows about a stake.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StakePositionStatus {
    #[serde(default)]
    pub phase: StakePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The owner's wallet address (never its keypair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_wallet: Option<String>,
    /// IO base units locked in the stake vault for this position now.
    #[serde(default)]
    pub locked: u64,
    /// Exactly-once records of the ledger operations (lock, withdraw, slash), with
    /// their on-chain signatures.
    #[serde(default)]
    pub operations: Vec<LedgerRecord>,
    /// Idle rewards paid to the owner, IO base units.
    #[serde(default)]
    pub rewards_accrued: u64,
    /// Burned by slashing, IO base units.
    #[serde(default)]
    pub slashed_amount: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_since: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unbonding_ends_at: Option<Time>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
