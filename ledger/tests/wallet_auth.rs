//! Wallet ownership on the embedded ledger: a debit needs the owner's signature
//! (an address alone moves nothing), and admin funding (`grant`) lands exactly once.

use solgrid_ledger::testing::{mint, test_wallet_keypair, transfer};
use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger, LedgerError, WalletKeypair};
use solgrid_market::ledger::{Account, Intent, Ledger, Prepared, Token, TxStatus};

fn mem() -> EmbeddedLedger {
    EmbeddedLedger::in_memory(EmbeddedConfig::default()).unwrap()
}

fn escrow_from(key: &str, wallet: &str, amount: u64) -> Intent {
    transfer(key, Account::Wallet(wallet.into()), Account::Escrow, amount)
}

fn bal(l: &EmbeddedLedger, a: &str) -> u64 {
    l.balance(&Account::Wallet(a.into()), Token::Io).unwrap()
}

/// A ledger where `alice` holds 1,000 and `mallory` 10.
fn two_wallets() -> (EmbeddedLedger, WalletKeypair, WalletKeypair) {
    let l = mem();
    let alice = test_wallet_keypair("alice");
    let mallory = test_wallet_keypair("mallory");
    l.grant("grant/a", &alice.address(), Token::Io, 1_000)
        .unwrap();
    l.grant("grant/m", &mallory.address(), Token::Io, 10)
        .unwrap();
    (l, alice, mallory)
}

#[test]
fn an_address_alone_moves_nothing() {
    let (l, alice, _) = two_wallets();
    let err = l
        .prepare(&[escrow_from("escrow/job-b", &alice.address(), 500)])
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::MissingSigner { wallet, key } if *wallet == alice.address() && key == "escrow/job-b"),
        "{err}"
    );
    assert!(
        err.to_string().contains("needs its owner's signature"),
        "{err}"
    );
    assert_eq!(bal(&l, &alice.address()), 1_000);
    assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 0);
}

#[test]
fn the_owners_signature_moves_it() {
    let (l, alice, _) = two_wallets();
    assert_eq!(l.add_signer(alice.clone()), alice.address());
    assert!(l.has_signer(&alice.address()));
    let (_, st) = l
        .apply(&[escrow_from("escrow/job-a", &alice.address(), 400)])
        .unwrap();
    assert_eq!(st, TxStatus::Confirmed);
    assert_eq!(bal(&l, &alice.address()), 600);
    assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 400);
    // the signature is in the journal's record (audit); the keypair never is
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    {
        let f = EmbeddedLedger::open(&path, EmbeddedConfig::default()).unwrap();
        f.grant("grant/a", &alice.address(), Token::Io, 1_000)
            .unwrap();
        f.add_signer_bytes(alice.to_solana_json().as_bytes())
            .unwrap();
        f.apply(&[escrow_from("escrow/job-a", &alice.address(), 400)])
            .unwrap();
    }
    let journal = std::fs::read_to_string(&path).unwrap();
    assert!(journal.contains("\"auth\""), "{journal}");
    assert!(!journal.contains(&alice.to_solana_json()[1..40]));
    // replayed (signatures checked again), the balances are the same
    let f = EmbeddedLedger::open(&path, EmbeddedConfig::default()).unwrap();
    assert_eq!(bal(&f, &alice.address()), 600);
    assert!(
        !f.has_signer(&alice.address()),
        "signers are never persisted"
    );
}

#[test]
fn another_wallets_key_cannot_debit_it() {
    // mallory registers her own key and names alice's wallet
    let (l, alice, mallory) = two_wallets();
    l.add_signer(mallory.clone());
    let err = l
        .prepare(&[escrow_from("escrow/job-m", &alice.address(), 500)])
        .unwrap_err();
    assert!(matches!(err, LedgerError::MissingSigner { .. }), "{err}");

    // a transaction built elsewhere with mallory's signature over a debit of
    // alice's wallet is refused when it is applied: nothing lands
    l.add_signer(alice.clone());
    let honest = l
        .prepare(&[escrow_from("escrow/job-m", &alice.address(), 500)])
        .unwrap();
    let forged = forge(&honest, |auth| {
        auth[0]["s"] = serde_json::Value::String(mallory.sign_intent(&escrow_from(
            "escrow/job-m",
            &alice.address(),
            500,
        )));
    });
    let err = l.send(&forged).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Unauthorized { wallet, reason, .. } if *wallet == alice.address() && reason.contains("does not verify")),
        "{err}"
    );
    assert_eq!(l.status(&forged.signature).unwrap(), TxStatus::NotFound);
    assert_eq!(bal(&l, &alice.address()), 1_000);

    // alice's signature moved onto another amount does not verify either
    let bigger = forge(&honest, |_| {});
    let mut p: serde_json::Value = serde_json::from_slice(&bigger.payload).unwrap();
    p["intents"][0]["movements"][0]["op"]["Transfer"]["amount"] = 999.into();
    let tampered = reseal(&honest, p);
    assert!(matches!(
        l.send(&tampered).unwrap_err(),
        LedgerError::Unauthorized { .. }
    ));

    // and a signature stripped off is refused
    let stripped = forge(&honest, |auth| auth.clear());
    let err = l.send(&stripped).unwrap_err();
    assert!(
        err.to_string().contains("an address alone moves nothing"),
        "{err}"
    );
    assert_eq!(bal(&l, &alice.address()), 1_000);

    // the honest one lands
    l.send(&honest).unwrap();
    assert_eq!(bal(&l, &alice.address()), 500);
}

/// Rewrites the payload's `auth` (then re-seals the transaction id, as anyone
/// could: the id is a hash, the authority is the wallet signature).
fn forge(tx: &Prepared, f: impl FnOnce(&mut Vec<serde_json::Value>)) -> Prepared {
    let mut p: serde_json::Value = serde_json::from_slice(&tx.payload).unwrap();
    let mut auth: Vec<serde_json::Value> = p
        .get("auth")
        .and_then(|a| a.as_array().cloned())
        .unwrap_or_default();
    f(&mut auth);
    p["auth"] = serde_json::Value::Array(auth);
    reseal(tx, p)
}

fn reseal(tx: &Prepared, p: serde_json::Value) -> Prepared {
    use sha2::Digest;
    let payload = serde_json::to_vec(&p).unwrap();
    Prepared {
        signature: bs58::encode(sha2::Sha512::digest(&payload)).into_string(),
        last_valid_block_height: tx.last_valid_block_height,
        keys: tx.keys.clone(),
        payload,
    }
}

#[test]
fn a_keypair_for_another_address_or_garbage_is_refused() {
    let l = mem();
    assert!(matches!(
        l.add_signer_bytes(b"[1,2,3]"),
        Err(LedgerError::Keypair(_))
    ));
    let a = test_wallet_keypair("a").to_solana_json();
    let b = test_wallet_keypair("b").to_solana_json();
    // secret half of a, public half of b
    let av: Vec<&str> = a.trim_matches(['[', ']']).split(',').collect();
    let bv: Vec<&str> = b.trim_matches(['[', ']']).split(',').collect();
    let mixed = format!("[{},{}]", av[..32].join(","), bv[32..].join(","));
    let err = l.add_signer_bytes(mixed.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("public half does not match"),
        "{err}"
    );
    assert!(!err.to_string().contains(av[0]) || av[0].len() < 2);
}

#[test]
fn grant_is_exactly_once_per_key() {
    let l = mem();
    let w = test_wallet_keypair("newcomer").address();
    let first = l.grant("grant/uid-1", &w, Token::Io, 5_000).unwrap();
    assert!(!first.replayed);
    assert_eq!(l.status(&first.signature).unwrap(), TxStatus::Confirmed);
    // the operator restarts and reconciles the same LedgerGrant again
    let again = l.grant("grant/uid-1", &w, Token::Io, 5_000).unwrap();
    assert!(again.replayed);
    assert_eq!(again.signature, first.signature);
    assert_eq!(again.seq, first.seq);
    assert_eq!(bal(&l, &w), 5_000);
    assert_eq!(l.supply(Token::Io).unwrap(), 5_000);
    assert_eq!(l.confirmed_key_counts()["grant/uid-1"], 1);
    // another grant is another key
    l.grant("grant/uid-2", &w, Token::Usdc, 7).unwrap();
    assert_eq!(
        l.balance(&Account::Wallet(w.clone()), Token::Usdc).unwrap(),
        7
    );
    // the audit log names the key (memo)
    let e = l.find_confirmed("grant/uid-1").unwrap();
    assert_eq!(e.keys, vec!["grant/uid-1".to_string()]);
}

#[test]
fn grant_survives_a_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let w = test_wallet_keypair("x").address();
    let sig = {
        let l = EmbeddedLedger::open(&path, EmbeddedConfig::default()).unwrap();
        l.grant("grant/uid-9", &w, Token::Io, 42).unwrap().signature
    };
    let l = EmbeddedLedger::open(&path, EmbeddedConfig::default()).unwrap();
    let r = l.grant("grant/uid-9", &w, Token::Io, 42).unwrap();
    assert!(r.replayed);
    assert_eq!(r.signature, sig);
    assert_eq!(bal(&l, &w), 42);
}

#[test]
fn grant_refuses_a_wallet_nobody_can_sign_for() {
    let l = mem();
    for bad in [
        "alice",
        "",
        "11111111111111111111111111111111111111111111111",
    ] {
        let err = l.grant("grant/bad", bad, Token::Io, 1).unwrap_err();
        assert!(
            matches!(err, LedgerError::InvalidAccount { .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(l.tx_count(), 0);
}

#[test]
fn operator_accounts_and_credits_need_no_wallet_signature() {
    let l = mem();
    let w = test_wallet_keypair("p").address();
    l.apply(&[mint("genesis", Account::Escrow, Token::Io, 10)])
        .unwrap();
    let (_, st) = l
        .apply(&[transfer(
            "settle/job/0",
            Account::Escrow,
            Account::Wallet(w.clone()),
            10,
        )])
        .unwrap();
    assert_eq!(st, TxStatus::Confirmed);
    // a zero debit of a wallet needs no signature (nothing moves)
    let (_, st) = l.apply(&[escrow_from("zero", &w, 0)]).unwrap();
    assert_eq!(st, TxStatus::Confirmed);
}

#[test]
fn without_required_signatures_names_still_work_for_simulations() {
    let l = EmbeddedLedger::in_memory(EmbeddedConfig {
        require_wallet_signatures: false,
        ..Default::default()
    })
    .unwrap();
    l.apply(&[mint("g", Account::Wallet("payer".into()), Token::Io, 3)])
        .unwrap();
    let (_, st) = l.apply(&[escrow_from("e", "payer", 3)]).unwrap();
    assert_eq!(st, TxStatus::Confirmed);
}
