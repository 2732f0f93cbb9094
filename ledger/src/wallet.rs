//! Wallet ownership: ed25519 keypairs (the Solana CLI format) and the signatures
//! that authorize moving tokens *out of* a wallet.
//!
//! On the embedded ledger, as on Solana, an address alone moves nothing: every
//! intent that debits a wallet (a transfer or burn from `Account::Wallet`, amount
//! above zero) must carry an ed25519 signature by that wallet's key over the
//! intent's canonical bytes ([`intent_message`]); the ledger verifies it when the
//! debit is applied. A wallet address is the base58 encoding of the 32-byte public
//! key, exactly as on Solana, so one Secret (`address` + `keypair`) serves both
//! ledgers.
//!
//! Key material is never logged, never part of an error message, and never
//! written to the journal (only signatures are).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use solgrid_market::ledger::{Account, Intent, Op};
use std::collections::BTreeSet;
use std::fmt;

/// Domain separation of [`intent_message`]: a signature for the embedded ledger
/// cannot be mistaken for a signature over anything else.
pub const INTENT_DOMAIN: &[u8] = b"solgrid/embedded-ledger/intent/v1\n";

/// Why a keypair could not be read. Never carries key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeypairError {
    #[error("not a Solana keypair: {0}")]
    Format(&'static str),
    #[error("not a Solana keypair: expected 64 bytes, got {0}")]
    Length(usize),
    #[error("not a Solana keypair: the public half does not match the secret half")]
    Mismatch,
    #[error("no randomness available to generate a keypair: {0}")]
    Random(String),
}

/// A wallet's ed25519 keypair. `Debug` prints the address only.
#[derive(Clone)]
pub struct WalletKeypair(SigningKey);

impl fmt::Debug for WalletKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletKeypair({})", self.address())
    }
}

impl WalletKeypair {
    /// A fresh keypair from the operating system's randomness.
    pub fn generate() -> Result<Self, KeypairError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| KeypairError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&secret);
        secret.fill(0);
        Ok(Self(key))
    }

    /// A keypair from its 32-byte secret seed (deterministic: tests, fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// Parses the forms a Secret's `keypair` holds: the JSON array of 64 bytes that
    /// `solana-keygen` writes, or the raw 64 bytes (secret then public half). The
    /// public half must be the secret half's public key.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeypairError> {
        let raw: Vec<u8> = match std::str::from_utf8(bytes) {
            Ok(text) if text.trim_start().starts_with('[') => {
                let inner = text
                    .trim()
                    .strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .ok_or(KeypairError::Format("unterminated JSON array"))?;
                let mut out = Vec::with_capacity(64);
                for part in inner.split(',') {
                    let part = part.trim();
                    if part.is_empty() {
                        continue;
                    }
                    out.push(
                        part.parse::<u8>()
                            .map_err(|_| KeypairError::Format("JSON array holds a non-byte"))?,
                    );
                }
                out
            }
            _ => bytes.to_vec(),
        };
        let arr: [u8; 64] = raw
            .as_slice()
            .try_into()
            .map_err(|_| KeypairError::Length(raw.len()))?;
        SigningKey::from_keypair_bytes(&arr)
            .map(Self)
            .map_err(|_| KeypairError::Mismatch)
    }

    /// The wallet's address: base58 of the 32-byte public key (a Solana address).
    pub fn address(&self) -> String {
        bs58::encode(self.0.verifying_key().as_bytes()).into_string()
    }

    /// The Solana CLI form (`solana-keygen`'s file): a JSON array of the 64 bytes.
    /// Secret material: put it in a Kubernetes Secret, never in a log.
    pub fn to_solana_json(&self) -> String {
        let bytes = self.0.to_keypair_bytes();
        let parts: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
        format!("[{}]", parts.join(","))
    }

    /// Signs `intent` (its [`intent_message`]); base58 of the 64-byte signature.
    pub fn sign_intent(&self, intent: &Intent) -> String {
        bs58::encode(self.0.sign(&intent_message(intent)).to_bytes()).into_string()
    }
}

/// The canonical bytes a wallet owner signs: [`INTENT_DOMAIN`] followed by the
/// intent's JSON (fields in declaration order: key, then movements). The key binds
/// the signature to one settlement; the movements to the exact amounts and
/// counterparties.
pub fn intent_message(intent: &Intent) -> Vec<u8> {
    let mut out = INTENT_DOMAIN.to_vec();
    out.extend_from_slice(&serde_json::to_vec(intent).expect("an intent serializes"));
    out
}

/// The wallets an intent debits (transfers and burns out of a wallet, amount above
/// zero), each once, sorted: the signatures it needs.
pub fn debited_wallets(intent: &Intent) -> BTreeSet<&str> {
    intent
        .movements
        .iter()
        .filter_map(|m| match &m.op {
            Op::Transfer {
                from: Account::Wallet(w),
                amount,
                ..
            }
            | Op::Burn {
                from: Account::Wallet(w),
                amount,
            } if *amount > 0 => Some(w.as_str()),
            _ => None,
        })
        .collect()
}

/// The public key of a wallet address, when it is one (base58 of 32 bytes that
/// decode to a point on the curve).
pub fn wallet_key(address: &str) -> Option<VerifyingKey> {
    let bytes = bs58::decode(address).into_vec().ok()?;
    let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
    VerifyingKey::from_bytes(&arr).ok()
}

/// Whether `address` is an ed25519 public key in base58 (an address whose owner can
/// sign; funding anything else would lock the tokens forever).
pub fn is_wallet_address(address: &str) -> bool {
    wallet_key(address).is_some()
}

/// Checks `signature` (base58) by `wallet` over `intent`. `Err` says why, without
/// key material.
pub fn verify_intent(wallet: &str, intent: &Intent, signature: &str) -> Result<(), &'static str> {
    let key = wallet_key(wallet).ok_or("the wallet is not an ed25519 address")?;
    let bytes = bs58::decode(signature)
        .into_vec()
        .map_err(|_| "the signature is not base58")?;
    let arr: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| "the signature is not 64 bytes")?;
    key.verify(&intent_message(intent), &Signature::from_bytes(&arr))
        .map_err(|_| "the signature does not verify with the wallet's key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{io, transfer};
    use solgrid_market::ledger::{Movement, Token};

    fn debit(from: &str, amount: u64) -> Intent {
        transfer(
            "escrow/job-1",
            Account::Wallet(from.into()),
            Account::Escrow,
            amount,
        )
    }

    #[test]
    fn solana_cli_json_round_trips_and_address_is_base58_pubkey() {
        let kp = WalletKeypair::from_seed([7; 32]);
        let json = kp.to_solana_json();
        assert!(json.starts_with('[') && json.ends_with(']'));
        assert_eq!(json.split(',').count(), 64);
        let back = WalletKeypair::from_secret_bytes(json.as_bytes()).unwrap();
        assert_eq!(back.address(), kp.address());
        assert!(is_wallet_address(&kp.address()));
        assert_eq!(bs58::decode(kp.address()).into_vec().unwrap().len(), 32);
        // raw 64 bytes too, and a pretty-printed file
        let raw: Vec<u8> = json
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(
            WalletKeypair::from_secret_bytes(&raw).unwrap().address(),
            kp.address()
        );
        let pretty = format!("\n  {}\n", json.replace(',', ",\n  "));
        assert_eq!(
            WalletKeypair::from_secret_bytes(pretty.as_bytes())
                .unwrap()
                .address(),
            kp.address()
        );
    }

    #[test]
    fn malformed_keypairs_are_refused_without_echoing_them() {
        assert_eq!(
            WalletKeypair::from_secret_bytes(b"[1,2,3]").unwrap_err(),
            KeypairError::Length(3)
        );
        assert!(WalletKeypair::from_secret_bytes(b"[1,2,").is_err());
        assert!(WalletKeypair::from_secret_bytes(b"[1,2,300]").is_err());
        // public half of another key
        let a = WalletKeypair::from_seed([1; 32]).0.to_keypair_bytes();
        let b = WalletKeypair::from_seed([2; 32]).0.to_keypair_bytes();
        let mut mixed = a;
        mixed[32..].copy_from_slice(&b[32..]);
        let err = WalletKeypair::from_secret_bytes(&mixed).unwrap_err();
        assert_eq!(err, KeypairError::Mismatch);
        assert!(!err.to_string().contains(&a[0].to_string()) || a[0] < 10);
        let dbg = format!("{:?}", WalletKeypair::from_seed([1; 32]));
        assert!(dbg.starts_with("WalletKeypair(") && !dbg.contains('['));
    }

    #[test]
    fn signatures_bind_wallet_key_and_amounts() {
        let kp = WalletKeypair::from_seed([3; 32]);
        let other = WalletKeypair::from_seed([4; 32]);
        let i = debit(&kp.address(), 100);
        let sig = kp.sign_intent(&i);
        assert_eq!(verify_intent(&kp.address(), &i, &sig), Ok(()));
        // another key's signature
        assert!(verify_intent(&kp.address(), &i, &other.sign_intent(&i)).is_err());
        // the same signature over another amount or key
        assert!(verify_intent(&kp.address(), &debit(&kp.address(), 101), &sig).is_err());
        let mut rekeyed = i.clone();
        rekeyed.key = "escrow/job-2".into();
        assert!(verify_intent(&kp.address(), &rekeyed, &sig).is_err());
        // not an address, not a signature
        assert!(verify_intent("alice", &i, &sig).is_err());
        assert!(verify_intent(&kp.address(), &i, "0OIl").is_err());
    }

    #[test]
    fn debited_wallets_are_the_nonzero_sources() {
        let mut i = debit("a", 5);
        i.movements.push(io(Op::Burn {
            from: Account::Wallet("b".into()),
            amount: 0,
        }));
        i.movements.push(io(Op::Transfer {
            from: Account::Escrow,
            to: Account::Wallet("c".into()),
            amount: 5,
        }));
        i.movements.push(Movement {
            token: Token::Usdc,
            op: Op::Transfer {
                from: Account::Wallet("a".into()),
                to: Account::Treasury,
                amount: 1,
            },
        });
        assert_eq!(debited_wallets(&i).into_iter().collect::<Vec<_>>(), ["a"]);
    }
}
