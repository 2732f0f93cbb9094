//! The size model of a Solana transaction, shared by every `Ledger` implementation so
//! that batching behaves alike on the embedded ledger and on Solana.
//!
//! A legacy Solana transaction is at most [`MAX_TX_BYTES`] (1,232) bytes:
//!
//! ```text
//! compact-u16 #signatures, 64 bytes per signature
//! message header (3 bytes)
//! compact-u16 #account keys, 32 bytes per distinct key
//! recent blockhash (32 bytes)
//! compact-u16 #instructions, then per instruction:
//!   program id index (1), compact-u16 #accounts + 1 byte per account index,
//!   compact-u16 data length + data
//! ```
//!
//! The model counts, for a batch of intents:
//! - signers: the operator's authority (fee payer, owner of every custodial account,
//!   mint authority) plus every distinct `Wallet` that is the source of a transfer or
//!   a burn (it must sign);
//! - account keys: the signers, the SPL Token program, the Memo program, one mint per
//!   token used, and one token account per distinct (account, token) touched;
//! - instructions: `transfer_checked` (4 accounts, 10 data bytes), `burn_checked`
//!   (3 accounts, 10 bytes), `mint_to_checked` (3 accounts, 10 bytes), and one memo
//!   instruction per intent carrying its idempotency key (0 accounts, the key's bytes).
//!
//! This is exact for a legacy transaction built that way; an implementation that
//! builds its transactions differently (e.g. with address lookup tables) may
//! compute its own, smaller, size but should never claim more fits than this.

use solgrid_market::ledger::{Account, Intent, Op, Token};
use std::collections::BTreeSet;

/// Solana's packet limit for one transaction (IPv6 MTU 1280 - 48 bytes of headers).
pub const MAX_TX_BYTES: usize = 1232;
/// Bytes per signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Bytes per account key (a public key).
pub const KEY_BYTES: usize = 32;
/// Bytes of data of `transfer_checked`, `burn_checked`, `mint_to_checked`:
/// 1 instruction tag + 8 amount + 1 decimals.
pub const TOKEN_IX_DATA_BYTES: usize = 10;

/// Length of Solana's compact-u16 encoding of `n`.
pub fn compact_u16_len(n: usize) -> usize {
    if n < 0x80 {
        1
    } else if n < 0x4000 {
        2
    } else {
        3
    }
}

fn ix_len(accounts: usize, data: usize) -> usize {
    1 + compact_u16_len(accounts) + accounts + compact_u16_len(data) + data
}

/// The estimated serialized size, in bytes, of one transaction carrying `intents`.
pub fn estimate_tx_size(intents: &[Intent]) -> usize {
    // signer wallets (besides the authority) and token accounts
    let mut signers: BTreeSet<&str> = BTreeSet::new();
    let mut token_accounts: BTreeSet<(&Account, Token)> = BTreeSet::new();
    let mut mints: BTreeSet<Token> = BTreeSet::new();
    let mut ix_bytes = 0usize;
    let mut n_ix = 0usize;
    for intent in intents {
        for m in &intent.movements {
            mints.insert(m.token);
            match &m.op {
                Op::Transfer { from, to, .. } => {
                    if let Account::Wallet(w) = from {
                        signers.insert(w.as_str());
                    }
                    token_accounts.insert((from, m.token));
                    token_accounts.insert((to, m.token));
                    ix_bytes += ix_len(4, TOKEN_IX_DATA_BYTES);
                }
                Op::Burn { from, .. } => {
                    if let Account::Wallet(w) = from {
                        signers.insert(w.as_str());
                    }
                    token_accounts.insert((from, m.token));
                    ix_bytes += ix_len(3, TOKEN_IX_DATA_BYTES);
                }
                Op::Mint { to, .. } => {
                    token_accounts.insert((to, m.token));
                    ix_bytes += ix_len(3, TOKEN_IX_DATA_BYTES);
                }
            }
            n_ix += 1;
        }
        // the memo carrying the idempotency key
        ix_bytes += ix_len(0, intent.key.len());
        n_ix += 1;
    }
    let n_signers = 1 + signers.len();
    // signers + token program + memo program + mints + token accounts
    let n_keys = n_signers + 2 + mints.len() + token_accounts.len();
    compact_u16_len(n_signers)
        + n_signers * SIGNATURE_BYTES
        + 3
        + compact_u16_len(n_keys)
        + n_keys * KEY_BYTES
        + 32
        + compact_u16_len(n_ix)
        + ix_bytes
}

/// Whether `intents` fit in one transaction of at most `max_bytes`.
pub fn fits_in(intents: &[Intent], max_bytes: usize) -> bool {
    !intents.is_empty() && estimate_tx_size(intents) <= max_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::io;

    fn payout(i: usize) -> Intent {
        crate::testing::payout(
            format!("job-{i:04}/p0"),
            Account::Wallet(format!("provider-{i}")),
            100,
            1,
        )
    }

    #[test]
    fn compact_u16_boundaries() {
        assert_eq!(compact_u16_len(0), 1);
        assert_eq!(compact_u16_len(127), 1);
        assert_eq!(compact_u16_len(128), 2);
        assert_eq!(compact_u16_len(16383), 2);
        assert_eq!(compact_u16_len(16384), 3);
    }

    #[test]
    fn one_payout_size_is_exact() {
        // 1 signer; keys: authority, token program, memo program, IO mint,
        // escrow ATA, provider ATA = 6; ixs: transfer(17) + burn(16) + memo(3 + 11)
        let size = estimate_tx_size(&[payout(0)]);
        let expected = 1 + 64 + 3 + 1 + 6 * 32 + 32 + 1 + 17 + 16 + (1 + 1 + 1 + 11);
        assert_eq!(size, expected);
    }

    #[test]
    fn several_payouts_fit_but_not_unboundedly_many() {
        let batch: Vec<Intent> = (0..20).map(payout).collect();
        let n = (1..=batch.len())
            .take_while(|&n| fits_in(&batch[..n], MAX_TX_BYTES))
            .last()
            .unwrap();
        assert!((5..=15).contains(&n), "{n} payouts per tx");
        assert!(!fits_in(&batch, MAX_TX_BYTES));
        assert!(!fits_in(&[], MAX_TX_BYTES));
    }

    #[test]
    fn wallet_sources_add_a_signer() {
        let mut a = payout(0);
        let base = estimate_tx_size(std::slice::from_ref(&a));
        a.movements.push(io(Op::Transfer {
            from: Account::Wallet("payer".into()),
            to: Account::Escrow,
            amount: 5,
        }));
        // + signature (64) + owner key (32) + payer ATA (32) + transfer ix (17)
        assert_eq!(estimate_tx_size(&[a]), base + 64 + 32 + 32 + 17);
    }
}
