//! The ledger crate's generic exactly-once executor and randomized crash-injection
//! harness (`solgrid_ledger::testing::run_fault_scenario`), run against
//! `SolanaLedger` on a real solana-test-validator.
//!
//! Each scenario funds payers (mint), moves each job's maximum cost into escrow
//! (payer-signed), then settles every job (provider payout, burn or treasury fee,
//! refund) and idle rewards, through executors that crash at random steps (before or
//! after the operation: a send that landed with its reply lost, a record not written,
//! ...) over a network that drops, delays, fails or loses replies, restarting until
//! everything is confirmed. It then checks every balance and both supplies against
//! the model, and — from the memos on chain — that every idempotency key landed in
//! exactly one successful transaction.
//!
//! The harness drives its executors with no sleeping between passes (instant on the
//! embedded ledger); on a real chain a transaction takes a slot or two to confirm,
//! so [`Paced`] makes `status` of a signature sent in the last few seconds wait (up to
//! 3 s) until it is final — the operator gets the same effect from
//! `ExecutorConfig::poll`. Everything else is passed through untouched.
//!
//! `SOLGRID_FAULT_SCENARIOS` (default 4) and `SOLGRID_FAULT_SEED` tune it.

mod common;

use common::*;
use solgrid_ledger::testing::{FaultConfig, FaultTarget, TestRng, run_fault_scenario};
use solgrid_market::ledger::{Account, Amount, Intent, Ledger, Prepared, Token, TxStatus};
use solgrid_solana::{Keypair, MAX_PROCESSING_AGE, SolanaError, SolanaLedger};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `SolanaLedger`, with `status` waiting briefly for recently sent transactions.
struct Paced<'a> {
    inner: &'a SolanaLedger,
    sent: Mutex<HashMap<String, Instant>>,
}

impl Ledger for Paced<'_> {
    type Error = SolanaError;
    fn prepare(&self, intents: &[Intent]) -> Result<Prepared, SolanaError> {
        self.inner.prepare(intents)
    }
    fn send(&self, tx: &Prepared) -> Result<(), SolanaError> {
        let r = self.inner.send(tx);
        if r.is_ok() {
            self.sent
                .lock()
                .unwrap()
                .insert(tx.signature.clone(), Instant::now());
        }
        r
    }
    fn status(&self, signature: &str) -> Result<TxStatus, SolanaError> {
        let recent = self
            .sent
            .lock()
            .unwrap()
            .get(signature)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        if !recent {
            return self.inner.status(signature);
        }
        self.inner.wait(signature, Duration::from_secs(3))
    }
    fn block_height(&self) -> Result<u64, SolanaError> {
        self.inner.block_height()
    }
    fn fits(&self, intents: &[Intent]) -> bool {
        self.inner.fits(intents)
    }
    fn balance(&self, account: &Account, token: Token) -> Result<Amount, SolanaError> {
        self.inner.balance(account, token)
    }
    fn supply(&self, token: Token) -> Result<Amount, SolanaError> {
        self.inner.supply(token)
    }
    fn unit(&self, token: Token) -> Amount {
        self.inner.unit(token)
    }
}

struct SolanaTarget<'a> {
    ledger: Paced<'a>,
    restarts: usize,
    expiries: usize,
}

impl<'a> FaultTarget for SolanaTarget<'a> {
    type L = Paced<'a>;

    fn ledger(&self) -> &Paced<'a> {
        &self.ledger
    }

    /// The validator keeps running; the executor's state is all in the store, and
    /// the harness builds a fresh executor after each crash.
    fn restart(&mut self, _rng: &mut TestRng) -> Result<(), String> {
        self.restarts += 1;
        Ok(())
    }

    /// Asked for more than the validity window: waits until the *finalized* block
    /// height is past every transaction prepared so far (they really expire).
    /// Otherwise lets up to 4 blocks pass (keeps the run short on a real chain).
    fn advance(&mut self, blocks: u64) {
        let start = self
            .ledger
            .inner
            .processed_block_height()
            .expect("block height");
        let deadline = Instant::now() + Duration::from_secs(180);
        if blocks > MAX_PROCESSING_AGE {
            self.expiries += 1;
            while self.ledger.inner.block_height().expect("block height") < start + blocks {
                assert!(Instant::now() < deadline, "chain stalled");
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            let want = start + blocks.min(4);
            while self
                .ledger
                .inner
                .processed_block_height()
                .expect("block height")
                < want
            {
                assert!(Instant::now() < deadline, "chain stalled");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn validity_window(&self) -> u64 {
        MAX_PROCESSING_AGE
    }

    /// A fresh keypair, registered as a signer (payers sign their escrow funding).
    fn wallet(&mut self, _name: &str) -> Account {
        Account::Wallet(self.ledger.inner.add_signer(Keypair::new()))
    }

    /// Successful transactions per memo (= idempotency key), from the chain.
    fn confirmed_key_counts(&self) -> Option<HashMap<String, usize>> {
        Some(self.ledger.inner.key_counts(50_000).expect("history"))
    }
}

#[test]
fn ledger_fault_harness_on_validator() {
    let Some(env) = setup_full("ledger_fault_harness_on_validator", FAST_SLOTS, |_| {}) else {
        return;
    };
    let scenarios: u64 = env_or("SOLGRID_FAULT_SCENARIOS", || 4);
    let base: u64 = env_or("SOLGRID_FAULT_SEED", || clock_seed(|t| t.as_secs()));
    let mut target = SolanaTarget {
        ledger: Paced {
            inner: &env.ledger,
            sent: Mutex::new(HashMap::new()),
        },
        restarts: 0,
        expiries: 0,
    };
    let started = Instant::now();
    let (mut crashes, mut after_send, mut intents, mut txs, mut rebuilt, mut resent, mut late) =
        (0, 0, 0, 0, 0, 0, 0);
    let mut max_batch = 0;
    for s in 0..scenarios {
        let seed = base.wrapping_add(s * 7919);
        let mut cfg = FaultConfig::random(seed);
        // sized for a real chain: fewer jobs and crash rounds than on the embedded ledger
        cfg.jobs = cfg.jobs.min(12);
        cfg.rewards = cfg.rewards.min(4);
        cfg.crash_rounds = cfg.crash_rounds.clamp(10, 16);
        cfg.prefix = format!("sol{seed}");
        let t = Instant::now();
        let r = run_fault_scenario(&mut target, &cfg)
            .unwrap_or_else(|e| panic!("scenario seed {seed} ({cfg:?}): {e}"));
        eprintln!(
            "scenario seed {seed}: {} jobs, {} rewards, keep payloads {}, faults {:?}: {r:?} in {:.0} s",
            cfg.jobs,
            cfg.rewards,
            cfg.keep_payloads,
            cfg.faults,
            t.elapsed().as_secs_f64()
        );
        crashes += r.crashes;
        after_send += r.crashes_after_send;
        intents += r.intents;
        txs += r.txs;
        rebuilt += r.rebuilt;
        resent += r.resent;
        late += r.delivered_late;
        max_batch = max_batch.max(r.max_intents_per_tx);
    }
    eprintln!(
        "RESULT ledger fault harness on the validator: {scenarios} scenarios (seeds from {base}), \
         {crashes} injected crashes ({after_send} right after a send landed), {} restarts, \
         {} real expiries, {intents} intents in {txs} txs (up to {max_batch} per tx), \
         {rebuilt} rebuilt, {resent} re-sent, {late} delivered late; every balance, supply \
         and key count exact: 0 double payments; {:.0} s",
        target.restarts,
        target.expiries,
        started.elapsed().as_secs_f64()
    );
}
