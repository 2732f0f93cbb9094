//! Types shared by the three resources.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A base58 Solana address: 32 to 44 characters of the base58 alphabet.
pub const WALLET_PATTERN: &str = "^[1-9A-HJ-NP-Za-km-z]{32,44}$";

/// Whether `s` is a wallet address ([`WALLET_PATTERN`]: 32 to 44 characters of the
/// base58 alphabet).
pub fn valid_wallet(s: &str) -> bool {
    (32..=44).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() && !matches!(c, b'0' | b'O' | b'I' | b'l'))
}

/// The payment token of a job.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum PaymentToken {
    /// The market's token; protocol fees paid in IO are burned. 2 % cheaper than a stablecoin.
    #[default]
    #[serde(rename = "IO")]
    Io,
    /// A stablecoin; fees go to the treasury's buyback account.
    #[serde(rename = "USDC")]
    Usdc,
}

impl std::fmt::Display for PaymentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PaymentToken::Io => "IO",
            PaymentToken::Usdc => "USDC",
        })
    }
}

/// A GPU vendor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    #[default]
    Nvidia,
    Apple,
}

impl GpuVendor {
    /// The extended resource the device plugin advertises for this vendor.
    pub fn resource_name(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "solgrid.dev/nvidia-gpu",
            GpuVendor::Apple => "solgrid.dev/apple-gpu",
        }
    }
}

impl std::fmt::Display for GpuVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Apple => "apple",
        })
    }
}

/// Geographic coordinates in degrees (used for proximity scoring only, never for money).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
pub struct Coordinates {
    #[schemars(range(min = -90.0, max = 90.0))]
    pub latitude: f64,
    #[schemars(range(min = -180.0, max = 180.0))]
    pub longitude: f64,
}

/// Where a node (or a requester) is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// Market region, e.g. `us-east`, `eu-west`, `ap-southeast`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub region: String,
    /// ISO 3166-1 alpha-2 country code, e.g. `DE`.
    #[schemars(regex(pattern = r"^[A-Z]{2}$"))]
    pub country: String,
    /// Optional coordinates, for proximity scoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
}

/// A reference to a Secret in the object's own namespace holding a wallet.
///
/// The Secret carries the wallet's base58 `address` and, where the ledger needs a
/// signature from the wallet (Solana), its `keypair` (the Solana CLI JSON array of
/// 64 bytes). Neither is ever logged or written to a status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletSecretRef {
    /// Name of the Secret (same namespace as the object).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// Keys of a wallet Secret.
pub const SECRET_ADDRESS_KEY: &str = "address";
/// Keys of a wallet Secret.
pub const SECRET_KEYPAIR_KEY: &str = "keypair";

/// The bytes under `key` in a wallet Secret: `data`, or `stringData` (a Secret not
/// stored yet, or one a test server echoes back).
pub fn secret_value(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes().to_vec())
        })
}

/// Where a settlement stands in the exactly-once protocol (ECONOMICS.md).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SettlementState {
    /// The plan and its idempotency key are recorded; nothing sent yet.
    #[default]
    Planned,
    /// Signed; signature and last valid block height recorded; sent or about to be.
    Sent,
    /// Landed and final.
    Confirmed,
    /// Landed and failed; needs attention (nothing moved).
    Failed,
}

/// One payout of a settlement plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payout {
    /// What is paid for: a node name, a staker's StakePosition, `refund`, ...
    pub to: String,
    /// The receiving wallet address.
    pub wallet: String,
    /// Base units.
    pub amount: u64,
}

/// A ledger operation recorded for exactly-once execution: the plan and its key are
/// written before anything is sent, the signature and last valid block height
/// before the transaction is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRecord {
    /// Idempotency key (`<uid>/<purpose-or-period>`), carried on chain in a memo.
    pub key: String,
    /// What the operation is: `escrow`, `settle`, `lock`, `withdraw`, `slash`, ...
    pub purpose: String,
    pub state: SettlementState,
    /// Transaction signature, once signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// After this block height the signed transaction can never land.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_valid_block_height: Option<u64>,
    /// When it was confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_wallet_is_the_pattern() {
        let re = regex::Regex::new(WALLET_PATTERN).unwrap();
        for s in [
            "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
            "11111111111111111111111111111111",
            "alice",
            "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAs0",
            "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsUxxxxxxxx",
            "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsO",
            "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAs-",
        ] {
            assert_eq!(valid_wallet(s), re.is_match(s), "{s}");
        }
    }
}
