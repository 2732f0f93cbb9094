//! solgrid-ledger: the embedded ledger (and, re-exported, the settlement executor).
//!
//! - [`EmbeddedLedger`]: an implementation of [`solgrid_market::ledger::Ledger`] on
//!   one machine (a journal file, or memory) with Solana's transaction semantics.
//! - [`settle`]: the exactly-once settlement protocol of ECONOMICS.md, generic over
//!   any `Ledger` and any [`settle::SettlementStore`] — the `solgrid-settlement` crate,
//!   re-exported here at its old paths (a Solana deployment links that crate alone).
//! - [`txsize`]: the transaction size model shared with the Solana implementation.
//! - `testing` (feature `testing`): crash-injection wrappers and a randomized fault
//!   harness, generic over any `Ledger`, to rerun against Solana.
//!
//! See `docs/ledger.md`.

pub mod embedded;
pub use solgrid_settlement as settle;
#[cfg(feature = "testing")]
pub mod testing;
pub mod txsize;
pub mod wallet;

pub use embedded::{
    AuditEntry, EmbeddedConfig, EmbeddedLedger, FsyncPolicy, GrantReceipt, LedgerError, Outcome,
    WalletSig,
};
pub use settle::{
    Backoff, Executor, ExecutorConfig, MemoryStore, PassReport, SettleError, Settlement,
    SettlementState, SettlementStore, Sleeper, StoreError, ThreadSleeper,
};
pub use wallet::{KeypairError, WalletKeypair};
