//! Randomized crash-injection runs (seeded, deterministic): executors that die at a
//! random step, a network that loses, delays and fails sends, restarts that reopen
//! the journal (sometimes with a torn last line) — and at the end every provider
//! paid exactly once, every balance and supply exactly as the model says.

use solgrid_ledger::testing::{EmbeddedTarget, FaultConfig, FaultReport, run_fault_scenario};
use solgrid_ledger::{EmbeddedConfig, FsyncPolicy};

fn total(reports: &[FaultReport]) -> FaultReport {
    let mut t = FaultReport::default();
    for r in reports {
        t.rounds += r.rounds;
        t.crashes += r.crashes;
        t.crashes_after_send += r.crashes_after_send;
        t.intents += r.intents;
        t.txs += r.txs;
        t.max_intents_per_tx = t.max_intents_per_tx.max(r.max_intents_per_tx);
        t.rebuilt += r.rebuilt;
        t.resent += r.resent;
        t.retries += r.retries;
        t.delivered_late += r.delivered_late;
    }
    t
}

#[test]
fn randomized_crashes_on_the_journal_file_pay_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for seed in 0..120u64 {
        let cfg = FaultConfig::random(seed);
        let config = EmbeddedConfig {
            validity_window: 20,
            // every 4th run fsyncs every commit; the others batch (process crashes
            // lose nothing either way)
            fsync: if seed % 4 == 0 {
                FsyncPolicy::Always
            } else {
                FsyncPolicy::Every(32)
            },
            ..Default::default()
        };
        let path = dir.path().join(format!("ledger-{seed}.jsonl"));
        let mut target = EmbeddedTarget::file(&path, config).unwrap();
        let r = run_fault_scenario(&mut target, &cfg)
            .unwrap_or_else(|e| panic!("seed {seed} ({cfg:?}): {e}"));
        assert!(r.crashes > 0, "seed {seed}: no crash injected");
        reports.push(r);
    }
    let t = total(&reports);
    eprintln!("120 runs on journal files: {t:?}");
    // the runs went through every path of the protocol
    assert!(t.crashes >= 600, "{t:?}");
    assert!(t.crashes_after_send >= 100, "{t:?}");
    assert!(
        t.rebuilt > 0 && t.resent > 0 && t.retries > 0 && t.delivered_late > 0,
        "{t:?}"
    );
    assert!(t.max_intents_per_tx > 1, "{t:?}");
}

#[test]
fn randomized_crashes_in_memory_pay_exactly_once() {
    let mut crashes = 0;
    for seed in 1000..1060u64 {
        let mut cfg = FaultConfig::random(seed);
        cfg.jobs = cfg.jobs * 2 + 10;
        let mut target = EmbeddedTarget::memory(EmbeddedConfig {
            validity_window: 8,
            ..Default::default()
        })
        .unwrap();
        let r =
            run_fault_scenario(&mut target, &cfg).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        crashes += r.crashes;
    }
    assert!(crashes > 300);
}

#[test]
fn scenarios_are_deterministic() {
    let run = |seed| {
        let mut target = EmbeddedTarget::memory(EmbeddedConfig::default()).unwrap();
        let r = run_fault_scenario(&mut target, &FaultConfig::random(seed)).unwrap();
        (r.rounds, r.crashes, r.txs, target.embedded().balances())
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).3, run(8).3);
}

#[test]
fn several_scenarios_share_one_ledger() {
    // as on a long-lived validator: balances are checked as deltas
    let dir = tempfile::tempdir().unwrap();
    let mut target =
        EmbeddedTarget::file(dir.path().join("shared.jsonl"), EmbeddedConfig::default()).unwrap();
    for seed in 500..505 {
        run_fault_scenario(&mut target, &FaultConfig::random(seed)).unwrap();
    }
    assert!(target.restarts > 0);
}

/// A Solana-like finality lag: a landed transaction reads `Pending` for its first
/// few status queries, and the height moves on by itself between queries — to run
/// the generic harness over a ledger other than the bare embedded one.
struct Lagging {
    inner: solgrid_ledger::EmbeddedLedger,
    path: std::path::PathBuf,
    seen: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl solgrid_market::ledger::Ledger for Lagging {
    type Error = solgrid_ledger::LedgerError;
    fn prepare(
        &self,
        i: &[solgrid_market::ledger::Intent],
    ) -> Result<solgrid_market::ledger::Prepared, Self::Error> {
        self.inner.prepare(i)
    }
    fn send(&self, tx: &solgrid_market::ledger::Prepared) -> Result<(), Self::Error> {
        self.inner.send(tx)
    }
    fn status(&self, sig: &str) -> Result<solgrid_market::ledger::TxStatus, Self::Error> {
        use solgrid_market::ledger::TxStatus;
        self.inner.tick(1)?;
        let st = self.inner.status(sig)?;
        if st == TxStatus::NotFound {
            return Ok(st);
        }
        let mut seen = self.seen.lock().unwrap();
        let n = seen.entry(sig.to_string()).or_insert(0);
        *n += 1;
        Ok(if *n <= 2 { TxStatus::Pending } else { st })
    }
    fn block_height(&self) -> Result<u64, Self::Error> {
        self.inner.block_height()
    }
    fn fits(&self, i: &[solgrid_market::ledger::Intent]) -> bool {
        self.inner.fits(i)
    }
    fn balance(
        &self,
        a: &solgrid_market::ledger::Account,
        t: solgrid_market::ledger::Token,
    ) -> Result<u64, Self::Error> {
        self.inner.balance(a, t)
    }
    fn supply(&self, t: solgrid_market::ledger::Token) -> Result<u64, Self::Error> {
        self.inner.supply(t)
    }
    fn unit(&self, t: solgrid_market::ledger::Token) -> u64 {
        self.inner.unit(t)
    }
}

impl solgrid_ledger::testing::FaultTarget for Lagging {
    type L = Lagging;
    fn ledger(&self) -> &Lagging {
        self
    }
    fn restart(&mut self, _rng: &mut solgrid_ledger::testing::TestRng) -> Result<(), String> {
        // close, then reopen from the journal
        let cfg = self.inner.config().clone();
        let placeholder = solgrid_ledger::EmbeddedLedger::in_memory(cfg.clone()).unwrap();
        drop(std::mem::replace(&mut self.inner, placeholder));
        self.inner =
            solgrid_ledger::EmbeddedLedger::open(&self.path, cfg).map_err(|e| e.to_string())?;
        Ok(())
    }
    fn advance(&mut self, blocks: u64) {
        let _ = self.inner.tick(blocks);
    }
    fn validity_window(&self) -> u64 {
        self.inner.config().validity_window
    }
    fn confirmed_key_counts(&self) -> Option<std::collections::HashMap<String, usize>> {
        Some(self.inner.confirmed_key_counts())
    }
}

#[test]
fn the_harness_runs_over_a_ledger_with_finality_lag() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 2000..2020u64 {
        let path = dir.path().join(format!("lag-{seed}.jsonl"));
        let config = EmbeddedConfig {
            validity_window: 30,
            fsync: FsyncPolicy::Never,
            // this wrapper hands out wallets by name (no keypairs)
            require_wallet_signatures: false,
            ..Default::default()
        };
        let mut target = Lagging {
            inner: solgrid_ledger::EmbeddedLedger::open(&path, config).unwrap(),
            path,
            seen: Default::default(),
        };
        let r = run_fault_scenario(&mut target, &FaultConfig::random(seed))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(r.crashes > 0);
        // the executor did meet `Pending` answers, and waited them out
        let pending_answers: u32 = target
            .seen
            .lock()
            .unwrap()
            .values()
            .map(|&n| n.min(2))
            .sum();
        assert!(pending_answers > 0, "seed {seed}");
    }
}
