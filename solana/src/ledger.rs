//! [`SolanaLedger`]: the [`Ledger`] trait over SPL Token, through the blocking RPC client.

use crate::{Authority, Commitment, SolanaConfig, SolanaError, parse_keypair};
use solana_commitment_config::CommitmentConfig;
use solana_hash::Hash;
use solana_instruction::Instruction;
use solana_keypair::Keypair;
use solana_message::{AddressLookupTableAccount, Message, VersionedMessage, v0};
use solana_program_pack::Pack;
use solana_pubkey::Pubkey;
use solana_rpc_client::rpc_client::{GetConfirmedSignaturesForAddress2Config, RpcClient};
use solana_rpc_client_api::client_error::{
    Error as ClientError, ErrorKind as ClientErrorKind, TransactionError,
};
use solana_rpc_client_api::config::RpcSendTransactionConfig;
use solana_rpc_client_api::request::RpcError;
use solana_rpc_client_api::response::RpcConfirmedTransactionStatusWithSignature;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use solgrid_market::ledger::{
    Account, Amount, Intent, Ledger, Movement, Op, Prepared, Token, TxStatus,
};
use spl_token_interface::state::{Account as TokenAccount, Mint};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Solana's limit on a serialized transaction (IPv6 MTU minus headers).
pub const PACKET_DATA_SIZE: usize = 1232;
/// Accounts one transaction may lock (static keys plus lookup-table loads).
pub const MAX_TX_ACCOUNTS: usize = 64;
/// Memo v1: deployed everywhere, including `solana-test-validator` 4.2.
pub const MEMO_V1: &str = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo";
/// Memo v2/v3: the current SPL Memo program on mainnet, devnet and testnet.
pub const MEMO_V2: &str = "MemoSq4gqABAXKb96qnJV7VqAUdgTY7F9XqxX3bjJx1";
/// Blocks a blockhash stays valid for (`last_valid_block_height - its height`).
pub const MAX_PROCESSING_AGE: u64 = 150;

/// The shape of the transactions the ledger builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxShape {
    /// A legacy message: every account key costs 32 bytes.
    Legacy,
    /// A v0 message loading addresses from the configured lookup table (1 byte each).
    V0LookupTable,
}

#[derive(Clone, Copy, Debug)]
struct MintInfo {
    address: Pubkey,
    decimals: u8,
}

/// The blocking RPC client with retries and backoff on transport errors.
struct Rpc {
    client: RpcClient,
    /// The endpoint without credentials (scheme, host and port only), for messages.
    shown_url: String,
    full_url: String,
    attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
    }
}

fn is_transport(e: &ClientError) -> bool {
    match e.kind() {
        ClientErrorKind::Io(_) | ClientErrorKind::Reqwest(_) | ClientErrorKind::Middleware(_) => {
            true
        }
        // node unhealthy / behind, block not yet available, min context slot not reached
        ClientErrorKind::RpcError(RpcError::RpcResponseError { code, .. }) => {
            matches!(code, -32004 | -32005 | -32014 | -32016)
        }
        _ => false,
    }
}

impl Rpc {
    fn new(
        url: &str,
        commitment: CommitmentConfig,
        timeout: Duration,
        attempts: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        Rpc {
            client: RpcClient::new_with_timeout_and_commitment(
                url.to_string(),
                timeout,
                commitment,
            ),
            shown_url: redact_url(url),
            full_url: url.to_string(),
            attempts: attempts.max(1),
            initial_backoff,
            max_backoff,
        }
    }

    fn message(&self, e: &ClientError) -> String {
        let mut m = e.to_string();
        if !self.full_url.is_empty() {
            m = m.replace(&self.full_url, &self.shown_url);
        }
        m
    }

    /// Calls `f`, retrying transport errors with exponential backoff.
    fn call_raw<T>(
        &self,
        op: &'static str,
        f: impl Fn(&RpcClient) -> Result<T, ClientError>,
    ) -> Result<T, (ClientError, u32)> {
        let mut delay = self.initial_backoff;
        let mut attempt = 1;
        loop {
            match f(&self.client) {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.attempts && is_transport(&e) => {
                    tracing::warn!(
                        op,
                        attempt,
                        url = %self.shown_url,
                        error = %self.message(&e),
                        "solana rpc transport error; retrying"
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.max_backoff);
                    attempt += 1;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }

    fn call<T>(
        &self,
        op: &'static str,
        f: impl Fn(&RpcClient) -> Result<T, ClientError>,
    ) -> Result<T, SolanaError> {
        self.call_raw(op, f)
            .map_err(|(e, attempts)| self.error(op, &e, attempts))
    }

    fn error(&self, op: &'static str, e: &ClientError, attempts: u32) -> SolanaError {
        SolanaError::Rpc {
            op,
            url: self.shown_url.clone(),
            attempts,
            message: self.message(e),
            transport: is_transport(e),
        }
    }
}

fn parse_pubkey(what: &'static str, value: &str) -> Result<Pubkey, SolanaError> {
    Pubkey::from_str(value).map_err(|_| SolanaError::InvalidAddress {
        what,
        value: value.to_string(),
    })
}

/// The operator's custody accounts (one token account each per mint).
const CUSTODY: [Account; 4] = [
    Account::Escrow,
    Account::Treasury,
    Account::EmissionPool,
    Account::StakeVault,
];

fn custody_seed(account: &Account, mint: &Pubkey) -> Option<String> {
    let kind = match account {
        Account::Wallet(_) => return None,
        Account::Escrow => "escrow",
        Account::Treasury => "treasury",
        Account::EmissionPool => "emission",
        Account::StakeVault => "stake",
    };
    let mint = mint.to_string();
    // create_with_seed allows 32 bytes: "solgrid:treasury:" (17) + 12 of the mint
    Some(format!("solgrid:{kind}:{}", &mint[..12]))
}

/// The custody token account of `account` for `mint`, owned by `authority`
/// (derived with `create_with_seed`, owner program SPL Token).
fn custody_address(authority: &Pubkey, account: &Account, mint: &Pubkey) -> Option<Pubkey> {
    let seed = custody_seed(account, mint)?;
    Pubkey::create_with_seed(authority, &seed, &spl_token_interface::id()).ok()
}

fn ata(wallet: &Pubkey, mint: &Pubkey) -> Pubkey {
    spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
        wallet,
        mint,
        &spl_token_interface::id(),
    )
}

fn short_vec_len(n: usize) -> usize {
    match n {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        _ => 3,
    }
}

/// The exact wire size of a transaction carrying `msg` once signed.
fn serialized_size(msg: &VersionedMessage) -> usize {
    let n = msg.header().num_required_signatures as usize;
    short_vec_len(n) + 64 * n + msg.serialize().len()
}

fn account_count(msg: &VersionedMessage) -> usize {
    match msg {
        VersionedMessage::Legacy(m) => m.account_keys.len(),
        VersionedMessage::V0(m) => {
            m.account_keys.len()
                + m.address_table_lookups
                    .iter()
                    .map(|l| l.writable_indexes.len() + l.readonly_indexes.len())
                    .sum::<usize>()
        }
        #[allow(unreachable_patterns)]
        _ => usize::MAX,
    }
}

/// Instructions for some intents, and the wallets whose signatures they need.
struct Built {
    instructions: Vec<Instruction>,
    wallet_signers: BTreeSet<Pubkey>,
}

/// The Solana ledger. Construct it with [`SolanaLedger::connect`]; share it behind an
/// `Arc` (it is `Send + Sync`, and signers can be added through `&self`).
pub struct SolanaLedger {
    rpc: Rpc,
    config: SolanaConfig,
    authority: Keypair,
    io: MintInfo,
    usdc: MintInfo,
    memo_program: Pubkey,
    signers: RwLock<HashMap<Pubkey, Arc<Keypair>>>,
    lookup_table: RwLock<Option<AddressLookupTableAccount>>,
    /// Transactions this process saw rejected in preflight by one of their
    /// instructions: signature → (last valid block height, why). See
    /// [`Ledger::status`].
    rejected: std::sync::Mutex<HashMap<Signature, (u64, String)>>,
}

impl fmt::Debug for SolanaLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signers: Vec<String> = self
            .signers
            .read()
            .map(|s| s.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        f.debug_struct("SolanaLedger")
            .field("rpc", &self.rpc.shown_url)
            .field("authority", &self.authority.pubkey().to_string())
            .field("io_mint", &self.io.address.to_string())
            .field("usdc_mint", &self.usdc.address.to_string())
            .field("memo_program", &self.memo_program.to_string())
            .field("signer_wallets", &signers)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl SolanaLedger {
    /// Connects: reads both mints (decimals, and that SPL Token owns them) and picks
    /// the memo program. A dead endpoint yields [`SolanaError::Rpc`] with
    /// `transport: true` after the configured retries.
    pub fn connect(config: SolanaConfig, authority: Authority) -> Result<Self, SolanaError> {
        let rpc = Rpc::new(
            &config.rpc_url,
            config.commitment.to_config(),
            config.rpc_timeout,
            config.rpc_attempts,
            config.initial_backoff,
            config.max_backoff,
        );
        let io_mint = parse_pubkey("IO mint", &config.io_mint)?;
        let usdc_mint = parse_pubkey("stablecoin mint", &config.usdc_mint)?;
        if io_mint == usdc_mint {
            return Err(SolanaError::Chain(
                "the IO mint and the stablecoin mint are the same address".into(),
            ));
        }
        let configured_memo = match &config.memo_program {
            Some(m) => Some(parse_pubkey("memo program", m)?),
            None => None,
        };
        let v1 = parse_pubkey("memo program", MEMO_V1)?;
        let v2 = parse_pubkey("memo program", MEMO_V2)?;
        let keys = [io_mint, usdc_mint, configured_memo.unwrap_or(v2), v1];
        let commitment = config.commitment.to_config();
        let accounts = rpc
            .call("getMultipleAccounts", |c| {
                c.get_multiple_accounts_with_commitment(&keys, commitment)
            })?
            .value;
        let mint_info = |i: usize, what: &str| -> Result<MintInfo, SolanaError> {
            let acc = accounts[i].as_ref().ok_or_else(|| {
                SolanaError::Chain(format!("{what} mint {} does not exist", keys[i]))
            })?;
            if acc.owner != spl_token_interface::id() {
                return Err(SolanaError::Chain(format!(
                    "{what} mint {} is not owned by the SPL Token program",
                    keys[i]
                )));
            }
            let mint = Mint::unpack(&acc.data).map_err(|e| {
                SolanaError::Chain(format!("{what} mint {} is not a mint: {e}", keys[i]))
            })?;
            Ok(MintInfo {
                address: keys[i],
                decimals: mint.decimals,
            })
        };
        let io = mint_info(0, "IO")?;
        let usdc = mint_info(1, "stablecoin")?;
        let deployed = |i: usize| accounts[i].as_ref().is_some_and(|a| a.executable);
        let memo_program = match configured_memo {
            Some(m) if deployed(2) => m,
            Some(m) => {
                return Err(SolanaError::Chain(format!(
                    "memo program {m} is not deployed on this cluster"
                )));
            }
            None if deployed(2) => v2,
            None if deployed(3) => v1,
            None => {
                return Err(SolanaError::Chain(
                    "neither SPL Memo v2 nor v1 is deployed on this cluster".into(),
                ));
            }
        };
        let ledger = SolanaLedger {
            rpc,
            config,
            authority: authority.0,
            io,
            usdc,
            memo_program,
            signers: RwLock::new(HashMap::new()),
            lookup_table: RwLock::new(None),
            rejected: std::sync::Mutex::new(HashMap::new()),
        };
        if let Some(table) = ledger.config.lookup_table.clone() {
            ledger.use_lookup_table(Some(&table))?;
        }
        tracing::info!(
            rpc = %ledger.rpc.shown_url,
            authority = %ledger.authority.pubkey(),
            io_mint = %io.address,
            usdc_mint = %usdc.address,
            memo = %memo_program,
            "solana ledger connected"
        );
        Ok(ledger)
    }

    /// Registers wallet keypairs (builder form of [`SolanaLedger::add_signer`]).
    pub fn with_signers(self, keypairs: impl IntoIterator<Item = Keypair>) -> Self {
        for k in keypairs {
            self.add_signer(k);
        }
        self
    }

    /// Registers the keypair of a wallet, so that `prepare` can sign movements *out of*
    /// that wallet (escrow funding, stake lock, a burn from a wallet). Keyed by the
    /// wallet's address; returns it. Replaces an earlier keypair for the same wallet.
    pub fn add_signer(&self, keypair: Keypair) -> String {
        let address = keypair.pubkey();
        self.signers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address, Arc::new(keypair));
        address.to_string()
    }

    /// Registers a wallet's keypair from a Secret's bytes (JSON array or 64 raw bytes).
    pub fn add_signer_bytes(&self, secret: &[u8]) -> Result<String, SolanaError> {
        Ok(self.add_signer(parse_keypair(secret)?))
    }

    /// Forgets a wallet's keypair; returns whether one was registered.
    pub fn remove_signer(&self, wallet: &str) -> bool {
        let Ok(key) = Pubkey::from_str(wallet) else {
            return false;
        };
        self.signers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .is_some()
    }

    pub fn has_signer(&self, wallet: &str) -> bool {
        Pubkey::from_str(wallet).is_ok_and(|k| {
            self.signers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&k)
        })
    }

    /// The authority's address (fee payer, custody owner, mint authority).
    pub fn authority_address(&self) -> String {
        self.authority.pubkey().to_string()
    }

    pub fn mint_address(&self, token: Token) -> String {
        self.mint(token).address.to_string()
    }

    pub fn memo_program(&self) -> String {
        self.memo_program.to_string()
    }

    /// The shape of the transactions `prepare` builds now.
    pub fn tx_shape(&self) -> TxShape {
        if self.table().is_some() {
            TxShape::V0LookupTable
        } else {
            TxShape::Legacy
        }
    }

    fn mint(&self, token: Token) -> MintInfo {
        match token {
            Token::Io => self.io,
            Token::Usdc => self.usdc,
        }
    }

    fn commitment(&self) -> CommitmentConfig {
        self.config.commitment.to_config()
    }

    fn table(&self) -> Option<AddressLookupTableAccount> {
        self.lookup_table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The token account that holds `account`'s `token`: the wallet's associated
    /// token account, or the authority's seeded custody account.
    pub fn token_account(&self, account: &Account, token: Token) -> Result<Pubkey, SolanaError> {
        let mint = self.mint(token).address;
        match account {
            Account::Wallet(w) => Ok(ata(&parse_pubkey("wallet", w)?, &mint)),
            other => custody_address(&self.authority.pubkey(), other, &mint)
                .ok_or_else(|| SolanaError::Build(format!("no custody address for {other}"))),
        }
    }

    /// The address of `account`'s token account for `token` (base58).
    pub fn custody_address(&self, account: &Account, token: Token) -> Result<String, SolanaError> {
        self.token_account(account, token).map(|k| k.to_string())
    }

    fn owner_of(&self, account: &Account) -> Result<Pubkey, SolanaError> {
        match account {
            Account::Wallet(w) => parse_pubkey("wallet", w),
            _ => Ok(self.authority.pubkey()),
        }
    }

    /// Wallet token accounts that movements pay *into* (they may need creating).
    fn destination_wallet_accounts(&self, intents: &[Intent]) -> Result<Vec<Pubkey>, SolanaError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for mv in intents.iter().flat_map(|i| i.movements.iter()) {
            let to = match &mv.op {
                Op::Transfer { to, amount, .. } | Op::Mint { to, amount } if *amount > 0 => to,
                _ => continue,
            };
            if matches!(to, Account::Wallet(_)) {
                let k = self.token_account(to, mv.token)?;
                if seen.insert(k) {
                    out.push(k);
                }
            }
        }
        Ok(out)
    }

    /// Which of `keys` do not exist on chain.
    fn missing_accounts(&self, keys: &[Pubkey]) -> Result<HashSet<Pubkey>, SolanaError> {
        let mut missing = HashSet::new();
        let commitment = self.commitment();
        for chunk in keys.chunks(100) {
            let got = self
                .rpc
                .call("getMultipleAccounts", |c| {
                    c.get_multiple_accounts_with_commitment(chunk, commitment)
                })?
                .value;
            for (k, a) in chunk.iter().zip(got) {
                if a.is_none() {
                    missing.insert(*k);
                }
            }
        }
        Ok(missing)
    }

    fn build(&self, intents: &[Intent], missing: &HashSet<Pubkey>) -> Result<Built, SolanaError> {
        if intents.is_empty() {
            return Err(SolanaError::Build("no intents".into()));
        }
        let mut keys = HashSet::new();
        for i in intents {
            if i.key.is_empty() {
                return Err(SolanaError::Build("an intent has an empty key".into()));
            }
            if !keys.insert(i.key.as_str()) {
                // two intents under one key in one transaction would pay twice
                return Err(SolanaError::Build(format!(
                    "idempotency key {} appears twice",
                    i.key
                )));
            }
        }
        let token_program = spl_token_interface::id();
        let authority = self.authority.pubkey();
        let mut created = HashSet::new();
        let mut ixs = Vec::new();
        let mut wallet_signers = BTreeSet::new();
        for intent in intents {
            ixs.push(Instruction::new_with_bytes(
                self.memo_program,
                intent.key.as_bytes(),
                vec![],
            ));
            for Movement { token, op } in &intent.movements {
                let mint = self.mint(*token);
                let mut ensure = |to: &Account,
                                  ixs: &mut Vec<Instruction>|
                 -> Result<Pubkey, SolanaError> {
                    let dst = self.token_account(to, *token)?;
                    if let Account::Wallet(w) = to
                        && missing.contains(&dst)
                        && created.insert(dst)
                    {
                        ixs.push(
                            spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
                                &authority,
                                &parse_pubkey("wallet", w)?,
                                &mint.address,
                                &token_program,
                            ),
                        );
                    }
                    Ok(dst)
                };
                // the token account debited, and its owner (who signs, unless the
                // authority)
                let mut source = |from: &Account| -> Result<(Pubkey, Pubkey), SolanaError> {
                    let src = self.token_account(from, *token)?;
                    let owner = self.owner_of(from)?;
                    if owner != authority {
                        wallet_signers.insert(owner);
                    }
                    Ok((src, owner))
                };
                match op {
                    Op::Transfer { amount: 0, .. }
                    | Op::Burn { amount: 0, .. }
                    | Op::Mint { amount: 0, .. } => {}
                    Op::Transfer { from, to, amount } => {
                        let (src, owner) = source(from)?;
                        let dst = ensure(to, &mut ixs)?;
                        ixs.push(
                            spl_token_interface::instruction::transfer_checked(
                                &token_program,
                                &src,
                                &mint.address,
                                &dst,
                                &owner,
                                &[],
                                *amount,
                                mint.decimals,
                            )
                            .map_err(build_err)?,
                        );
                    }
                    Op::Burn { from, amount } => {
                        let (src, owner) = source(from)?;
                        ixs.push(
                            spl_token_interface::instruction::burn_checked(
                                &token_program,
                                &src,
                                &mint.address,
                                &owner,
                                &[],
                                *amount,
                                mint.decimals,
                            )
                            .map_err(build_err)?,
                        );
                    }
                    Op::Mint { to, amount } => {
                        let dst = ensure(to, &mut ixs)?;
                        ixs.push(
                            spl_token_interface::instruction::mint_to_checked(
                                &token_program,
                                &mint.address,
                                &dst,
                                &authority,
                                &[],
                                *amount,
                                mint.decimals,
                            )
                            .map_err(build_err)?,
                        );
                    }
                }
            }
        }
        Ok(Built {
            instructions: ixs,
            wallet_signers,
        })
    }

    fn compile(
        &self,
        ixs: &[Instruction],
        blockhash: Hash,
    ) -> Result<VersionedMessage, SolanaError> {
        let payer = self.authority.pubkey();
        match self.table() {
            Some(table) => v0::Message::try_compile(&payer, ixs, &[table], blockhash)
                .map(VersionedMessage::V0)
                .map_err(|e| SolanaError::Build(e.to_string())),
            None => Ok(VersionedMessage::Legacy(Message::new_with_blockhash(
                ixs,
                Some(&payer),
                &blockhash,
            ))),
        }
    }

    fn check_limits(msg: &VersionedMessage) -> Result<usize, SolanaError> {
        let size = serialized_size(msg);
        if size > PACKET_DATA_SIZE {
            return Err(SolanaError::TooLarge {
                size,
                limit: PACKET_DATA_SIZE,
            });
        }
        let n = account_count(msg);
        if n > MAX_TX_ACCOUNTS {
            return Err(SolanaError::Build(format!(
                "transaction would lock {n} accounts (limit {MAX_TX_ACCOUNTS})"
            )));
        }
        Ok(size)
    }

    /// The exact serialized size, in bytes, of the transaction `prepare` would build
    /// for `intents` now (wallet accounts missing on chain are created in it).
    pub fn tx_size(&self, intents: &[Intent]) -> Result<usize, SolanaError> {
        let dests = self.destination_wallet_accounts(intents)?;
        // if the endpoint is down, assume every destination needs creating (the
        // largest transaction): `fits` then never says yes to one too large
        let missing = self
            .missing_accounts(&dests)
            .unwrap_or_else(|_| dests.iter().copied().collect());
        let built = self.build(intents, &missing)?;
        let msg = self.compile(&built.instructions, Hash::default())?;
        Ok(serialized_size(&msg))
    }

    fn sign(
        &self,
        msg: VersionedMessage,
        wallet_signers: &BTreeSet<Pubkey>,
    ) -> Result<VersionedTransaction, SolanaError> {
        let registry = self.signers.read().unwrap_or_else(|p| p.into_inner());
        let mut extra = Vec::new();
        for w in wallet_signers {
            extra.push(
                registry
                    .get(w)
                    .cloned()
                    .ok_or_else(|| SolanaError::MissingSigner(w.to_string()))?,
            );
        }
        drop(registry);
        let mut signers: Vec<&Keypair> = vec![&self.authority];
        signers.extend(extra.iter().map(|k| k.as_ref()));
        VersionedTransaction::try_new(msg, &signers).map_err(|e| SolanaError::Build(e.to_string()))
    }

    /// Sends a prepared transaction and waits until it is final at the ledger's
    /// commitment (or fails, or `timeout` passes: then `Pending`/`NotFound`).
    pub fn send_and_confirm(
        &self,
        tx: &Prepared,
        timeout: Duration,
    ) -> Result<TxStatus, SolanaError> {
        self.send(tx)?;
        self.wait(&tx.signature, timeout)
    }

    /// Polls [`Ledger::status`] until `Confirmed` or `Failed`, or `timeout` passes.
    pub fn wait(&self, signature: &str, timeout: Duration) -> Result<TxStatus, SolanaError> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(signature)?;
            if matches!(st, TxStatus::Confirmed | TxStatus::Failed(_)) || Instant::now() >= deadline
            {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The block height at `processed` commitment (the newest the node has).
    pub fn processed_block_height(&self) -> Result<u64, SolanaError> {
        self.rpc.call("getBlockHeight", |c| {
            c.get_block_height_with_commitment(CommitmentConfig::processed())
        })
    }

    /// Searches the authority's recent transaction history (it pays for every
    /// transaction this ledger builds) for a successful one whose memo carries `key`,
    /// and returns its signature. A safety net for a signature that was sent but not
    /// recorded: only conclusive once no transaction prepared before the question
    /// can still land (see docs/solana.md, "Recovery without a recorded signature").
    pub fn find_by_key(&self, key: &str, history: usize) -> Result<Option<String>, SolanaError> {
        let mut found = None;
        self.for_each_successful(history, |s| {
            if s.memo.as_deref().is_some_and(|m| memo_has_key(m, key)) {
                found = Some(s.signature.clone());
            }
            found.is_none()
        })?;
        Ok(found)
    }

    /// How many successful transactions in the authority's recent history (up to
    /// `history` of them) carried each memo: an on-chain audit that every idempotency
    /// key landed exactly once.
    pub fn key_counts(&self, history: usize) -> Result<HashMap<String, usize>, SolanaError> {
        let mut counts = HashMap::new();
        self.for_each_successful(history, |s| {
            for key in s.memo.as_deref().map(memo_texts).unwrap_or_default() {
                *counts.entry(key.to_string()).or_insert(0) += 1;
            }
            true
        })?;
        Ok(counts)
    }

    /// Walks the successful transactions of the authority's recent history (up to
    /// `history` of them, newest first, a page of at most 1,000 per RPC call) until
    /// `visit` returns `false`.
    fn for_each_successful(
        &self,
        history: usize,
        mut visit: impl FnMut(&RpcConfirmedTransactionStatusWithSignature) -> bool,
    ) -> Result<(), SolanaError> {
        let authority = self.authority.pubkey();
        let mut before = None;
        let mut seen = 0;
        while seen < history {
            let limit = (history - seen).min(1000);
            let page = self.rpc.call("getSignaturesForAddress", |c| {
                c.get_signatures_for_address_with_config(
                    &authority,
                    GetConfirmedSignaturesForAddress2Config {
                        before,
                        until: None,
                        limit: Some(limit),
                        commitment: Some(self.commitment()),
                    },
                )
            })?;
            if page.is_empty() {
                break;
            }
            seen += page.len();
            for s in page.iter().filter(|s| s.err.is_none()) {
                if !visit(s) {
                    return Ok(());
                }
            }
            before = page
                .last()
                .and_then(|s| Signature::from_str(&s.signature).ok());
            if page.len() < limit {
                break;
            }
        }
        Ok(())
    }

    /// A transaction this process saw rejected in preflight by an instruction (`send`
    /// returned [`SolanaError::Rejected`]: not forwarded) and not on chain:
    /// once past its last valid block height (finalized) it can never land, so it is
    /// `Failed` with the rejection's reason — as the chain would have failed it —
    /// instead of `NotFound`, which would have it rebuilt and sent again (and
    /// rejected again) forever. Before that, `None` (still `NotFound`): a copy sent
    /// earlier may yet land.
    fn rejected_and_expired(&self, sig: &Signature) -> Result<Option<TxStatus>, SolanaError> {
        let Some((last_valid, message)) =
            self.rejected.lock().ok().and_then(|r| r.get(sig).cloned())
        else {
            return Ok(None);
        };
        if self.block_height()? <= last_valid {
            return Ok(None);
        }
        Ok(Some(TxStatus::Failed(format!(
            "rejected in preflight, expired unsent: {message}"
        ))))
    }

    /// Sends `tx` (its blockhash valid up to `last_valid_block_height`). A rejection
    /// by one of its instructions (the program failed in simulation: insufficient
    /// funds, a missing token account) is remembered for [`Ledger::status`]; others
    /// (an unknown blockhash, ...) are not: a rebuilt transaction may pass.
    fn send_signed(
        &self,
        tx: &VersionedTransaction,
        last_valid_block_height: u64,
    ) -> Result<(), SolanaError> {
        let cfg = RpcSendTransactionConfig {
            skip_preflight: false,
            preflight_commitment: Some(self.commitment().commitment),
            ..RpcSendTransactionConfig::default()
        };
        match self.rpc.call_raw("sendTransaction", |c| {
            c.send_transaction_with_config(tx, cfg)
        }) {
            Ok(_) => Ok(()),
            Err((e, attempts)) => {
                if matches!(
                    e.get_transaction_error(),
                    Some(TransactionError::AlreadyProcessed)
                ) || e.to_string().contains("already been processed")
                {
                    // sent before (by us, or by an attempt whose answer was lost)
                    return Ok(());
                }
                if is_transport(&e) {
                    return Err(self.rpc.error("sendTransaction", &e, attempts));
                }
                let message = self.rpc.message(&e);
                if matches!(
                    e.get_transaction_error(),
                    Some(TransactionError::InstructionError(..))
                ) && let Ok(mut rejected) = self.rejected.lock()
                {
                    rejected.insert(tx.signatures[0], (last_valid_block_height, message.clone()));
                }
                Err(SolanaError::Rejected {
                    signature: tx.signatures[0].to_string(),
                    message,
                })
            }
        }
    }

    /// Builds, signs, sends and confirms instructions paid by the authority
    /// (set-up work: mints, custody accounts, lookup tables).
    fn run_admin(
        &self,
        ixs: &[Instruction],
        extra: &[&Keypair],
        what: &str,
    ) -> Result<String, SolanaError> {
        admin_tx(
            &self.rpc,
            &self.authority,
            ixs,
            extra,
            self.commitment(),
            what,
        )
    }

    /// Creates the custody token accounts (escrow, treasury, emission pool, stake
    /// vault, for both mints) that do not exist yet. Idempotent; run at start-up.
    /// Returns the addresses it created.
    pub fn ensure_custody_accounts(&self) -> Result<Vec<String>, SolanaError> {
        let authority = self.authority.pubkey();
        let mut wanted = Vec::new();
        for token in Token::ALL {
            for kind in &CUSTODY {
                wanted.push((kind.clone(), token, self.token_account(kind, token)?));
            }
        }
        let keys: Vec<Pubkey> = wanted.iter().map(|w| w.2).collect();
        let missing = self.missing_accounts(&keys)?;
        let rent = self.rpc.call("getMinimumBalanceForRentExemption", |c| {
            c.get_minimum_balance_for_rent_exemption(TokenAccount::LEN)
        })?;
        let mut created = Vec::new();
        for (kind, token, address) in wanted {
            if !missing.contains(&address) {
                continue;
            }
            let mint = self.mint(token).address;
            let seed = custody_seed(&kind, &mint).expect("custody kind");
            let ixs = [
                solana_system_interface::instruction::create_account_with_seed(
                    &authority,
                    &address,
                    &authority,
                    &seed,
                    rent,
                    TokenAccount::LEN as u64,
                    &spl_token_interface::id(),
                ),
                spl_token_interface::instruction::initialize_account3(
                    &spl_token_interface::id(),
                    &address,
                    &mint,
                    &authority,
                )
                .map_err(|e| SolanaError::Build(e.to_string()))?,
            ];
            self.run_admin(&ixs, &[], "create custody account")?;
            tracing::info!(account = %kind, token = %token, %address, "created custody token account");
            created.push(address.to_string());
        }
        Ok(created)
    }

    /// Creates an address lookup table owned by the authority holding the custody
    /// accounts, the mints, and the token accounts of `wallets` for both mints, and
    /// switches `prepare` to v0 transactions that use it. Returns its address.
    pub fn create_lookup_table(&self, wallets: &[String]) -> Result<String, SolanaError> {
        let authority = self.authority.pubkey();
        let slot = self.slot(CommitmentConfig::finalized())?;
        let (ix, table) = solana_address_lookup_table_interface::instruction::create_lookup_table(
            authority, authority, slot,
        );
        self.run_admin(&[ix], &[], "create lookup table")?;
        *self.lookup_table.write().unwrap_or_else(|p| p.into_inner()) =
            Some(AddressLookupTableAccount {
                key: table,
                addresses: vec![],
            });
        let mut base = Vec::new();
        for token in Token::ALL {
            base.push(self.mint(token).address);
            for kind in &CUSTODY {
                base.push(self.token_account(kind, token)?);
            }
        }
        self.extend_with(table, base)?;
        self.extend_lookup_table(wallets)?;
        Ok(table.to_string())
    }

    /// Adds the token accounts of `wallets` (both mints) to the lookup table in use,
    /// skipping those already there; waits until they are usable.
    pub fn extend_lookup_table(&self, wallets: &[String]) -> Result<(), SolanaError> {
        let table = self
            .table()
            .ok_or_else(|| SolanaError::Build("no lookup table in use".into()))?;
        let mut new = Vec::new();
        for w in wallets {
            for token in Token::ALL {
                new.push(self.token_account(&Account::Wallet(w.clone()), token)?);
            }
        }
        self.extend_with(table.key, new)
    }

    fn extend_with(&self, table: Pubkey, addresses: Vec<Pubkey>) -> Result<(), SolanaError> {
        let present: HashSet<Pubkey> = self
            .table()
            .map(|t| t.addresses.into_iter().collect())
            .unwrap_or_default();
        let mut seen = HashSet::new();
        let new: Vec<Pubkey> = addresses
            .into_iter()
            .filter(|a| !present.contains(a) && seen.insert(*a))
            .collect();
        if present.len() + new.len() > 256 {
            return Err(SolanaError::Build(format!(
                "a lookup table holds at most 256 addresses ({} + {})",
                present.len(),
                new.len()
            )));
        }
        let authority = self.authority.pubkey();
        for chunk in new.chunks(24) {
            let ix = solana_address_lookup_table_interface::instruction::extend_lookup_table(
                table,
                authority,
                Some(authority),
                chunk.to_vec(),
            );
            self.run_admin(&[ix], &[], "extend lookup table")?;
        }
        // addresses become usable in the slot after the one that added them
        let slot = self.slot(CommitmentConfig::processed())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.slot(CommitmentConfig::processed())? > slot + 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.use_lookup_table(Some(&table.to_string()))
    }

    /// Loads (or, with `None`, stops using) an address lookup table; `prepare` then
    /// builds v0 transactions against it. The table's authority must be ours only if
    /// it is to be extended here.
    pub fn use_lookup_table(&self, table: Option<&str>) -> Result<(), SolanaError> {
        let loaded = match table {
            None => None,
            Some(t) => {
                let key = parse_pubkey("lookup table", t)?;
                let (owner, data) = self.account(&key)?.ok_or_else(|| {
                    SolanaError::Chain(format!("lookup table {t} does not exist"))
                })?;
                if owner != solana_address_lookup_table_interface::program::id() {
                    return Err(SolanaError::Chain(format!("{t} is not a lookup table")));
                }
                let meta = solana_address_lookup_table_interface::state::LOOKUP_TABLE_META_SIZE;
                let addresses = data
                    .get(meta..)
                    .unwrap_or(&[])
                    .chunks_exact(32)
                    .map(|c| Pubkey::new_from_array(c.try_into().expect("32 bytes")))
                    .collect();
                Some(AddressLookupTableAccount { key, addresses })
            }
        };
        *self.lookup_table.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// The owner and the data of the account at `address`, at the ledger's
    /// commitment (`None`: no such account).
    fn account(&self, address: &Pubkey) -> Result<Option<(Pubkey, Vec<u8>)>, SolanaError> {
        Ok(self
            .rpc
            .call("getMultipleAccounts", |c| {
                c.get_multiple_accounts_with_commitment(&[*address], self.commitment())
            })?
            .value
            .into_iter()
            .next()
            .flatten()
            .map(|acc| (acc.owner, acc.data)))
    }

    /// The current slot at `commitment`.
    fn slot(&self, commitment: CommitmentConfig) -> Result<u64, SolanaError> {
        self.rpc
            .call("getSlot", |c| c.get_slot_with_commitment(commitment))
    }

    /// The authority's SOL balance in lamports (it pays fees and rent).
    pub fn authority_lamports(&self) -> Result<u64, SolanaError> {
        let authority = self.authority.pubkey();
        Ok(self
            .rpc
            .call("getBalance", |c| {
                c.get_balance_with_commitment(&authority, self.commitment())
            })?
            .value)
    }
}

/// The memos in an RPC `memo` field (`"[len] text; [len] text"`).
fn memo_texts(memo: &str) -> Vec<&str> {
    memo.split("; ")
        .map(|part| match part.strip_prefix('[') {
            Some(rest) => rest.split_once("] ").map(|(_, t)| t).unwrap_or(rest),
            None => part,
        })
        .collect()
}

/// Whether an RPC `memo` field holds a memo equal to `key`.
fn memo_has_key(memo: &str, key: &str) -> bool {
    memo_texts(memo).contains(&key)
}

/// Builds, signs, sends and waits for a set-up transaction paid by `payer`.
fn admin_tx(
    rpc: &Rpc,
    payer: &Keypair,
    ixs: &[Instruction],
    extra: &[&Keypair],
    commitment: CommitmentConfig,
    what: &str,
) -> Result<String, SolanaError> {
    let (hash, _) = rpc.call("getLatestBlockhash", |c| {
        c.get_latest_blockhash_with_commitment(commitment)
    })?;
    let msg = VersionedMessage::Legacy(Message::new_with_blockhash(
        ixs,
        Some(&payer.pubkey()),
        &hash,
    ));
    let mut signers: Vec<&Keypair> = vec![payer];
    signers.extend_from_slice(extra);
    let tx = VersionedTransaction::try_new(msg, &signers)
        .map_err(|e| SolanaError::Build(e.to_string()))?;
    let sig = tx.signatures[0];
    let cfg = RpcSendTransactionConfig {
        skip_preflight: false,
        preflight_commitment: Some(commitment.commitment),
        ..RpcSendTransactionConfig::default()
    };
    rpc.call("sendTransaction", |c| {
        c.send_transaction_with_config(&tx, cfg)
    })?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let st = rpc.call("getSignatureStatuses", |c| c.get_signature_statuses(&[sig]))?;
        if let Some(Some(s)) = st.value.first() {
            if let Some(err) = &s.err {
                return Err(SolanaError::Rejected {
                    signature: sig.to_string(),
                    message: format!("{what}: {err}"),
                });
            }
            if s.satisfies_commitment(commitment) {
                return Ok(sig.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(SolanaError::Timeout(format!(
        "{what}: {sig} not confirmed in 60 s"
    )))
}

/// Creates a new SPL Token mint whose mint authority is `authority` (tests, local and
/// devnet set-ups; on mainnet the IO mint and the stablecoin already exist).
/// Returns its address.
pub fn create_mint(
    rpc_url: &str,
    authority: &Authority,
    decimals: u8,
    commitment: Commitment,
) -> Result<String, SolanaError> {
    let rpc = Rpc::new(
        rpc_url,
        commitment.to_config(),
        Duration::from_secs(10),
        4,
        Duration::from_millis(100),
        Duration::from_secs(2),
    );
    let mint = Keypair::new();
    let payer = authority.pubkey();
    let rent = rpc.call("getMinimumBalanceForRentExemption", |c| {
        c.get_minimum_balance_for_rent_exemption(Mint::LEN)
    })?;
    let ixs = [
        solana_system_interface::instruction::create_account(
            &payer,
            &mint.pubkey(),
            rent,
            Mint::LEN as u64,
            &spl_token_interface::id(),
        ),
        spl_token_interface::instruction::initialize_mint2(
            &spl_token_interface::id(),
            &mint.pubkey(),
            &payer,
            None,
            decimals,
        )
        .map_err(|e| SolanaError::Build(e.to_string()))?,
    ];
    admin_tx(
        &rpc,
        &authority.0,
        &ixs,
        &[&mint],
        commitment.to_config(),
        "create mint",
    )?;
    Ok(mint.pubkey().to_string())
}

fn build_err(e: impl fmt::Display) -> SolanaError {
    SolanaError::Build(e.to_string())
}

impl Ledger for SolanaLedger {
    type Error = SolanaError;

    fn prepare(&self, intents: &[Intent]) -> Result<Prepared, SolanaError> {
        let dests = self.destination_wallet_accounts(intents)?;
        let missing = self.missing_accounts(&dests)?;
        let built = self.build(intents, &missing)?;
        let commitment = self.commitment();
        let (hash, last_valid_block_height) = self.rpc.call("getLatestBlockhash", |c| {
            c.get_latest_blockhash_with_commitment(commitment)
        })?;
        let msg = self.compile(&built.instructions, hash)?;
        let size = Self::check_limits(&msg)?;
        let tx = self.sign(msg, &built.wallet_signers)?;
        let payload = wincode::serialize(&tx).map_err(|e| SolanaError::Payload(e.to_string()))?;
        debug_assert_eq!(payload.len(), size);
        Ok(Prepared {
            signature: tx.signatures[0].to_string(),
            last_valid_block_height,
            keys: intents.iter().map(|i| i.key.clone()).collect(),
            payload,
        })
    }

    fn send(&self, tx: &Prepared) -> Result<(), SolanaError> {
        let vtx: VersionedTransaction =
            wincode::deserialize(&tx.payload).map_err(|e| SolanaError::Payload(e.to_string()))?;
        match vtx.signatures.first() {
            Some(s) if s.to_string() == tx.signature => {}
            _ => {
                return Err(SolanaError::Payload(
                    "payload's signature differs from the recorded one".into(),
                ));
            }
        }
        self.send_signed(&vtx, tx.last_valid_block_height)
    }

    fn status(&self, signature: &str) -> Result<TxStatus, SolanaError> {
        let sig = Signature::from_str(signature).map_err(|_| SolanaError::InvalidAddress {
            what: "signature",
            value: signature.to_string(),
        })?;
        let resp = self.rpc.call("getSignatureStatuses", |c| {
            c.get_signature_statuses_with_history(&[sig])
        })?;
        Ok(match resp.value.into_iter().next().flatten() {
            None => self
                .rejected_and_expired(&sig)?
                .unwrap_or(TxStatus::NotFound),
            Some(st) if !st.satisfies_commitment(self.commitment()) => TxStatus::Pending,
            Some(st) => match st.err {
                Some(e) => TxStatus::Failed(e.to_string()),
                None => TxStatus::Confirmed,
            },
        })
    }

    /// The *finalized* block height: once it is past a transaction's last valid
    /// block height, every block that could have held it is final, so `NotFound`
    /// then means it never landed and never will.
    fn block_height(&self) -> Result<u64, SolanaError> {
        self.rpc.call("getBlockHeight", |c| {
            c.get_block_height_with_commitment(CommitmentConfig::finalized())
        })
    }

    fn fits(&self, intents: &[Intent]) -> bool {
        let Ok(dests) = self.destination_wallet_accounts(intents) else {
            return false;
        };
        let missing = self
            .missing_accounts(&dests)
            .unwrap_or_else(|_| dests.iter().copied().collect());
        let Ok(built) = self.build(intents, &missing) else {
            return false;
        };
        self.compile(&built.instructions, Hash::default())
            .and_then(|m| Self::check_limits(&m))
            .is_ok()
    }

    fn balance(&self, account: &Account, token: Token) -> Result<Amount, SolanaError> {
        let address = self.token_account(account, token)?;
        let Some((_, data)) = self.account(&address)? else {
            return Ok(0);
        };
        let ta = TokenAccount::unpack(&data)
            .map_err(|e| SolanaError::Chain(format!("{address} is not a token account: {e}")))?;
        if ta.mint != self.mint(token).address {
            return Err(SolanaError::Chain(format!(
                "{address} holds mint {}, not {token}",
                ta.mint
            )));
        }
        Ok(ta.amount)
    }

    fn supply(&self, token: Token) -> Result<Amount, SolanaError> {
        let address = self.mint(token).address;
        let (_, data) = self
            .account(&address)?
            .ok_or_else(|| SolanaError::Chain(format!("mint {address} does not exist")))?;
        Ok(Mint::unpack(&data)
            .map_err(|e| SolanaError::Chain(format!("{address} is not a mint: {e}")))?
            .supply)
    }

    fn unit(&self, token: Token) -> Amount {
        10u64.pow(self.mint(token).decimals as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_from_urls() {
        assert_eq!(
            redact_url("https://user:pw@rpc.example.com:8899/key123?api-key=s3cret"),
            "https://rpc.example.com:8899"
        );
        assert_eq!(redact_url("http://127.0.0.1:8899"), "http://127.0.0.1:8899");
    }

    #[test]
    fn memo_field_parsing() {
        assert!(memo_has_key("[11] job-1/p0001", "job-1/p0001"));
        assert!(memo_has_key("[3] abc; [11] job-1/p0001", "job-1/p0001"));
        assert!(!memo_has_key("[11] job-1/p00012", "job-1/p0001"));
    }

    #[test]
    fn custody_addresses_are_distinct_and_deterministic() {
        let auth = Pubkey::new_unique();
        let m1 = Pubkey::new_unique();
        let m2 = Pubkey::new_unique();
        let mut all = HashSet::new();
        for m in [m1, m2] {
            for a in &CUSTODY {
                let k = custody_address(&auth, a, &m).unwrap();
                assert_eq!(Some(k), custody_address(&auth, a, &m));
                assert!(custody_seed(a, &m).unwrap().len() <= 32);
                all.insert(k);
            }
        }
        assert_eq!(all.len(), 8);
    }
}
