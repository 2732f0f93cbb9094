//! `LedgerGrant`: an admin's funding of a wallet on the embedded ledger
//! (cluster-scoped).

use crate::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Mints `amount` base units of `token` into `wallet` on the embedded ledger,
/// exactly once (the object's UID is the ledger's idempotency key). Creating one is
/// the only way to fund a wallet on the embedded ledger, and only cluster
/// administrators may (no tenant role grants it); the object, its status and the
/// API server's audit log are the record. Immutable: to grant more, create another.
/// On Solana the operator does not mint: its status says `Unsupported`.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "solgrid.dev",
    version = "v1alpha1",
    kind = "LedgerGrant",
    plural = "ledgergrants",
    shortname = "lgrant",
    category = "solgrid",
    status = "LedgerGrantStatus",
    printcolumn = r#"{"name":"Wallet","type":"string","jsonPath":".spec.wallet"}"#,
    printcolumn = r#"{"name":"Token","type":"string","jsonPath":".spec.token"}"#,
    printcolumn = r#"{"name":"Amount","type":"integer","jsonPath":".spec.amount","description":"base units"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("a LedgerGrant is immutable: create another one"))]
#[serde(rename_all = "camelCase")]
pub struct LedgerGrantSpec {
    /// The wallet to fund: a base58 Solana address (an ed25519 public key).
    #[schemars(regex(pattern = "^[1-9A-HJ-NP-Za-km-z]{32,44}$"))]
    pub wallet: String,
    /// The token to mint.
    pub token: PaymentToken,
    /// Base units of the token (IO has 9 decimals, USDC 6).
    #[schemars(range(min = 1))]
    pub amount: u64,
}

/// Where a grant stands.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum LedgerGrantPhase {
    /// Not executed yet.
    #[default]
    Pending,
    /// Minted into the wallet (exactly once).
    Executed,
    /// Refused for good (e.g. a wallet no key can sign for); nothing moved.
    Failed,
    /// The operator settles on Solana, which has no admin mint for wallets.
    Unsupported,
}

/// What the operator did with a grant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerGrantStatus {
    #[serde(default)]
    pub phase: LedgerGrantPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The ledger's idempotency key of the grant (`grant/<uid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The ledger transaction that minted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Its position in the ledger's journal (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_seq: Option<u64>,
    /// When the operator recorded it executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_at: Option<Time>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
