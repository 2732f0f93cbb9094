//! The exactly-once executor, step by step: batching, each crash point, failures,
//! backoff.

use solgrid_ledger::testing::{
    self, CrashPoint, FlakyLedger, Network, NetworkFaults, NoSleep, io, mint,
};
use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger};
use solgrid_market::ledger::{Account, Intent, Ledger, Op, Prepared, Token, TxStatus};
use solgrid_settlement::{
    Backoff, Executor, ExecutorConfig, MemoryStore, RecordingSleeper, SettleError, SettlementState,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn wallet(s: &str) -> Account {
    Account::Wallet(s.to_string())
}

fn payout(i: usize, amount: u64) -> Intent {
    testing::payout(
        format!("job-{i}/0"),
        wallet(&format!("provider-{i}")),
        amount,
        1,
    )
}

fn funded(amount: u64) -> EmbeddedLedger {
    let l = EmbeddedLedger::in_memory(EmbeddedConfig {
        validity_window: 10,
        ..Default::default()
    })
    .unwrap();
    let (_, st) = l
        .apply(&[mint("genesis", Account::Escrow, Token::Io, amount)])
        .unwrap();
    assert_eq!(st, TxStatus::Confirmed);
    l
}

fn cfg() -> ExecutorConfig {
    ExecutorConfig {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            factor: 2,
            max: Duration::from_millis(50),
            max_attempts: 4,
        },
        ..Default::default()
    }
}

fn state(store: &MemoryStore, key: &str) -> SettlementState {
    use solgrid_settlement::SettlementStore;
    store.get(key).unwrap().unwrap().state
}

#[test]
fn batches_many_intents_per_tx_within_the_size_limit() {
    let l = funded(1_000_000);
    let mut store = MemoryStore::new();
    let intents: Vec<Intent> = (0..50).map(|i| payout(i, 100)).collect();
    let mut exec = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep);
    let r = exec.settle(&intents, 5).unwrap();
    assert_eq!(r.confirmed, 50);
    assert_eq!(r.remaining, 0);
    assert_eq!(r.intents_per_tx.iter().sum::<usize>(), 50);
    assert!(r.txs() < 50 && r.txs() >= 50 / 12, "{:?}", r.intents_per_tx);
    assert!(r.intents_per_tx.iter().all(|&n| n > 1));
    // every tx was full: adding the next intent would not have fit
    let mut offset = 0;
    for &n in &r.intents_per_tx[..r.txs() - 1] {
        assert!(l.fits(&intents[offset..offset + n]));
        assert!(!l.fits(&intents[offset..offset + n + 1]));
        offset += n;
    }
    for i in 0..50 {
        assert_eq!(
            l.balance(&wallet(&format!("provider-{i}")), Token::Io)
                .unwrap(),
            100
        );
    }
    assert_eq!(l.supply(Token::Io).unwrap(), 1_000_000 - 50);
    assert_eq!(store.counts(), (0, 0, 50, 0));
    assert_eq!(l.tx_count(), 1 + r.txs());
    // settling again does nothing
    let mut exec = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep);
    let r2 = exec.settle(&intents, 5).unwrap();
    assert_eq!(r2.txs(), 0);
    assert_eq!(l.tx_count(), 1 + r.txs());
}

#[test]
fn max_intents_per_tx_caps_batches() {
    let l = funded(1_000_000);
    let mut store = MemoryStore::new();
    let intents: Vec<Intent> = (0..10).map(|i| payout(i, 1)).collect();
    let config = ExecutorConfig {
        max_intents_per_tx: 3,
        ..cfg()
    };
    let r = Executor::with_sleeper(&l, &mut store, config, NoSleep)
        .settle(&intents, 2)
        .unwrap();
    assert_eq!(r.intents_per_tx, vec![3, 3, 3, 1]);
}

/// Runs one executor that crashes at `step`, then a fresh one; returns the store.
fn crash_then_resume(
    l: &EmbeddedLedger,
    store: &mut MemoryStore,
    intents: &[Intent],
    step: u64,
    after: bool,
) -> String {
    let crash = CrashPoint::at(step, after);
    {
        let (ledger, s) = crash.wrap(l, &mut *store);
        let mut exec = Executor::with_sleeper(&ledger, s, cfg(), NoSleep);
        let r = exec.settle(intents, 1);
        assert!(r.is_err(), "crashed at step {step}");
    }
    let (op, _) = crash.fired_on().unwrap();
    op.to_string()
}

/// A ledger and a store (keeping payloads or not) after the first crash that hits
/// `send` of one payout before it happened: the transaction recorded `Sent`, the
/// ledger never saw it.
fn payout_recorded_not_sent(keep_payloads: bool) -> (EmbeddedLedger, MemoryStore) {
    let l = funded(1000);
    let intents = vec![payout(1, 100)];
    let store = MemoryStore::new().keep_payloads(keep_payloads);
    let store = (1..)
        .find_map(|step| {
            let mut s2 = store.clone();
            (crash_then_resume(&l, &mut s2, &intents, step, false) == "send").then_some(s2)
        })
        .expect("some step crashes on send");
    (l, store)
}

#[test]
fn crash_between_send_and_record_pays_once() {
    let l = funded(1000);
    let intents = vec![payout(1, 100), payout(2, 200)];
    // find the step of `send` and crash right after it landed
    for step in 1..30 {
        let l = funded(1000);
        let mut store = MemoryStore::new();
        let op = crash_then_resume(&l, &mut store, &intents, step, true);
        if op != "send" {
            continue;
        }
        assert_eq!(
            l.balance(&wallet("provider-1"), Token::Io).unwrap(),
            100,
            "landed"
        );
        assert!(matches!(
            state(&store, "job-1/0"),
            SettlementState::Sent { .. }
        ));
        let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
            .settle(&intents, 3)
            .unwrap();
        assert_eq!(r.confirmed, 2);
        assert_eq!(
            r.txs(),
            0,
            "nothing rebuilt or re-sent under a new signature"
        );
        assert_eq!(l.balance(&wallet("provider-1"), Token::Io).unwrap(), 100);
        assert_eq!(l.balance(&wallet("provider-2"), Token::Io).unwrap(), 200);
        assert_eq!(l.tx_count(), 2);
        return;
    }
    let _ = l;
    panic!("never crashed on send");
}

#[test]
fn every_crash_point_before_or_after_resumes_to_exactly_once() {
    let intents: Vec<Intent> = (0..15).map(|i| payout(i, 10 + i as u64)).collect();
    let mut seen = std::collections::BTreeSet::new();
    for keep in [true, false] {
        for after in [false, true] {
            for step in 1..60 {
                let l = funded(10_000);
                let mut store = MemoryStore::new().keep_payloads(keep);
                let crash = CrashPoint::at(step, after);
                {
                    let (ledger, s) = crash.wrap(&l, &mut store);
                    let _ = Executor::with_sleeper(&ledger, s, cfg(), NoSleep).settle(&intents, 1);
                }
                if let Some((op, _)) = crash.fired_on() {
                    seen.insert((op, after));
                }
                // resume: let time pass until settled
                for _ in 0..5 {
                    let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
                        .settle(&intents, 2)
                        .unwrap();
                    assert!(r.failed.is_empty());
                    if r.remaining == 0 {
                        break;
                    }
                    l.tick(11).unwrap();
                }
                assert_eq!(
                    store.counts(),
                    (0, 0, 15, 0),
                    "step {step} after {after} keep {keep}"
                );
                for i in 0..15 {
                    assert_eq!(
                        l.balance(&wallet(&format!("provider-{i}")), Token::Io)
                            .unwrap(),
                        10 + i as u64
                    );
                }
                assert!(l.confirmed_key_counts().values().all(|&n| n == 1));
                assert_eq!(l.supply(Token::Io).unwrap(), 10_000 - 15);
                assert_eq!(l.total_balances(Token::Io), 10_000 - 15);
            }
        }
    }
    for op in [
        "record_plan",
        "prepare",
        "record_sent",
        "send",
        "status",
        "record_confirmed",
    ] {
        assert!(
            seen.contains(&(op, true)) && seen.contains(&(op, false)),
            "{op} never crashed: {seen:?}"
        );
    }
}

#[test]
fn recorded_but_unsent_tx_is_resent_or_waits_then_rebuilds() {
    // crash before `send`: the store says Sent, the ledger never saw it
    for keep in [true, false] {
        let (l, mut store) = payout_recorded_not_sent(keep);
        let SettlementState::Sent { signature, .. } = state(&store, "job-1/0") else {
            panic!()
        };
        assert_eq!(l.status(&signature).unwrap(), TxStatus::NotFound);
        let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
            .settle_pass()
            .unwrap();
        if keep {
            assert_eq!((r.resent, r.confirmed, r.txs()), (1, 1, 0));
            assert_eq!(l.status(&signature).unwrap(), TxStatus::Confirmed);
        } else {
            // not expired: wait, never rebuild early
            assert_eq!((r.waiting, r.confirmed, r.txs(), r.rebuilt), (1, 0, 0, 0));
            l.tick(11).unwrap();
            let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
                .settle_pass()
                .unwrap();
            assert_eq!((r.rebuilt, r.confirmed, r.txs()), (1, 1, 1));
            assert_eq!(l.status(&signature).unwrap(), TxStatus::NotFound);
            let SettlementState::Confirmed { signature: s2 } = state(&store, "job-1/0") else {
                panic!()
            };
            assert_ne!(s2, signature);
        }
        assert_eq!(l.balance(&wallet("provider-1"), Token::Io).unwrap(), 100);
    }
}

/// `reconcile`: retry, plan, pass; the recovery tick only when settlements remain,
/// and one more pass only when it made the unsent transaction expire.
#[test]
fn reconcile_retries_plans_and_recovers_an_unsent_tx_with_the_tick() {
    for recover in [false, true] {
        let (l, mut store) = payout_recorded_not_sent(false);
        assert!(matches!(
            state(&store, "job-1/0"),
            SettlementState::Sent { .. }
        ));
        let mut ticked = 0;
        let work = solgrid_settlement::Work {
            retry: vec!["job-9/0".into()], // unknown: a no-op
            intents: vec![payout(2, 50)],
        };
        let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
            .reconcile(&work, || {
                ticked += 1;
                recover && l.tick(11).is_ok()
            })
            .unwrap();
        assert_eq!(ticked, 1, "called once, as settlements remained");
        if recover {
            assert_eq!((r.confirmed, r.rebuilt, r.remaining), (2, 1, 0), "{r:?}");
            assert_eq!(l.balance(&wallet("provider-1"), Token::Io).unwrap(), 100);
        } else {
            assert_eq!((r.confirmed, r.waiting, r.remaining), (1, 1, 1), "{r:?}");
            assert_eq!(l.balance(&wallet("provider-1"), Token::Io).unwrap(), 0);
        }
        assert_eq!(l.balance(&wallet("provider-2"), Token::Io).unwrap(), 50);
        if recover {
            // nothing left: no tick
            let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
                .reconcile(&solgrid_settlement::Work::drive(), || panic!("no tick"))
                .unwrap();
            assert_eq!((r.confirmed, r.remaining), (0, 0));
        }
    }
}

#[test]
fn a_late_delivery_of_an_expired_tx_never_lands() {
    let l = funded(1000);
    let net = Network::new(
        1,
        NetworkFaults {
            delay_pct: 100,
            ..NetworkFaults::NONE
        },
    );
    let mut store = MemoryStore::new().keep_payloads(false);
    let intents = vec![payout(1, 100)];
    {
        let flaky = FlakyLedger {
            inner: &l,
            net: &net,
        };
        let r = Executor::with_sleeper(&flaky, &mut store, cfg(), NoSleep)
            .settle(&intents, 2)
            .unwrap();
        assert_eq!(r.waiting, 1);
    }
    assert_eq!(net.held(), 1);
    l.tick(11).unwrap();
    let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
        .settle_pass()
        .unwrap();
    assert_eq!((r.rebuilt, r.confirmed), (1, 1));
    // the old transaction arrives now: refused
    assert_eq!(net.pump(&l, 100), 1);
    assert_eq!(l.balance(&wallet("provider-1"), Token::Io).unwrap(), 100);
    assert_eq!(l.confirmed_key_counts()["job-1/0"], 1);
}

#[test]
fn failed_tx_is_surfaced_not_resent_until_retried() {
    let l = funded(50);
    let mut store = MemoryStore::new();
    let intents = vec![payout(1, 100)];
    let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
        .settle(&intents, 3)
        .unwrap();
    assert_eq!(r.failed.len(), 1);
    assert!(r.failed[0].1.contains("insufficient"), "{:?}", r.failed);
    let SettlementState::Failed {
        signature: Some(sig),
        ..
    } = state(&store, "job-1/0")
    else {
        panic!()
    };
    assert!(matches!(l.status(&sig).unwrap(), TxStatus::Failed(_)));
    let txs = l.tx_count();
    let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
        .settle(&intents, 3)
        .unwrap();
    assert_eq!((r.txs(), r.confirmed), (0, 0));
    assert_eq!(l.tx_count(), txs, "not silently resent");
    // the operator funds escrow and retries
    l.apply(&[mint("topup", Account::Escrow, Token::Io, 100)])
        .unwrap();
    let mut exec = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep);
    assert!(exec.retry_failed("job-1/0").unwrap());
    assert!(!exec.retry_failed("job-1/0").unwrap());
    let r = exec.run_until_settled(2).unwrap();
    assert_eq!(r.confirmed, 1);
    assert_eq!(l.balance(&wallet("provider-1"), Token::Io).unwrap(), 100);
}

#[test]
fn oversized_intent_fails_alone_and_others_settle() {
    let l = funded(1_000_000);
    let mut store = MemoryStore::new();
    let huge = Intent {
        key: "huge".into(),
        movements: (0..40)
            .map(|i| {
                io(Op::Transfer {
                    from: Account::Escrow,
                    to: wallet(&format!("w{i}")),
                    amount: 1,
                })
            })
            .collect(),
    };
    let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
        .settle(&[payout(1, 5), huge, payout(2, 5)], 2)
        .unwrap();
    assert_eq!(r.confirmed, 2);
    assert_eq!(r.failed.len(), 1);
    assert!(matches!(
        state(&store, "huge"),
        SettlementState::Failed {
            signature: None,
            ..
        }
    ));
}

#[test]
fn replanning_with_different_movements_is_a_conflict() {
    let l = funded(1000);
    let mut store = MemoryStore::new();
    let mut exec = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep);
    assert_eq!(exec.plan(&[payout(1, 5)]).unwrap(), 1);
    assert_eq!(exec.plan(&[payout(1, 5)]).unwrap(), 0);
    assert!(matches!(exec.plan(&[payout(1, 6)]), Err(SettleError::Conflict(k)) if k == "job-1/0"));
}

/// A ledger whose first `n` sends and status reads fail with a transport error.
struct Unreliable<'a> {
    inner: &'a EmbeddedLedger,
    send_failures: AtomicU32,
    lost_replies: AtomicU32,
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Transport;

impl Ledger for Unreliable<'_> {
    type Error = Transport;
    fn prepare(&self, i: &[Intent]) -> Result<Prepared, Transport> {
        self.inner.prepare(i).map_err(|_| Transport)
    }
    fn send(&self, tx: &Prepared) -> Result<(), Transport> {
        if self.send_failures.load(Ordering::SeqCst) > 0 {
            self.send_failures.fetch_sub(1, Ordering::SeqCst);
            return Err(Transport);
        }
        if self.lost_replies.load(Ordering::SeqCst) > 0 {
            self.lost_replies.fetch_sub(1, Ordering::SeqCst);
            let _ = self.inner.send(tx);
            return Err(Transport);
        }
        self.inner.send(tx).map_err(|_| Transport)
    }
    fn status(&self, s: &str) -> Result<TxStatus, Transport> {
        self.inner.status(s).map_err(|_| Transport)
    }
    fn block_height(&self) -> Result<u64, Transport> {
        self.inner.block_height().map_err(|_| Transport)
    }
    fn fits(&self, i: &[Intent]) -> bool {
        self.inner.fits(i)
    }
    fn balance(&self, a: &Account, t: Token) -> Result<u64, Transport> {
        self.inner.balance(a, t).map_err(|_| Transport)
    }
    fn supply(&self, t: Token) -> Result<u64, Transport> {
        self.inner.supply(t).map_err(|_| Transport)
    }
    fn unit(&self, t: Token) -> u64 {
        self.inner.unit(t)
    }
}

#[test]
fn transport_errors_back_off_exponentially_and_never_double() {
    let l = funded(1000);
    let u = Unreliable {
        inner: &l,
        send_failures: AtomicU32::new(3),
        lost_replies: AtomicU32::new(0),
    };
    let sleeper = RecordingSleeper::default();
    let mut store = MemoryStore::new();
    let r = Executor::with_sleeper(&u, &mut store, cfg(), &sleeper)
        .settle(&[payout(1, 100)], 1)
        .unwrap();
    assert_eq!((r.confirmed, r.retries), (1, 3));
    assert_eq!(
        *sleeper.slept.lock().unwrap(),
        vec![
            Duration::from_millis(10),
            Duration::from_millis(20),
            Duration::from_millis(40)
        ]
    );
    // a lost reply: the tx landed, the executor sees it and does not resend
    let u = Unreliable {
        inner: &l,
        send_failures: AtomicU32::new(0),
        lost_replies: AtomicU32::new(1),
    };
    let r = Executor::with_sleeper(&u, &mut store, cfg(), NoSleep)
        .settle(&[payout(2, 100)], 1)
        .unwrap();
    assert_eq!((r.confirmed, r.retries), (1, 0));
    assert_eq!(l.tx_count(), 3);
    // a dead endpoint: the error surfaces after max_attempts, the record stays Sent
    let u = Unreliable {
        inner: &l,
        send_failures: AtomicU32::new(100),
        lost_replies: AtomicU32::new(0),
    };
    let sleeper = RecordingSleeper::default();
    let e = Executor::with_sleeper(&u, &mut store, cfg(), &sleeper)
        .settle(&[payout(3, 100)], 1)
        .unwrap_err();
    assert!(matches!(e, SettleError::Ledger(_)));
    assert_eq!(
        sleeper.slept.lock().unwrap().len(),
        3,
        "4 attempts, 3 waits"
    );
    assert!(matches!(
        state(&store, "job-3/0"),
        SettlementState::Sent { .. }
    ));
    let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
        .settle_pass()
        .unwrap();
    assert_eq!((r.resent, r.confirmed), (1, 1));
    for i in 1..=3 {
        assert_eq!(
            l.balance(&wallet(&format!("provider-{i}")), Token::Io)
                .unwrap(),
            100
        );
    }
}

#[test]
fn backoff_delays_double_up_to_the_cap() {
    let b = Backoff {
        initial: Duration::from_millis(100),
        factor: 2,
        max: Duration::from_millis(500),
        max_attempts: 10,
    };
    let d: Vec<u64> = (1..=6).map(|a| b.delay(a).as_millis() as u64).collect();
    assert_eq!(d, vec![100, 200, 400, 500, 500, 500]);
}

#[test]
fn an_intent_the_ledger_refuses_fails_alone_and_does_not_block_others() {
    let l = funded(10_000);
    let mut store = MemoryStore::new();
    let mut bad = payout(2, 5);
    bad.movements[0].op = Op::Transfer {
        from: Account::Escrow,
        to: wallet("has space"),
        amount: 5,
    };
    let sleeper = RecordingSleeper::default();
    let r = Executor::with_sleeper(&l, &mut store, cfg(), &sleeper)
        .settle(&[bad.clone(), payout(1, 5), payout(3, 5)], 2)
        .unwrap();
    assert_eq!(r.confirmed, 2);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].0, "job-2/0");
    assert!(
        r.failed[0].1.contains("invalid account"),
        "{}",
        r.failed[0].1
    );
    assert!(matches!(
        state(&store, "job-2/0"),
        SettlementState::Failed {
            signature: None,
            ..
        }
    ));
    assert_eq!(l.balance(&wallet("provider-1"), Token::Io).unwrap(), 5);
    assert_eq!(l.balance(&wallet("provider-3"), Token::Io).unwrap(), 5);
}

/// A ledger whose `prepare` always fails (an RPC endpoint that is down).
struct Down<'a>(&'a EmbeddedLedger);

impl Ledger for Down<'_> {
    type Error = Transport;
    fn prepare(&self, _: &[Intent]) -> Result<Prepared, Transport> {
        Err(Transport)
    }
    fn send(&self, _: &Prepared) -> Result<(), Transport> {
        Err(Transport)
    }
    fn status(&self, _: &str) -> Result<TxStatus, Transport> {
        Err(Transport)
    }
    fn block_height(&self) -> Result<u64, Transport> {
        Err(Transport)
    }
    fn fits(&self, i: &[Intent]) -> bool {
        self.0.fits(i)
    }
    fn balance(&self, _: &Account, _: Token) -> Result<u64, Transport> {
        Err(Transport)
    }
    fn supply(&self, _: Token) -> Result<u64, Transport> {
        Err(Transport)
    }
    fn unit(&self, t: Token) -> u64 {
        self.0.unit(t)
    }
}

#[test]
fn a_dead_ledger_marks_nothing_failed_and_stops_early() {
    let l = funded(10_000);
    let down = Down(&l);
    let mut store = MemoryStore::new();
    let intents: Vec<Intent> = (0..40).map(|i| payout(i, 1)).collect();
    let sleeper = RecordingSleeper::default();
    let e = Executor::with_sleeper(&down, &mut store, cfg(), &sleeper)
        .settle(&intents, 1)
        .unwrap_err();
    assert!(matches!(e, SettleError::Ledger(_)));
    assert_eq!(store.counts(), (40, 0, 0, 0), "all still planned");
    // one batch with its retries, then a few single intents: not all 40
    let waits = sleeper.slept.lock().unwrap().len();
    assert!(
        waits <= 3 * (1 + solgrid_settlement::MAX_REFUSED_BEFORE_ABORT),
        "{waits} waits"
    );
    // back up: everything settles
    let r = Executor::with_sleeper(&l, &mut store, cfg(), NoSleep)
        .settle(&intents, 2)
        .unwrap();
    assert_eq!(r.confirmed, 40);
}
