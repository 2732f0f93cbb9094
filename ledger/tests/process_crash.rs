//! Process-level crash test: a child process settles through the executor over a
//! journal-backed ledger and a file-backed store, and is SIGKILLed at random
//! moments (seeded); it is restarted each time, recovers from both files, and at the
//! end every provider is paid exactly once.

use solgrid_ledger::testing::{FileStore, TestRng, mint, payout};
use solgrid_ledger::{
    EmbeddedConfig, EmbeddedLedger, Executor, ExecutorConfig, FsyncPolicy, SettlementState,
};
use solgrid_market::ledger::{Account, Intent, Ledger, Op, Token};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SOLGRID_LEDGER_CRASH_CHILD_DIR";
const PROVIDERS: usize = 1500;

fn amount(i: usize) -> u64 {
    1_000 + i as u64 * 7
}

fn genesis() -> Intent {
    let total: u64 = (0..PROVIDERS).map(|i| amount(i) + 3).sum();
    mint("genesis", Account::Escrow, Token::Io, total)
}

fn payouts() -> Vec<Intent> {
    (0..PROVIDERS)
        .map(|i| {
            payout(
                format!("job-{i}/0"),
                Account::Wallet(format!("provider-{i}")),
                amount(i),
                3,
            )
        })
        .collect()
}

fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        fsync: FsyncPolicy::Always,
        ..Default::default()
    }
}

fn settle_all(dir: &Path) {
    let ledger = EmbeddedLedger::open(dir.join("ledger.jsonl"), config()).expect("open ledger");
    let mut store = FileStore::open(dir.join("store.jsonl")).expect("open store");
    let mut exec = Executor::new(&ledger, &mut store, ExecutorConfig::default());
    let r = exec.settle(&[genesis()], 5).expect("genesis");
    assert_eq!(r.remaining, 0);
    // one payout at a time, so that a kill lands between many steps
    for p in payouts() {
        let r = exec.settle(std::slice::from_ref(&p), 5).expect("settle");
        assert_eq!(r.remaining, 0);
        assert!(r.failed.is_empty(), "{r:?}");
    }
    let r = exec.settle(&payouts(), 5).expect("settle");
    assert_eq!(r.remaining, 0);
}

/// The child's body; a no-op unless started by the parent test.
#[test]
fn child_entry() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        settle_all(Path::new(&dir));
    }
}

fn spawn(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

#[test]
fn sigkilled_settlement_process_recovers_and_pays_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = TestRng::new(42);
    let mut killed = 0;
    let mut finished = false;
    let started = Instant::now();
    for _ in 0..25 {
        let mut child = spawn(dir.path());
        let wait = Duration::from_millis(rng.range(5, 80));
        std::thread::sleep(wait);
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            finished = true;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed += 1;
    }
    if !finished {
        let status = spawn(dir.path()).wait().unwrap();
        assert!(status.success(), "final child failed: {status}");
    }
    assert!(killed >= 5, "only {killed} kills landed");
    eprintln!("{killed} SIGKILLs in {:?}", started.elapsed());

    let ledger = EmbeddedLedger::open(dir.path().join("ledger.jsonl"), config()).unwrap();
    let store = FileStore::open(dir.path().join("store.jsonl")).unwrap();
    let counts = ledger.confirmed_key_counts();
    assert_eq!(counts.get("genesis"), Some(&1));
    let mut expected_supply = genesis()
        .movements
        .iter()
        .map(|m| match m.op {
            Op::Mint { amount, .. } => amount,
            _ => 0,
        })
        .sum::<u64>();
    for (i, p) in payouts().iter().enumerate() {
        assert_eq!(counts.get(&p.key), Some(&1), "{} confirmed once", p.key);
        assert!(matches!(
            store
                .memory()
                .all()
                .iter()
                .find(|s| s.intent.key == p.key)
                .unwrap()
                .state,
            SettlementState::Confirmed { .. }
        ));
        assert_eq!(
            ledger
                .balance(&Account::Wallet(format!("provider-{i}")), Token::Io)
                .unwrap(),
            amount(i)
        );
        expected_supply -= 3;
    }
    assert_eq!(ledger.balance(&Account::Escrow, Token::Io).unwrap(), 0);
    assert_eq!(ledger.supply(Token::Io).unwrap(), expected_supply);
    assert_eq!(ledger.total_balances(Token::Io), expected_supply as u128);
}
