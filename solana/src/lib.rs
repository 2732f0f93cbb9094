//! solgrid-solana: the Solana implementation of [`solgrid_market::ledger::Ledger`].
//!
//! SPL Token instructions only (no custom on-chain program):
//! `transfer_checked`, `burn_checked`, `mint_to_checked`, associated token accounts
//! for wallets, and a memo per intent carrying its idempotency key, so every
//! movement is auditable on chain.
//!
//! Custodial design: the operator's authority keypair owns four token accounts per
//! mint (escrow, treasury, emission pool, stake vault) at addresses derived with
//! `create_with_seed` from the authority (see [`SolanaLedger::custody_address`]),
//! and pays every fee and every rent deposit. Moving tokens *out of a user's wallet*
//! (escrow funding, a stake lock) needs that wallet's signature: register its
//! keypair with [`SolanaLedger::add_signer`] (or [`SolanaLedger::with_signers`]).
//!
//! The trait is synchronous; this crate uses the blocking `RpcClient` (which runs
//! its own small tokio runtime — call it from `spawn_blocking` in async code).
//! See `docs/solana.md`.

mod config;
mod error;
mod keys;
mod ledger;
pub mod testing;
pub mod validator;

pub use config::{Commitment, SolanaConfig};
pub use error::SolanaError;
pub use keys::{Authority, parse_keypair};
pub use ledger::{
    MAX_PROCESSING_AGE, MAX_TX_ACCOUNTS, MEMO_V1, MEMO_V2, PACKET_DATA_SIZE, SolanaLedger, TxShape,
    create_mint,
};

/// Re-exported so callers can build keypairs without naming the split crates.
pub use solana_keypair::Keypair;
/// Re-exported for address handling.
pub use solana_pubkey::Pubkey;
/// Re-exported so callers can ask a keypair for its address (`Signer::pubkey`).
pub use solana_signer::Signer;
