//! solgrid-settlement: the exactly-once settlement executor (ECONOMICS.md,
//! "Exactly-once settlement"), on its own: it depends on the `Ledger` trait of
//! `solgrid-market` only, so a Solana deployment links no embedded ledger.
//! `solgrid_ledger::settle` re-exports it at its old paths.
//!
//! The executor is generic over any [`Ledger`] and any [`SettlementStore`] — where the
//! protocol's records live (the operator: ComputeJob/StakePosition status; the
//! simulator: [`MemoryStore`]). Each step is one small store operation that maps to
//! one status patch:
//!
//! | step | store operation | state after |
//! | --- | --- | --- |
//! | 1. plan recorded before anything is sent | [`SettlementStore::record_plan`] | `Planned` |
//! | 2. signature + last valid block height recorded before sending | [`SettlementStore::record_sent`] | `Sent` |
//! | 3a. the ledger says confirmed | [`SettlementStore::record_confirmed`] | `Confirmed` |
//! | 3b. the ledger says failed (nothing moved) | [`SettlementStore::record_failed`] | `Failed` |
//! | operator asks to try a failed one again | [`SettlementStore::record_replan`] | `Planned` |
//!
//! On every pass ([`Executor::settle_pass`]), for each `Sent` settlement the
//! executor asks the ledger for its signature: `Confirmed` ⇒ done; `Failed` ⇒ recorded
//! and surfaced, never silently resent; `NotFound` with the block height past its
//! last valid block height ⇒ it can never land, so it is rebuilt (new prepare, new
//! record, send); otherwise it waits (re-sending the very same recorded transaction
//! when the store kept its payload, which is idempotent). `Planned` settlements are
//! batched into as few transactions as [`Ledger::fits`] allows.
//!
//! A crash (an error, or the process dying) at any point leaves the store in one of
//! these states, and a fresh executor over the same store resumes correctly: nothing
//! is sent that is not recorded first, and nothing recorded is sent under a new
//! signature unless the old one can no longer land.

use serde::{Deserialize, Serialize};
use solgrid_market::ledger::{Intent, Ledger, Prepared, TxStatus};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

mod book;
pub use book::{Book, RecordStore};

/// The state of one settlement, as recorded in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementState {
    /// The plan is recorded; no transaction is in flight.
    Planned,
    /// A transaction carrying it was (possibly) sent.
    Sent {
        signature: String,
        last_valid_block_height: u64,
    },
    /// Settled, exactly once.
    Confirmed { signature: String },
    /// The transaction landed and failed (nothing moved), or could never be built.
    /// Surfaced to the operator; retried only through [`Executor::retry_failed`].
    Failed {
        signature: Option<String>,
        reason: String,
    },
}

impl SettlementState {
    /// Planned or Sent: the executor still has work to do.
    pub fn is_unsettled(&self) -> bool {
        matches!(
            self,
            SettlementState::Planned | SettlementState::Sent { .. }
        )
    }
}

/// One settlement record: the plan and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub intent: Intent,
    pub state: SettlementState,
    /// The wire form of the transaction in `Sent`, when the store keeps it: lets the
    /// executor re-send the very same transaction after a restart instead of waiting
    /// for it to expire. A store may drop it (the protocol is still correct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Vec<u8>>,
}

/// Where the protocol's records live. Each method is one small, durable write; it
/// must have happened when it returns `Ok`. Keys are the intents' idempotency keys.
pub trait SettlementStore {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Step 1: records a new plan in state `Planned`. Only called for a key the store
    /// does not know.
    fn record_plan(&mut self, intent: &Intent) -> Result<(), Self::Error>;
    /// Step 2: records that the transaction `signature` carrying `keys` is about to
    /// be sent (state `Sent`). Called *before* sending; on `Err` nothing is sent.
    ///
    /// `payload` may be kept (and returned in [`Settlement::payload`]) so that the
    /// executor can re-send the very same transaction after a restart. **A store
    /// that keeps payloads must write all `keys` atomically**: a re-sent payload
    /// carries every intent of the transaction, so a key left `Planned` by a
    /// half-done write would be built again and paid twice. A store that writes
    /// keys one by one (one object per key) must drop payloads (the executor then
    /// waits for the transaction to expire and rebuilds it).
    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        last_valid_block_height: u64,
        payload: &[u8],
    ) -> Result<(), Self::Error>;
    /// Step 3: the transaction `signature` is confirmed: `Confirmed`.
    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), Self::Error>;
    /// The transaction landed and failed, or the intent cannot be sent: `Failed`.
    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), Self::Error>;
    /// An operator's decision to try failed settlements again: back to `Planned`.
    fn record_replan(&mut self, keys: &[String]) -> Result<(), Self::Error>;
    /// One settlement by key.
    fn get(&self, key: &str) -> Result<Option<Settlement>, Self::Error>;
    /// Every `Planned` or `Sent` settlement, in a stable order (plan order).
    fn unsettled(&self) -> Result<Vec<Settlement>, Self::Error>;
}

impl<S: SettlementStore + ?Sized> SettlementStore for &mut S {
    type Error = S::Error;
    fn record_plan(&mut self, intent: &Intent) -> Result<(), Self::Error> {
        (**self).record_plan(intent)
    }
    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        lvbh: u64,
        payload: &[u8],
    ) -> Result<(), Self::Error> {
        (**self).record_sent(keys, signature, lvbh, payload)
    }
    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), Self::Error> {
        (**self).record_confirmed(keys, signature)
    }
    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), Self::Error> {
        (**self).record_failed(keys, signature, reason)
    }
    fn record_replan(&mut self, keys: &[String]) -> Result<(), Self::Error> {
        (**self).record_replan(keys)
    }
    fn get(&self, key: &str) -> Result<Option<Settlement>, Self::Error> {
        (**self).get(key)
    }
    fn unsettled(&self) -> Result<Vec<Settlement>, Self::Error> {
        (**self).unsettled()
    }
}

/// Errors of the store protocol ([`RecordStore`]) and of [`MemoryStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown settlement key {0:?}")]
    UnknownKey(String),
    #[error("settlement {0:?} already planned")]
    AlreadyPlanned(String),
}

/// The records of a [`MemoryStore`].
#[derive(Clone, Debug)]
pub struct MemoryBook {
    records: Vec<Settlement>,
    index: HashMap<String, usize>,
    unsettled: BTreeSet<usize>,
    keep_payloads: bool,
}

/// A [`SettlementStore`] in memory (the simulator; tests). Survives an executor
/// being dropped, not the process.
pub type MemoryStore = RecordStore<MemoryBook>;

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store that keeps the payloads of sent transactions.
    pub fn new() -> Self {
        RecordStore::from_book(MemoryBook {
            records: Vec::new(),
            index: HashMap::new(),
            unsettled: BTreeSet::new(),
            keep_payloads: true,
        })
    }

    /// Whether to keep sent payloads (without them the executor waits for expiry
    /// and rebuilds instead of re-sending).
    pub fn keep_payloads(mut self, keep: bool) -> Self {
        self.keep_payloads = keep;
        self
    }
}

impl MemoryBook {
    /// Every record, in plan order.
    pub fn all(&self) -> &[Settlement] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The number of settlements in each state: (planned, sent, confirmed, failed).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for r in &self.records {
            match r.state {
                SettlementState::Planned => c.0 += 1,
                SettlementState::Sent { .. } => c.1 += 1,
                SettlementState::Confirmed { .. } => c.2 += 1,
                SettlementState::Failed { .. } => c.3 += 1,
            }
        }
        c
    }
}

impl Book for MemoryBook {
    type Error = StoreError;

    fn settlements(&self) -> Result<Vec<Settlement>, StoreError> {
        Ok(self.records.clone())
    }

    fn get(&self, key: &str) -> Result<Option<Settlement>, StoreError> {
        Ok(self.index.get(key).map(|&i| self.records[i].clone()))
    }

    fn unsettled(&self) -> Result<Vec<Settlement>, StoreError> {
        Ok(self
            .unsettled
            .iter()
            .map(|&i| self.records[i].clone())
            .collect())
    }

    fn plan(&mut self, intent: &Intent) -> Result<(), StoreError> {
        if self.index.contains_key(&intent.key) {
            return Err(StoreError::AlreadyPlanned(intent.key.clone()));
        }
        let i = self.records.len();
        self.records.push(Settlement {
            intent: intent.clone(),
            state: SettlementState::Planned,
            payload: None,
        });
        self.index.insert(intent.key.clone(), i);
        self.unsettled.insert(i);
        Ok(())
    }

    fn has(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    fn set(&mut self, key: &str, state: &SettlementState, payload: Option<&[u8]>) {
        let Some(&i) = self.index.get(key) else {
            return;
        };
        let r = &mut self.records[i];
        r.state = state.clone();
        r.payload = match (&r.state, payload) {
            (SettlementState::Sent { .. }, Some(p)) if self.keep_payloads => Some(p.to_vec()),
            _ => None,
        };
        if state.is_unsettled() {
            self.unsettled.insert(i);
        } else {
            self.unsettled.remove(&i);
        }
    }

    fn write(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Waits between retries and polls. Inject one in tests (no real sleeping), or one
/// that advances an embedded ledger's block height.
pub trait Sleeper {
    fn sleep(&self, d: Duration);
}

/// Sleeps the current thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadSleeper;

impl Sleeper for ThreadSleeper {
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Records the requested sleeps and returns at once (tests).
#[derive(Debug, Default)]
pub struct RecordingSleeper {
    pub slept: std::sync::Mutex<Vec<Duration>>,
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, d: Duration) {
        self.slept.lock().unwrap_or_else(|e| e.into_inner()).push(d);
    }
}

impl<T: Sleeper + ?Sized> Sleeper for &T {
    fn sleep(&self, d: Duration) {
        (**self).sleep(d)
    }
}

/// Exponential backoff for ledger calls that fail (transport errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// Each wait is this many times the previous one...
    pub factor: u32,
    /// ...up to this.
    pub max: Duration,
    /// Calls in all (1 = no retry) before the error is returned.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            factor: 2,
            max: Duration::from_secs(5),
            max_attempts: 6,
        }
    }
}

impl Backoff {
    /// The wait after the `attempt`-th failed call (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut d = self.initial;
        for _ in 1..attempt {
            d = d.saturating_mul(self.factor);
            if d >= self.max {
                return self.max;
            }
        }
        d.min(self.max)
    }
}

/// Configuration of an [`Executor`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorConfig {
    pub backoff: Backoff,
    /// At most this many intents per transaction (besides [`Ledger::fits`]).
    pub max_intents_per_tx: usize,
    /// Re-send a recorded transaction that is not found and not expired, from the
    /// payload the store kept (idempotent: same signature).
    pub resend_unconfirmed: bool,
    /// Wait between passes in [`Executor::run_until_settled`].
    pub poll: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            max_intents_per_tx: 64,
            resend_unconfirmed: true,
            poll: Duration::from_millis(400),
        }
    }
}

/// Errors of the executor. Whatever the error, the store is left in a state a new
/// executor resumes from correctly.
#[derive(Debug, thiserror::Error)]
pub enum SettleError<LE: std::error::Error + 'static, SE: std::error::Error + 'static> {
    /// A ledger call still failed after the configured retries.
    #[error("ledger: {0}")]
    Ledger(#[source] LE),
    /// A store operation failed (not retried: the caller re-queues).
    #[error("settlement store: {0}")]
    Store(#[source] SE),
    /// A key was planned before with different movements.
    #[error("settlement {0:?} was already planned with different movements")]
    Conflict(String),
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Intents confirmed during this pass.
    pub confirmed: usize,
    /// Intents newly failed during this pass: (key, reason).
    pub failed: Vec<(String, String)>,
    /// Intents in a transaction that is neither final nor expired.
    pub waiting: usize,
    /// Intents whose transaction expired unseen and that were rebuilt.
    pub rebuilt: usize,
    /// Recorded transactions re-sent from their payload.
    pub resent: usize,
    /// For each new transaction sent, how many intents it carried.
    pub intents_per_tx: Vec<usize>,
    /// Ledger calls retried after an error.
    pub retries: usize,
    /// Intents still unsettled after the pass (waiting, or to rebuild next pass).
    pub remaining: usize,
}

impl PassReport {
    fn absorb(&mut self, other: PassReport) {
        self.confirmed += other.confirmed;
        self.failed.extend(other.failed);
        self.rebuilt += other.rebuilt;
        self.resent += other.resent;
        self.intents_per_tx.extend(other.intents_per_tx);
        self.retries += other.retries;
        self.waiting = other.waiting;
        self.remaining = other.remaining;
    }

    /// Transactions sent (new ones, not re-sends).
    pub fn txs(&self) -> usize {
        self.intents_per_tx.len()
    }
}

/// One reconcile's work for [`Executor::reconcile`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Failed settlements the operator asked to try again.
    pub retry: Vec<String>,
    /// New intents to plan (a key planned before with the same movements is a no-op).
    pub intents: Vec<Intent>,
}

impl Work {
    /// No new intents: just drive what the store holds.
    pub fn drive() -> Self {
        Self::default()
    }

    /// Plans `intents`, then drives.
    pub fn plan(intents: Vec<Intent>) -> Self {
        Self {
            retry: Vec::new(),
            intents,
        }
    }
}

type Res<T, L, S> = Result<T, SettleError<<L as Ledger>::Error, <S as SettlementStore>::Error>>;

/// The exactly-once settlement executor. Cheap to build: make a new one per
/// reconcile, or keep one; all its state is in the store.
///
/// ```
/// use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger};
/// use solgrid_settlement::{Executor, ExecutorConfig, MemoryStore};
/// use solgrid_market::ledger::{Account, Intent, Movement, Op, Token};
///
/// let ledger = EmbeddedLedger::in_memory(EmbeddedConfig::default()).unwrap();
/// let mut store = MemoryStore::new();
/// let mut exec = Executor::new(&ledger, &mut store, ExecutorConfig::default());
/// let mint = Intent {
///     key: "genesis".into(),
///     movements: vec![Movement { token: Token::Io, op: Op::Mint { to: Account::Escrow, amount: 100 } }],
/// };
/// exec.plan(&[mint]).unwrap();
/// let report = exec.settle_pass().unwrap();
/// assert_eq!(report.confirmed, 1);
/// assert_eq!(report.remaining, 0);
/// ```
pub struct Executor<'a, L: Ledger, S: SettlementStore, Z: Sleeper = ThreadSleeper> {
    ledger: &'a L,
    store: S,
    config: ExecutorConfig,
    sleeper: Z,
}

impl<'a, L: Ledger, S: SettlementStore> Executor<'a, L, S, ThreadSleeper> {
    pub fn new(ledger: &'a L, store: S, config: ExecutorConfig) -> Self {
        Self::with_sleeper(ledger, store, config, ThreadSleeper)
    }
}

/// A pass in which `prepare` built nothing stops after this many intents were
/// refused one by one (the ledger is presumably down, not the intents bad).
pub const MAX_REFUSED_BEFORE_ABORT: usize = 3;

/// What happened to `prepare` calls during one pass.
struct Build<E> {
    prepared_any: bool,
    last_error: Option<E>,
    /// (key, error) of intents the ledger refused to build alone.
    refused: Vec<(String, String)>,
}

impl<E> Default for Build<E> {
    fn default() -> Self {
        Self {
            prepared_any: false,
            last_error: None,
            refused: Vec::new(),
        }
    }
}

/// A transaction in flight, grouped from the store's records.
struct InFlight {
    signature: String,
    lvbh: u64,
    keys: Vec<String>,
    intents: Vec<Intent>,
    payload: Option<Vec<u8>>,
}

impl<'a, L: Ledger, S: SettlementStore, Z: Sleeper> Executor<'a, L, S, Z> {
    pub fn with_sleeper(ledger: &'a L, store: S, config: ExecutorConfig, sleeper: Z) -> Self {
        Self {
            ledger,
            store,
            config,
            sleeper,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }

    pub fn ledger(&self) -> &'a L {
        self.ledger
    }

    /// Step 1: records the plans of `intents` not yet known. Idempotent: a key
    /// already recorded with the same movements is skipped; with different
    /// movements it is a [`SettleError::Conflict`]. Returns how many were new.
    pub fn plan(&mut self, intents: &[Intent]) -> Res<usize, L, S> {
        let mut new = 0;
        for intent in intents {
            match self.store.get(&intent.key).map_err(SettleError::Store)? {
                Some(existing) if existing.intent.movements == intent.movements => {}
                Some(_) => return Err(SettleError::Conflict(intent.key.clone())),
                None => {
                    self.store.record_plan(intent).map_err(SettleError::Store)?;
                    new += 1;
                }
            }
        }
        Ok(new)
    }

    /// The recorded state of one settlement.
    pub fn state(&self, key: &str) -> Res<Option<SettlementState>, L, S> {
        Ok(self
            .store
            .get(key)
            .map_err(SettleError::Store)?
            .map(|s| s.state))
    }

    /// An operator's decision to try a `Failed` settlement again (e.g. after the
    /// payer was funded). Does nothing for any other state; returns whether it did.
    pub fn retry_failed(&mut self, key: &str) -> Res<bool, L, S> {
        match self.store.get(key).map_err(SettleError::Store)? {
            Some(Settlement {
                state: SettlementState::Failed { .. },
                ..
            }) => {
                self.store
                    .record_replan(&[key.to_string()])
                    .map_err(SettleError::Store)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Calls `f` with exponential backoff until it succeeds or the attempts run out.
    fn retry<T>(
        &self,
        report: &mut PassReport,
        mut f: impl FnMut(&L) -> Result<T, L::Error>,
    ) -> Res<T, L, S> {
        let mut attempt = 1;
        loop {
            match f(self.ledger) {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= self.config.backoff.max_attempts.max(1) => {
                    return Err(SettleError::Ledger(e));
                }
                Err(_) => {
                    self.sleeper.sleep(self.config.backoff.delay(attempt));
                    attempt += 1;
                    report.retries += 1;
                }
            }
        }
    }

    /// Records the final outcome of `signature` if it has one; returns whether it did.
    fn conclude(
        &mut self,
        report: &mut PassReport,
        keys: &[String],
        signature: &str,
        status: &TxStatus,
    ) -> Res<bool, L, S> {
        match status {
            TxStatus::Confirmed => {
                self.store
                    .record_confirmed(keys, signature)
                    .map_err(SettleError::Store)?;
                report.confirmed += keys.len();
                Ok(true)
            }
            TxStatus::Failed(reason) => {
                self.store
                    .record_failed(keys, Some(signature), reason)
                    .map_err(SettleError::Store)?;
                report
                    .failed
                    .extend(keys.iter().map(|k| (k.clone(), reason.clone())));
                Ok(true)
            }
            TxStatus::Pending | TxStatus::NotFound => Ok(false),
        }
    }

    /// Sends `tx` (retrying with backoff; between attempts it checks whether the
    /// transaction landed anyway or expired), then records its outcome if final.
    /// Returns the number of intents left waiting.
    fn deliver(
        &mut self,
        report: &mut PassReport,
        tx: &Prepared,
        keys: &[String],
    ) -> Res<usize, L, S> {
        let mut attempt = 1;
        loop {
            match self.ledger.send(tx) {
                Ok(()) => break,
                Err(e) => {
                    // Did it land (the reply was lost), or can it never land?
                    if let Ok(status) = self.ledger.status(&tx.signature) {
                        if self.conclude(report, keys, &tx.signature, &status)? {
                            return Ok(0);
                        }
                        if let Ok(h) = self.ledger.block_height()
                            && h > tx.last_valid_block_height
                        {
                            // expired unseen: rebuilt on the next pass
                            return Ok(keys.len());
                        }
                    }
                    if attempt >= self.config.backoff.max_attempts.max(1) {
                        return Err(SettleError::Ledger(e));
                    }
                    self.sleeper.sleep(self.config.backoff.delay(attempt));
                    attempt += 1;
                    report.retries += 1;
                }
            }
        }
        let status = self.retry(report, |l| l.status(&tx.signature))?;
        if self.conclude(report, keys, &tx.signature, &status)? {
            Ok(0)
        } else {
            Ok(keys.len())
        }
    }

    /// One pass over every unsettled settlement: resolve what was sent, rebuild what
    /// expired, batch and send what is planned. See the module documentation.
    pub fn settle_pass(&mut self) -> Res<PassReport, L, S> {
        let mut report = PassReport::default();
        let unsettled = self.store.unsettled().map_err(SettleError::Store)?;
        if unsettled.is_empty() {
            return Ok(report);
        }
        let mut to_build: Vec<Intent> = Vec::new();
        let mut in_flight: Vec<InFlight> = Vec::new();
        let mut by_sig: HashMap<String, usize> = HashMap::new();
        for s in unsettled {
            match s.state {
                SettlementState::Planned => to_build.push(s.intent),
                SettlementState::Sent {
                    signature,
                    last_valid_block_height,
                } => {
                    let i = *by_sig.entry(signature.clone()).or_insert_with(|| {
                        in_flight.push(InFlight {
                            signature,
                            lvbh: last_valid_block_height,
                            keys: Vec::new(),
                            intents: Vec::new(),
                            payload: None,
                        });
                        in_flight.len() - 1
                    });
                    let f = &mut in_flight[i];
                    f.keys.push(s.intent.key.clone());
                    f.intents.push(s.intent);
                    if f.payload.is_none() {
                        f.payload = s.payload;
                    }
                }
                SettlementState::Confirmed { .. } | SettlementState::Failed { .. } => {}
            }
        }

        // Resolve what was sent.
        if !in_flight.is_empty() {
            let mut height = self.retry(&mut report, |l| l.block_height())?;
            for f in in_flight {
                let status = self.retry(&mut report, |l| l.status(&f.signature))?;
                if self.conclude(&mut report, &f.keys, &f.signature, &status)? {
                    continue;
                }
                if status == TxStatus::NotFound {
                    if height <= f.lvbh {
                        // It may still land; a fresh read, in case time moved on.
                        height = self.retry(&mut report, |l| l.block_height())?;
                    }
                    if height > f.lvbh {
                        // It can never land now: rebuild.
                        report.rebuilt += f.intents.len();
                        to_build.extend(f.intents);
                        continue;
                    }
                    if self.config.resend_unconfirmed
                        && let Some(payload) = f.payload
                    {
                        let tx = Prepared {
                            signature: f.signature.clone(),
                            last_valid_block_height: f.lvbh,
                            keys: f.keys.clone(),
                            payload,
                        };
                        report.resent += 1;
                        report.waiting += self.deliver(&mut report, &tx, &f.keys)?;
                        continue;
                    }
                }
                report.waiting += f.keys.len();
            }
        }

        // Batch and send what is planned.
        let max = self.config.max_intents_per_tx.max(1);
        let mut batch: Vec<Intent> = Vec::new();
        let mut waiting_new = 0;
        let mut build = Build::default();
        for intent in to_build {
            if !self.ledger.fits(std::slice::from_ref(&intent)) {
                let reason = "does not fit in one transaction".to_string();
                self.store
                    .record_failed(std::slice::from_ref(&intent.key), None, &reason)
                    .map_err(SettleError::Store)?;
                report.failed.push((intent.key, reason));
                continue;
            }
            if !batch.is_empty() {
                batch.push(intent);
                if batch.len() > max || !self.ledger.fits(&batch) {
                    let last = batch.pop().expect("just pushed");
                    waiting_new += self.send_batch(&mut report, &batch, &mut build)?;
                    batch.clear();
                    batch.push(last);
                }
            } else {
                batch.push(intent);
            }
        }
        if !batch.is_empty() {
            waiting_new += self.send_batch(&mut report, &batch, &mut build)?;
        }
        // Intents the ledger refused to build while it built others: the fault is
        // theirs (invalid account, ...), not the transport's.
        if let Some(e) = build.last_error {
            if !build.prepared_any {
                return Err(SettleError::Ledger(e));
            }
            for (key, reason) in std::mem::take(&mut build.refused) {
                let reason = format!("the ledger cannot build it: {reason}");
                self.store
                    .record_failed(std::slice::from_ref(&key), None, &reason)
                    .map_err(SettleError::Store)?;
                report.failed.push((key, reason));
            }
        }
        report.waiting += waiting_new;
        report.remaining = report.waiting;
        Ok(report)
    }

    /// Step 2 and 3 for one new transaction: prepare, record, send, conclude.
    ///
    /// When `prepare` still fails after the retries, the batch is split and each
    /// intent tried alone: those that fail are set aside in `build`, and
    /// [`Executor::settle_pass`] marks them `Failed` if the ledger built anything
    /// else in the pass (a bad intent must not block the others), or returns the
    /// error if it built nothing (the ledger is down: nothing is marked). After
    /// [`MAX_REFUSED_BEFORE_ABORT`] refusals with nothing built, the pass stops.
    fn send_batch(
        &mut self,
        report: &mut PassReport,
        batch: &[Intent],
        build: &mut Build<L::Error>,
    ) -> Res<usize, L, S> {
        let tx = match self.retry(report, |l| l.prepare(batch)) {
            Ok(tx) => tx,
            Err(SettleError::Ledger(e)) => {
                if batch.len() == 1 {
                    if !build.prepared_any && build.refused.len() + 1 >= MAX_REFUSED_BEFORE_ABORT {
                        return Err(SettleError::Ledger(e));
                    }
                    build.refused.push((batch[0].key.clone(), e.to_string()));
                    build.last_error = Some(e);
                    return Ok(0);
                }
                build.last_error = Some(e);
                let mut waiting = 0;
                for intent in batch {
                    waiting += self.send_batch(report, std::slice::from_ref(intent), build)?;
                }
                return Ok(waiting);
            }
            Err(e) => return Err(e),
        };
        build.prepared_any = true;
        let keys: Vec<String> = batch.iter().map(|i| i.key.clone()).collect();
        self.store
            .record_sent(
                &keys,
                &tx.signature,
                tx.last_valid_block_height,
                &tx.payload,
            )
            .map_err(SettleError::Store)?;
        report.intents_per_tx.push(batch.len());
        self.deliver(report, &tx, &keys)
    }

    /// One reconcile's settlement work, the same for every store (jobs, stakes,
    /// rewards, buyback): sends the failed settlements `work.retry` back to
    /// `Planned`, plans `work.intents`, runs one pass; when settlements remain,
    /// calls `recover` once and, if it says it made the recorded-but-unseen
    /// transactions expire, runs one more pass (which rebuilds them). The report
    /// covers both passes.
    ///
    /// `recover` is the crash-recovery tick of a ledger on which a transaction
    /// still unseen after a pass can only be one this process never sent (it died
    /// between recording and sending): the embedded ledger, which then advances
    /// its block height past the validity window. On Solana it returns `false`
    /// (the executor waits for the transaction to expire on its own).
    pub fn reconcile(
        &mut self,
        work: &Work,
        recover: impl FnOnce() -> bool,
    ) -> Res<PassReport, L, S> {
        for key in &work.retry {
            self.retry_failed(key)?;
        }
        self.plan(&work.intents)?;
        let mut report = self.settle_pass()?;
        if report.remaining > 0 && recover() {
            report.absorb(self.settle_pass()?);
        }
        Ok(report)
    }

    /// Plans `intents` and runs passes until nothing is left unsettled or
    /// `max_passes` ran, sleeping [`ExecutorConfig::poll`] between passes.
    pub fn settle(&mut self, intents: &[Intent], max_passes: usize) -> Res<PassReport, L, S> {
        self.plan(intents)?;
        self.run_until_settled(max_passes)
    }

    /// Runs passes until nothing is left unsettled (or only failed ones) or
    /// `max_passes` ran, sleeping [`ExecutorConfig::poll`] between passes.
    pub fn run_until_settled(&mut self, max_passes: usize) -> Res<PassReport, L, S> {
        let mut total = PassReport::default();
        for pass in 0..max_passes {
            let r = self.settle_pass()?;
            total.absorb(r);
            if total.remaining == 0 {
                break;
            }
            if pass + 1 < max_passes {
                self.sleeper.sleep(self.config.poll);
            }
        }
        Ok(total)
    }
}
