//! Wallet Secrets: the owner's proof that a wallet may be debited.
//!
//! A ComputeJob's payer Secret and a StakePosition's owner Secret hold the wallet's
//! base58 `address` and its `keypair` (the Solana CLI JSON array of 64 bytes). On
//! every ledger (embedded or Solana) the keypair is what authorizes moving tokens
//! out of the wallet: it is handed to the ledger, which signs the debit with it and
//! verifies that signature as the debit is applied. An address alone moves
//! nothing, so a Secret naming another tenant's wallet funds nothing.
//!
//! Neither the keypair nor its bytes are ever logged, put in an error, an Event or
//! a status; the address (public) may be.

use crate::context::LedgerHandle;
use crate::{Context, Result};
use solgrid_crds::{SECRET_ADDRESS_KEY, SECRET_KEYPAIR_KEY};

/// A wallet address is base58, 32 to 44 characters (the API's own rule).
pub use solgrid_crds::valid_wallet;

/// Hands the keypair of `secret` to the ledger so that it can sign debits of
/// `address`, after checking that it *is* the keypair of `address`. `Err` is the
/// message for a condition (the Secret is not usable; nothing was registered).
pub async fn authorize_debits(
    ctx: &Context,
    secret: &str,
    address: &str,
    keypair: Option<Vec<u8>>,
) -> Result<std::result::Result<(), String>> {
    let Some(kp) = keypair else {
        return Ok(Err(format!(
            "Secret {secret} has no keypair for wallet {address}: an address alone moves nothing; \
             put the wallet's Solana keypair (JSON array of 64 bytes) under `{SECRET_KEYPAIR_KEY}` \
             (`kubectl solgrid wallet new` creates such a Secret)"
        )));
    };
    // Check the keypair before registering it, so that a keypair that is not this
    // wallet's is never kept by the ledger.
    let parsed = solgrid_ledger::WalletKeypair::from_secret_bytes(&kp);
    drop(kp);
    let kp = match parsed {
        Ok(kp) => kp,
        Err(e) => {
            return Ok(Err(format!(
                "the `{SECRET_KEYPAIR_KEY}` of Secret {secret} is not a Solana keypair ({e})"
            )));
        }
    };
    let owner = kp.address();
    if owner != address {
        return Ok(Err(format!(
            "the `{SECRET_KEYPAIR_KEY}` of Secret {secret} does not match its `{SECRET_ADDRESS_KEY}` \
             {address} (it is the keypair of {owner}): a wallet is debited only with its owner's keypair"
        )));
    }
    let registered = ctx
        .with_ledger(move |l: &LedgerHandle| l.register_signer(kp).map_err(|e| e.to_string()))
        .await?;
    match registered {
        Ok(a) if a == address => Ok(Ok(())),
        Ok(a) => Ok(Err(format!(
            "the ledger registered the keypair of Secret {secret} as {a}, not {address}"
        ))),
        Err(e) => Ok(Err(format!(
            "the ledger refused the keypair of Secret {secret}: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_syntax() {
        assert!(valid_wallet("7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"));
        assert!(!valid_wallet("alice"));
        assert!(!valid_wallet(
            "0xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"
        ));
    }
}
