//! A dead or dying RPC endpoint: clear errors after retries with backoff, never a panic.

mod common;

use common::*;
use solgrid_market::ledger::{Account, Intent, Ledger, Op, Token};
use solgrid_solana::{Authority, Keypair, SolanaConfig, SolanaError, SolanaLedger};
use std::time::{Duration, Instant};

fn closed_port() -> u16 {
    // bind then drop: nothing listens there afterwards
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn dead_endpoint_is_a_clear_transient_error() {
    let url = format!(
        "http://127.0.0.1:{}/secret-path?api-key=hunter2",
        closed_port()
    );
    let mut config = SolanaConfig::new(
        url,
        "So11111111111111111111111111111111111111112",
        "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
    );
    config.rpc_attempts = 3;
    config.initial_backoff = Duration::from_millis(20);
    let start = Instant::now();
    let err = SolanaLedger::connect(config, Authority::generate()).unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        SolanaError::Rpc {
            attempts,
            transport,
            ..
        } => {
            assert_eq!(*attempts, 3);
            assert!(*transport);
        }
        other => panic!("expected an RPC error, got {other:?}"),
    }
    assert!(err.is_transient());
    assert!(
        elapsed >= Duration::from_millis(60),
        "backed off 20 + 40 ms: {elapsed:?}"
    );
    let msg = err.to_string();
    assert!(
        !msg.contains("hunter2") && !msg.contains("secret-path"),
        "{msg}"
    );
    eprintln!("dead endpoint: {msg}");
}

#[test]
fn invalid_addresses_are_refused() {
    let config = SolanaConfig::new("http://127.0.0.1:1", "not-a-mint", "x");
    assert!(matches!(
        SolanaLedger::connect(config, Authority::generate()),
        Err(SolanaError::InvalidAddress { .. })
    ));
}

#[test]
fn endpoint_dying_mid_way_gives_errors_not_panics() {
    let Some(env) = setup_with("endpoint_dying_mid_way_gives_errors_not_panics", |c| {
        c.rpc_attempts = 2;
        c.initial_backoff = Duration::from_millis(10);
        c.rpc_timeout = Duration::from_secs(2);
    }) else {
        return;
    };
    let Env { ledger, validator } = env;
    let provider = wallet(&Keypair::new());
    let intent = Intent {
        key: "dying/1".into(),
        movements: vec![mv(
            Token::Io,
            Op::Mint {
                to: provider.clone(),
                amount: 7,
            },
        )],
    };
    let p = ledger.prepare(std::slice::from_ref(&intent)).unwrap();
    drop(validator); // killed
    for r in [
        ledger.send(&p).map(|_| ()),
        ledger.status(&p.signature).map(|_| ()),
        ledger.block_height().map(|_| ()),
        ledger.prepare(std::slice::from_ref(&intent)).map(|_| ()),
        ledger.balance(&Account::Escrow, Token::Io).map(|_| ()),
        ledger.supply(Token::Io).map(|_| ()),
    ] {
        let e = r.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
    // fits answers without the endpoint (assuming the largest transaction)
    assert!(ledger.fits(std::slice::from_ref(&intent)));
    assert_eq!(ledger.unit(Token::Io), 1_000_000);
}
