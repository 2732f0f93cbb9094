//! Wallets and funding: `kubectl solgrid wallet new` (a keypair Secret a job or a
//! stake can pay from) and `kubectl solgrid fund` (an admin's `LedgerGrant` on the
//! embedded ledger). The pure parts: the objects created and what a grant's status
//! means.
//!
//! A wallet Secret holds `address` (base58 public key) and `keypair` (the Solana CLI
//! JSON array of 64 bytes): on every ledger a wallet is debited only with its
//! owner's keypair. The keypair is written to the Secret and nowhere else: never
//! printed unless asked for a manifest (`--dry-run`), never logged.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use solgrid_crds::{
    LedgerGrant, LedgerGrantPhase, LedgerGrantSpec, PaymentToken, SECRET_ADDRESS_KEY,
    SECRET_KEYPAIR_KEY,
};
use solgrid_ledger::WalletKeypair;
use std::collections::BTreeMap;

/// Label on the Secrets `wallet new` creates.
pub use solgrid_crds::labels::LABEL_WALLET as WALLET_LABEL;
/// `generateName` prefix of the LedgerGrants `fund` creates.
pub const GRANT_PREFIX: &str = "fund-";

/// The wallet Secret for `keypair`: `address` and `keypair`, labelled.
pub fn wallet_secret(name: &str, namespace: &str, keypair: &WalletKeypair) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        SECRET_ADDRESS_KEY.to_string(),
        ByteString(keypair.address().into_bytes()),
    );
    data.insert(
        SECRET_KEYPAIR_KEY.to_string(),
        ByteString(keypair.to_solana_json().into_bytes()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                WALLET_LABEL.to_string(),
                "true".to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                solgrid_crds::labels::ANN_WALLET_ADDRESS.to_string(),
                keypair.address(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// The wallet address a Secret names (its `address`), when it is a valid one.
pub fn secret_address(secret: &Secret) -> Option<String> {
    let raw = solgrid_crds::secret_value(secret, SECRET_ADDRESS_KEY)?;
    let a = String::from_utf8(raw).ok()?.trim().to_string();
    solgrid_ledger::wallet::is_wallet_address(&a).then_some(a)
}

/// Parses a token name as the CRDs spell it (`IO`, `USDC`; case-insensitive).
pub fn parse_token(s: &str) -> Result<PaymentToken, String> {
    match s.to_ascii_uppercase().as_str() {
        "IO" => Ok(PaymentToken::Io),
        "USDC" => Ok(PaymentToken::Usdc),
        other => Err(format!("unknown token {other:?}: IO or USDC")),
    }
}

/// The LedgerGrant `fund` creates: `name`, or a generated name (`fund-xxxxx`).
pub fn ledger_grant(
    name: Option<&str>,
    wallet: &str,
    token: PaymentToken,
    amount: u64,
) -> Result<LedgerGrant, String> {
    if !solgrid_ledger::wallet::is_wallet_address(wallet) {
        return Err(format!(
            "{wallet:?} is not a wallet address (base58 ed25519 public key); \
             `kubectl solgrid wallet address --secret NAME` prints a wallet Secret's"
        ));
    }
    if amount == 0 {
        return Err("the amount must be at least 1 base unit".into());
    }
    let mut g = LedgerGrant::new(
        name.unwrap_or_default(),
        LedgerGrantSpec {
            wallet: wallet.to_string(),
            token,
            amount,
        },
    );
    if name.is_none() {
        g.metadata.name = None;
        g.metadata.generate_name = Some(GRANT_PREFIX.to_string());
    }
    Ok(g)
}

/// What a grant's status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantState {
    /// Not executed yet (the operator has not seen it).
    Pending,
    /// Minted: the message names the ledger transaction.
    Executed(String),
    /// Refused or unsupported: nothing moved.
    Refused(String),
}

/// The state of `grant` from its status.
pub fn grant_state(grant: &LedgerGrant) -> GrantState {
    let Some(st) = grant.status.as_ref() else {
        return GrantState::Pending;
    };
    let msg = st.message.clone().unwrap_or_default();
    match st.phase {
        LedgerGrantPhase::Pending => GrantState::Pending,
        LedgerGrantPhase::Executed => GrantState::Executed(format!(
            "ledger transaction {} (journal #{}, key {})",
            st.signature.as_deref().unwrap_or("?"),
            st.ledger_seq.map_or("?".to_string(), |s| s.to_string()),
            st.key.as_deref().unwrap_or("?"),
        )),
        LedgerGrantPhase::Failed => GrantState::Refused(format!("failed: {msg}")),
        LedgerGrantPhase::Unsupported => GrantState::Refused(format!("unsupported: {msg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_crds::LedgerGrantStatus;

    #[test]
    fn the_wallet_secret_holds_the_address_and_its_keypair() {
        let kp = WalletKeypair::from_seed([9; 32]);
        let s = wallet_secret("alice-wallet", "ml-team", &kp);
        assert_eq!(secret_address(&s).as_deref(), Some(kp.address().as_str()));
        let json = &s.data.as_ref().unwrap()[SECRET_KEYPAIR_KEY].0;
        let back = WalletKeypair::from_secret_bytes(json).unwrap();
        assert_eq!(back.address(), kp.address());
        assert_eq!(s.metadata.namespace.as_deref(), Some("ml-team"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
    }

    #[test]
    fn grants_are_checked_before_they_are_sent() {
        let w = WalletKeypair::from_seed([1; 32]).address();
        let g = ledger_grant(None, &w, PaymentToken::Io, 5).unwrap();
        assert_eq!(g.metadata.generate_name.as_deref(), Some(GRANT_PREFIX));
        assert!(g.metadata.name.is_none());
        let g = ledger_grant(Some("seed-alice"), &w, PaymentToken::Usdc, 5).unwrap();
        assert_eq!(g.metadata.name.as_deref(), Some("seed-alice"));
        assert!(ledger_grant(None, "alice", PaymentToken::Io, 5).is_err());
        assert!(ledger_grant(None, &w, PaymentToken::Io, 0).is_err());
        assert_eq!(parse_token("io"), Ok(PaymentToken::Io));
        assert!(parse_token("SOL").is_err());
    }

    #[test]
    fn grant_states() {
        let w = WalletKeypair::from_seed([1; 32]).address();
        let mut g = ledger_grant(Some("g"), &w, PaymentToken::Io, 5).unwrap();
        assert_eq!(grant_state(&g), GrantState::Pending);
        g.status = Some(LedgerGrantStatus {
            phase: LedgerGrantPhase::Executed,
            signature: Some("sig".into()),
            ledger_seq: Some(7),
            key: Some("grant/u".into()),
            ..Default::default()
        });
        assert_eq!(
            grant_state(&g),
            GrantState::Executed("ledger transaction sig (journal #7, key grant/u)".into())
        );
        g.status = Some(LedgerGrantStatus {
            phase: LedgerGrantPhase::Unsupported,
            message: Some("Solana".into()),
            ..Default::default()
        });
        assert_eq!(
            grant_state(&g),
            GrantState::Refused("unsupported: Solana".into())
        );
    }
}
