//! Wallet ownership on the (default) embedded ledger, through the ComputeJob
//! controller: a payer Secret that names a wallet without its owner's keypair funds
//! nothing, and neither does one holding another wallet's keypair — even when the
//! victim's own keypair is already known to the ledger.

mod fixtures;

use fixtures::*;
use serde_json::{Value, json};
use solgrid_crds::*;
use solgrid_market::ledger::{Account, Intent, Ledger, Movement, Op, Token};
use solgrid_operator::computejob::reconcile;
use solgrid_operator::config::OperatorConfig;
use std::sync::Arc;

const FUNDS: u64 = 1_000_000_000_000;

fn enc(b: &[u8]) -> String {
    solgrid_operator::verification::base64_encode(b)
}

fn cond<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no condition {type_} in {status}"))
}

fn quoted() -> ComputeJobStatus {
    ComputeJobStatus {
        phase: ComputeJobPhase::Quoted,
        quote: Some(Quote {
            price_per_gpu_hour: 1000,
            max_cost: 5000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The victim's wallet (PAYER) holds funds; the attacker's job in the same test
/// namespace points at a Secret with `data`. Returns the Funded condition written.
async fn attempt(
    data: Value,
    victim_signer_known: bool,
) -> (Value, Arc<solgrid_operator::Context>) {
    let env = env(OperatorConfig::default());
    let l = env.ctx.ledger.embedded().unwrap();
    l.apply(&[Intent {
        key: "fund-payer".into(),
        movements: vec![Movement {
            token: Token::Io,
            op: Op::Mint {
                to: Account::Wallet(PAYER.into()),
                amount: FUNDS,
            },
        }],
    }])
    .unwrap();
    if victim_signer_known {
        // the victim funded a job of their own earlier: the ledger knows their key
        l.add_signer(payer_keypair());
    }
    let txs_before = l.tx_count();
    let Env { ctx, server, .. } = env;
    let mut srv = server;
    let j = job(1, Some(quoted()), true);
    let jj = j.clone();
    let task = tokio::spawn(async move {
        srv.list_pods(vec![]).await;
        srv.expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/secrets/alice-wallet"),
        )
        .await
        .reply(
            200,
            json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"alice-wallet","namespace":NS},
                   "data": data}),
        );
        let st = srv.status_patch(&jj).await;
        assert_eq!(st["phase"], "Quoted");
        assert!(st.get("escrow").is_none(), "no escrow planned: {st}");
        let (kind, reason, note) = srv.event().await;
        assert_eq!(kind, "Warning");
        assert_eq!(reason, "PayerSecretInvalid");
        assert!(!note.contains('['), "no key material in the Event: {note}");
        srv.done().await;
        cond(&st, "Funded").clone()
    });
    let action = reconcile(Arc::new(j), ctx.clone()).await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(60))
    );
    let funded = task.await.unwrap();
    // nothing moved
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
            json!({"address": enc(PAYER.as_bytes())}),
            victim_signer_known,
        )
        .await;
        assert_eq!(funded["status"], "False");
        assert_eq!(funded["reason"], "PayerSecretInvalid");
        let msg = funded["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!(
                "Secret alice-wallet has no keypair for wallet {PAYER}"
            )),
            "{msg}"
        );
        assert!(msg.contains("an address alone moves nothing"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_with_another_wallets_keypair_does_not_fund() {
    // the attacker's own keypair, under the victim's address
    let attacker = solgrid_ledger::WalletKeypair::from_seed([0xee; 32]);
    for victim_signer_known in [false, true] {
        let (funded, ctx) = attempt(
            json!({"address": enc(PAYER.as_bytes()),
                   "keypair": enc(attacker.to_solana_json().as_bytes())}),
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
        json!({"address": enc(PAYER.as_bytes()), "keypair": enc(b"[1,2,3,250]")}),
        false,
    )
    .await;
    let msg = funded["message"].as_str().unwrap();
    assert!(msg.contains("is not a Solana keypair"), "{msg}");
    assert!(!msg.contains("250"), "{msg}");
}
