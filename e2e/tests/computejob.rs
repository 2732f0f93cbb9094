//! A ComputeJob from the examples, followed to Settled on a real cluster, with the
//! operator's controllers running in-process over an embedded ledger.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use solgrid_crds::{ComputeJob, ComputeJobPhase, GpuNode, GpuNodeSpec};
use solgrid_e2e::*;
use solgrid_market::ledger::{Account, Intent, Ledger, Movement, Op, Token};
use solgrid_operator::config::OperatorConfig;
use solgrid_operator::context::{Context, LedgerHandle};

use std::sync::Arc;
use std::time::Duration;

const PROVIDER: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_computejob_runs_and_settles() {
    let Some(client) = cluster("example_computejob_runs_and_settles").await else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter("solgrid_operator=debug,info")
        .try_init();
    install_crds(&client).await.expect("CRDs installed");
    let ns = namespace(&client, "solgrid-e2e").await.expect("namespace");
    let node = gpu_node(&client).await.expect("a node with GPUs");

    // The provider: a GpuNode with a payout wallet for the node.
    let gpunodes: Api<GpuNode> = Api::all(client.clone());
    let gn = GpuNode::new(
        &node,
        GpuNodeSpec {
            node_name: node.clone(),
            payout_wallet: PROVIDER.into(),
            location: solgrid_crds::Location {
                region: "eu-west".into(),
                country: "DE".into(),
                coordinates: None,
            },
            ..Default::default()
        },
    );
    gpunodes
        .patch(
            &node,
            &PatchParams::apply("solgrid-e2e").force(),
            &Patch::Apply(&gn),
        )
        .await
        .expect("GpuNode applied");

    // The example: its Secret and its ComputeJob, in our namespace; a worker that
    // finishes in seconds; a budget cap the default market can meet.
    let image = std::env::var("SOLGRID_E2E_IMAGE").unwrap_or_else(|_| "busybox:1.36".into());
    let (secret_v, mut job_v) = example_job(
        "computejob-llm-finetune.yaml",
        &ns,
        &image,
        &["sh", "-c", "sleep 5"],
    )
    .expect("example");
    job_v["spec"]["maxPricePerGpuHour"] = serde_json::json!(1_000_000_000_000u64);
    job_v["spec"]["minReputation"] = 0.into();
    job_v["spec"]["gangTimeoutSeconds"] = 120.into();
    let secret: Secret = serde_json::from_value(secret_v).unwrap();
    let job: ComputeJob = serde_json::from_value(job_v).unwrap();
    let payer = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get("address"))
        .cloned()
        .unwrap();
    let name = job.metadata.name.clone().unwrap();

    // The operator, in-process, over an embedded ledger where the payer has funds.
    let scheduler =
        std::env::var("SOLGRID_E2E_SCHEDULER").unwrap_or_else(|_| "default-scheduler".into());
    let config = OperatorConfig {
        watch_namespace: Some(ns.clone()),
        scheduler_name: scheduler,
        running_requeue: Duration::from_secs(2),
        ..OperatorConfig::default()
    };
    let ledger = Arc::new(LedgerHandle::in_memory());
    ledger
        .embedded()
        .unwrap()
        .apply(&[Intent {
            key: "e2e-fund-payer".into(),
            movements: vec![Movement {
                token: Token::Io,
                op: Op::Mint {
                    to: Account::Wallet(payer.clone()),
                    amount: 1_000_000_000_000_000,
                },
            }],
        }])
        .unwrap();
    let ctx = Arc::new(
        Context::builder(client.clone())
            .config(config)
            .ledger(ledger.clone())
            .build(),
    );
    let operator = tokio::spawn(solgrid_operator::computejob::run(ctx.clone()));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let jobs: Api<ComputeJob> = Api::namespaced(client.clone(), &ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();

    let mut seen: Vec<ComputeJobPhase> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let settled = loop {
        if let Ok(j) = jobs.get(&name).await
            && let Some(st) = j.status
        {
            if seen.last() != Some(&st.phase) {
                eprintln!(
                    "{name}: {:?} {}",
                    st.phase,
                    st.message.clone().unwrap_or_default()
                );
                seen.push(st.phase);
            }
            if st.phase == ComputeJobPhase::Settled {
                break Some(st);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let Some(st) = settled else {
        operator.abort();
        panic!("the job did not settle in 300 s; phases seen: {seen:?}");
    };
    assert!(seen.contains(&ComputeJobPhase::Settled));
    assert!(st.finalizers_free_check());
    assert_eq!(st.escrowed, 0);
    assert!(st.cost.paid > 0, "{:?}", st.cost);
    assert_eq!(
        st.cost.paid,
        st.cost.received + st.cost.burned + st.cost.to_treasury
    );
    let max = st.quote.as_ref().unwrap().max_cost;
    assert_eq!(st.cost.paid + st.cost.refunded, max);
    assert_eq!(
        ledger
            .balance(&Account::Wallet(PROVIDER.into()), Token::Io)
            .unwrap(),
        st.cost.received
    );
    assert_eq!(ledger.balance(&Account::Escrow, Token::Io).unwrap(), 0);

    // Deleting a settled job releases it at once (the finalizer goes).
    jobs.delete(&name, &DeleteParams::default()).await.unwrap();
    let gone = wait_for(Duration::from_secs(60), || {
        let jobs = jobs.clone();
        let name = name.clone();
        async move { jobs.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    operator.abort();
    delete_namespace(&client, &ns).await;
    let _ = gpunodes.delete(&node, &DeleteParams::default()).await;
    assert!(gone.is_some(), "the settled job was not released");
}

trait FinalizersFree {
    fn finalizers_free_check(&self) -> bool;
}

impl FinalizersFree for solgrid_crds::ComputeJobStatus {
    fn finalizers_free_check(&self) -> bool {
        self.settlements
            .iter()
            // every part of a settlement split into several transactions
            .all(|s| s.state() == solgrid_crds::SettlementState::Confirmed)
    }
}

#[tokio::test]
async fn skips_without_a_cluster() {
    // Always passes; documents the skip path (the message goes to stderr).
    if std::env::var_os("KUBECONFIG").is_none() {
        assert!(cluster("skips_without_a_cluster").await.is_none());
    }
}
