//! A local chain for tests: a [`TestValidator`] whose genesis funds a fresh
//! authority, the IO and stablecoin mints (mint authority = that authority), and
//! test funding of wallets by minting. Used by this crate's tests and by the
//! end-to-end scenario that runs the operator binary against the validator
//! (`e2e/tests/scenarios/solana.rs`). Not for production: the authority's secret
//! is held in memory and written to a file on request (mode 0600).

use crate::validator::TestValidator;
use crate::{
    Authority, Commitment, Keypair, SolanaConfig, SolanaError, SolanaLedger, create_mint,
    parse_keypair,
};
use solgrid_market::ledger::{Account, Amount, Intent, Ledger as _, Movement, Op, Token, TxStatus};
use std::path::Path;
use std::time::Duration;

/// Decimals of the IO token (ECONOMICS.md: 9).
pub const IO_DECIMALS: u8 = 9;
/// Decimals of the stablecoin (USDC: 6).
pub const USDC_DECIMALS: u8 = 6;

/// A running validator with both mints created. Field order: the validator is
/// dropped (killed) last.
pub struct LocalChain {
    /// The IO mint's address.
    pub io_mint: String,
    /// The stablecoin mint's address.
    pub usdc_mint: String,
    authority: [u8; 64],
    pub validator: TestValidator,
}

impl std::fmt::Debug for LocalChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChain")
            .field("rpc_url", &self.validator.rpc_url())
            .field("authority", &self.authority_address())
            .field("io_mint", &self.io_mint)
            .field("usdc_mint", &self.usdc_mint)
            .finish()
    }
}

impl LocalChain {
    /// Starts a validator (see [`TestValidator::from_env_with_args`]: `None` means
    /// skip, printed on stderr; a required validator that cannot start panics) whose
    /// genesis funds a fresh authority, and creates the IO and stablecoin mints
    /// with the given decimals.
    pub fn start(
        test: &str,
        io_decimals: u8,
        usdc_decimals: u8,
        validator_args: &[&str],
    ) -> Option<Self> {
        let authority = Keypair::new();
        let address = solana_signer::Signer::pubkey(&authority).to_string();
        let validator = TestValidator::from_env_with_args(test, &address, validator_args)?;
        let auth = Authority::from_keypair(authority);
        let mint = |decimals| {
            create_mint(validator.rpc_url(), &auth, decimals, Commitment::Confirmed)
                .unwrap_or_else(|e| panic!("{test}: creating a mint: {e}"))
        };
        let io_mint = mint(io_decimals);
        let usdc_mint = mint(usdc_decimals);
        Some(LocalChain {
            io_mint,
            usdc_mint,
            authority: auth.0.to_bytes(),
            validator,
        })
    }

    pub fn rpc_url(&self) -> &str {
        self.validator.rpc_url()
    }

    /// The authority (a copy): mint authority of both mints, funded at genesis.
    pub fn authority(&self) -> Authority {
        Authority(parse_keypair(&self.authority).expect("a keypair made by this module"))
    }

    pub fn authority_address(&self) -> String {
        self.authority().address()
    }

    /// The ledger configuration for this chain (commitment `confirmed`).
    pub fn config(&self) -> SolanaConfig {
        SolanaConfig::new(self.rpc_url(), &self.io_mint, &self.usdc_mint)
    }

    /// A ledger on this chain signed by the authority (custody accounts not created:
    /// [`SolanaLedger::ensure_custody_accounts`]).
    pub fn ledger_with(
        &self,
        tweak: impl FnOnce(&mut SolanaConfig),
    ) -> Result<SolanaLedger, SolanaError> {
        let mut config = self.config();
        tweak(&mut config);
        SolanaLedger::connect(config, self.authority())
    }

    /// Writes the authority's keypair as the Solana CLI writes it (a JSON array of
    /// 64 bytes), readable only by its owner: what `--authority-keypair` reads.
    pub fn write_authority_keypair(&self, path: &Path) -> std::io::Result<()> {
        write_secret(path, keypair_json_bytes(&self.authority).as_bytes())
    }
}

/// A keypair as the Solana CLI writes it: `[b0,b1,...,b63]` (secret then public half).
pub fn keypair_json(keypair: &Keypair) -> String {
    keypair_json_bytes(&keypair.to_bytes())
}

fn keypair_json_bytes(bytes: &[u8; 64]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Test funding: mints `amount` base units of `token` to `wallet` (its associated
/// token account is created on the way) in one transaction with memo `key`, and
/// waits until it is confirmed. Returns the signature.
pub fn fund(
    ledger: &SolanaLedger,
    key: &str,
    wallet: &str,
    token: Token,
    amount: Amount,
) -> Result<String, SolanaError> {
    let intent = Intent {
        key: key.to_string(),
        movements: vec![Movement {
            token,
            op: Op::Mint {
                to: Account::Wallet(wallet.to_string()),
                amount,
            },
        }],
    };
    let p = ledger.prepare(&[intent])?;
    match ledger.send_and_confirm(&p, Duration::from_secs(60))? {
        TxStatus::Confirmed => Ok(p.signature),
        other => Err(SolanaError::Timeout(format!(
            "funding {key}: {} is {other:?}",
            p.signature
        ))),
    }
}
