//! [`EmbeddedLedger`]: a single-machine ledger with Solana's semantics, persisted to
//! an append-only journal file (or kept in memory).
//!
//! See `docs/ledger.md` for the file format and the crash semantics.

use crate::txsize;
use crate::wallet::{self, KeypairError, WalletKeypair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use solgrid_market::ledger::{
    Account, Amount, Intent, Ledger, Movement, Op, Prepared, Token, TxStatus,
};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Solana's window: a blockhash is valid for about 150 blocks.
pub const DEFAULT_VALIDITY_WINDOW: u64 = 150;
/// How many prepared-but-unsent transactions the ledger remembers (a cache only).
const PREPARED_CACHE: usize = 4096;
/// The payload format version written by [`EmbeddedLedger::prepare`].
pub const PAYLOAD_VERSION: u32 = 1;
/// The longest wallet id accepted (a base58 Solana address is 32 to 44 characters).
pub const MAX_WALLET_ID_LEN: usize = 128;
/// The longest idempotency key accepted (a Solana memo is small; keys are UID + period).
pub const MAX_KEY_LEN: usize = 256;

/// File mode of the journal: owner read/write only. `open` creates it so and
/// tightens an existing journal that is wider (one written by an older version, or
/// a volume whose group bits the kubelet set for `fsGroup`).
pub const JOURNAL_MODE: u32 = 0o600;

#[cfg(unix)]
fn restrict_mode(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o777 != JOURNAL_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(JOURNAL_MODE))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_mode(_: &File) -> std::io::Result<()> {
    Ok(())
}

/// When the journal is flushed to stable storage (`fsync`).
///
/// Every committed transaction is written to the file (one `write` system call)
/// before [`Ledger::send`] returns, whatever the policy: a killed *process* never
/// loses a transaction it reported as sent. The policy only decides what survives a
/// crash of the *machine* (power loss, kernel panic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fsync` after every committed transaction: nothing is lost, slowest.
    Always,
    /// `fsync` after every `n` transactions (and on [`EmbeddedLedger::sync`] and
    /// drop): a machine crash may lose up to the last `n - 1` transactions.
    Every(u32),
    /// Never `fsync` explicitly (only on [`EmbeddedLedger::sync`] and drop).
    Never,
}

/// Configuration of an [`EmbeddedLedger`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// `last_valid_block_height = block_height + validity_window` at prepare time.
    pub validity_window: u64,
    /// The transaction size limit used by [`Ledger::fits`] (Solana: 1,232 bytes).
    pub max_tx_bytes: usize,
    /// Decimals of the IO mint (base units per IO = 10^decimals).
    pub io_decimals: u8,
    /// Decimals of the stablecoin mint (USDC on Solana has 6).
    pub usdc_decimals: u8,
    /// When the journal is flushed to disk.
    pub fsync: FsyncPolicy,
    /// When set, the block height also advances by one per `block_time` of wall
    /// clock (Solana: ~400 ms), as a chain's does, so that a recorded transaction
    /// that was never sent expires even when no other transaction lands. `None`
    /// (the default): only landed transactions and [`EmbeddedLedger::tick`] advance
    /// it, which keeps tests and simulations deterministic. A long-running process
    /// whose store keeps no payloads (the operator) should set it.
    pub block_time: Option<std::time::Duration>,
    /// Whether moving tokens out of a wallet needs the wallet owner's ed25519
    /// signature over the intent (see [`crate::wallet`]): `true` (the default, and
    /// what the operator always uses) means an address alone moves nothing. `false`
    /// only for simulations and tests whose wallets are names rather than keys;
    /// signatures that are present are verified either way.
    pub require_wallet_signatures: bool,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            validity_window: DEFAULT_VALIDITY_WINDOW,
            max_tx_bytes: txsize::MAX_TX_BYTES,
            io_decimals: 9,
            usdc_decimals: 6,
            fsync: FsyncPolicy::Always,
            block_time: None,
            require_wallet_signatures: true,
        }
    }
}

/// Errors of the embedded ledger. A transaction that lands but cannot apply
/// (insufficient funds, overflow) is *not* an error: it is recorded as failed
/// ([`TxStatus::Failed`]) and nothing moves.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path} is corrupt at line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("journal {path} is in use by another ledger (locked)")]
    Locked { path: PathBuf },
    #[error("ledger unusable after a failed journal write (reopen it): {0}")]
    Poisoned(String),
    #[error(
        "transaction {signature} expired: block height {height} is past its last valid block height {last_valid_block_height}"
    )]
    Expired {
        signature: String,
        last_valid_block_height: u64,
        height: u64,
    },
    #[error("a transaction needs at least one intent")]
    Empty,
    #[error("transaction too large: {size} bytes > {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("idempotency key {0:?} appears twice in one transaction")]
    DuplicateKey(String),
    #[error("invalid idempotency key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("invalid account {account:?}: {reason}")]
    InvalidAccount {
        account: String,
        reason: &'static str,
    },
    #[error("malformed transaction payload: {0}")]
    BadPayload(String),
    #[error("signature {0} does not match the transaction's payload")]
    SignatureMismatch(String),
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// Moving tokens out of `wallet` needs its owner's signature and no keypair
    /// for it is registered ([`EmbeddedLedger::add_signer`]).
    #[error(
        "intent {key}: moving tokens out of wallet {wallet} needs its owner's signature, and no keypair is registered for it"
    )]
    MissingSigner { key: String, wallet: String },
    /// A debit of `wallet` without a valid signature by its owner: nothing lands.
    #[error("intent {key}: debit of wallet {wallet} refused: {reason}")]
    Unauthorized {
        key: String,
        wallet: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Keypair(#[from] KeypairError),
    /// A grant (admin funding) landed but failed: nothing moved.
    #[error("grant {key} failed: {reason}")]
    GrantFailed { key: String, reason: String },
}

/// The outcome of a landed transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Confirmed,
    Failed(String),
}

/// One entry of the audit log: a transaction that landed (confirmed or failed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1-based position in the journal.
    pub seq: u64,
    /// The block height at which it landed.
    pub height: u64,
    pub signature: String,
    /// The idempotency keys (memos) it carried.
    pub keys: Vec<String>,
    pub outcome: Outcome,
    /// The number of movements it carried.
    pub movements: usize,
}

/// The wire form of a prepared transaction (`Prepared::payload`), JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Payload {
    v: u32,
    /// The block height at prepare time (Solana's recent blockhash).
    recent: u64,
    lvbh: u64,
    nonce: u64,
    intents: Vec<Intent>,
    /// The wallet owners' signatures of the intents that debit wallets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    auth: Vec<WalletSig>,
}

/// A wallet owner's signature of one intent ([`wallet::intent_message`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletSig {
    /// The intent's index in the transaction.
    pub i: usize,
    /// The debited wallet (its address is its public key).
    pub w: String,
    /// The ed25519 signature, base58.
    pub s: String,
}

/// What [`EmbeddedLedger::grant`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantReceipt {
    /// The transaction that minted the grant.
    pub signature: String,
    /// Its position in the journal (1-based) and the block height it landed at.
    pub seq: u64,
    pub height: u64,
    /// `true` when the key had already been granted: this call moved nothing.
    pub replayed: bool,
}

/// The effect of a transaction: new balances of the touched (account, token) pairs
/// and the new supplies; `Err` is the failure reason of a transaction that fails.
type Effects = Result<(Vec<((Account, Token), Amount)>, [Amount; 2]), String>;

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Record {
    /// A landed transaction; `err` is the failure reason of a failed one.
    Tx {
        seq: u64,
        height: u64,
        sig: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<String>,
        intents: Vec<Intent>,
        /// The wallet owners' signatures (only when an intent debits a wallet).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        auth: Vec<WalletSig>,
    },
    /// The block height advanced by `n` with no transaction.
    Tick { n: u64 },
}

struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    unsynced: u32,
}

struct State {
    height: u64,
    balances: HashMap<Account, [Amount; 2]>,
    supply: [Amount; 2],
    log: Vec<AuditEntry>,
    by_sig: HashMap<String, usize>,
    nonce: u64,
    /// Recently prepared transactions (signature → bytes, payload), not yet sent.
    prepared: HashMap<String, (Vec<u8>, Payload)>,
    /// When the wall-clock block height last advanced (with `block_time`).
    clock: std::time::Instant,
    journal: Option<Journal>,
    poisoned: Option<String>,
}

/// A ledger on one machine: balances per (account, token) and each mint's supply,
/// Solana's transaction semantics (signatures known before sending, a last valid
/// block height, idempotent sends, atomic all-or-nothing transactions), persisted to
/// an append-only journal replayed on open.
///
/// Block height starts at 0 and advances by one for every transaction that lands
/// (confirmed or failed) and by `n` on [`EmbeddedLedger::tick`].
pub struct EmbeddedLedger {
    config: EmbeddedConfig,
    state: Mutex<State>,
    /// Wallet keypairs registered to sign debits of their wallets (in memory only;
    /// never journaled, never logged), by address.
    signers: RwLock<HashMap<String, Arc<WalletKeypair>>>,
    /// Serializes [`EmbeddedLedger::grant`] (look-up of the key, then mint).
    grants: Mutex<()>,
}

fn token_index(token: Token) -> usize {
    match token {
        Token::Io => 0,
        Token::Usdc => 1,
    }
}

fn sign(payload: &[u8]) -> String {
    bs58::encode(Sha512::digest(payload)).into_string()
}

fn validate_account(account: &Account) -> Result<(), LedgerError> {
    if let Account::Wallet(w) = account {
        let reason = if w.is_empty() {
            Some("empty wallet id")
        } else if w.len() > MAX_WALLET_ID_LEN {
            Some("wallet id too long")
        } else if w.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("wallet id contains whitespace or control characters")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(LedgerError::InvalidAccount {
                account: w.clone(),
                reason,
            });
        }
    }
    Ok(())
}

fn validate_intents(intents: &[Intent]) -> Result<(), LedgerError> {
    if intents.is_empty() {
        return Err(LedgerError::Empty);
    }
    let mut keys = HashSet::with_capacity(intents.len());
    for intent in intents {
        let reason = if intent.key.is_empty() {
            Some("empty")
        } else if intent.key.len() > MAX_KEY_LEN {
            Some("too long")
        } else if intent.key.chars().any(|c| c.is_control()) {
            Some("contains control characters")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(LedgerError::InvalidKey {
                key: intent.key.clone(),
                reason,
            });
        }
        if !keys.insert(intent.key.as_str()) {
            return Err(LedgerError::DuplicateKey(intent.key.clone()));
        }
        for m in &intent.movements {
            match &m.op {
                Op::Transfer { from, to, .. } => {
                    validate_account(from)?;
                    validate_account(to)?;
                }
                Op::Burn { from, .. } => validate_account(from)?,
                Op::Mint { to, .. } => validate_account(to)?,
            }
        }
    }
    Ok(())
}

/// Checks the wallet owners' signatures of `intents`: every signature present must
/// be by a wallet its intent debits and verify; with `require`, every debited
/// wallet must have signed. Nothing lands when this fails.
fn check_auth(intents: &[Intent], auth: &[WalletSig], require: bool) -> Result<(), LedgerError> {
    let mut signed: HashSet<(usize, &str)> = HashSet::with_capacity(auth.len());
    for a in auth {
        let Some(intent) = intents.get(a.i) else {
            return Err(LedgerError::BadPayload(format!(
                "signature for intent #{} of {}",
                a.i,
                intents.len()
            )));
        };
        if !wallet::debited_wallets(intent).contains(a.w.as_str()) {
            return Err(LedgerError::BadPayload(format!(
                "intent {}: signature by wallet {}, which it does not debit",
                intent.key, a.w
            )));
        }
        wallet::verify_intent(&a.w, intent, &a.s).map_err(|reason| LedgerError::Unauthorized {
            key: intent.key.clone(),
            wallet: a.w.clone(),
            reason,
        })?;
        signed.insert((a.i, a.w.as_str()));
    }
    if require {
        for (i, intent) in intents.iter().enumerate() {
            for w in wallet::debited_wallets(intent) {
                if !signed.contains(&(i, w)) {
                    return Err(LedgerError::Unauthorized {
                        key: intent.key.clone(),
                        wallet: w.to_string(),
                        reason: "no signature by the wallet's owner (an address alone moves nothing)",
                    });
                }
            }
        }
    }
    Ok(())
}

impl State {
    fn empty(journal: Option<Journal>) -> Self {
        Self {
            height: 0,
            balances: HashMap::new(),
            supply: [0; 2],
            log: Vec::new(),
            by_sig: HashMap::new(),
            nonce: 0,
            prepared: HashMap::new(),
            clock: std::time::Instant::now(),
            journal,
            poisoned: None,
        }
    }

    fn check_poisoned(&self) -> Result<(), LedgerError> {
        match &self.poisoned {
            Some(p) => Err(LedgerError::Poisoned(p.clone())),
            None => Ok(()),
        }
    }

    fn balance(&self, account: &Account, token: Token) -> Amount {
        self.balances
            .get(account)
            .map_or(0, |b| b[token_index(token)])
    }

    /// Computes the effect of `movements`, all or nothing. `Err` is the failure
    /// reason of a transaction that lands but fails.
    fn plan_effects(&self, intents: &[Intent]) -> Effects {
        let mut overlay: Vec<((Account, Token), Amount)> = Vec::new();
        let mut supply = self.supply;
        fn get(
            state: &State,
            overlay: &[((Account, Token), Amount)],
            account: &Account,
            token: Token,
        ) -> (Option<usize>, Amount) {
            for (i, ((a, t), v)) in overlay.iter().enumerate() {
                if *t == token && a == account {
                    return (Some(i), *v);
                }
            }
            (None, state.balance(account, token))
        }
        fn set(
            overlay: &mut Vec<((Account, Token), Amount)>,
            idx: Option<usize>,
            account: &Account,
            token: Token,
            v: Amount,
        ) {
            match idx {
                Some(i) => overlay[i].1 = v,
                None => overlay.push(((account.clone(), token), v)),
            }
        }
        type Overlay = Vec<((Account, Token), Amount)>;
        // `amount` out of `from` (`what`: what the debit is for, in the failure)
        let debit = |overlay: &mut Overlay,
                     from: &Account,
                     token: Token,
                     amount: Amount,
                     what: &str,
                     key: &str| {
            let (fi, fb) = get(self, overlay, from, token);
            let nb = fb.checked_sub(amount).ok_or_else(|| {
                format!(
                    "insufficient funds in {from} ({token}){what}: has {fb}, needs {amount} (intent {key})"
                )
            })?;
            set(overlay, fi, from, token, nb);
            Ok::<_, String>(())
        };
        let credit =
            |overlay: &mut Overlay, to: &Account, token: Token, amount: Amount, key: &str| {
                let (ti, tb) = get(self, overlay, to, token);
                let nt = tb
                    .checked_add(amount)
                    .ok_or_else(|| format!("balance overflow in {to} ({token}) (intent {key})"))?;
                set(overlay, ti, to, token, nt);
                Ok::<_, String>(())
            };
        for intent in intents {
            let key = &intent.key;
            for Movement { token, op } in &intent.movements {
                let token = *token;
                match op {
                    Op::Transfer { from, to, amount } => {
                        debit(&mut overlay, from, token, *amount, "", key)?;
                        credit(&mut overlay, to, token, *amount, key)?;
                    }
                    Op::Burn { from, amount } => {
                        debit(&mut overlay, from, token, *amount, " to burn", key)?;
                        let s = &mut supply[token_index(token)];
                        *s = s
                            .checked_sub(*amount)
                            .ok_or_else(|| format!("supply underflow of {token} (intent {key})"))?;
                    }
                    Op::Mint { to, amount } => {
                        let s = &mut supply[token_index(token)];
                        *s = s
                            .checked_add(*amount)
                            .ok_or_else(|| format!("supply overflow of {token} (intent {key})"))?;
                        credit(&mut overlay, to, token, *amount, key)?;
                    }
                }
            }
        }
        Ok((overlay, supply))
    }

    fn commit_effects(&mut self, overlay: Vec<((Account, Token), Amount)>, supply: [Amount; 2]) {
        for ((account, token), v) in overlay {
            self.balances.entry(account).or_default()[token_index(token)] = v;
        }
        self.supply = supply;
    }

    fn push_log(&mut self, entry: AuditEntry) {
        self.by_sig.insert(entry.signature.clone(), self.log.len());
        self.log.push(entry);
    }
}

impl Journal {
    /// Appends one record (one `write`), fsyncing per `policy`. On failure the file
    /// is cut back to its previous length so that no partial line stays behind.
    fn append(&mut self, line: &[u8], policy: FsyncPolicy) -> Result<(), std::io::Error> {
        if let Err(e) = self.file.write_all(line) {
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(e);
        }
        self.len += line.len() as u64;
        self.unsynced += 1;
        let sync = match policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Every(n) => self.unsynced >= n.max(1),
            FsyncPolicy::Never => false,
        };
        if sync {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

impl EmbeddedLedger {
    /// A ledger kept in memory only (no file): for tests and the simulator.
    pub fn in_memory(config: EmbeddedConfig) -> Result<Self, LedgerError> {
        Self::check_config(&config)?;
        Ok(Self {
            config,
            state: Mutex::new(State::empty(None)),
            signers: RwLock::new(HashMap::new()),
            grants: Mutex::new(()),
        })
    }

    /// Opens (or creates) the ledger persisted in the journal at `path`, replaying it.
    /// The file is locked for exclusive use until the ledger is dropped.
    pub fn open(path: impl AsRef<Path>, config: EmbeddedConfig) -> Result<Self, LedgerError> {
        Self::check_config(&config)?;
        let path = path.as_ref().to_path_buf();
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        // The journal holds every balance and transaction of the market: readable
        // and writable by the ledger's own user only (0600), from its first byte.
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, JOURNAL_MODE);
        let mut file = opts.open(&path).map_err(io)?;
        restrict_mode(&file).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked { path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        // Everything after the last newline is a torn write: cut it off.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            file.set_len(complete as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        file.seek(SeekFrom::Start(complete as u64)).map_err(io)?;
        let journal = Journal {
            path: path.clone(),
            file,
            len: complete as u64,
            unsynced: 0,
        };
        let mut state = State::empty(None);
        Self::replay(&mut state, &bytes[..complete], &path)?;
        state.journal = Some(journal);
        Ok(Self {
            config,
            state: Mutex::new(state),
            signers: RwLock::new(HashMap::new()),
            grants: Mutex::new(()),
        })
    }

    fn check_config(config: &EmbeddedConfig) -> Result<(), LedgerError> {
        if config.io_decimals > 19 || config.usdc_decimals > 19 {
            return Err(LedgerError::Config(
                "decimals must be at most 19 (10^decimals fits u64)",
            ));
        }
        if config.max_tx_bytes == 0 {
            return Err(LedgerError::Config("max_tx_bytes must be positive"));
        }
        Ok(())
    }

    fn replay(state: &mut State, bytes: &[u8], path: &Path) -> Result<(), LedgerError> {
        let corrupt = |line: usize, reason: String| LedgerError::Corrupt {
            path: path.to_path_buf(),
            line,
            reason,
        };
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            if raw.is_empty() {
                continue;
            }
            let record: Record =
                serde_json::from_slice(raw).map_err(|e| corrupt(line, e.to_string()))?;
            match record {
                Record::Tick { n } => {
                    state.height = state
                        .height
                        .checked_add(n)
                        .ok_or_else(|| corrupt(line, "block height overflow".into()))?;
                }
                Record::Tx {
                    seq,
                    height,
                    sig,
                    err,
                    intents,
                    auth,
                } => {
                    let expected_seq = state.log.len() as u64 + 1;
                    if seq != expected_seq {
                        return Err(corrupt(
                            line,
                            format!("sequence {seq}, expected {expected_seq}"),
                        ));
                    }
                    if Some(height) != state.height.checked_add(1) {
                        return Err(corrupt(
                            line,
                            format!(
                                "block height {height}, expected {}",
                                state.height as u128 + 1
                            ),
                        ));
                    }
                    if state.by_sig.contains_key(&sig) {
                        return Err(corrupt(line, format!("signature {sig} appears twice")));
                    }
                    validate_intents(&intents).map_err(|e| corrupt(line, e.to_string()))?;
                    // signatures recorded are checked again (older records carry none)
                    if !auth.is_empty() {
                        check_auth(&intents, &auth, false)
                            .map_err(|e| corrupt(line, e.to_string()))?;
                    }
                    let effects = match err {
                        None => Ok(state
                            .plan_effects(&intents)
                            .map_err(|r| corrupt(line, format!("replay diverged: {r}")))?),
                        Some(reason) => Err(reason),
                    };
                    Self::finish(state, effects, seq, height, &sig, &intents);
                }
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied transaction
        // (effects are computed first, committed after the journal write), so a
        // poisoned mutex is safe to enter.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &EmbeddedConfig {
        &self.config
    }

    /// The journal's path, `None` in memory.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().journal.as_ref().map(|j| j.path.clone())
    }

    /// Advances the block height by `n` with no transaction (time passing), so that
    /// prepared transactions that were never sent expire. Journaled.
    pub fn tick(&self, n: u64) -> Result<u64, LedgerError> {
        let mut st = self.lock();
        self.tick_locked(&mut st, n)
    }

    fn tick_locked(&self, st: &mut State, n: u64) -> Result<u64, LedgerError> {
        if let Some(p) = &st.poisoned {
            return Err(LedgerError::Poisoned(p.clone()));
        }
        let new_height = st
            .height
            .checked_add(n)
            .ok_or(LedgerError::Config("block height overflow"))?;
        if n == 0 {
            return Ok(st.height);
        }
        if st.journal.is_some() {
            let line = serde_json::to_vec(&Record::Tick { n }).expect("a tick serializes");
            Self::append_journal(st, line, self.config.fsync)?;
        }
        st.height = new_height;
        Ok(new_height)
    }

    /// Appends `line` (one record) to the journal, if there is one. On an error
    /// after bytes went out (written but not flushed) the outcome on disk is
    /// unknown, so the ledger is poisoned: it refuses further work until the journal
    /// is reopened (replayed).
    fn append_journal(
        st: &mut State,
        mut line: Vec<u8>,
        policy: FsyncPolicy,
    ) -> Result<(), LedgerError> {
        let Some(j) = st.journal.as_mut() else {
            return Ok(());
        };
        line.push(b'\n');
        let len_before = j.len;
        if let Err(e) = j.append(&line, policy) {
            let path = j.path.clone();
            if j.len != len_before {
                st.poisoned = Some(format!("fsync of {} failed: {e}", path.display()));
            }
            return Err(LedgerError::Io { path, source: e });
        }
        Ok(())
    }

    /// With [`EmbeddedConfig::block_time`], advances the height by the blocks that
    /// wall-clock time produced since the last advance (one journaled tick).
    fn advance_clock(&self, st: &mut State) -> Result<(), LedgerError> {
        let Some(bt) = self.config.block_time else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let elapsed = now.saturating_duration_since(st.clock);
        let n = (elapsed.as_nanos() / bt.as_nanos().max(1)) as u64;
        if n > 0 {
            self.tick_locked(st, n)?;
            st.clock += bt.saturating_mul(n.min(u32::MAX as u64) as u32);
            if st.clock > now {
                st.clock = now;
            }
        }
        Ok(())
    }

    /// Flushes the journal to stable storage now.
    pub fn sync(&self) -> Result<(), LedgerError> {
        let mut st = self.lock();
        if let Some(j) = st.journal.as_mut() {
            j.file.sync_data().map_err(|source| LedgerError::Io {
                path: j.path.clone(),
                source,
            })?;
            j.unsynced = 0;
        }
        Ok(())
    }

    /// Prepares and sends one transaction carrying `intents` (genesis, funding,
    /// tests): returns its signature and outcome. Not the exactly-once path — use the
    /// settlement executor for that.
    pub fn apply(&self, intents: &[Intent]) -> Result<(String, TxStatus), LedgerError> {
        let tx = self.prepare(intents)?;
        self.send(&tx)?;
        let status = self.status(&tx.signature)?;
        Ok((tx.signature, status))
    }

    /// Registers a wallet's keypair so that [`Ledger::prepare`] signs movements out
    /// of that wallet (escrow funding, stake lock); returns its address. Kept in
    /// memory only. Replaces an earlier keypair of the same wallet (the same key).
    pub fn add_signer(&self, keypair: WalletKeypair) -> String {
        let address = keypair.address();
        self.signers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.clone(), Arc::new(keypair));
        address
    }

    /// Registers a wallet's keypair from a Secret's bytes (the Solana CLI JSON array
    /// of 64 bytes, or the raw 64 bytes); returns its address. Errors never echo
    /// the bytes.
    pub fn add_signer_bytes(&self, secret: &[u8]) -> Result<String, LedgerError> {
        Ok(self.add_signer(WalletKeypair::from_secret_bytes(secret)?))
    }

    /// Forgets a wallet's keypair; returns whether one was registered.
    pub fn remove_signer(&self, wallet: &str) -> bool {
        self.signers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(wallet)
            .is_some()
    }

    pub fn has_signer(&self, wallet: &str) -> bool {
        self.signers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(wallet)
    }

    /// Signs every wallet debit of `intents` with the registered keypairs.
    fn sign_debits(&self, intents: &[Intent]) -> Result<Vec<WalletSig>, LedgerError> {
        let mut auth = Vec::new();
        let mut registry = None;
        for (i, intent) in intents.iter().enumerate() {
            let debited = wallet::debited_wallets(intent);
            if debited.is_empty() {
                continue;
            }
            let reg = registry
                .get_or_insert_with(|| self.signers.read().unwrap_or_else(|p| p.into_inner()));
            for w in debited {
                match reg.get(w) {
                    Some(kp) => auth.push(WalletSig {
                        i,
                        w: w.to_string(),
                        s: kp.sign_intent(intent),
                    }),
                    None if self.config.require_wallet_signatures => {
                        return Err(LedgerError::MissingSigner {
                            key: intent.key.clone(),
                            wallet: w.to_string(),
                        });
                    }
                    None => {}
                }
            }
        }
        Ok(auth)
    }

    /// Funds `wallet` with `amount` newly minted base units of `token`, exactly once
    /// per `key` (an admin action: the operator runs it for a `LedgerGrant`, keyed by
    /// the object's UID). A key already granted moves nothing and returns the
    /// transaction that granted it (`replayed`). The key is the transaction's memo
    /// in the audit log. `wallet` must be an ed25519 address (one that can ever be
    /// debited by its owner).
    pub fn grant(
        &self,
        key: &str,
        wallet_address: &str,
        token: Token,
        amount: Amount,
    ) -> Result<GrantReceipt, LedgerError> {
        if !wallet::is_wallet_address(wallet_address) {
            return Err(LedgerError::InvalidAccount {
                account: wallet_address.to_string(),
                reason: "not a base58 ed25519 public key (no owner could ever move it)",
            });
        }
        let _once = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = self.find_confirmed(key) {
            return Ok(GrantReceipt {
                signature: e.signature,
                seq: e.seq,
                height: e.height,
                replayed: true,
            });
        }
        let intent = Intent {
            key: key.to_string(),
            movements: vec![Movement {
                token,
                op: Op::Mint {
                    to: Account::Wallet(wallet_address.to_string()),
                    amount,
                },
            }],
        };
        let (signature, status) = self.apply(&[intent])?;
        match status {
            TxStatus::Confirmed => {
                let e = self.find_confirmed(key).ok_or_else(|| {
                    LedgerError::BadPayload(format!("grant {key} confirmed but not in the log"))
                })?;
                Ok(GrantReceipt {
                    signature,
                    seq: e.seq,
                    height: e.height,
                    replayed: false,
                })
            }
            TxStatus::Failed(reason) => Err(LedgerError::GrantFailed {
                key: key.to_string(),
                reason,
            }),
            other => Err(LedgerError::GrantFailed {
                key: key.to_string(),
                reason: format!("unexpected status {other:?}"),
            }),
        }
    }

    /// The confirmed transaction that carried idempotency key `key`, if any (the
    /// latest one).
    pub fn find_confirmed(&self, key: &str) -> Option<AuditEntry> {
        let st = self.lock();
        st.log
            .iter()
            .rev()
            .find(|e| e.outcome == Outcome::Confirmed && e.keys.iter().any(|k| k == key))
            .cloned()
    }

    /// The audit log: every landed transaction in order, with its keys (memos).
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.lock().log.clone()
    }

    /// The number of landed transactions (confirmed and failed).
    pub fn tx_count(&self) -> usize {
        self.lock().log.len()
    }

    /// For each idempotency key, how many *confirmed* transactions carried it.
    /// Exactly-once settlement means every count is 1.
    pub fn confirmed_key_counts(&self) -> HashMap<String, usize> {
        let st = self.lock();
        let mut counts = HashMap::new();
        for e in st.log.iter().filter(|e| e.outcome == Outcome::Confirmed) {
            for k in &e.keys {
                *counts.entry(k.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Every non-zero balance, sorted by (account, token).
    pub fn balances(&self) -> Vec<(Account, Token, Amount)> {
        let st = self.lock();
        let mut v: Vec<_> = st
            .balances
            .iter()
            .flat_map(|(a, b)| {
                Token::ALL
                    .iter()
                    .map(move |&t| (a.clone(), t, b[token_index(t)]))
            })
            .filter(|(_, _, v)| *v > 0)
            .collect();
        v.sort();
        v
    }

    /// The sum of all balances of `token` (equals the supply: a conservation check).
    pub fn total_balances(&self, token: Token) -> u128 {
        let st = self.lock();
        st.balances
            .values()
            .map(|b| b[token_index(token)] as u128)
            .sum()
    }

    fn decode(tx: &Prepared) -> Result<Payload, LedgerError> {
        if sign(&tx.payload) != tx.signature {
            return Err(LedgerError::SignatureMismatch(tx.signature.clone()));
        }
        let payload: Payload = serde_json::from_slice(&tx.payload)
            .map_err(|e| LedgerError::BadPayload(e.to_string()))?;
        if payload.v != PAYLOAD_VERSION {
            return Err(LedgerError::BadPayload(format!(
                "unknown payload version {}",
                payload.v
            )));
        }
        Ok(payload)
    }
}

impl Drop for EmbeddedLedger {
    fn drop(&mut self) {
        if let Ok(st) = self.state.get_mut()
            && let Some(j) = st.journal.as_mut()
            && j.unsynced > 0
        {
            let _ = j.file.sync_data();
        }
    }
}

impl Ledger for EmbeddedLedger {
    type Error = LedgerError;

    fn prepare(&self, intents: &[Intent]) -> Result<Prepared, LedgerError> {
        validate_intents(intents)?;
        let size = txsize::estimate_tx_size(intents);
        if size > self.config.max_tx_bytes {
            return Err(LedgerError::TooLarge {
                size,
                max: self.config.max_tx_bytes,
            });
        }
        let auth = self.sign_debits(intents)?;
        let (recent, nonce) = {
            let mut st = self.lock();
            st.check_poisoned()?;
            self.advance_clock(&mut st)?;
            st.nonce += 1;
            (st.height, st.nonce)
        };
        let payload = Payload {
            v: PAYLOAD_VERSION,
            recent,
            lvbh: recent.saturating_add(self.config.validity_window),
            nonce,
            intents: intents.to_vec(),
            auth,
        };
        let bytes =
            serde_json::to_vec(&payload).map_err(|e| LedgerError::BadPayload(e.to_string()))?;
        let signature = sign(&bytes);
        let lvbh = payload.lvbh;
        {
            // remember it, so that `send` of these very bytes skips hashing and parsing
            let mut st = self.lock();
            if st.prepared.len() >= PREPARED_CACHE {
                st.prepared.clear();
            }
            st.prepared
                .insert(signature.clone(), (bytes.clone(), payload));
        }
        Ok(Prepared {
            signature,
            last_valid_block_height: lvbh,
            keys: intents.iter().map(|i| i.key.clone()).collect(),
            payload: bytes,
        })
    }

    fn send(&self, tx: &Prepared) -> Result<(), LedgerError> {
        let mut st = self.lock();
        st.check_poisoned()?;
        let cached = st.prepared.remove(&tx.signature);
        if st.by_sig.contains_key(&tx.signature) {
            // already landed: sending again moves nothing
            return Ok(());
        }
        let payload = match cached {
            // the very bytes this ledger prepared and signed: already checked
            Some((bytes, payload)) if bytes == tx.payload => payload,
            _ => {
                let payload = Self::decode(tx)?;
                validate_intents(&payload.intents)?;
                payload
            }
        };
        // the owners' signatures are verified as the debits are applied, whoever
        // built the transaction
        check_auth(
            &payload.intents,
            &payload.auth,
            self.config.require_wallet_signatures,
        )?;
        self.advance_clock(&mut st)?;
        if st.height > payload.lvbh {
            return Err(LedgerError::Expired {
                signature: tx.signature.clone(),
                last_valid_block_height: payload.lvbh,
                height: st.height,
            });
        }
        let effects = st.plan_effects(&payload.intents);
        let seq = st.log.len() as u64 + 1;
        let height = st
            .height
            .checked_add(1)
            .ok_or(LedgerError::Config("block height overflow"))?;
        let err = effects.as_ref().err().cloned();
        if st.journal.is_some() {
            let record = Record::Tx {
                seq,
                height,
                sig: tx.signature.clone(),
                err: err.clone(),
                intents: payload.intents,
                auth: payload.auth,
            };
            let line =
                serde_json::to_vec(&record).map_err(|e| LedgerError::BadPayload(e.to_string()))?;
            Self::append_journal(&mut st, line, self.config.fsync)?;
            let Record::Tx { intents, .. } = &record else {
                unreachable!("built as a Tx above")
            };
            Self::finish(&mut st, effects, seq, height, &tx.signature, intents);
        } else {
            Self::finish(
                &mut st,
                effects,
                seq,
                height,
                &tx.signature,
                &payload.intents,
            );
        }
        Ok(())
    }

    fn status(&self, signature: &str) -> Result<TxStatus, LedgerError> {
        let st = self.lock();
        // after a failed fsync a tx may be on disk and not in memory: say nothing
        st.check_poisoned()?;
        Ok(match st.by_sig.get(signature) {
            Some(&i) => match &st.log[i].outcome {
                Outcome::Confirmed => TxStatus::Confirmed,
                Outcome::Failed(r) => TxStatus::Failed(r.clone()),
            },
            None => TxStatus::NotFound,
        })
    }

    fn block_height(&self) -> Result<u64, LedgerError> {
        let mut st = self.lock();
        st.check_poisoned()?;
        self.advance_clock(&mut st)?;
        Ok(st.height)
    }

    fn fits(&self, intents: &[Intent]) -> bool {
        txsize::fits_in(intents, self.config.max_tx_bytes)
    }

    fn balance(&self, account: &Account, token: Token) -> Result<Amount, LedgerError> {
        validate_account(account)?;
        Ok(self.lock().balance(account, token))
    }

    fn supply(&self, token: Token) -> Result<Amount, LedgerError> {
        Ok(self.lock().supply[token_index(token)])
    }

    fn unit(&self, token: Token) -> Amount {
        let d = match token {
            Token::Io => self.config.io_decimals,
            Token::Usdc => self.config.usdc_decimals,
        };
        10u64.pow(d as u32)
    }
}

impl EmbeddedLedger {
    /// Commits a landed transaction (its effects, unless it failed) as the block at
    /// `height`, and logs it.
    fn finish(
        st: &mut State,
        effects: Effects,
        seq: u64,
        height: u64,
        signature: &str,
        intents: &[Intent],
    ) {
        let outcome = match effects {
            Ok((overlay, supply)) => {
                st.commit_effects(overlay, supply);
                Outcome::Confirmed
            }
            Err(reason) => Outcome::Failed(reason),
        };
        st.height = height;
        st.push_log(AuditEntry {
            seq,
            height,
            signature: signature.to_string(),
            keys: intents.iter().map(|i| i.key.clone()).collect(),
            outcome,
            movements: intents.iter().map(|i| i.movements.len()).sum(),
        });
    }
}
