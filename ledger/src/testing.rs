//! Crash injection and a randomized fault harness for the exactly-once settlement
//! executor, generic over any [`Ledger`] so that the same scenarios run against the
//! embedded ledger and against a real Solana validator. Enabled by the `testing`
//! feature.
//!
//! - [`CrashPoint`]: a countdown shared by [`CrashingLedger`] and [`CrashingStore`];
//!   at the chosen step the "process dies": that call (and every later one) fails,
//!   either before the operation happened or after it (the reply lost — e.g. a
//!   transaction that landed while the executor died before recording it).
//! - [`Network`] and [`FlakyLedger`]: sends that are lost, delayed (delivered later,
//!   possibly after the executor restarted and rebuilt), or that land with the
//!   reply lost.
//! - [`FaultTarget`]: what a ledger implementation provides to the harness (restart,
//!   let blocks pass, wallets).
//! - [`run_fault_scenario`]: funds payers, then settles a batch of job payouts and
//!   rewards through executors that crash at random steps, restarting until all is
//!   settled; then checks every balance delta, the supply, and (when the target can
//!   tell) that every idempotency key was confirmed exactly once.

use crate::embedded::{EmbeddedConfig, EmbeddedLedger, LedgerError};
use crate::settle::{
    Backoff, Executor, ExecutorConfig, MemoryStore, PassReport, Settlement, SettlementState,
    SettlementStore, Sleeper, StoreError,
};
use solgrid_market::ledger::{
    Account, Amount, Intent, Ledger, Movement, Op, Prepared, Token, TxStatus,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A small deterministic PRNG (SplitMix64): same seed, same run, on every platform.
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den.max(1) < num
    }
}

/// When the simulated process dies.
#[derive(Debug)]
pub struct CrashPoint {
    /// Steps left before the crash; `u64::MAX` = never.
    left: AtomicU64,
    /// Whether the crashing step's operation happens before the error.
    after: bool,
    crashed: AtomicBool,
    steps: AtomicU64,
    fired_on: Mutex<Option<&'static str>>,
    /// Count only steps of this operation (e.g. `"send"`).
    only: Option<&'static str>,
}

/// The step at which a [`CrashPoint`] fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("injected crash")]
pub struct InjectedCrash;

impl CrashPoint {
    /// Crashes at step `step` (1-based); `after`: the operation of that step happens.
    pub fn at(step: u64, after: bool) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicU64::new(step.max(1)),
            after,
            crashed: AtomicBool::new(false),
            steps: AtomicU64::new(0),
            fired_on: Mutex::new(None),
            only: None,
        })
    }
    /// Crashes at the `nth` (1-based) call of operation `op` (`"send"`,
    /// `"record_sent"`, ...; the names of the [`Ledger`] and [`SettlementStore`]
    /// methods); `after`: that operation happens.
    pub fn on_op(op: &'static str, nth: u64, after: bool) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicU64::new(nth.max(1)),
            after,
            crashed: AtomicBool::new(false),
            steps: AtomicU64::new(0),
            fired_on: Mutex::new(None),
            only: Some(op),
        })
    }
    pub fn never() -> Arc<Self> {
        Self::at(u64::MAX, false)
    }
    /// `ledger` and `store`, each call of either a step of this crash point.
    pub fn wrap<'a, L, S>(
        self: &Arc<Self>,
        ledger: &'a L,
        store: S,
    ) -> (CrashingLedger<'a, L>, CrashingStore<S>) {
        (
            CrashingLedger {
                inner: ledger,
                crash: self.clone(),
            },
            CrashingStore {
                inner: store,
                crash: self.clone(),
            },
        )
    }
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }
    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::SeqCst)
    }
    /// The operation at which the crash fired, and whether it happened first.
    pub fn fired_on(&self) -> Option<(&'static str, bool)> {
        (*self.fired_on.lock().unwrap_or_else(|e| e.into_inner())).map(|n| (n, self.after))
    }
    /// Runs one step named `name`: `op` runs unless the process is dead or dies before it.
    pub fn step<T, E>(
        &self,
        name: &'static str,
        op: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, Crashed<E>> {
        if self.crashed() {
            return Err(Crashed::Crash);
        }
        self.steps.fetch_add(1, Ordering::SeqCst);
        let left = self.left.load(Ordering::SeqCst);
        if left == u64::MAX || self.only.is_some_and(|o| o != name) {
            return op().map_err(Crashed::Inner);
        }
        let left = left - 1;
        self.left.store(left, Ordering::SeqCst);
        if left > 0 {
            return op().map_err(Crashed::Inner);
        }
        self.crashed.store(true, Ordering::SeqCst);
        *self.fired_on.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
        if self.after {
            let _ = op();
        }
        Err(Crashed::Crash)
    }
}

/// An error of a wrapped component: the injected crash or the component's own.
#[derive(Debug, thiserror::Error)]
pub enum Crashed<E> {
    #[error("injected crash")]
    Crash,
    #[error(transparent)]
    Inner(E),
}

/// A ledger whose every call is a step of a [`CrashPoint`].
pub struct CrashingLedger<'a, L> {
    pub inner: &'a L,
    pub crash: Arc<CrashPoint>,
}

impl<L: Ledger> Ledger for CrashingLedger<'_, L> {
    type Error = Crashed<L::Error>;
    fn prepare(&self, intents: &[Intent]) -> Result<Prepared, Self::Error> {
        self.crash.step("prepare", || self.inner.prepare(intents))
    }
    fn send(&self, tx: &Prepared) -> Result<(), Self::Error> {
        self.crash.step("send", || self.inner.send(tx))
    }
    fn status(&self, signature: &str) -> Result<TxStatus, Self::Error> {
        self.crash.step("status", || self.inner.status(signature))
    }
    fn block_height(&self) -> Result<u64, Self::Error> {
        self.crash
            .step("block_height", || self.inner.block_height())
    }
    fn fits(&self, intents: &[Intent]) -> bool {
        self.inner.fits(intents)
    }
    fn balance(&self, account: &Account, token: Token) -> Result<Amount, Self::Error> {
        self.crash
            .step("balance", || self.inner.balance(account, token))
    }
    fn supply(&self, token: Token) -> Result<Amount, Self::Error> {
        self.crash.step("supply", || self.inner.supply(token))
    }
    fn unit(&self, token: Token) -> Amount {
        self.inner.unit(token)
    }
}

/// A store whose every write (and read) is a step of a [`CrashPoint`].
pub struct CrashingStore<S> {
    pub inner: S,
    pub crash: Arc<CrashPoint>,
}

impl<S: SettlementStore> SettlementStore for CrashingStore<S> {
    type Error = Crashed<S::Error>;
    fn record_plan(&mut self, intent: &Intent) -> Result<(), Self::Error> {
        let inner = &mut self.inner;
        self.crash.step("record_plan", || inner.record_plan(intent))
    }
    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        lvbh: u64,
        payload: &[u8],
    ) -> Result<(), Self::Error> {
        let inner = &mut self.inner;
        self.crash.step("record_sent", || {
            inner.record_sent(keys, signature, lvbh, payload)
        })
    }
    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), Self::Error> {
        let inner = &mut self.inner;
        self.crash.step("record_confirmed", || {
            inner.record_confirmed(keys, signature)
        })
    }
    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), Self::Error> {
        let inner = &mut self.inner;
        self.crash.step("record_failed", || {
            inner.record_failed(keys, signature, reason)
        })
    }
    fn record_replan(&mut self, keys: &[String]) -> Result<(), Self::Error> {
        let inner = &mut self.inner;
        self.crash
            .step("record_replan", || inner.record_replan(keys))
    }
    fn get(&self, key: &str) -> Result<Option<Settlement>, Self::Error> {
        self.crash.step("get", || self.inner.get(key))
    }
    fn unsettled(&self) -> Result<Vec<Settlement>, Self::Error> {
        self.crash.step("unsettled", || self.inner.unsettled())
    }
}

/// How a [`Network`] treats each send, in percent (the rest is delivered normally).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkFaults {
    /// Lost: never delivered, the sender told `Ok`.
    pub drop_pct: u64,
    /// Held back and delivered later by [`Network::pump`] (sender told `Ok`).
    pub delay_pct: u64,
    /// Not delivered, the sender gets a transport error.
    pub error_pct: u64,
    /// Delivered, but the sender gets a transport error (the reply was lost).
    pub lost_reply_pct: u64,
}

impl NetworkFaults {
    pub const NONE: NetworkFaults = NetworkFaults {
        drop_pct: 0,
        delay_pct: 0,
        error_pct: 0,
        lost_reply_pct: 0,
    };
}

/// The simulated path between the executor and the ledger: it outlives restarts of
/// the executor, so a delayed transaction may land long after its sender died.
pub struct Network {
    faults: Mutex<NetworkFaults>,
    rng: Mutex<TestRng>,
    held: Mutex<Vec<Prepared>>,
}

/// A transport error injected by the [`Network`].
#[derive(Debug, thiserror::Error)]
pub enum NetError<E> {
    #[error("transport error (injected)")]
    Transport,
    #[error(transparent)]
    Ledger(E),
}

impl Network {
    pub fn new(seed: u64, faults: NetworkFaults) -> Self {
        Self {
            faults: Mutex::new(faults),
            rng: Mutex::new(TestRng::new(seed)),
            held: Mutex::new(Vec::new()),
        }
    }
    pub fn set_faults(&self, faults: NetworkFaults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }
    /// Transactions held back, not yet delivered.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    /// Delivers each held transaction with probability `pct` % (all when 100).
    /// Delivery errors (e.g. expired) are ignored: the transaction never lands.
    pub fn pump<L: Ledger>(&self, ledger: &L, pct: u64) -> usize {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut delivered = 0;
        held.retain(|tx| {
            if rng.chance(pct, 100) {
                let _ = ledger.send(tx);
                delivered += 1;
                false
            } else {
                true
            }
        });
        delivered
    }
    fn roll(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .range(0, 99)
    }
}

/// A ledger reached through a [`Network`].
pub struct FlakyLedger<'a, L> {
    pub inner: &'a L,
    pub net: &'a Network,
}

impl<L: Ledger> Ledger for FlakyLedger<'_, L> {
    type Error = NetError<L::Error>;
    fn prepare(&self, intents: &[Intent]) -> Result<Prepared, Self::Error> {
        self.inner.prepare(intents).map_err(NetError::Ledger)
    }
    fn send(&self, tx: &Prepared) -> Result<(), Self::Error> {
        let f = *self.net.faults.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.net.roll();
        if r < f.drop_pct {
            return Ok(());
        }
        let r = r - f.drop_pct;
        if r < f.delay_pct {
            self.net
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(tx.clone());
            return Ok(());
        }
        let r = r - f.delay_pct;
        if r < f.error_pct {
            return Err(NetError::Transport);
        }
        let r = r - f.error_pct;
        if r < f.lost_reply_pct {
            let _ = self.inner.send(tx);
            return Err(NetError::Transport);
        }
        self.inner.send(tx).map_err(NetError::Ledger)
    }
    fn status(&self, signature: &str) -> Result<TxStatus, Self::Error> {
        self.inner.status(signature).map_err(NetError::Ledger)
    }
    fn block_height(&self) -> Result<u64, Self::Error> {
        self.inner.block_height().map_err(NetError::Ledger)
    }
    fn fits(&self, intents: &[Intent]) -> bool {
        self.inner.fits(intents)
    }
    fn balance(&self, account: &Account, token: Token) -> Result<Amount, Self::Error> {
        self.inner.balance(account, token).map_err(NetError::Ledger)
    }
    fn supply(&self, token: Token) -> Result<Amount, Self::Error> {
        self.inner.supply(token).map_err(NetError::Ledger)
    }
    fn unit(&self, token: Token) -> Amount {
        self.inner.unit(token)
    }
}

/// A sleeper that returns at once (retries and polls cost no time in tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSleep;

impl Sleeper for NoSleep {
    fn sleep(&self, _d: Duration) {}
}

/// What a ledger implementation provides to [`run_fault_scenario`].
pub trait FaultTarget {
    type L: Ledger;
    /// The ledger as it is now.
    fn ledger(&self) -> &Self::L;
    /// The settling process restarts: e.g. reopen an embedded ledger from its
    /// journal (a Solana validator just keeps running).
    fn restart(&mut self, rng: &mut TestRng) -> Result<(), String>;
    /// Lets about `blocks` blocks pass (tick the embedded ledger; wait on Solana).
    fn advance(&mut self, blocks: u64);
    /// The ledger's validity window (blocks from prepare to last valid height).
    fn validity_window(&self) -> u64;
    /// A wallet usable on this ledger for `name` (Solana: create a keypair and its
    /// token accounts and return its address).
    fn wallet(&mut self, name: &str) -> Account {
        Account::Wallet(name.to_string())
    }
    /// How many confirmed transactions carried each idempotency key, when the
    /// target can tell (the embedded audit log; memos on chain).
    fn confirmed_key_counts(&self) -> Option<HashMap<String, usize>> {
        None
    }
}

/// Parameters of one randomized fault scenario.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    pub seed: u64,
    /// Job payouts to settle (each to its own provider wallet).
    pub jobs: usize,
    /// Idle-reward payouts from the emission pool.
    pub rewards: usize,
    /// Restarts allowed before the scenario is declared stuck.
    pub max_rounds: usize,
    /// Crash injection stops after this many rounds (so the scenario converges).
    pub crash_rounds: usize,
    /// Network faults during the crash rounds.
    pub faults: NetworkFaults,
    /// Whether the store keeps sent payloads (re-send) or not (wait, expire, rebuild).
    pub keep_payloads: bool,
    /// A prefix for keys and wallet names (unique per run on a shared ledger).
    pub prefix: String,
}

impl FaultConfig {
    /// A config derived from `seed`: sizes, payload keeping and network faults vary.
    pub fn random(seed: u64) -> Self {
        let mut rng = TestRng::new(seed.wrapping_mul(31).wrapping_add(7));
        Self {
            seed,
            jobs: rng.range(5, 40) as usize,
            rewards: rng.range(0, 8) as usize,
            max_rounds: 400,
            crash_rounds: rng.range(5, 40) as usize,
            faults: if rng.chance(1, 2) {
                NetworkFaults {
                    drop_pct: rng.range(0, 10),
                    delay_pct: rng.range(0, 15),
                    error_pct: rng.range(0, 15),
                    lost_reply_pct: rng.range(0, 15),
                }
            } else {
                NetworkFaults::NONE
            },
            keep_payloads: rng.chance(1, 2),
            prefix: format!("s{seed}"),
        }
    }
}

/// What a scenario went through.
#[derive(Clone, Debug, Default)]
pub struct FaultReport {
    pub rounds: usize,
    pub crashes: usize,
    /// Crashes injected right after a `send` landed, before anything was recorded.
    pub crashes_after_send: usize,
    pub intents: usize,
    pub txs: usize,
    pub max_intents_per_tx: usize,
    pub rebuilt: usize,
    pub resent: usize,
    pub retries: usize,
    pub delivered_late: usize,
}

/// Why a scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("setup: {0}")]
    Setup(String),
    #[error("not settled after {rounds} rounds: {detail}")]
    Stuck { rounds: usize, detail: String },
    #[error("invariant violated: {0}")]
    Invariant(String),
}

type Snapshot = (BTreeMap<(Account, Token), Amount>, BTreeMap<Token, Amount>);

#[derive(Clone, Copy)]
enum Phase {
    Fund,
    Settle,
}

/// Fees per ECONOMICS.md (0.25 % + 0.25 %, 2 % stablecoin surcharge), integer.
fn fees(c: Amount, stable: bool) -> (Amount, Amount, Amount) {
    let ceil = |x: u128| x.div_ceil(10_000) as Amount;
    let fr = ceil(c as u128 * 25);
    let fp = ceil(c as u128 * 25);
    let s = if stable { ceil(c as u128 * 200) } else { 0 };
    (fr, fp, s)
}

/// The model of expected balance and supply changes.
#[derive(Default)]
struct Expect {
    delta: BTreeMap<(Account, Token), i128>,
    supply: BTreeMap<Token, i128>,
}

impl Expect {
    fn apply(&mut self, intent: &Intent) {
        for m in &intent.movements {
            match &m.op {
                Op::Transfer { from, to, amount } => {
                    *self.delta.entry((from.clone(), m.token)).or_default() -= *amount as i128;
                    *self.delta.entry((to.clone(), m.token)).or_default() += *amount as i128;
                }
                Op::Burn { from, amount } => {
                    *self.delta.entry((from.clone(), m.token)).or_default() -= *amount as i128;
                    *self.supply.entry(m.token).or_default() -= *amount as i128;
                }
                Op::Mint { to, amount } => {
                    *self.delta.entry((to.clone(), m.token)).or_default() += *amount as i128;
                    *self.supply.entry(m.token).or_default() += *amount as i128;
                }
            }
        }
    }
}

fn mv(token: Token, op: Op) -> Movement {
    Movement { token, op }
}

/// A movement of IO (the token most tests and benches move).
pub fn io(op: Op) -> Movement {
    mv(Token::Io, op)
}

/// An intent `key` minting `amount` of `token` to `to`.
pub fn mint(key: &str, to: Account, token: Token, amount: Amount) -> Intent {
    Intent {
        key: key.into(),
        movements: vec![mv(token, Op::Mint { to, amount })],
    }
}

/// An intent `key` moving `amount` IO from `from` to `to`.
pub fn transfer(key: &str, from: Account, to: Account, amount: Amount) -> Intent {
    Intent {
        key: key.into(),
        movements: vec![io(Op::Transfer { from, to, amount })],
    }
}

/// A job's payout `key`: `amount` IO from escrow to `provider`, then `burn` IO
/// burned from escrow.
pub fn payout(key: String, provider: Account, amount: Amount, burn: Amount) -> Intent {
    Intent {
        key,
        movements: vec![
            io(Op::Transfer {
                from: Account::Escrow,
                to: provider,
                amount,
            }),
            io(Op::Burn {
                from: Account::Escrow,
                amount: burn,
            }),
        ],
    }
}

/// Runs one randomized fault scenario against `target` and checks every invariant.
///
/// 1. Genesis (no faults): mint each payer's funds and the emission pool.
/// 2. Fund phase: each job's payer moves its maximum cost into escrow.
/// 3. Settle phase: each job pays its provider `C - Fp`, burns (IO) or sends to the
///    treasury (USDC) `Fr + Fp + S`, refunds the rest; rewards pay providers from
///    the emission pool.
///
/// Phases 2 and 3 run executors that crash at a random step (before or after the
/// operation), over a network that loses, delays, or fails sends; after each crash
/// the target restarts, blocks may pass, held transactions may land late, and a
/// fresh executor resumes over the same store, until everything is confirmed.
/// Then: every store record `Confirmed`; each account's balance changed by exactly
/// the model's delta (so every provider was paid exactly once); each supply changed
/// by exactly the minted minus the burned; every key confirmed exactly once (when
/// the target can tell).
pub fn run_fault_scenario<T: FaultTarget>(
    target: &mut T,
    cfg: &FaultConfig,
) -> Result<FaultReport, FaultError> {
    let mut rng = TestRng::new(cfg.seed);
    let p = &cfg.prefix;
    let n_payers = cfg.jobs.clamp(1, 4);
    let payers: Vec<Account> = (0..n_payers)
        .map(|i| target.wallet(&format!("{p}-payer-{i}")))
        .collect();
    let providers: Vec<Account> = (0..cfg.jobs)
        .map(|i| target.wallet(&format!("{p}-provider-{i}")))
        .collect();

    let mut fund = Vec::new();
    let mut settle = Vec::new();
    let mut genesis_mv = Vec::new();
    for (j, provider) in providers.iter().enumerate() {
        let payer = payers[j % n_payers].clone();
        let token = if rng.chance(1, 3) {
            Token::Usdc
        } else {
            Token::Io
        };
        let c = rng.range(1, 5_000_000_000);
        let (fr, fp, s) = fees(c, token.is_stablecoin());
        let refund = rng.range(0, c);
        let max_cost = c + fr + s + refund;
        genesis_mv.push(mv(
            token,
            Op::Mint {
                to: payer.clone(),
                amount: max_cost,
            },
        ));
        fund.push(Intent {
            key: format!("{p}/fund/{j}"),
            movements: vec![mv(
                token,
                Op::Transfer {
                    from: payer.clone(),
                    to: Account::Escrow,
                    amount: max_cost,
                },
            )],
        });
        let protocol = fr + fp + s;
        let fee_mv = if token.is_stablecoin() {
            Op::Transfer {
                from: Account::Escrow,
                to: Account::Treasury,
                amount: protocol,
            }
        } else {
            Op::Burn {
                from: Account::Escrow,
                amount: protocol,
            }
        };
        let mut movements = vec![
            mv(
                token,
                Op::Transfer {
                    from: Account::Escrow,
                    to: provider.clone(),
                    amount: c - fp,
                },
            ),
            mv(token, fee_mv),
        ];
        if refund > 0 {
            movements.push(mv(
                token,
                Op::Transfer {
                    from: Account::Escrow,
                    to: payer.clone(),
                    amount: refund,
                },
            ));
        }
        settle.push(Intent {
            key: format!("{p}/job-{j}/0"),
            movements,
        });
    }
    let mut pool = 0;
    for r in 0..cfg.rewards {
        let amount = rng.range(1, 1_000_000_000);
        pool += amount;
        let to = providers
            .get(r % providers.len().max(1))
            .cloned()
            .unwrap_or_else(|| payers[0].clone());
        settle.push(Intent {
            key: format!("{p}/reward/{r}"),
            movements: vec![mv(
                Token::Io,
                Op::Transfer {
                    from: Account::EmissionPool,
                    to,
                    amount,
                },
            )],
        });
    }
    if pool > 0 {
        genesis_mv.push(mv(
            Token::Io,
            Op::Mint {
                to: Account::EmissionPool,
                amount: pool,
            },
        ));
    }

    // Every account the scenario touches, and their balances before.
    let mut accounts: Vec<Account> = payers.clone();
    accounts.extend(providers.iter().cloned());
    accounts.extend([Account::Escrow, Account::Treasury, Account::EmissionPool]);
    let setup = |e: String| FaultError::Setup(e);
    let snapshot = |l: &T::L| -> Result<Snapshot, FaultError> {
        let mut b = BTreeMap::new();
        for a in &accounts {
            for t in Token::ALL {
                b.insert(
                    (a.clone(), t),
                    l.balance(a, t).map_err(|e| setup(e.to_string()))?,
                );
            }
        }
        let mut s = BTreeMap::new();
        for t in Token::ALL {
            s.insert(t, l.supply(t).map_err(|e| setup(e.to_string()))?);
        }
        Ok((b, s))
    };
    let (before, supply_before) = snapshot(target.ledger())?;

    // Genesis, no faults; one intent per transaction-sized chunk.
    let mut store = MemoryStore::new().keep_payloads(cfg.keep_payloads);
    let exec_cfg = ExecutorConfig {
        backoff: Backoff {
            initial: Duration::from_millis(1),
            factor: 2,
            max: Duration::from_millis(8),
            max_attempts: 3,
        },
        max_intents_per_tx: 64,
        resend_unconfirmed: true,
        poll: Duration::ZERO,
    };
    let mut genesis = Vec::new();
    for (i, chunk) in genesis_mv.chunks(4).enumerate() {
        genesis.push(Intent {
            key: format!("{p}/genesis/{i}"),
            movements: chunk.to_vec(),
        });
    }
    let mut expect = Expect::default();
    {
        let mut exec =
            Executor::with_sleeper(target.ledger(), &mut store, exec_cfg.clone(), NoSleep);
        let r = exec
            .settle(&genesis, 20)
            .map_err(|e| setup(e.to_string()))?;
        if r.remaining > 0 || !r.failed.is_empty() {
            return Err(setup(format!("genesis did not settle: {r:?}")));
        }
    }
    for g in &genesis {
        expect.apply(g);
    }

    let net = Network::new(cfg.seed ^ 0xA5A5, cfg.faults);
    let mut report = FaultReport {
        intents: fund.len() + settle.len(),
        ..Default::default()
    };
    for phase in [Phase::Fund, Phase::Settle] {
        let intents = match phase {
            Phase::Fund => &fund,
            Phase::Settle => &settle,
        };
        if intents.is_empty() {
            continue;
        }
        net.set_faults(cfg.faults);
        let mut round = 0;
        loop {
            round += 1;
            report.rounds += 1;
            if round > cfg.max_rounds {
                let left: Vec<_> = intents
                    .iter()
                    .filter_map(|i| store.get(&i.key).ok().flatten())
                    .filter(|s| !matches!(s.state, SettlementState::Confirmed { .. }))
                    .map(|s| format!("{}: {:?}", s.intent.key, s.state))
                    .take(5)
                    .collect();
                return Err(FaultError::Stuck {
                    rounds: round - 1,
                    detail: left.join("; "),
                });
            }
            let crashing = round <= cfg.crash_rounds;
            if !crashing {
                net.set_faults(NetworkFaults::NONE);
            }
            let n = intents.len() as u64;
            let crash = if crashing {
                // the first round surely takes 2n + 6 steps (n lookups, n plans, one
                // listing, prepare/record/send/status/record of a first tx): it
                // always crashes, before everything is settled
                if round > 1 && rng.chance(1, 4) {
                    // the crash the protocol exists for: right after a send
                    // landed, before its outcome was recorded
                    CrashPoint::on_op("send", rng.range(1, 3), true)
                } else {
                    let step = if round == 1 {
                        rng.range(1, 2 * n + 6)
                    } else if rng.chance(1, 4) {
                        rng.range(1, n)
                    } else {
                        rng.range(n, 2 * n + 20)
                    };
                    CrashPoint::at(step, rng.chance(1, 2))
                }
            } else {
                CrashPoint::never()
            };
            let result: Result<PassReport, String> = {
                let flaky = FlakyLedger {
                    inner: target.ledger(),
                    net: &net,
                };
                let (ledger, store) = crash.wrap(&flaky, &mut store);
                let mut exec = Executor::with_sleeper(&ledger, store, exec_cfg.clone(), NoSleep);
                // the controller re-plans on every reconcile (idempotent)
                exec.plan(intents)
                    .and_then(|_| exec.run_until_settled(3))
                    .map_err(|e| e.to_string())
            };
            match &result {
                Ok(r) => {
                    report.txs += r.txs();
                    report.max_intents_per_tx = report
                        .max_intents_per_tx
                        .max(r.intents_per_tx.iter().copied().max().unwrap_or(0));
                    report.rebuilt += r.rebuilt;
                    report.resent += r.resent;
                    report.retries += r.retries;
                    if let Some((k, reason)) = r.failed.first() {
                        return Err(FaultError::Invariant(format!(
                            "settlement {k} failed: {reason}"
                        )));
                    }
                }
                Err(_) if crash.crashed() => {
                    report.crashes += 1;
                    if crash.fired_on() == Some(("send", true)) {
                        report.crashes_after_send += 1;
                    }
                }
                Err(_) => {
                    // transport errors exhausted the retries: a restart, like a crash
                }
            }
            // Late deliveries land (or are refused, when expired).
            report.delivered_late += net.pump(target.ledger(), rng.range(0, 100));
            let done = intents.iter().all(|i| {
                matches!(
                    store.get(&i.key),
                    Ok(Some(Settlement {
                        state: SettlementState::Confirmed { .. },
                        ..
                    }))
                )
            });
            if let Some(failed) = intents.iter().find_map(|i| match store.get(&i.key) {
                Ok(Some(Settlement {
                    state: SettlementState::Failed { reason, .. },
                    ..
                })) => Some((i.key.clone(), reason)),
                _ => None,
            }) {
                return Err(FaultError::Invariant(format!(
                    "settlement {} failed: {}",
                    failed.0, failed.1
                )));
            }
            if done {
                break;
            }
            if crash.crashed() || result.is_err() {
                target.restart(&mut rng).map_err(setup)?;
            }
            // Time passes: sometimes enough for unsent transactions to expire.
            let w = target.validity_window();
            let blocks = if rng.chance(1, 3) {
                w + 1
            } else {
                rng.range(0, w / 4 + 1)
            };
            if blocks > 0 || !crashing {
                target.advance(blocks.max(1));
            }
        }
        for i in intents {
            expect.apply(i);
        }
    }
    // Whatever is still held in the network lands now, or is refused: nothing more may move.
    target.advance(target.validity_window() + 1);
    report.delivered_late += net.pump(target.ledger(), 100);

    // Invariants.
    let (after, supply_after) = snapshot(target.ledger())?;
    for ((account, token), b) in &after {
        let want = before[&(account.clone(), *token)] as i128
            + expect
                .delta
                .get(&(account.clone(), *token))
                .copied()
                .unwrap_or(0);
        if *b as i128 != want {
            return Err(FaultError::Invariant(format!(
                "{account} ({token}): balance {b}, expected {want} (before {})",
                before[&(account.clone(), *token)]
            )));
        }
    }
    for t in Token::ALL {
        let want = supply_before[&t] as i128 + expect.supply.get(&t).copied().unwrap_or(0);
        if supply_after[&t] as i128 != want {
            return Err(FaultError::Invariant(format!(
                "supply of {t}: {}, expected {want}",
                supply_after[&t]
            )));
        }
    }
    if let Some(counts) = target.confirmed_key_counts() {
        for i in genesis.iter().chain(&fund).chain(&settle) {
            let n = counts.get(&i.key).copied().unwrap_or(0);
            if n != 1 {
                return Err(FaultError::Invariant(format!(
                    "key {} confirmed {n} times",
                    i.key
                )));
            }
        }
    }
    Ok(report)
}

/// The embedded ledger as a [`FaultTarget`]: a journal file reopened (replayed) on
/// every restart, with a torn line appended at random first, as a crash mid-write
/// would leave.
pub struct EmbeddedTarget {
    pub path: Option<PathBuf>,
    pub config: EmbeddedConfig,
    ledger: Option<EmbeddedLedger>,
    pub restarts: usize,
    /// The keypairs of the wallets handed out (registered again after a restart:
    /// the ledger keeps signers in memory only).
    signers: Vec<crate::wallet::WalletKeypair>,
}

/// A deterministic wallet keypair for `name` (tests and harnesses only: the seed
/// is public).
pub fn test_wallet_keypair(name: &str) -> crate::wallet::WalletKeypair {
    use sha2::{Digest, Sha256};
    let seed: [u8; 32] = Sha256::digest(format!("solgrid-test-wallet/{name}")).into();
    crate::wallet::WalletKeypair::from_seed(seed)
}

impl EmbeddedTarget {
    /// Persisted at `path` (reopened on restart).
    pub fn file(path: impl AsRef<Path>, config: EmbeddedConfig) -> Result<Self, LedgerError> {
        let ledger = EmbeddedLedger::open(path.as_ref(), config.clone())?;
        Ok(Self {
            path: Some(path.as_ref().to_path_buf()),
            config,
            ledger: Some(ledger),
            restarts: 0,
            signers: Vec::new(),
        })
    }
    /// In memory (the same ledger survives restarts).
    pub fn memory(config: EmbeddedConfig) -> Result<Self, LedgerError> {
        Ok(Self {
            path: None,
            ledger: Some(EmbeddedLedger::in_memory(config.clone())?),
            config,
            restarts: 0,
            signers: Vec::new(),
        })
    }
    pub fn embedded(&self) -> &EmbeddedLedger {
        self.ledger.as_ref().expect("ledger open")
    }
}

impl FaultTarget for EmbeddedTarget {
    type L = EmbeddedLedger;
    fn ledger(&self) -> &EmbeddedLedger {
        self.embedded()
    }
    fn restart(&mut self, rng: &mut TestRng) -> Result<(), String> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.restarts += 1;
        // drop (closes and unlocks the file), maybe tear the last line, reopen
        self.ledger = None;
        if rng.chance(1, 4) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| e.to_string())?;
            f.write_all(br#"{"t":"tx","seq":99999,"height":1,"sig":"torn"#)
                .map_err(|e| e.to_string())?;
        }
        let ledger = EmbeddedLedger::open(&path, self.config.clone()).map_err(|e| e.to_string())?;
        for kp in &self.signers {
            ledger.add_signer(kp.clone());
        }
        self.ledger = Some(ledger);
        Ok(())
    }
    /// A wallet with a keypair (its debits are signed, as the operator's are).
    fn wallet(&mut self, name: &str) -> Account {
        let kp = test_wallet_keypair(name);
        let address = self.embedded().add_signer(kp.clone());
        self.signers.push(kp);
        Account::Wallet(address)
    }
    fn advance(&mut self, blocks: u64) {
        let _ = self.embedded().tick(blocks);
    }
    fn validity_window(&self) -> u64 {
        self.config.validity_window
    }
    fn confirmed_key_counts(&self) -> Option<HashMap<String, usize>> {
        Some(self.embedded().confirmed_key_counts())
    }
}

/// A [`SettlementStore`] persisted as an append-only JSON-lines file (one line per
/// store operation, fsynced), replayed on open; a torn last line is ignored. For
/// the process-level crash test (the store must survive the process), and a model
/// of how a durable store behaves.
pub struct FileStore {
    mem: MemoryStore,
    file: std::fs::File,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum StoreOp {
    Plan {
        intent: Intent,
    },
    Sent {
        keys: Vec<String>,
        sig: String,
        lvbh: u64,
        payload: Vec<u8>,
    },
    Confirmed {
        keys: Vec<String>,
        sig: String,
    },
    Failed {
        keys: Vec<String>,
        sig: Option<String>,
        reason: String,
    },
    Replan {
        keys: Vec<String>,
    },
}

impl StoreOp {
    /// Makes this write to `mem`.
    fn apply(&self, mem: &mut MemoryStore) -> Result<(), StoreError> {
        match self {
            StoreOp::Plan { intent } => mem.record_plan(intent),
            StoreOp::Sent {
                keys,
                sig,
                lvbh,
                payload,
            } => mem.record_sent(keys, sig, *lvbh, payload),
            StoreOp::Confirmed { keys, sig } => mem.record_confirmed(keys, sig),
            StoreOp::Failed { keys, sig, reason } => {
                mem.record_failed(keys, sig.as_deref(), reason)
            }
            StoreOp::Replan { keys } => mem.record_replan(keys),
        }
    }
}

/// Errors of [`FileStore`].
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error("store file: {0}")]
    Io(#[from] std::io::Error),
    #[error("store file corrupt at line {0}: {1}")]
    Corrupt(usize, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FileStore {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FileStoreError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.as_ref())?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        file.set_len(complete as u64)?;
        file.seek(SeekFrom::Start(complete as u64))?;
        let mut mem = MemoryStore::new();
        for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let op: StoreOp = serde_json::from_slice(line)
                .map_err(|e| FileStoreError::Corrupt(i + 1, e.to_string()))?;
            op.apply(&mut mem)?;
        }
        Ok(Self { mem, file })
    }

    pub fn memory(&self) -> &MemoryStore {
        &self.mem
    }

    /// Appends `op` to the file (fsynced), then makes it in memory.
    fn write(&mut self, op: StoreOp) -> Result<(), FileStoreError> {
        use std::io::Write;
        let mut line =
            serde_json::to_vec(&op).map_err(|e| FileStoreError::Corrupt(0, e.to_string()))?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        Ok(op.apply(&mut self.mem)?)
    }
}

impl SettlementStore for FileStore {
    type Error = FileStoreError;
    fn record_plan(&mut self, intent: &Intent) -> Result<(), Self::Error> {
        if self.mem.get(&intent.key)?.is_some() {
            return Err(StoreError::AlreadyPlanned(intent.key.clone()).into());
        }
        self.write(StoreOp::Plan {
            intent: intent.clone(),
        })
    }
    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        lvbh: u64,
        payload: &[u8],
    ) -> Result<(), Self::Error> {
        self.write(StoreOp::Sent {
            keys: keys.to_vec(),
            sig: signature.to_string(),
            lvbh,
            payload: payload.to_vec(),
        })
    }
    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), Self::Error> {
        self.write(StoreOp::Confirmed {
            keys: keys.to_vec(),
            sig: signature.to_string(),
        })
    }
    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), Self::Error> {
        self.write(StoreOp::Failed {
            keys: keys.to_vec(),
            sig: signature.map(str::to_string),
            reason: reason.to_string(),
        })
    }
    fn record_replan(&mut self, keys: &[String]) -> Result<(), Self::Error> {
        self.write(StoreOp::Replan {
            keys: keys.to_vec(),
        })
    }
    fn get(&self, key: &str) -> Result<Option<Settlement>, Self::Error> {
        Ok(self.mem.get(key)?)
    }
    fn unsettled(&self) -> Result<Vec<Settlement>, Self::Error> {
        Ok(self.mem.unsettled()?)
    }
}
