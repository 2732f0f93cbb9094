//! Exactly-once under crashes, on a real solana-test-validator.
//!
//! Each run is one finished job's settlement (provider payout + fee burn + refund),
//! executed by the protocol of ECONOMICS.md with the process "dying" at a random
//! point; a restart then recovers from the recorded status alone. Runs proceed
//! side by side (batched together into transactions when they are ready at the same
//! time), so blockhash expiries overlap. At the end every provider must hold exactly
//! its payout, the escrow nothing, the payer exactly its refunds, and the supply must
//! have fallen by exactly the fees: 0 double payments, 0 lost ones.
//!
//! Crash points (first crash of each run chosen at random; later crashes during
//! recovery with probability 0.15, at most 3 per run):
//! - `AfterPlan`: plan recorded, nothing prepared;
//! - `AfterPrepare`: signed, not recorded, not sent (harmless by construction);
//! - `AfterRecord`: signature + last valid block height recorded, never sent ⇒ after
//!   restart: `NotFound`; re-sent from the kept payload (half the runs keep it), else
//!   waited out until the finalized block height passes it, then rebuilt;
//! - `AfterSend`: sent, the outcome never recorded;
//! - `SentNotRecorded`: sent *before* its signature was recorded (a protocol
//!   violation, e.g. a lost status write): recovery fences every planned settlement
//!   at restart (processed height + 150), waits until the finalized height passes it
//!   (no transaction signed before the crash can land any more), then looks for the
//!   key's memo in the authority's history before rebuilding.
//!
//! `SOLGRID_CRASH_RUNS` (default 100) and `SOLGRID_CRASH_SEED` tune it.

mod common;

use common::*;
use solgrid_market::ledger::{Account, Intent, Ledger, Op, TxStatus};
use solgrid_solana::{Keypair, MAX_PROCESSING_AGE, SolanaLedger};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const IO: solgrid_market::ledger::Token = solgrid_market::ledger::Token::Io;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Crash {
    AfterPlan,
    AfterPrepare,
    AfterRecord,
    AfterSend,
    SentNotRecorded,
}

const CRASHES: [Crash; 5] = [
    Crash::AfterPlan,
    Crash::AfterPrepare,
    Crash::AfterRecord,
    Crash::AfterSend,
    Crash::SentNotRecorded,
];

/// What the status store holds for one settlement (survives crashes).
#[derive(Clone, Debug)]
enum State {
    Planned {
        fence: Option<u64>,
    },
    Sent {
        sig: String,
        lvbh: u64,
        payload: Option<Vec<u8>>,
    },
    Confirmed,
}

struct Run {
    intent: Intent,
    provider: Account,
    payout: u64,
    state: State,
    /// Crash to inject at the next transaction this run takes part in.
    pending_crash: Option<Crash>,
    crashes: u32,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default, Debug)]
struct Counts {
    crashes: BTreeMap<String, u32>,
    rebuilt_after_expiry: u32,
    resent_from_payload: u32,
    found_by_memo: u32,
    fenced_then_rebuilt: u32,
    txs: u32,
    max_batch: usize,
}

/// A restart of the runs in `idx`: in-memory work is lost; every `Planned` one is
/// fenced (it may have been sent without a record).
fn restart(l: &SolanaLedger, runs: &mut [Run], idx: &[usize]) {
    let fence = l.processed_block_height().expect("block height") + MAX_PROCESSING_AGE + 1;
    for &i in idx {
        if let State::Planned { fence: f } = &mut runs[i].state {
            *f = Some(fence);
        }
    }
}

#[test]
fn crash_injected_settlements_pay_exactly_once() {
    let Some(env) = setup_full(
        "crash_injected_settlements_pay_exactly_once",
        FAST_SLOTS,
        |_| {},
    ) else {
        return;
    };
    let l = &env.ledger;
    let n: usize = env_or("SOLGRID_CRASH_RUNS", || 100);
    let seed: u64 = env_or("SOLGRID_CRASH_SEED", || {
        clock_seed(|t| t.as_nanos() as u64 | 1)
    });
    eprintln!("crash runs: {n}, seed {seed} (SOLGRID_CRASH_SEED to replay)");
    let mut rng = Rng(seed);

    let payer = signing_wallet(l);
    let price = 2_000_000;
    let escrowed = two_hour_escrow(price);
    fund_into_escrow(l, IO, &payer, escrowed * n as u64, "crash");
    let supply0 = l.supply(IO).unwrap();

    let mut runs: Vec<Run> = (0..n)
        .map(|i| {
            let provider = wallet(&Keypair::new());
            let f = fees(1_000_000 + 37_000 * i as u64, price, false);
            Run {
                intent: job_settlement(
                    &job_key(0xc4a54, i, 0),
                    IO,
                    &payer,
                    &provider,
                    escrowed,
                    &f,
                ),
                provider,
                payout: f.cost - f.fp,
                state: State::Planned { fence: None },
                pending_crash: Some(CRASHES[rng.below(CRASHES.len() as u64) as usize]),
                crashes: 0,
            }
        })
        .collect();
    let mut counts = Counts::default();
    let started = Instant::now();

    // Crash right after the plan was recorded: nothing else happened; restart.
    let after_plan: Vec<usize> = (0..n)
        .filter(|&i| runs[i].pending_crash == Some(Crash::AfterPlan))
        .collect();
    for &i in &after_plan {
        runs[i].pending_crash = None;
        runs[i].crashes += 1;
        *counts.crashes.entry("AfterPlan".into()).or_default() += 1;
    }
    restart(l, &mut runs, &after_plan);

    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(
            Instant::now() < deadline,
            "runs did not settle in 10 minutes: {counts:?}"
        );
        let height = l.block_height().expect("block height");

        // 1. resolve what was sent
        let mut by_sig: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in runs.iter().enumerate() {
            if let State::Sent { sig, .. } = &r.state {
                by_sig.entry(sig.clone()).or_default().push(i);
            }
        }
        for (sig, idx) in by_sig {
            let (lvbh, payload) = match &runs[idx[0]].state {
                State::Sent { lvbh, payload, .. } => (*lvbh, payload.clone()),
                _ => unreachable!(),
            };
            match l.status(&sig).expect("status") {
                TxStatus::Confirmed => idx.iter().for_each(|&i| runs[i].state = State::Confirmed),
                TxStatus::Failed(reason) => panic!("transaction {sig} failed: {reason}"),
                TxStatus::Pending => {}
                TxStatus::NotFound if height > lvbh => {
                    // can never land: rebuild
                    counts.rebuilt_after_expiry += idx.len() as u32;
                    idx.iter()
                        .for_each(|&i| runs[i].state = State::Planned { fence: None });
                }
                TxStatus::NotFound => {
                    if let Some(p) = payload {
                        let tx = solgrid_market::ledger::Prepared {
                            signature: sig.clone(),
                            last_valid_block_height: lvbh,
                            keys: idx.iter().map(|&i| runs[i].intent.key.clone()).collect(),
                            payload: p,
                        };
                        match l.send(&tx) {
                            Ok(()) => counts.resent_from_payload += 1,
                            Err(e) => {
                                eprintln!("re-send of {sig} refused ({e}); waiting for expiry")
                            }
                        }
                    }
                }
            }
        }

        // 2. fenced plans: once no transaction signed before the crash can land,
        //    look for the key on chain before building anew
        for run in runs.iter_mut() {
            if let State::Planned { fence: Some(f) } = run.state
                && height > f
            {
                match l.find_by_key(&run.intent.key, 5_000).expect("history") {
                    Some(_) => {
                        counts.found_by_memo += 1;
                        run.state = State::Confirmed;
                    }
                    None => {
                        counts.fenced_then_rebuilt += 1;
                        run.state = State::Planned { fence: None };
                    }
                }
            }
        }

        // 3. build what is planned and not fenced, in random batches
        let mut ready: Vec<usize> = (0..n)
            .filter(|&i| matches!(runs[i].state, State::Planned { fence: None }))
            .collect();
        if ready.is_empty() && runs.iter().all(|r| matches!(r.state, State::Confirmed)) {
            break;
        }
        while !ready.is_empty() {
            let want = 1 + rng.below(4) as usize;
            let mut batch = vec![ready.remove(0)];
            while batch.len() < want && !ready.is_empty() {
                let mut trial: Vec<Intent> =
                    batch.iter().map(|&i| runs[i].intent.clone()).collect();
                trial.push(runs[ready[0]].intent.clone());
                if !l.fits(&trial) {
                    break;
                }
                batch.push(ready.remove(0));
            }
            // a crash injected into any run of the batch kills the whole process
            let mut crash = batch.iter().find_map(|&i| runs[i].pending_crash);
            if crash.is_none() && batch.iter().all(|&i| runs[i].crashes < 3) && rng.chance(15) {
                crash = Some(CRASHES[1 + rng.below(4) as usize]);
            }
            for &i in &batch {
                runs[i].pending_crash = None;
            }
            let intents: Vec<Intent> = batch.iter().map(|&i| runs[i].intent.clone()).collect();
            let p = l.prepare(&intents).expect("prepare");
            counts.max_batch = counts.max_batch.max(batch.len());
            let mut crashed = |runs: &mut [Run], c: Crash| {
                *counts.crashes.entry(format!("{c:?}")).or_default() += 1;
                for &i in &batch {
                    runs[i].crashes += 1;
                }
                restart(l, runs, &batch);
            };
            match crash {
                Some(Crash::AfterPrepare) | Some(Crash::AfterPlan) => {
                    crashed(&mut runs, Crash::AfterPrepare);
                    continue;
                }
                Some(Crash::SentNotRecorded) => {
                    l.send(&p).expect("send");
                    counts.txs += 1;
                    crashed(&mut runs, Crash::SentNotRecorded);
                    continue;
                }
                _ => {}
            }
            // record before sending; keep the payload half the time
            let keep = rng.chance(50);
            for &i in &batch {
                runs[i].state = State::Sent {
                    sig: p.signature.clone(),
                    lvbh: p.last_valid_block_height,
                    payload: keep.then(|| p.payload.clone()),
                };
            }
            if crash == Some(Crash::AfterRecord) {
                crashed(&mut runs, Crash::AfterRecord);
                continue;
            }
            l.send(&p).expect("send");
            counts.txs += 1;
            if crash == Some(Crash::AfterSend) {
                crashed(&mut runs, Crash::AfterSend);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // every provider paid exactly once, nothing lost, nothing burned twice
    let mut double = 0;
    let mut lost = 0;
    let mut burned = 0u64;
    let mut refunds = 0u64;
    for r in &runs {
        let got = l.balance(&r.provider, IO).unwrap();
        if got > r.payout {
            double += 1;
        }
        if got < r.payout {
            lost += 1;
        }
        for m in &r.intent.movements {
            match &m.op {
                Op::Burn { amount, .. } => burned += amount,
                Op::Transfer { to, amount, .. } if *to == payer => refunds += amount,
                _ => {}
            }
        }
    }
    let total_crashes: u32 = counts.crashes.values().sum();
    let run_crashes: u32 = runs.iter().map(|r| r.crashes).sum();
    eprintln!(
        "RESULT crash runs: {n} runs, {run_crashes} crashes of a run ({total_crashes} process crashes: \
         a crash kills every run in the batch) {:?}, {} txs sent, \
         {} rebuilt after expiry, {} re-sent from payload, {} found by memo after fence, \
         {} fenced then rebuilt, largest batch {}, {double} double payments, {lost} lost, {:.1} s",
        counts.crashes,
        counts.txs,
        counts.rebuilt_after_expiry,
        counts.resent_from_payload,
        counts.found_by_memo,
        counts.fenced_then_rebuilt,
        counts.max_batch,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(double, 0, "double payments");
    assert_eq!(lost, 0, "lost payments");
    assert_eq!(l.balance(&Account::Escrow, IO).unwrap(), 0);
    assert_eq!(l.balance(&payer, IO).unwrap(), refunds);
    assert_eq!(
        supply0 - l.supply(IO).unwrap(),
        burned,
        "burned exactly the fees once"
    );
    assert!(
        runs.iter().all(|r| r.crashes >= 1),
        "every run was crash-injected"
    );
    if n >= 50 {
        assert!(
            counts.crashes.len() >= 4,
            "crash kinds covered: {:?}",
            counts.crashes
        );
        assert!(
            counts.rebuilt_after_expiry > 0,
            "the expiry ⇒ rebuild path ran"
        );
        assert!(counts.found_by_memo > 0, "the sent-but-unrecorded path ran");
    }
}
