//! Errors. No variant ever carries key material.

/// What went wrong talking to Solana or building a transaction.
#[derive(Debug, thiserror::Error)]
pub enum SolanaError {
    /// The RPC endpoint could not be reached or kept failing (after retries with
    /// backoff), or answered with an error.
    #[error("solana rpc {op} at {url} failed after {attempts} attempt(s): {message}")]
    Rpc {
        op: &'static str,
        url: String,
        attempts: u32,
        message: String,
        /// A transport error (dead or slow endpoint): retrying later may succeed.
        transport: bool,
    },
    /// The cluster rejected a transaction in preflight (e.g. insufficient funds,
    /// blockhash not found). Nothing moved.
    #[error("transaction {signature} rejected: {message}")]
    Rejected { signature: String, message: String },
    /// Moving tokens out of this wallet needs its keypair (see `SolanaLedger::add_signer`).
    #[error("no signer registered for wallet {0}: moving tokens out of a wallet needs its keypair")]
    MissingSigner(String),
    #[error("invalid {what} address {value:?}")]
    InvalidAddress { what: &'static str, value: String },
    /// The intents do not fit in one transaction.
    #[error("transaction too large: {size} bytes > {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("cannot build transaction: {0}")]
    Build(String),
    /// A keypair could not be read (the message never contains key bytes).
    #[error("keypair: {0}")]
    Keypair(String),
    #[error("chain state: {0}")]
    Chain(String),
    #[error("malformed transaction payload: {0}")]
    Payload(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl SolanaError {
    /// Whether retrying the same call later may succeed (dead or slow RPC endpoint).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SolanaError::Rpc {
                transport: true,
                ..
            } | SolanaError::Timeout(_)
        )
    }
}
