//! The StakePosition controller against an in-memory API server (tower-test) and the
//! embedded ledger: the exact requests of lock, unbond, withdraw, slash and
//! deletion, and the money on the ledger.

mod apiserver;

use apiserver::*;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use solgrid_crds::StakePosition;
use solgrid_market::ledger::{Account, Ledger, Token};
use solgrid_operator::Context;
use solgrid_operator::config::OperatorConfig;
use solgrid_operator::stake::{FINALIZER, reconcile};
use std::sync::Arc;

const NS: &str = "stakers";
const SP: &str = "/apis/solgrid.dev/v1alpha1/namespaces/stakers/stakepositions/sp1";
const SECRET: &str = "/api/v1/namespaces/stakers/secrets/owner";
const GN: &str = "/apis/solgrid.dev/v1alpha1/gpunodes/gpu-1";
const IO: u64 = 1_000_000_000;

/// A 300 IO position of WALLET_A (its finalizer set), the owner Secret with the
/// wallet's keypair when `with_secret`, and `funds` IO in the wallet.
fn setup(with_secret: bool, funds: u64) -> Env {
    let env = env(OperatorConfig::default());
    env.server.put(
        SP,
        json!({
            "apiVersion": "solgrid.dev/v1alpha1",
            "kind": "StakePosition",
            "metadata": {"name": "sp1", "namespace": NS, "generation": 1, "finalizers": [FINALIZER]},
            "spec": {"nodeName": "gpu-1", "amount": 300 * IO, "ownerSecretRef": {"name": "owner"}},
        }),
    );
    if with_secret {
        owner_secret(&env.server, wallet_secret_data(WALLET_A));
    }
    if funds > 0 {
        fund(&env.ctx, WALLET_A, funds);
    }
    env
}

/// [`setup`] with exactly the stake funded, reconciled once: locked.
async fn locked() -> Env {
    let env = setup(true, 300 * IO);
    reconcile(obj(&env.server), env.ctx.clone()).await.unwrap();
    env
}

/// Puts the owner Secret with `data` (base64 values).
fn owner_secret(server: &ApiServer, data: Value) {
    server.put(
        SECRET,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "owner", "namespace": NS},
               "data": data}),
    );
}

fn uid(server: &ApiServer) -> String {
    server.get(SP).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn obj(server: &ApiServer) -> Arc<StakePosition> {
    Arc::new(serde_json::from_value(server.get(SP).unwrap()).unwrap())
}

/// Reconciles the position again, the calls cleared first.
async fn again(ctx: &Arc<Context>, server: &ApiServer) -> Action {
    server.clear_calls();
    reconcile(obj(server), ctx.clone()).await.unwrap()
}

/// Reconciles the position again: nothing is written.
async fn no_writes_again(ctx: &Arc<Context>, server: &ApiServer) {
    again(ctx, server).await;
    assert!(server.writes().is_empty(), "{:?}", server.writes());
}

fn status_writes(server: &ApiServer) -> Vec<Value> {
    server
        .writes()
        .into_iter()
        .filter(|c| c.is("PATCH", &format!("{SP}/status")))
        .map(|c| c.body["status"].clone())
        .collect()
}

fn vault(ctx: &solgrid_operator::Context) -> u64 {
    ctx.ledger.balance(&Account::StakeVault, Token::Io).unwrap()
}

fn wallet(ctx: &solgrid_operator::Context, w: &str) -> u64 {
    ctx.ledger
        .balance(&Account::Wallet(w.into()), Token::Io)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_adds_finalizer_records_before_sending_and_activates() {
    let Env { ctx, server, .. } = setup(true, 1_000 * IO);
    server.edit(SP, |o| o["metadata"]["finalizers"] = json!(null));
    reconcile(obj(&server), ctx.clone()).await.unwrap();

    // 1. the finalizer first (kube's finalizer helper: a JSON patch guarded by a
    //    test of the list), and nothing else in that reconcile
    let writes = server.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].is("PATCH", SP), "{:?}", writes[0]);
    assert_eq!(
        writes[0].body,
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
               {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
    );
    assert_eq!(
        server.get(SP).unwrap()["metadata"]["finalizers"],
        json!([FINALIZER])
    );
    assert_eq!(vault(&ctx), 0);
    // 2..: the next reconcile (woken by that change): status applies
    again(&ctx, &server).await;
    let st = status_writes(&server);
    assert_eq!(st[0]["ownerWallet"], WALLET_A);
    // the plan is recorded before anything is sent
    let uid = uid(&server);
    assert_eq!(st[1]["operations"][0]["key"], format!("{uid}/lock"));
    assert_eq!(st[1]["operations"][0]["state"], "Planned");
    assert_eq!(st[2]["operations"][0]["state"], "Sent");
    assert!(st[2]["operations"][0]["signature"].is_string());
    assert!(st[2]["operations"][0]["lastValidBlockHeight"].is_u64());
    assert_eq!(st[3]["operations"][0]["state"], "Confirmed");
    assert_eq!(st[3]["phase"], "Active");
    assert_eq!(st[3]["locked"], 300 * IO);
    assert!(st[3]["activeSince"].is_string());
    assert_eq!(st[3]["observedGeneration"], 1);
    // every status write is server-side apply, guarded by resourceVersion
    for c in server
        .writes()
        .iter()
        .filter(|c| c.path.ends_with("/status"))
    {
        assert!(
            c.query.contains("fieldManager=solgrid-operator"),
            "{}",
            c.query
        );
        assert!(c.body["metadata"]["resourceVersion"].is_string());
        assert!(c.body["status"].get("rewardsAccrued").is_none());
    }
    // the money
    assert_eq!(vault(&ctx), 300 * IO);
    assert_eq!(wallet(&ctx, WALLET_A), 700 * IO);
    assert_eq!(
        ctx.ledger.embedded().unwrap().confirmed_key_counts()[&format!("{uid}/lock")],
        1
    );
    assert!(
        server.events().contains(&"StakeLocked".to_string()),
        "{:?}",
        server.events()
    );

    // reconciling again moves nothing
    no_writes_again(&ctx, &server).await;
    assert_eq!(vault(&ctx), 300 * IO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbond_waits_the_period_then_withdraws_exactly_once() {
    let Env { ctx, server, clock } = locked().await;
    assert_eq!(vault(&ctx), 300 * IO);

    // spec.unbond
    server.edit(SP, |o| o["spec"]["unbond"] = json!(true));
    let action = again(&ctx, &server).await;
    let st = status_writes(&server);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["phase"], "Unbonding");
    let ends = st[0]["unbondingEndsAt"].as_str().unwrap().to_string();
    let ends_ms = chrono::DateTime::parse_from_rfc3339(&ends)
        .unwrap()
        .timestamp_millis();
    assert_eq!(ends_ms, T0_MS + 14 * 24 * 3_600_000);
    assert_eq!(server.events(), vec!["UnbondingStarted"]);
    assert!(format!("{action:?}").contains("3600"), "{action:?}");
    assert_eq!(vault(&ctx), 300 * IO, "still locked while unbonding");

    // one millisecond early: nothing
    clock.advance(chrono::Duration::milliseconds(14 * 24 * 3_600_000 - 1));
    no_writes_again(&ctx, &server).await;

    clock.advance(chrono::Duration::milliseconds(1));
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let st = status_writes(&server);
    let uid = uid(&server);
    let last = st.last().unwrap();
    assert_eq!(last["phase"], "Withdrawn");
    assert_eq!(last["locked"], 0);
    let w = last["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "withdraw")
        .unwrap();
    assert_eq!(w["key"], format!("{uid}/withdraw"));
    assert_eq!(w["state"], "Confirmed");
    assert_eq!(st[0]["operations"][1]["state"], "Planned");
    assert_eq!(vault(&ctx), 0);
    assert_eq!(wallet(&ctx, WALLET_A), 300 * IO);
    assert!(server.events().contains(&"StakeWithdrawn".to_string()));

    // and never again
    no_writes_again(&ctx, &server).await;
    assert_eq!(
        ctx.ledger.embedded().unwrap().confirmed_key_counts()[&format!("{uid}/withdraw")],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_unbonds_withdraws_then_releases_the_finalizer() {
    let Env { ctx, server, clock } = locked().await;
    server.edit(SP, |o| {
        o["metadata"]["deletionTimestamp"] = json!(rfc(T0_MS))
    });
    server.clear_calls();
    // unbonding, finalizer kept: the cleanup is pending (retried)
    let err = reconcile(obj(&server), ctx.clone()).await.unwrap_err();
    assert!(err.to_string().contains("settlement pending"), "{err}");
    let w = server.writes();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].body["status"]["phase"], "Unbonding");
    assert_eq!(vault(&ctx), 300 * IO);

    clock.advance(chrono::Duration::days(14));
    again(&ctx, &server).await;
    let w = server.writes();
    // withdraw (planned, sent, confirmed), then the finalizer goes
    let last = w.last().unwrap();
    assert!(last.is("PATCH", SP), "{last:?}");
    assert_eq!(
        last.body,
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
               {"op": "remove", "path": "/metadata/finalizers/0"}])
    );
    assert_eq!(server.get(SP).unwrap()["metadata"]["finalizers"], json!([]));
    assert_eq!(vault(&ctx), 0);
    assert_eq!(wallet(&ctx, WALLET_A), 300 * IO);
    assert!(server.events().contains(&"FinalizerRemoved".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_without_lock_is_released_at_once_on_deletion() {
    let Env { ctx, server, .. } = setup(false, 0);
    server.edit(SP, |o| {
        o["metadata"]["finalizers"] = json!([FINALIZER]);
        o["metadata"]["deletionTimestamp"] = json!(rfc(T0_MS));
    });
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let w = server.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(
        w[0].body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
    assert_eq!(server.get(SP).unwrap()["metadata"]["finalizers"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_waits_with_a_condition_and_moves_nothing() {
    let Env { ctx, server, .. } = setup(false, 0);
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let st = status_writes(&server);
    assert_eq!(st.len(), 1);
    assert!(st[0]["message"].as_str().unwrap().contains("not found"));
    assert_eq!(st[0]["conditions"][0]["status"], "False");
    assert_eq!(server.events(), vec!["Waiting"]);
    assert_eq!(ctx.ledger.embedded().unwrap().tx_count(), 0);
    // the same again: no new write, no new Event
    no_writes_again(&ctx, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_the_owner_cannot_pay_fails_once_and_stays_pending() {
    let Env { ctx, server, .. } = setup(true, 10 * IO);
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let st = status_writes(&server);
    let last = st.last().unwrap();
    assert_eq!(last["operations"][0]["state"], "Failed");
    assert!(
        last["operations"][0]["error"]
            .as_str()
            .unwrap()
            .contains("insufficient")
    );
    assert!(last["message"].as_str().unwrap().contains("recreate"));
    assert_eq!(server.get(SP).unwrap()["status"]["phase"], "Pending");
    assert!(
        server
            .events()
            .contains(&"LedgerOperationFailed".to_string())
    );
    assert_eq!(wallet(&ctx, WALLET_A), 10 * IO);
    again(&ctx, &server).await;
    assert!(
        server.writes().is_empty(),
        "a failed lock is not retried blindly"
    );
}

/// Puts the GpuNode with a slash incident `id` at `at_ms` in its status (what the
/// GpuNode controller records when the node is caught cheating).
fn incident(server: &ApiServer, id: &str, at_ms: i64) {
    server.put(
        GN,
        json!({"apiVersion": "solgrid.dev/v1alpha1", "kind": "GpuNode",
               "metadata": {"name": "gpu-1"},
               "spec": {"nodeName": "gpu-1", "payoutWallet": WALLET_PROV,
                        "location": {"region": "eu-west", "country": "DE"}},
               "status": {"phase": "Slashed", "slashIncident": {"id": id, "at": rfc(at_ms)}}}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_incident_is_planned_then_burned_exactly_once() {
    let Env { ctx, server, clock } = locked().await;
    let supply0 = ctx.ledger.supply(Token::Io).unwrap();
    let uid = uid(&server);

    // the node was caught cheating after the stake was locked
    clock.advance(chrono::Duration::seconds(10));
    incident(&server, "p7", T0_MS + 1);
    again(&ctx, &server).await;
    // the slash is recorded (Planned) in the position's own status before anything is sent
    let st = status_writes(&server);
    let ops = st[0]["operations"].as_array().unwrap();
    assert_eq!(ops.last().unwrap()["key"], format!("{uid}/slash/p7"));
    assert_eq!(ops.last().unwrap()["state"], "Planned");
    assert!(
        st[0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "SlashPending" && c["status"] == "True")
    );
    assert!(
        !server
            .writes()
            .iter()
            .any(|c| c.path.contains("/gpunodes/"))
    );
    // then burned: half of it (ECONOMICS.md)
    let st = server.get(SP).unwrap()["status"].clone();
    assert_eq!(st["phase"], "Slashed");
    assert_eq!(st["locked"], 150 * IO);
    assert_eq!(st["slashedAmount"], 150 * IO);
    assert_eq!(vault(&ctx), 150 * IO);
    assert_eq!(ctx.ledger.supply(Token::Io).unwrap(), supply0 - 150 * IO);
    assert!(server.events().contains(&"StakeSlashed".to_string()));
    // again (the node's status changes, the position is reconciled): nothing more burned
    again(&ctx, &server).await;
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    assert!(status_writes(&server).is_empty(), "{:?}", server.writes());
    assert_eq!(ctx.ledger.supply(Token::Io).unwrap(), supply0 - 150 * IO);
    assert_eq!(
        ctx.ledger.embedded().unwrap().confirmed_key_counts()[&format!("{uid}/slash/p7")],
        1
    );
    // a slashed stake can still be unbonded and withdrawn
    server.edit(SP, |o| o["spec"]["unbond"] = json!(true));
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    assert_eq!(server.get(SP).unwrap()["status"]["phase"], "Unbonding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_locked_after_the_incident_is_not_slashed() {
    let Env { ctx, server, clock } = setup(true, 300 * IO);
    // an incident before the lock (the slash was cleared since)
    incident(&server, "p3", T0_MS - 60_000);
    clock.advance(chrono::Duration::seconds(1));
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let st = server.get(SP).unwrap()["status"].clone();
    assert_eq!(st["phase"], "Active");
    assert_eq!(st["locked"], 300 * IO);
    no_writes_again(&ctx, &server).await;
    assert_eq!(vault(&ctx), 300 * IO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_secret_with_only_an_address_locks_nothing() {
    let Env { ctx, server, .. } = setup(false, 1_000 * IO);
    // another staker's funded wallet, named without its keypair; the ledger even
    // knows that wallet's key already (its owner staked before)
    owner_secret(&server, json!({"address": base64(WALLET_A.as_bytes())}));
    ctx.ledger
        .embedded()
        .unwrap()
        .add_signer(keypair_of(WALLET_A));
    let txs = ctx.ledger.embedded().unwrap().tx_count();
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let st = status_writes(&server);
    let last = st.last().unwrap();
    assert_eq!(last["phase"], "Pending");
    let msg = last["message"].as_str().unwrap();
    says_no_keypair(msg, "owner", WALLET_A);
    assert!(
        last["operations"]
            .as_array()
            .is_none_or(|ops| ops.is_empty()),
        "nothing planned: {last}"
    );
    assert_eq!(ctx.ledger.embedded().unwrap().tx_count(), txs);
    assert_eq!(vault(&ctx), 0);
    assert_eq!(wallet(&ctx, WALLET_A), 1_000 * IO);
    assert!(server.events().contains(&"Waiting".to_string()));

    // a keypair of another wallet under that address: refused too
    owner_secret(
        &server,
        json!({"address": base64(WALLET_A.as_bytes()),
               "keypair": base64(keypair_of(WALLET_B).to_solana_json().as_bytes())}),
    );
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    let st = status_writes(&server);
    let msg = st.last().unwrap()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("does not match"), "{msg}");
    assert_eq!(vault(&ctx), 0);

    // the owner's own keypair: locked
    owner_secret(&server, wallet_secret_data(WALLET_A));
    reconcile(obj(&server), ctx.clone()).await.unwrap();
    assert_eq!(vault(&ctx), 300 * IO);
    assert_eq!(wallet(&ctx, WALLET_A), 700 * IO);
}
