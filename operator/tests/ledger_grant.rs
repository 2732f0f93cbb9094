//! The LedgerGrant controller against an in-memory API server and the embedded
//! ledger: an admin's funding lands exactly once, whatever replays.

mod apiserver;

use apiserver::*;
use serde_json::json;
use solgrid_crds::LedgerGrant;
use solgrid_market::ledger::{Account, Ledger, Token};
use solgrid_operator::config::OperatorConfig;
use solgrid_operator::grant::{grant_key, reconcile};
use std::sync::Arc;

const G: &str = "/apis/solgrid.dev/v1alpha1/ledgergrants/newcomer-io";

fn put_grant(server: &ApiServer, wallet: &str, amount: u64) {
    server.put(
        G,
        json!({
            "apiVersion": "solgrid.dev/v1alpha1",
            "kind": "LedgerGrant",
            "metadata": {"name": "newcomer-io"},
            "spec": {"wallet": wallet, "token": "IO", "amount": amount},
        }),
    );
}

fn obj(server: &ApiServer) -> Arc<LedgerGrant> {
    Arc::new(serde_json::from_value(server.get(G).unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_minted_exactly_once_and_recorded() {
    let Env { ctx, server, .. } = env(OperatorConfig::default());
    put_grant(&server, WALLET_A, 5_000);
    reconcile(obj(&server), ctx.clone()).await.unwrap();

    let o = server.get(G).unwrap();
    let uid = o["metadata"]["uid"].as_str().unwrap().to_string();
    let st = &o["status"];
    assert_eq!(st["phase"], "Executed", "{st}");
    assert_eq!(st["key"], grant_key(&uid));
    assert!(st["signature"].is_string());
    assert_eq!(st["ledgerSeq"], 1);
    assert!(st["executedAt"].is_string());
    assert_eq!(st["conditions"][0]["type"], "Executed");
    assert_eq!(st["conditions"][0]["status"], "True");
    assert!(server.events().contains(&"Granted".to_string()));
    let status_write = server
        .writes()
        .into_iter()
        .find(|c| c.is("PATCH", &format!("{G}/status")))
        .unwrap();
    assert!(status_write.query.contains("fieldManager=solgrid-operator"));
    assert!(status_write.body["metadata"]["resourceVersion"].is_string());
    let wallet = |ctx: &solgrid_operator::Context| {
        ctx.ledger
            .balance(&Account::Wallet(WALLET_A.into()), Token::Io)
            .unwrap()
    };
    assert_eq!(wallet(&ctx), 5_000);

    // reconciled again (a watch event): nothing
    server.clear_calls();
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    assert!(server.writes().is_empty());

    // the status write was lost (crash after the mint): the ledger finds the key
    // and the same transaction is recorded; nothing is minted twice
    let sig = st["signature"].clone();
    server.edit(G, |o| o["status"] = serde_json::Value::Null);
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let o = server.get(G).unwrap();
    assert_eq!(o["status"]["phase"], "Executed");
    assert_eq!(o["status"]["signature"], sig);
    assert!(
        o["status"]["message"]
            .as_str()
            .unwrap()
            .contains("found already granted")
    );
    assert_eq!(wallet(&ctx), 5_000);
    let l = ctx.ledger.embedded().unwrap();
    assert_eq!(l.confirmed_key_counts()[&grant_key(&uid)], 1);
    assert_eq!(l.supply(Token::Io).unwrap(), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_to_a_wallet_nobody_can_sign_for_fails_and_moves_nothing() {
    let Env { ctx, server, .. } = env(OperatorConfig::default());
    // base58 and 32..44 characters (passes the CRD's pattern), but not an ed25519 key
    put_grant(&server, "1111111111111111111111111111111111111111111", 5);
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let st = server.get(G).unwrap()["status"].clone();
    assert_eq!(st["phase"], "Failed", "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("not a base58 ed25519 public key"),
        "{st}"
    );
    assert_eq!(st["conditions"][0]["status"], "False");
    assert!(server.events().contains(&"GrantFailed".to_string()));
    assert_eq!(ctx.ledger.embedded().unwrap().tx_count(), 0);
}
