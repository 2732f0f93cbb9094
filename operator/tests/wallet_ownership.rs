//! Wallet ownership on the (default) embedded ledger, through the ComputeJob
//! controller: a payer Secret that names a wallet without its owner's keypair funds
//! nothing, and neither does one holding another wallet's keypair — even when the
//! victim's own keypair is already known to the ledger.

mod apiserver;

use apiserver::*;
use serde_json::{Value, json};
use solgrid_market::ledger::{Account, Ledger, Token};
use solgrid_operator::config::OperatorConfig;
use std::sync::Arc;

const FUNDS: u64 = 1_000_000_000_000;

/// The victim's wallet (PAYER) holds funds; the attacker's job in the same test
/// namespace points at a Secret with `data`. Returns the Funded condition written.
async fn attempt(
    data: Value,
    victim_signer_known: bool,
) -> (Value, Arc<solgrid_operator::Context>) {
    let mut env = scripted(OperatorConfig::default());
    fund(&env.ctx, PAYER, FUNDS);
    let l = env.ctx.ledger.embedded().unwrap();
    if victim_signer_known {
        // the victim funded a job of their own earlier: the ledger knows their key
        l.add_signer(keypair_of(PAYER));
    }
    let txs_before = l.tx_count();
    let j = job(1, Some(quoted_status()), true);
    let jj = j.clone();
    let (action, funded) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            srv.payer_secret(data).await;
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Quoted");
            assert!(st.get("escrow").is_none(), "no escrow planned: {st}");
            let (kind, reason, note) = srv.event().await;
            assert_eq!(kind, "Warning");
            assert_eq!(reason, "PayerSecretInvalid");
            assert!(!note.contains('['), "no key material in the Event: {note}");
            cond(&st, "Funded").clone()
        })
        .await;
    let action = action.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(60))
    );
    // nothing moved
    let ctx = env.ctx;
    let l = ctx.ledger.embedded().unwrap();
    assert_eq!(l.tx_count(), txs_before);
    assert_eq!(
        ctx.ledger
            .balance(&Account::Wallet(PAYER.into()), Token::Io)
            .unwrap(),
        FUNDS
    );
    assert_eq!(ctx.ledger.balance(&Account::Escrow, Token::Io).unwrap(), 0);
    (funded, ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_with_only_an_address_does_not_fund() {
    for victim_signer_known in [false, true] {
        let (funded, _) = attempt(
            json!({"address": base64(PAYER.as_bytes())}),
            victim_signer_known,
        )
        .await;
        assert_eq!(funded["status"], "False");
        assert_eq!(funded["reason"], "PayerSecretInvalid");
        let msg = funded["message"].as_str().unwrap();
        says_no_keypair(msg, "alice-wallet", PAYER);
        assert!(msg.contains("an address alone moves nothing"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_with_another_wallets_keypair_does_not_fund() {
    // the attacker's own keypair, under the victim's address
    let attacker = solgrid_ledger::WalletKeypair::from_seed([0xee; 32]);
    for victim_signer_known in [false, true] {
        let (funded, ctx) = attempt(
            json!({"address": base64(PAYER.as_bytes()),
                   "keypair": base64(attacker.to_solana_json().as_bytes())}),
            victim_signer_known,
        )
        .await;
        assert_eq!(funded["reason"], "PayerSecretInvalid");
        let msg = funded["message"].as_str().unwrap();
        assert!(msg.contains("does not match"), "{msg}");
        assert!(msg.contains(&attacker.address()), "{msg}");
        // the mismatched keypair was never handed to the ledger
        assert!(
            !ctx.ledger
                .embedded()
                .unwrap()
                .has_signer(&attacker.address())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keypair_that_is_not_one_is_refused_without_echoing_it() {
    let (funded, _) = attempt(
        json!({"address": base64(PAYER.as_bytes()), "keypair": base64(b"[1,2,3,250]")}),
        false,
    )
    .await;
    let msg = funded["message"].as_str().unwrap();
    assert!(msg.contains("is not a Solana keypair"), "{msg}");
    assert!(!msg.contains("250"), "{msg}");
}
