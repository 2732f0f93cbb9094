//! The embedded ledger's Solana-like semantics and its journal.

use solgrid_ledger::testing::{io, mint, transfer};
use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger, FsyncPolicy, LedgerError, Outcome};
use solgrid_market::ledger::{Account, Intent, Ledger, Op, Token, TxStatus};
use std::io::Write;
use std::path::{Path, PathBuf};

fn wallet(s: &str) -> Account {
    Account::Wallet(s.to_string())
}

/// A temporary directory (removed when dropped) and a journal's path in it.
fn journal_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    (dir, path)
}

/// A journal (closed again) of one transaction per key, each minting `amount` IO
/// into escrow.
fn journal_of_mints(keys: &[&str], amount: u64) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = journal_path();
    let l = open(&path);
    for key in keys {
        l.apply(&[mint(key, Account::Escrow, Token::Io, amount)])
            .unwrap();
    }
    (dir, path)
}

/// The journal at `path`, opened with the default config.
fn open(path: &Path) -> EmbeddedLedger {
    EmbeddedLedger::open(path, EmbeddedConfig::default()).unwrap()
}

fn mem() -> EmbeddedLedger {
    EmbeddedLedger::in_memory(EmbeddedConfig::default()).unwrap()
}

#[test]
fn prepare_is_deterministic_and_sets_last_valid_height() {
    let a = mem();
    let b = mem();
    let i = [mint("k", wallet("x"), Token::Io, 5)];
    let ta = a.prepare(&i).unwrap();
    let tb = b.prepare(&i).unwrap();
    assert_eq!(
        ta.signature, tb.signature,
        "same state, same tx, same signature"
    );
    assert_eq!(ta.payload, tb.payload);
    assert_eq!(ta.last_valid_block_height, 150);
    assert_eq!(ta.keys, vec!["k".to_string()]);
    // a second prepare of the same intents is another transaction
    let ta2 = a.prepare(&i).unwrap();
    assert_ne!(ta.signature, ta2.signature);
    // 64 bytes, base58, like a Solana signature
    assert_eq!(bs58_len(&ta.signature), 64);
    a.tick(10).unwrap();
    assert_eq!(a.prepare(&i).unwrap().last_valid_block_height, 160);
    // nothing was sent
    assert_eq!(a.status(&ta.signature).unwrap(), TxStatus::NotFound);
}

fn bs58_len(s: &str) -> usize {
    // decode without depending on bs58 in tests: count via the alphabet
    const ALPHA: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut n: Vec<u8> = vec![0];
    for c in s.bytes() {
        let mut carry = ALPHA.iter().position(|&a| a == c).expect("base58") as u32;
        for d in n.iter_mut().rev() {
            let v = *d as u32 * 58 + carry;
            *d = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            n.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    n.len()
}

#[test]
fn send_applies_atomically_and_once() {
    let l = mem();
    let (_, st) = l
        .apply(&[mint("g", Account::Escrow, Token::Io, 100)])
        .unwrap();
    assert_eq!(st, TxStatus::Confirmed);
    assert_eq!(l.block_height().unwrap(), 1);
    let tx = l
        .prepare(&[
            transfer("a", Account::Escrow, wallet("p1"), 60),
            Intent {
                key: "b".into(),
                movements: vec![io(Op::Burn {
                    from: Account::Escrow,
                    amount: 40,
                })],
            },
        ])
        .unwrap();
    l.send(&tx).unwrap();
    l.send(&tx).unwrap(); // idempotent
    assert_eq!(l.status(&tx.signature).unwrap(), TxStatus::Confirmed);
    assert_eq!(l.balance(&wallet("p1"), Token::Io).unwrap(), 60);
    assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 0);
    assert_eq!(l.supply(Token::Io).unwrap(), 60);
    assert_eq!(l.total_balances(Token::Io), 60);
    assert_eq!(
        l.block_height().unwrap(),
        2,
        "the re-send did not land twice"
    );
    assert_eq!(l.tx_count(), 2);
}

#[test]
fn insufficient_funds_fails_the_whole_tx_and_moves_nothing() {
    let l = mem();
    l.apply(&[mint("g", Account::Escrow, Token::Io, 100)])
        .unwrap();
    // the first movement alone would succeed; the second cannot
    let tx = l
        .prepare(&[
            transfer("a", Account::Escrow, wallet("p1"), 70),
            transfer("b", Account::Escrow, wallet("p2"), 70),
        ])
        .unwrap();
    l.send(&tx).unwrap();
    match l.status(&tx.signature).unwrap() {
        TxStatus::Failed(r) => assert!(r.contains("insufficient funds"), "{r}"),
        s => panic!("{s:?}"),
    }
    assert_eq!(l.balance(&wallet("p1"), Token::Io).unwrap(), 0);
    assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 100);
    assert_eq!(l.block_height().unwrap(), 2, "a failed tx lands");
    let audit = l.audit();
    assert!(matches!(audit[1].outcome, Outcome::Failed(_)));
    assert_eq!(audit[1].keys, vec!["a".to_string(), "b".to_string()]);
    assert!(!l.confirmed_key_counts().contains_key("a"));
}

#[test]
fn overflow_fails_the_tx() {
    let l = mem();
    l.apply(&[mint("g", wallet("x"), Token::Usdc, u64::MAX)])
        .unwrap();
    let (_, st) = l.apply(&[mint("h", wallet("y"), Token::Usdc, 1)]).unwrap();
    assert!(matches!(st, TxStatus::Failed(r) if r.contains("overflow")));
    assert_eq!(l.supply(Token::Usdc).unwrap(), u64::MAX);
    assert_eq!(l.balance(&wallet("y"), Token::Usdc).unwrap(), 0);
}

#[test]
fn expired_tx_never_lands() {
    let cfg = EmbeddedConfig {
        validity_window: 5,
        ..Default::default()
    };
    let l = EmbeddedLedger::in_memory(cfg).unwrap();
    let tx = l.prepare(&[mint("k", wallet("x"), Token::Io, 5)]).unwrap();
    assert_eq!(tx.last_valid_block_height, 5);
    l.tick(5).unwrap(); // height 5: still valid
    let tx2 = l.prepare(&[mint("k2", wallet("x"), Token::Io, 1)]).unwrap();
    l.tick(1).unwrap(); // height 6 > 5
    match l.send(&tx) {
        Err(LedgerError::Expired {
            last_valid_block_height: 5,
            height: 6,
            ..
        }) => {}
        r => panic!("{r:?}"),
    }
    assert_eq!(l.status(&tx.signature).unwrap(), TxStatus::NotFound);
    assert_eq!(l.balance(&wallet("x"), Token::Io).unwrap(), 0);
    // valid up to and including its last valid height
    l.send(&tx2).unwrap();
    assert_eq!(l.status(&tx2.signature).unwrap(), TxStatus::Confirmed);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let l = mem();
    assert!(matches!(l.prepare(&[]), Err(LedgerError::Empty)));
    assert!(matches!(
        l.prepare(&[mint("k", wallet(""), Token::Io, 1)]),
        Err(LedgerError::InvalidAccount { .. })
    ));
    assert!(matches!(
        l.prepare(&[mint("k", wallet("a b"), Token::Io, 1)]),
        Err(LedgerError::InvalidAccount { .. })
    ));
    assert!(matches!(
        l.balance(&wallet(""), Token::Io),
        Err(LedgerError::InvalidAccount { .. })
    ));
    assert!(matches!(
        l.prepare(&[mint("", wallet("a"), Token::Io, 1)]),
        Err(LedgerError::InvalidKey { .. })
    ));
    assert!(matches!(
        l.prepare(&[
            mint("k", wallet("a"), Token::Io, 1),
            mint("k", wallet("b"), Token::Io, 1)
        ]),
        Err(LedgerError::DuplicateKey(_))
    ));
    let big: Vec<Intent> = (0..40)
        .map(|i| {
            transfer(
                &format!("k{i}"),
                Account::Escrow,
                wallet(&format!("w{i}")),
                1,
            )
        })
        .collect();
    assert!(!l.fits(&big));
    assert!(matches!(l.prepare(&big), Err(LedgerError::TooLarge { .. })));
    // a tampered payload is refused
    let mut tx = l.prepare(&[mint("k", wallet("a"), Token::Io, 1)]).unwrap();
    let n = tx.payload.len();
    tx.payload[n - 3] ^= 1;
    assert!(matches!(
        l.send(&tx),
        Err(LedgerError::SignatureMismatch(_))
    ));
    tx.payload = b"not json".to_vec();
    tx.signature = l
        .prepare(&[mint("z", wallet("a"), Token::Io, 1)])
        .unwrap()
        .signature;
    assert!(l.send(&tx).is_err());
    // a never-seen account holds nothing
    assert_eq!(l.balance(&wallet("nobody"), Token::Io).unwrap(), 0);
    assert!(
        EmbeddedLedger::in_memory(EmbeddedConfig {
            io_decimals: 20,
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn units_follow_decimals() {
    let l = mem();
    assert_eq!(l.unit(Token::Io), 1_000_000_000);
    assert_eq!(l.unit(Token::Usdc), 1_000_000);
}

#[test]
fn journal_replays_state_exactly() {
    let (_dir, path) = journal_path();
    let sigs;
    {
        let l = open(&path);
        let (s1, _) = l
            .apply(&[mint("g", Account::Escrow, Token::Io, 1000)])
            .unwrap();
        let (s2, _) = l
            .apply(&[transfer("p", Account::Escrow, wallet("p1"), 300)])
            .unwrap();
        let (s3, st) = l
            .apply(&[transfer("q", Account::Escrow, wallet("p1"), 5000)])
            .unwrap();
        assert!(matches!(st, TxStatus::Failed(_)));
        l.tick(7).unwrap();
        sigs = [s1, s2, s3];
        assert!(matches!(
            EmbeddedLedger::open(&path, EmbeddedConfig::default()),
            Err(LedgerError::Locked { .. })
        ));
    }
    let l = open(&path);
    assert_eq!(l.block_height().unwrap(), 10);
    assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 700);
    assert_eq!(l.balance(&wallet("p1"), Token::Io).unwrap(), 300);
    assert_eq!(l.supply(Token::Io).unwrap(), 1000);
    assert_eq!(l.status(&sigs[0]).unwrap(), TxStatus::Confirmed);
    assert_eq!(l.status(&sigs[1]).unwrap(), TxStatus::Confirmed);
    assert!(matches!(l.status(&sigs[2]).unwrap(), TxStatus::Failed(_)));
    assert_eq!(l.audit().len(), 3);
    assert_eq!(l.audit()[1].keys, vec!["p".to_string()]);
    // new transactions continue the sequence
    l.apply(&[transfer("r", Account::Escrow, wallet("p2"), 1)])
        .unwrap();
    drop(l);
    let l = open(&path);
    assert_eq!(l.audit().last().unwrap().seq, 4);
    assert_eq!(l.balance(&wallet("p2"), Token::Io).unwrap(), 1);
}

#[test]
fn torn_last_line_is_ignored_and_cut() {
    let (_dir, path) = journal_of_mints(&["g"], 10);
    let good_len = std::fs::metadata(&path).unwrap().len();
    let full = std::fs::read(&path).unwrap();
    // a second tx torn halfway: append a prefix of a valid line
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&full[..full.len() / 2])
        .unwrap();
    let l = open(&path);
    assert_eq!(l.tx_count(), 1);
    assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 10);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        good_len,
        "torn tail cut off"
    );
    l.apply(&[mint("h", Account::Escrow, Token::Io, 1)])
        .unwrap();
    drop(l);
    let l = open(&path);
    assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 11);
}

#[test]
fn corrupt_journal_is_a_clear_error() {
    let (_dir, path) = journal_of_mints(&["g", "h"], 10);
    let text = std::fs::read_to_string(&path).unwrap();
    // garbage in a middle line
    let bad = text.replacen("\"t\":\"tx\"", "\"t\":\"zz\"", 1);
    std::fs::write(&path, &bad).unwrap();
    match EmbeddedLedger::open(&path, EmbeddedConfig::default()) {
        Err(LedgerError::Corrupt { line: 1, .. }) => {}
        r => panic!("{:?}", r.err()),
    }
    // a line that would overdraw on replay
    let lines: Vec<&str> = text.lines().collect();
    let overdraw = format!(
        "{}\n{}\n",
        lines[0],
        lines[1].replace(
            "\"Mint\":{\"to\":\"Escrow\",\"amount\":10}",
            "\"Burn\":{\"from\":\"Escrow\",\"amount\":11}"
        )
    );
    assert_ne!(overdraw, text, "the replacement applied");
    std::fs::write(&path, &overdraw).unwrap();
    match EmbeddedLedger::open(&path, EmbeddedConfig::default()) {
        Err(LedgerError::Corrupt {
            line: 2, reason, ..
        }) => assert!(reason.contains("diverged"), "{reason}"),
        r => panic!("{:?}", r.err()),
    }
    // a duplicated line (sequence)
    std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[0])).unwrap();
    assert!(matches!(
        EmbeddedLedger::open(&path, EmbeddedConfig::default()),
        Err(LedgerError::Corrupt { line: 2, .. })
    ));
}

#[test]
fn batched_fsync_mode_persists_every_tx_for_a_process() {
    let (_dir, path) = journal_path();
    let cfg = EmbeddedConfig {
        fsync: FsyncPolicy::Every(64),
        ..Default::default()
    };
    {
        let l = EmbeddedLedger::open(&path, cfg.clone()).unwrap();
        for i in 0..100 {
            l.apply(&[mint(&format!("k{i}"), wallet("x"), Token::Io, 1)])
                .unwrap();
        }
        // no explicit sync: the writes are in the file already
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 100);
    }
    let l = EmbeddedLedger::open(&path, cfg).unwrap();
    assert_eq!(l.balance(&wallet("x"), Token::Io).unwrap(), 100);
    assert_eq!(l.confirmed_key_counts().len(), 100);
}

#[test]
fn block_time_advances_the_height_with_the_wall_clock() {
    let (_dir, path) = journal_path();
    let cfg = EmbeddedConfig {
        validity_window: 3,
        block_time: Some(std::time::Duration::from_millis(20)),
        ..Default::default()
    };
    let l = EmbeddedLedger::open(&path, cfg.clone()).unwrap();
    let tx = l.prepare(&[mint("k", wallet("x"), Token::Io, 5)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let h = l.block_height().unwrap();
    assert!(h >= 5, "height {h} after ~7 block times");
    // never sent, now expired without any other transaction landing
    assert!(matches!(l.send(&tx), Err(LedgerError::Expired { .. })));
    drop(l);
    // the advance was journaled
    let l = open(&path);
    assert!(l.block_height().unwrap() >= h);
}

#[test]
fn block_height_overflow_is_an_error() {
    let l = mem();
    l.tick(u64::MAX - 1).unwrap();
    assert!(l.tick(2).is_err());
    l.tick(1).unwrap();
    let tx2 = l.prepare(&[mint("k", wallet("x"), Token::Io, 5)]).unwrap();
    assert!(l.send(&tx2).is_err(), "no block after u64::MAX");
    assert_eq!(l.status(&tx2.signature).unwrap(), TxStatus::NotFound);
}
