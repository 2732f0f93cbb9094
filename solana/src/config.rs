//! Configuration of a [`crate::SolanaLedger`].

use std::time::Duration;

/// The commitment at which the ledger reads balances and calls a transaction done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Commitment {
    /// Voted on by a supermajority (optimistic confirmation): the default, fast.
    #[default]
    Confirmed,
    /// Rooted: slower (about 32 slots more), can never be rolled back.
    Finalized,
}

impl Commitment {
    pub(crate) fn to_config(self) -> solana_commitment_config::CommitmentConfig {
        match self {
            Commitment::Confirmed => solana_commitment_config::CommitmentConfig::confirmed(),
            Commitment::Finalized => solana_commitment_config::CommitmentConfig::finalized(),
        }
    }
}

/// Where the chain is and how to talk to it. Addresses are base58 strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolanaConfig {
    /// JSON-RPC endpoint, e.g. `https://api.devnet.solana.com` or `http://127.0.0.1:8899`.
    pub rpc_url: String,
    /// The IO token's mint.
    pub io_mint: String,
    /// The stablecoin's mint.
    pub usdc_mint: String,
    /// Commitment for reads and for [`solgrid_market::ledger::TxStatus::Confirmed`].
    pub commitment: Commitment,
    /// The memo program. `None`: Memo v2 (`MemoSq4g…`) when the cluster has it, else
    /// Memo v1 (`Memo1Uhk…`; `solana-test-validator` 4.2 ships only v1).
    pub memo_program: Option<String>,
    /// An address lookup table owned by the authority: when set, transactions are
    /// v0 messages that load the table's addresses (1 byte each instead of 32).
    pub lookup_table: Option<String>,
    /// Per-request HTTP timeout.
    pub rpc_timeout: Duration,
    /// Attempts per RPC call on transport errors (connection refused, timeout, 5xx,
    /// node behind), with exponential backoff between them.
    pub rpc_attempts: u32,
    /// First backoff; doubles after each failed attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl SolanaConfig {
    pub fn new(
        rpc_url: impl Into<String>,
        io_mint: impl Into<String>,
        usdc_mint: impl Into<String>,
    ) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            io_mint: io_mint.into(),
            usdc_mint: usdc_mint.into(),
            commitment: Commitment::Confirmed,
            memo_program: None,
            lookup_table: None,
            rpc_timeout: Duration::from_secs(10),
            rpc_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}
