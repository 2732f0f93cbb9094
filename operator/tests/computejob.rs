//! The ComputeJob controller against a mocked API server (tower-test): the exact
//! requests of each important transition, in order.

mod apiserver;

use apiserver::*;
use serde_json::Value;
use solgrid_crds::*;
use solgrid_market::ledger::{Account, Ledger, Token};
use solgrid_operator::LedgerHandle;
use solgrid_operator::conditions::{from_time, time};
use solgrid_operator::config::OperatorConfig;

/// Puts `amount` IO in escrow on the ledger (what a job's funding left there).
fn escrow(env: &Env, amount: u64) {
    mint(&env.ctx, "mint-escrow", Token::Io, Account::Escrow, amount);
}

/// A scripted server, with GpuNodes (name, payout wallet) in the cache.
fn providers(nodes: &[(&str, &str)]) -> Env {
    let nodes = nodes.iter().map(|(n, w)| gpunode(n, w)).collect();
    scripted_with(OperatorConfig::default(), gpunode_cache(nodes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_job_gets_the_finalizer_first() {
    let mut env = scripted(OperatorConfig::default());
    let j = job(2, None, false);
    let jj = j.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            let settlement = vec!["solgrid.dev/settlement".to_string()];
            let add = serde_json::json!({"op": "add", "value": settlement});
            srv.finalizer_patch(&jj, add, Some(settlement)).await;
        })
        .await;
    reconciled.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_job_is_quoted_funded_exactly_once_and_gets_its_pods() {
    let mut env = scripted(OperatorConfig::default());
    fund(&env.ctx, PAYER, 1_000_000_000_000_000);
    let j = job(2, None, true);
    let jj = j.clone();
    let ledger = env.ctx.ledger.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            // quote locked
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Quoted");
            let price = st["quote"]["pricePerGpuHour"].as_u64().unwrap();
            let max_cost = st["quote"]["maxCost"].as_u64().unwrap();
            assert!(price > 0 && max_cost > 0);
            assert_eq!(cond(&st, "Quoted")["status"], "True");
            assert_eq!(cond(&st, "Quoted")["reason"], "PriceLocked");
            assert_eq!(srv.event().await.1, "Quoted");
            // the payer's Secret, from the job's own namespace
            srv.payer_secret(wallet_secret_data(PAYER)).await;
            // escrow: plan + key recorded before anything is sent...
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["escrow"]["key"], format!("{UID}/escrow"));
            assert_eq!(st["escrow"]["state"], "Planned");
            assert_eq!(st["payerWallet"], PAYER);
            assert!(st.to_string().find("keypair").is_none());
            assert_eq!(
                ledger.balance(&Account::Escrow, Token::Io).unwrap(),
                0,
                "nothing sent yet"
            );
            // ...signature + last valid block height recorded before sending
            // (checked before the operator gets the answer and may send)...
            let st = srv
                .status_patch_checked(&jj, |_| {
                    assert_eq!(
                        ledger.balance(&Account::Escrow, Token::Io).unwrap(),
                        0,
                        "nothing sent before the signature is recorded"
                    );
                })
                .await;
            assert_eq!(st["escrow"]["state"], "Sent");
            assert!(
                st["escrow"]["signature"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            );
            assert!(st["escrow"]["lastValidBlockHeight"].as_u64().is_some());
            // ...then confirmed
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["escrow"]["state"], "Confirmed");
            assert_eq!(
                ledger.balance(&Account::Escrow, Token::Io).unwrap(),
                max_cost
            );
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Funded");
            assert_eq!(st["escrowed"].as_u64().unwrap(), max_cost);
            assert_eq!(cond(&st, "Funded")["reason"], "EscrowConfirmed");
            assert_eq!(srv.event().await.1, "Funded");
            // scheduling: the attempt is recorded, then the pods
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Scheduling");
            assert_eq!(st["attempts"], 1);
            assert_eq!(cond(&st, "Scheduled")["status"], "False");
            for i in 0..2 {
                let s = srv
                    .expect("POST", &format!("/api/v1/namespaces/{NS}/pods?"))
                    .await;
                let p = &s.body;
                assert_eq!(p["metadata"]["name"], format!("{NAME}-a1-w{i}"));
                assert_eq!(p["metadata"]["labels"]["solgrid.dev/job"], NAME);
                assert_eq!(p["metadata"]["labels"]["solgrid.dev/worker"], i.to_string());
                let owner = &p["metadata"]["ownerReferences"][0];
                assert_eq!(owner["kind"], "ComputeJob");
                assert_eq!(owner["uid"], UID);
                assert_eq!(owner["controller"], true);
                assert_eq!(p["spec"]["schedulerName"], "solgrid-scheduler");
                assert_eq!(p["spec"]["restartPolicy"], "Never");
                let c = &p["spec"]["containers"][0];
                assert_eq!(c["resources"]["requests"]["solgrid.dev/nvidia-gpu"], "2");
                assert_eq!(c["resources"]["limits"]["solgrid.dev/nvidia-gpu"], "2");
                let env: Vec<(String, String)> = c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap().into(),
                            e["value"].as_str().unwrap().into(),
                        )
                    })
                    .collect();
                assert!(env.contains(&("SOLGRID_WORKER_INDEX".into(), i.to_string())));
                assert!(env.contains(&("SOLGRID_WORKERS".into(), "2".into())));
                assert!(env.contains(&("HF_HUB_OFFLINE".into(), "1".into())));
                s.echo();
            }
            assert_eq!(srv.event().await.1, "WorkersCreated");
        })
        .await;
    reconciled.unwrap();
    // exactly once: one escrow transaction on the ledger
    let counts = env.ctx.ledger.embedded().unwrap().confirmed_key_counts();
    assert_eq!(counts.get(&format!("{UID}/escrow")), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_below_market_waits_with_a_condition() {
    let mut env = scripted(OperatorConfig::default());
    let mut j = job(1, None, true);
    j.spec.max_price_per_gpu_hour = 1;
    let jj = j.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Pending");
            assert_eq!(cond(&st, "Quoted")["status"], "False");
            assert_eq!(cond(&st, "Quoted")["reason"], "BudgetBelowMarket");
            let (t, reason, _) = srv.event().await;
            assert_eq!(
                (t.as_str(), reason.as_str()),
                ("Warning", "BudgetBelowMarket")
            );
        })
        .await;
    let action = reconciled.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(60))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_payer_secret_is_a_condition_not_a_hot_loop() {
    let mut env = scripted(OperatorConfig::default());
    let j = job(1, Some(quoted_status()), true);
    let jj = j.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            srv.expect_payer_secret().await.not_found();
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Quoted");
            assert_eq!(cond(&st, "Funded")["reason"], "PayerSecretMissing");
            assert!(st.get("escrow").is_none());
            assert_eq!(srv.event().await.1, "PayerSecretMissing");
        })
        .await;
    let action = reconciled.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(60))
    );
}

fn funded_status(max_cost: u64) -> ComputeJobStatus {
    ComputeJobStatus {
        quote: Some(Quote {
            price_per_gpu_hour: 1_000_000_000,
            max_cost,
            token: PaymentToken::Io,
            ..Default::default()
        }),
        payer_wallet: Some(PAYER.into()),
        escrow: Some(LedgerRecord {
            key: format!("{UID}/escrow"),
            purpose: "escrow".into(),
            state: SettlementState::Confirmed,
            signature: Some("sig".into()),
            ..Default::default()
        }),
        escrowed: max_cost,
        ..Default::default()
    }
}

/// The status of a job funded with `max_cost`, on its first attempt, in `phase`.
fn first_attempt(max_cost: u64, phase: ComputeJobPhase) -> ComputeJobStatus {
    ComputeJobStatus {
        phase,
        attempts: 1,
        ..funded_status(max_cost)
    }
}

/// A funded job scheduling its workers for `secs` seconds.
fn scheduling(max_cost: u64, secs: i64) -> ComputeJobStatus {
    ComputeJobStatus {
        scheduling_since: Some(time(t0() - chrono::Duration::seconds(secs))),
        ..first_attempt(max_cost, ComputeJobPhase::Scheduling)
    }
}

/// A funded job in `phase` whose `workers` started `secs` seconds ago (and, unless
/// Running, finished now).
fn ran(
    max_cost: u64,
    phase: ComputeJobPhase,
    secs: i64,
    workers: Vec<WorkerStatus>,
) -> ComputeJobStatus {
    let running = phase == ComputeJobPhase::Running;
    ComputeJobStatus {
        start_time: Some(time(t0() - chrono::Duration::seconds(secs))),
        end_time: (!running).then(|| time(t0())),
        workers,
        ..first_attempt(max_cost, phase)
    }
}

/// Worker `index` of the first attempt, on `node`.
fn worker(index: usize, node: &str, phase: &str, payout_wallet: Option<&str>) -> WorkerStatus {
    WorkerStatus {
        index: index as u32,
        pod: format!("{NAME}-a1-w{index}"),
        node: Some(node.into()),
        phase: phase.into(),
        payout_wallet: payout_wallet.map(Into::into),
    }
}

/// Asserts the final settlement (`{UID}/0`) was paid exactly once: PROVIDER1 got
/// `provider1`, and nothing is left in escrow.
fn settled_once(ledger: &LedgerHandle, provider1: u64) {
    let counts = ledger.embedded().unwrap().confirmed_key_counts();
    assert_eq!(
        counts.get(&format!("{UID}/0")),
        Some(&1),
        "paid exactly once"
    );
    let wallet = Account::Wallet(PROVIDER1.into());
    assert_eq!(ledger.balance(&wallet, Token::Io).unwrap(), provider1);
    assert_eq!(ledger.balance(&Account::Escrow, Token::Io).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_timeout_deletes_the_pods_and_retries() {
    let mut env = scripted(OperatorConfig::default());
    let j = job(2, Some(scheduling(10_000_000_000, 301)), true);
    let jj = j.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![
                pod(1, 0, "Running", Some("n1")),
                pod(1, 1, "Pending", None),
            ])
            .await;
            for i in 0..2 {
                srv.delete_pod(1, i, pod(1, i, "Running", None)).await;
            }
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Funded");
            assert_eq!(cond(&st, "Scheduled")["reason"], "GangTimeout");
            let (t, reason, note) = srv.event().await;
            assert_eq!((t.as_str(), reason.as_str()), ("Warning", "GangTimeout"));
            assert!(note.contains("1/2 workers running"), "{note}");
            // retry: attempt 2
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Scheduling");
            assert_eq!(st["attempts"], 2);
            for i in 0..2 {
                let s = srv
                    .expect("POST", &format!("/api/v1/namespaces/{NS}/pods?"))
                    .await;
                assert_eq!(s.body["metadata"]["name"], format!("{NAME}-a2-w{i}"));
                assert_eq!(s.body["metadata"]["labels"]["solgrid.dev/attempt"], "2");
                s.echo();
            }
            assert_eq!(srv.event().await.1, "WorkersCreated");
        })
        .await;
    reconciled.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_timeout_on_the_last_attempt_fails_and_refunds_everything() {
    let cfg = OperatorConfig {
        gang_max_attempts: 1,
        ..OperatorConfig::default()
    };
    let mut env = scripted(cfg);
    escrow(&env, 10_000);
    let j = job(1, Some(scheduling(10_000, 301)), true);
    let jj = j.clone();
    let ledger = env.ctx.ledger.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![pod(1, 0, "Pending", None)]).await;
            srv.delete_pod(1, 0, pod(1, 0, "Pending", None)).await;
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Failed");
            assert_eq!(cond(&st, "Complete")["reason"], "GangTimeout");
            srv.event().await;
            // final settlement: nothing used, all refunded
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["settlements"][0]["record"]["state"], "Planned");
            assert_eq!(st["settlements"][0]["payouts"][0]["to"], "refund");
            assert_eq!(st["settlements"][0]["payouts"][0]["amount"], 10_000);
            srv.status_patch(&jj).await; // Sent
            let st = srv.status_patch(&jj).await; // Confirmed
            assert_eq!(st["settlements"][0]["record"]["state"], "Confirmed");
            assert_eq!(srv.event().await.1, "PeriodSettled");
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Settled");
            assert_eq!(st["cost"]["refunded"], 10_000);
            assert_eq!(st["escrowed"], 0);
            assert_eq!(srv.event().await.1, "Settled");
            assert_eq!(
                ledger
                    .balance(&Account::Wallet(PAYER.into()), Token::Io)
                    .unwrap(),
                10_000
            );
        })
        .await;
    reconciled.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_workers_running_makes_the_job_running() {
    let mut env = providers(&[("n1", PROVIDER1), ("n2", PROVIDER2)]);
    let j = job(2, Some(scheduling(10_000_000_000, 20)), true);
    let jj = j.clone();
    // the kubelets report when each container started: 15 s and 12 s ago
    let started = |mut p: serde_json::Value, ago: i64| {
        let at = (t0() - chrono::Duration::seconds(ago)).to_rfc3339();
        p["status"]["containerStatuses"] = serde_json::json!([
            {"name": "worker", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {"startedAt": at}}}
        ]);
        p
    };
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![
                started(pod(1, 0, "Running", Some("n1")), 15),
                started(pod(1, 1, "Running", Some("n2")), 12),
            ])
            .await;
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Running");
            assert_eq!(st["nodes"], serde_json::json!(["n1", "n2"]));
            assert_eq!(st["workers"][1]["node"], "n2");
            assert_eq!(cond(&st, "Scheduled")["reason"], "GangRunning");
            // billing starts when the last worker started, not when this reconcile ran
            let start: chrono::DateTime<chrono::Utc> =
                st["startTime"].as_str().unwrap().parse().unwrap();
            assert_eq!(start, t0() - chrono::Duration::seconds(12));
            // the payout wallets are snapshotted at the start
            assert_eq!(st["workers"][0]["payoutWallet"], PROVIDER1);
            assert_eq!(st["workers"][1]["payoutWallet"], PROVIDER2);
            assert!(st["deadline"].is_string());
            assert_eq!(srv.event().await.1, "Running");
            // the allocation on each node (2 GPUs per worker), then the progress
            for (name, wallet) in [("n1", PROVIDER1), ("n2", PROVIDER2)] {
                let g = srv.gpunode_cas(&gpunode(name, wallet)).await;
                let gs = g.status.unwrap();
                assert_eq!(gs.allocations.len(), 1);
                assert_eq!(gs.allocations[0].uid, UID);
                assert_eq!(gs.allocations[0].job, format!("{NS}/{NAME}"));
                assert_eq!(gs.allocations[0].gpus, 2);
                assert_eq!(from_time(&gs.allocations[0].since), start);
                assert_eq!((gs.allocated_gpus, gs.jobs.running), (2, 1));
            }
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["nodeBook"]["allocated"], true);
        })
        .await;
    reconciled.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_job_records_usage_and_settles_exactly_once() {
    let mut env = providers(&[("n1", PROVIDER1), ("n2", PROVIDER2)]);
    // escrow for 2 workers x 2 GPUs x 1 h at 1 IO/GPU-hour + 0.25 %
    let max = 4_010_000_000;
    escrow(&env, max);
    let workers = vec![
        worker(0, "n1", "Running", None),
        worker(1, "n2", "Running", None),
    ];
    let mut st = ran(max, ComputeJobPhase::Running, 1800, workers);
    st.node_book.allocated = true;
    let since = t0() - chrono::Duration::seconds(1800);
    let held = |name: &str, wallet: &str| {
        gpunode_with(
            name,
            wallet,
            GpuNodeStatus {
                allocations: vec![Allocation {
                    uid: UID.into(),
                    job: format!("{NS}/{NAME}"),
                    gpus: 2,
                    since: time(since),
                }],
                allocated_gpus: 2,
                jobs: JobCounts {
                    running: 1,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    };
    let (g1, g2) = (held("n1", PROVIDER1), held("n2", PROVIDER2));
    let j = job(2, Some(st), true);
    let jj = j.clone();
    let ledger = env.ctx.ledger.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![
                pod(1, 0, "Succeeded", Some("n1")),
                pod(1, 1, "Succeeded", Some("n2")),
            ])
            .await;
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Succeeded");
            // 30 min x 2 GPUs per node
            assert_eq!(st["usage"][0]["node"], "n1");
            assert_eq!(st["usage"][0]["gpuMs"], 3_600_000);
            assert_eq!(st["usage"][1]["wallet"], PROVIDER2);
            assert_eq!(st["gpuSeconds"], 7200);
            assert_eq!(st["nodeBook"]["outcome"], "Succeeded");
            assert_eq!(srv.event().await.1, "Succeeded");
            // the allocations are released, the outcome counted once per node
            let mut released = Vec::new();
            for g in [&g1, &g2] {
                let after = srv.gpunode_cas(g).await;
                let gs = after.status.clone().unwrap();
                assert!(gs.allocations.is_empty());
                assert_eq!((gs.allocated_gpus, gs.jobs.running), (0, 0));
                assert_eq!(gs.jobs.succeeded, 1);
                assert_eq!(gs.allocation_history.len(), 1);
                assert_eq!(from_time(&gs.allocation_history[0].from), since);
                assert_eq!(from_time(&gs.allocation_history[0].to), t0());
                assert_eq!(gs.recorded, vec![format!("{UID}/outcome")]);
                released.push(after);
            }
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["nodeBook"]["released"], true);
            // settlement plan recorded before sending
            let st = srv.status_patch(&jj).await;
            let s0 = &st["settlements"][0];
            assert_eq!(s0["record"]["key"], format!("{UID}/0"));
            assert_eq!(s0["record"]["state"], "Planned");
            assert_eq!(s0["cost"]["compute"], 2_000_000_000);
            assert_eq!(s0["payouts"][0]["wallet"], PROVIDER1);
            assert_eq!(s0["payouts"][0]["amount"], 997_500_000);
            assert_eq!(s0["payouts"][2]["to"], "refund");
            assert_eq!(
                ledger
                    .balance(&Account::Wallet(PROVIDER1.into()), Token::Io)
                    .unwrap(),
                0
            );
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["settlements"][0]["record"]["state"], "Sent");
            assert!(st["settlements"][0]["record"]["signature"].is_string());
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["settlements"][0]["record"]["state"], "Confirmed");
            // each provider's share of the settlement, once, on its GpuNode
            for g in &released {
                let gs = srv.gpunode_cas(g).await.status.unwrap();
                assert_eq!(gs.earnings.compute_io, 997_500_000);
                assert_eq!(gs.earnings.compute_usdc, 0);
                assert_eq!(gs.recorded[1], format!("{UID}/0/earned"));
            }
            assert_eq!(srv.event().await.1, "PeriodSettled");
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Settled");
            assert_eq!(st["nodeBook"]["settlementsBooked"], 1);
            assert_eq!(st["cost"]["paid"], 2_005_000_000);
            assert_eq!(st["cost"]["received"], 1_995_000_000);
            assert_eq!(st["cost"]["burned"], 10_000_000);
            assert_eq!(st["cost"]["refunded"], max - 2_005_000_000);
            assert_eq!(cond(&st, "Settled")["status"], "True");
            assert_eq!(srv.event().await.1, "Settled");
        })
        .await;
    reconciled.unwrap();
    settled_once(&ledger, 997_500_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_settled_job_loses_its_finalizer() {
    let mut env = scripted(OperatorConfig::default());
    let mut st = funded_status(0);
    st.phase = ComputeJobPhase::Settled;
    let mut j = job(1, Some(st), true);
    j.metadata.deletion_timestamp = Some(time(t0()));
    let jj = j.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            let remove = serde_json::json!({"op": "remove", "path": "/metadata/finalizers/0"});
            srv.finalizer_patch(&jj, remove, None).await;
        })
        .await;
    reconciled.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_job_cancels_settles_then_releases() {
    let mut env = providers(&[("n1", PROVIDER1)]);
    let max = 2_005_000_000;
    escrow(&env, max);
    let workers = vec![worker(0, "n1", "Running", None)];
    let mut st = ran(max, ComputeJobPhase::Running, 360, workers);
    st.node_book.allocated = true;
    let mut j = job(1, Some(st), true);
    j.metadata.deletion_timestamp = Some(time(t0()));
    let jj = j.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![pod(1, 0, "Running", Some("n1"))]).await;
            srv.delete_pod(1, 0, pod(1, 0, "Running", None)).await;
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Cancelled");
            assert_eq!(st["usage"][0]["gpuMs"], 2 * 360_000);
            assert_eq!(srv.event().await.1, "Cancelled");
            // a cancelled job counts as a success for its node
            let g = srv.gpunode_cas(&gpunode("n1", PROVIDER1)).await;
            assert_eq!(g.status.as_ref().unwrap().jobs.succeeded, 1);
            srv.status_patch(&jj).await; // released
            srv.status_patch(&jj).await; // Planned
            srv.status_patch(&jj).await; // Sent
            srv.status_patch(&jj).await; // Confirmed
            let gs = srv.gpunode_cas(&g).await.status.unwrap();
            assert_eq!(
                gs.earnings.compute_io,
                2 * 360 * 1_000_000_000 / 3600 * 9975 / 10_000
            );
            assert_eq!(srv.event().await.1, "PeriodSettled");
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Settled");
            assert_eq!(srv.event().await.1, "Settled");
            let remove = serde_json::json!({"op": "remove"});
            srv.finalizer_patch(&jj, remove, jj.metadata.finalizers.clone())
                .await;
        })
        .await;
    reconciled.unwrap();
}

/// A finished job whose final settlement was recorded `Sent` by a process that
/// then died: `landed` says whether the transaction reached the ledger before.
async fn restart_with_sent_settlement(landed: bool) {
    let mut env = providers(&[("n1", PROVIDER1)]);
    let max = 2_005_000_000;
    escrow(&env, max);
    let workers = vec![worker(0, "n1", "Succeeded", None)];
    let mut st = ran(max, ComputeJobPhase::Succeeded, 1800, workers);
    let spec = job(1, None, true).spec;
    let wallets = std::collections::HashMap::from([("n1".to_string(), PROVIDER1.to_string())]);
    let (mut js, intent) = final_half_hour(&spec, &st, &wallets);
    let tx = env
        .ctx
        .ledger
        .prepare(std::slice::from_ref(&intent))
        .unwrap();
    if landed {
        env.ctx.ledger.send(&tx).unwrap();
    }
    js.record.state = SettlementState::Sent;
    js.record.signature = Some(tx.signature.clone());
    js.record.last_valid_block_height = Some(tx.last_valid_block_height);
    st.settlements.push(js);
    let j = job(1, Some(st), true);
    let jj = j.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            if !landed {
                // never seen and now expired: rebuilt under a new signature, recorded before sending
                let st = srv.status_patch(&jj).await;
                assert_eq!(st["settlements"][0]["record"]["state"], "Sent");
                assert_ne!(
                    st["settlements"][0]["record"]["signature"],
                    tx.signature.as_str()
                );
            }
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["settlements"][0]["record"]["state"], "Confirmed");
            if landed {
                assert_eq!(
                    st["settlements"][0]["record"]["signature"],
                    tx.signature.as_str()
                );
            }
            // earned once: a job finished by an older operator (no outcome decided)
            // counts no outcome, only the settlement
            let gs = srv
                .gpunode_cas(&gpunode("n1", PROVIDER1))
                .await
                .status
                .unwrap();
            assert_eq!(gs.earnings.compute_io, 997_500_000);
            assert_eq!(gs.jobs, JobCounts::default());
            assert_eq!(srv.event().await.1, "PeriodSettled");
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Settled");
            assert_eq!(srv.event().await.1, "Settled");
        })
        .await;
    reconciled.unwrap();
    settled_once(&env.ctx.ledger, 997_500_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_landed_settlement_is_looked_up_not_resent() {
    restart_with_sent_settlement(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_an_unsent_settlement_is_rebuilt_once_expired() {
    restart_with_sent_settlement(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_never_sends_the_escrow_twice() {
    // The job changed since our copy (another writer, or a lagging cache): the
    // compare-and-swap apply of the Sent record fails, and nothing is sent.
    let mut env = scripted(OperatorConfig::default());
    fund(&env.ctx, PAYER, 1_000_000_000_000);
    let j = job(1, Some(quoted_status()), true);
    let jj = j.clone();
    let txs_before = env.ctx.ledger.embedded().unwrap().tx_count();
    let (r, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            srv.payer_secret(wallet_secret_data(PAYER)).await;
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["escrow"]["state"], "Planned");
            let s = srv.expect_status_patch().await;
            assert_eq!(s.body["status"]["escrow"]["state"], "Sent");
            s.conflict();
        })
        .await;
    assert!(
        r.is_err(),
        "a conflict is an error, retried from a fresh copy"
    );
    let l = env.ctx.ledger.embedded().unwrap();
    assert_eq!(l.tx_count(), txs_before, "nothing was sent");
    assert_eq!(l.balance(&Account::Escrow, Token::Io).unwrap(), 0);
}

/// A running job (no escrow: nothing to settle) whose single worker on n1 was
/// evicted; its allocation is on n1.
fn evicted_job() -> (ComputeJob, Value) {
    let st = ComputeJobStatus {
        phase: ComputeJobPhase::Running,
        attempts: 1,
        start_time: Some(time(t0() - chrono::Duration::seconds(600))),
        workers: vec![worker(0, "n1", "Running", Some(PROVIDER1))],
        node_book: NodeBook {
            allocated: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut p = pod(1, 0, "Failed", Some("n1"));
    p["status"]["reason"] = "Evicted".into();
    (job(1, Some(st), true), p)
}

/// The requests of a reconcile of [`evicted_job`] up to the nodes' bookkeeping.
async fn evicted_job_finishes(srv: &mut ApiServer, jj: &ComputeJob, p: &Value) {
    srv.list_pods(vec![p.clone()]).await;
    let st = srv.status_patch(jj).await;
    assert_eq!(st["phase"], "Failed");
    assert_eq!(st["nodeBook"]["outcome"], "FailedByProvider");
    assert_eq!(st["nodeBook"]["faultyNodes"], serde_json::json!(["n1"]));
    assert_eq!(srv.event().await.1, "WorkerFailed");
}

/// The requests after the bookkeeping: the progress, then nothing to settle.
async fn evicted_job_settles(srv: &mut ApiServer, jj: &ComputeJob) {
    let st = srv.status_patch(jj).await;
    assert_eq!(st["nodeBook"]["released"], true);
    let st = srv.status_patch(jj).await;
    assert_eq!(st["phase"], "Settled");
    assert_eq!(srv.event().await.1, "Settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_is_counted_once_even_when_the_finish_is_replayed() {
    let mut g = gpunode("n1", PROVIDER1);
    g.status = Some(GpuNodeStatus {
        allocations: vec![Allocation {
            uid: UID.into(),
            job: format!("{NS}/{NAME}"),
            gpus: 2,
            since: time(t0() - chrono::Duration::seconds(600)),
        }],
        allocated_gpus: 2,
        jobs: JobCounts {
            running: 1,
            succeeded: 4,
            ..Default::default()
        },
        ..Default::default()
    });
    let (j, p) = evicted_job();

    // first reconcile: the GpuNode changed between read and write (409): read again
    let mut env1 = scripted_with(OperatorConfig::default(), gpunode_cache(vec![g.clone()]));
    let (jj, pp, g0) = (j.clone(), p.clone(), g.clone());
    let (reconciled, after) = env1
        .reconcile_job(j.clone(), async |srv| {
            evicted_job_finishes(srv, &jj, &pp).await;
            srv.gpunode_cas_answered(&g0, 409).await;
            let after = srv.gpunode_cas(&g0).await;
            let gs = after.status.clone().unwrap();
            assert!(gs.allocations.is_empty());
            assert_eq!((gs.allocated_gpus, gs.jobs.running), (0, 0));
            assert_eq!((gs.jobs.succeeded, gs.jobs.failed_by_provider), (4, 1));
            assert!(gs.jobs.last_outcome.is_some());
            evicted_job_settles(srv, &jj).await;
            after
        })
        .await;
    reconciled.unwrap();

    // the operator died before the job's progress was stored: the same Finish again
    // finds the outcome's key on the GpuNode and writes nothing there
    let mut env2 = scripted_with(
        OperatorConfig::default(),
        gpunode_cache(vec![after.clone()]),
    );
    let jj = j.clone();
    let (reconciled, ()) = env2
        .reconcile_job(j, async |srv| {
            evicted_job_finishes(srv, &jj, &p).await;
            srv.gpunode_get(&after, "8").await; // read, nothing to change: no write
            evicted_job_settles(srv, &jj).await;
        })
        .await;
    reconciled.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_is_earned_once_across_a_crash() {
    // settled, its earnings written to n1 but the job's progress lost: the reconcile
    // after the restart finds the settlement's key on n1 and only stores the progress
    let workers = vec![worker(0, "n1", "Succeeded", Some(PROVIDER1))];
    let mut st = ran(0, ComputeJobPhase::Settled, 1800, workers);
    st.node_book = NodeBook {
        allocated: true,
        outcome: JobOutcome::Succeeded,
        released: true,
        ..Default::default()
    };
    st.settlements = vec![JobSettlement {
        period: 0,
        record: LedgerRecord {
            key: format!("{UID}/0"),
            purpose: "settle".into(),
            state: SettlementState::Confirmed,
            ..Default::default()
        },
        usage: vec![NodeUsage {
            node: "n1".into(),
            wallet: PROVIDER1.into(),
            gpu_ms: 3_600_000,
        }],
        payouts: vec![Payout {
            to: "n1".into(),
            wallet: PROVIDER1.into(),
            amount: 997_500_000,
        }],
        ..Default::default()
    }];
    let g = gpunode_with(
        "n1",
        PROVIDER1,
        GpuNodeStatus {
            earnings: Earnings {
                compute_io: 997_500_000,
                ..Default::default()
            },
            recorded: vec![format!("{UID}/outcome"), format!("{UID}/0/earned")],
            ..Default::default()
        },
    );
    let mut env = scripted_with(OperatorConfig::default(), gpunode_cache(vec![g.clone()]));
    let j = job(1, Some(st), true);
    let jj = j.clone();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            srv.list_pods(vec![]).await;
            srv.gpunode_get(&g, "7").await; // no second credit
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["nodeBook"]["settlementsBooked"], 1);
        })
        .await;
    reconciled.unwrap();
}

/// Provider wallets of the split settlement (one node each).
const SPLIT_NODES: usize = 40;

fn split_node(i: usize) -> String {
    format!("n{i:02}")
}

fn split_wallet(i: usize) -> String {
    solgrid_ledger::WalletKeypair::from_seed([i as u8 + 1; 32]).address()
}

/// A job that ran 30 minutes on 40 nodes, each paying out to its own wallet,
/// finished and released; its escrow (`max`) is on the ledger.
fn forty_node_job(env: &Env, max: u64) -> ComputeJobStatus {
    escrow(env, max);
    let workers = (0..SPLIT_NODES)
        .map(|i| worker(i, &split_node(i), "Succeeded", Some(&split_wallet(i))))
        .collect();
    let mut st = ran(max, ComputeJobPhase::Succeeded, 1800, workers);
    st.node_book = NodeBook {
        allocated: true,
        outcome: JobOutcome::Succeeded,
        released: true,
        ..Default::default()
    };
    st
}

/// The final settlement of a 40-node job, paid in parts. `restart`: an operator
/// died after part 0 was confirmed and part 1 sent (and landed); the restarted one
/// looks part 1 up and sends only the rest. Otherwise the plan, split by the
/// ledger's own size model, is recorded in one write with every part `Planned`,
/// then each part is recorded `Sent` before it is sent.
async fn forty_wallets_settle_in_parts(restart: bool) {
    use solgrid_operator::settlement::{part_key, split};
    let nodes: Vec<GpuNode> = (0..SPLIT_NODES)
        .map(|i| gpunode(&split_node(i), &split_wallet(i)))
        .collect();
    let mut env = scripted_with(OperatorConfig::default(), gpunode_cache(nodes.clone()));
    let max = 50_000_000_000;
    let mut st = forty_node_job(&env, max);
    let ledger = env.ctx.ledger.clone();
    // the split the operator will make (and, for the restart, made before it died)
    let wallets = (0..SPLIT_NODES)
        .map(|i| (split_node(i), split_wallet(i)))
        .collect();
    let spec = job(SPLIT_NODES as u32, None, true).spec;
    let (js, _) = final_half_hour(&spec, &st, &wallets);
    let (mut js, intents) = split(js, PAYER, PaymentToken::Io, |i| {
        ledger.fits(std::slice::from_ref(i))
    })
    .unwrap();
    let parts = intents.len();
    assert!(parts >= 3, "40 wallets in {parts} transactions");
    let first_new = if restart {
        // part 0 confirmed, part 1 sent and landed, the rest planned
        let p0 = ledger.prepare(&intents[..1]).unwrap();
        ledger.send(&p0).unwrap();
        let p1 = ledger.prepare(&intents[1..2]).unwrap();
        ledger.send(&p1).unwrap();
        js.record.state = SettlementState::Confirmed;
        js.record.signature = Some(p0.signature.clone());
        let r1 = &mut js.parts[0].record;
        r1.state = SettlementState::Sent;
        r1.signature = Some(p1.signature.clone());
        r1.last_valid_block_height = Some(p1.last_valid_block_height);
        st.settlements.push(js.clone());
        2
    } else {
        0
    };
    let j = job(SPLIT_NODES as u32, Some(st), true);
    let jj = j.clone();
    let keys: Vec<String> = intents.iter().map(|i| i.key.clone()).collect();
    let (reconciled, ()) = env
        .reconcile_job(j, async |srv| {
            let counts = || ledger.embedded().unwrap().confirmed_key_counts();
            srv.list_pods(vec![]).await;
            if restart {
                // part 1 looked up, not resent
                let st = srv.status_patch(&jj).await;
                assert_eq!(
                    st["settlements"][0]["parts"][0]["record"]["state"],
                    "Confirmed"
                );
            } else {
                // the whole plan, every part, before anything is sent
                let st = srv.status_patch(&jj).await;
                let s0 = &st["settlements"][0];
                assert_eq!(s0["record"]["key"], format!("{UID}/0"));
                assert_eq!(s0["record"]["state"], "Planned");
                let recorded = s0["parts"].as_array().unwrap();
                assert_eq!(recorded.len() + 1, parts);
                for (p, r) in recorded.iter().enumerate() {
                    assert_eq!(r["record"]["key"], part_key(&format!("{UID}/0"), p + 1));
                    assert_eq!(r["record"]["state"], "Planned");
                }
                let sent = counts();
                assert!(
                    keys.iter().all(|k| !sent.contains_key(k)),
                    "nothing sent yet"
                );
            }
            for (p, key) in keys.iter().enumerate().skip(first_new) {
                let state = |st: &Value| {
                    if p == 0 {
                        st["settlements"][0]["record"]["state"].clone()
                    } else {
                        st["settlements"][0]["parts"][p - 1]["record"]["state"].clone()
                    }
                };
                // recorded Sent (checked before the operator may send)...
                let st = srv
                    .status_patch_checked(&jj, |st| {
                        assert_eq!(state(st), "Sent", "part {p}");
                        assert_eq!(counts().get(key), None, "{key} not sent before recorded");
                    })
                    .await;
                assert_ne!(st["phase"], "Settled");
                // ...then confirmed; the job is not Settled while a part is not
                let st = srv.status_patch(&jj).await;
                assert_eq!(state(&st), "Confirmed", "part {p}");
                assert_ne!(st["phase"], "Settled");
            }
            // each provider's share, once, on its GpuNode
            for g in &nodes {
                let gs = srv.gpunode_cas(g).await.status.unwrap();
                assert!(gs.earnings.compute_io > 0);
            }
            assert_eq!(srv.event().await.1, "PeriodSettled");
            let st = srv.status_patch(&jj).await;
            assert_eq!(st["phase"], "Settled");
            assert_eq!(st["escrowed"], 0);
            assert_eq!(srv.event().await.1, "Settled");
        })
        .await;
    reconciled.unwrap();
    let counts = ledger.embedded().unwrap().confirmed_key_counts();
    for k in &keys {
        assert_eq!(counts.get(k), Some(&1), "{k} paid exactly once");
    }
    for p in js.payouts.iter().filter(|p| p.to != "refund") {
        let got = ledger
            .balance(&Account::Wallet(p.wallet.clone()), Token::Io)
            .unwrap();
        assert_eq!(got, p.amount, "{} paid once", p.wallet);
    }
    assert_eq!(ledger.balance(&Account::Escrow, Token::Io).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_wallet_settlement_is_paid_in_parts_each_exactly_once() {
    forty_wallets_settle_in_parts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_split_sends_only_the_parts_never_sent() {
    forty_wallets_settle_in_parts(true).await;
}

/// The final settlement plan of the half hour before `t0()` (period 0).
fn final_half_hour(
    spec: &solgrid_crds::ComputeJobSpec,
    st: &solgrid_crds::ComputeJobStatus,
    wallets: &std::collections::HashMap<String, String>,
) -> (solgrid_crds::JobSettlement, solgrid_market::ledger::Intent) {
    let start = (t0() - chrono::Duration::seconds(1800)).timestamp_millis() as u64;
    let end = t0().timestamp_millis() as u64;
    solgrid_operator::computejob::billing::plan(
        UID,
        spec,
        st,
        0,
        start,
        end,
        true,
        wallets,
        &Default::default(),
    )
    .unwrap()
}
