//! The ledger abstraction: accounts, transfers, burns, mints, escrow and stake vaults.
//!
//! Two implementations fit this trait: the embedded ledger (`solgrid-ledger`, a
//! local file, so a single machine works with no blockchain) and the Solana ledger
//! (`solgrid-solana`, SPL Token instructions through `solana-client`).
//!
//! The trait is shaped by the exactly-once protocol of ECONOMICS.md:
//! 1. a settlement plan ([`Intent`]) with an idempotency key is computed and recorded
//!    by the caller before anything is sent;
//! 2. [`Ledger::prepare`] builds and signs a transaction for one or more intents
//!    *without sending it*; the caller records [`Prepared::signature`] and
//!    [`Prepared::last_valid_block_height`];
//! 3. [`Ledger::send`] submits it; after a crash the caller asks
//!    [`Ledger::status`]: `Confirmed` means done, `NotFound` with the ledger's block
//!    height past `last_valid_block_height` means it can never land (rebuild it),
//!    anything else means wait.
//!
//! The trait is synchronous: callers in async code use `spawn_blocking`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in base units of a token's mint.
pub type Amount = u64;

/// A payment token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Token {
    /// The market's own token; fees paid in it are burned.
    #[serde(rename = "IO")]
    Io,
    /// A stablecoin; fees paid in it go to the treasury's buyback account.
    #[serde(rename = "USDC")]
    Usdc,
}

impl Token {
    pub const ALL: [Token; 2] = [Token::Io, Token::Usdc];

    pub fn is_stablecoin(self) -> bool {
        matches!(self, Token::Usdc)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::Io => "IO",
            Token::Usdc => "USDC",
        })
    }
}

/// Where tokens sit. Every account but `Wallet` is owned by the operator's
/// authority (a custodial design): per-job escrow and per-position stake are
/// bookkept in the objects' status, the tokens sit in one account per kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Account {
    /// A user's wallet (a base58 Solana address, or any stable id on the embedded ledger).
    Wallet(String),
    /// Escrow holding the maximum cost of admitted jobs until settlement.
    Escrow,
    /// Treasury: stablecoin fees wait here for the scheduled buyback (its buyback
    /// account); IO bought back waits here to be burned (its reserve).
    Treasury,
    /// The pool that hourly emission is paid from.
    EmissionPool,
    /// Staked tokens (still backing nodes while unbonding).
    StakeVault,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Wallet(w) => write!(f, "wallet:{w}"),
            Account::Escrow => f.write_str("escrow"),
            Account::Treasury => f.write_str("treasury"),
            Account::EmissionPool => f.write_str("emission-pool"),
            Account::StakeVault => f.write_str("stake-vault"),
        }
    }
}

/// One movement of tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Transfer {
        from: Account,
        to: Account,
        amount: Amount,
    },
    /// Destroys `amount` held by `from`; the mint's supply falls by as much.
    Burn { from: Account, amount: Amount },
    /// Creates `amount` into `to` (mint authority: genesis, emission, test funding);
    /// the mint's supply rises by as much.
    Mint { to: Account, amount: Amount },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub token: Token,
    pub op: Op,
}

/// One settlement (a job's period, a stake lock, an hour's rewards, ...): the
/// movements that must happen together, exactly once, under an idempotency key
/// (derived from the object's UID and the period; carried on chain in a memo).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub key: String,
    pub movements: Vec<Movement>,
}

/// A signed transaction that has not been sent yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// The transaction's signature (its id), known before sending.
    pub signature: String,
    /// After this block height the transaction can never land.
    pub last_valid_block_height: u64,
    /// The idempotency keys of the intents it carries.
    pub keys: Vec<String>,
    /// The implementation's wire form (a serialized Solana transaction, ...),
    /// so the very same transaction can be re-sent.
    pub payload: Vec<u8>,
}

/// What the ledger knows of a signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxStatus {
    /// Landed and final (at the ledger's commitment): done.
    Confirmed,
    /// Landed but failed: nothing moved. The reason is the ledger's.
    Failed(String),
    /// Seen but not yet final: wait.
    Pending,
    /// Never seen: rebuild once the block height is past its last valid height, else wait.
    NotFound,
}

/// The ledger abstraction.
pub trait Ledger: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Builds and signs one transaction carrying all `intents`, without sending it.
    /// Fails when they do not fit in one transaction (see [`Ledger::fits`]).
    fn prepare(&self, intents: &[Intent]) -> Result<Prepared, Self::Error>;
    /// Sends a prepared transaction. Sending the same one twice moves money once.
    fn send(&self, tx: &Prepared) -> Result<(), Self::Error>;
    /// What the ledger knows of a signature.
    fn status(&self, signature: &str) -> Result<TxStatus, Self::Error>;
    /// The ledger's current block height (to compare with `last_valid_block_height`).
    fn block_height(&self) -> Result<u64, Self::Error>;
    /// Whether these intents fit in one transaction (e.g. Solana's 1,232-byte limit).
    fn fits(&self, intents: &[Intent]) -> bool;
    /// The balance of an account, in base units.
    fn balance(&self, account: &Account, token: Token) -> Result<Amount, Self::Error>;
    /// The mint's total supply, in base units.
    fn supply(&self, token: Token) -> Result<Amount, Self::Error>;
    /// Base units per whole token (10^decimals).
    fn unit(&self, token: Token) -> Amount;
}
