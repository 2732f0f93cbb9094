//! Scenarios on the real control plane ([`solgrid_e2e::cluster::shared`]): the local
//! one (etcd + kube-apiserver + kube-controller-manager + kube-schedulers v1.36,
//! started once for this binary) with simulated GPU nodes, the real
//! `solgrid-operator` and `solgrid-scheduler` binaries. One binary holds every
//! scenario so that one cluster serves them all; each runs in its own namespace.
//!
//! Without `KUBECONFIG` and without the control-plane binaries the scenarios skip
//! (or fail, with `SOLGRID_E2E_REQUIRE_CLUSTER=1`). With `KUBECONFIG` they skip too:
//! the simulated nodes need an API server that can reach 127.0.1.x on this machine.

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use solgrid_crds::{ComputeJob, ComputeJobPhase, GpuNode};
use solgrid_e2e::cluster::{TestCluster, http_get, shared};
use solgrid_e2e::nodesim::{NodeSim, SimConfig, SimNodeSpec};
use solgrid_e2e::process::Proc;
use solgrid_e2e::*;
use solgrid_ledger::wallet::WalletKeypair;
use solgrid_market::fees::FeeConfig;
use solgrid_market::ledger::{Account, Ledger as _, Token};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "scenarios/allocation.rs"]
mod allocation;
#[path = "scenarios/buyback.rs"]
mod buyback;
#[path = "scenarios/extender_retry.rs"]
mod extender_retry;
#[path = "scenarios/lifecycle.rs"]
mod lifecycle;
#[path = "scenarios/rewards.rs"]
mod rewards;
#[path = "scenarios/solana.rs"]
mod solana;
#[path = "scenarios/verification.rs"]
mod verification;

/// The local cluster, or `None` (skip) with the reason on stderr.
fn local_cluster(test: &str) -> Option<&'static TestCluster> {
    let tc = shared()?;
    if !tc.is_local() {
        eprintln!(
            "SKIP {test}: runs only on the local control plane (simulated nodes at 127.0.1.x); unset KUBECONFIG"
        );
        return None;
    }
    Some(tc)
}

/// The lock on the local cluster one scenario holds ([`TestCluster::exclusive`]).
type ClusterLock = tokio::sync::MutexGuard<'static, ()>;

/// The local cluster held for one scenario (the guard: bind it, e.g. `_one`, so that
/// it is held until the scenario ends), or `None` (skip).
async fn held_cluster(test: &str) -> Option<(&'static TestCluster, ClusterLock)> {
    let tc = local_cluster(test)?;
    let one = tc.exclusive().await;
    Some((tc, one))
}

/// [`held_cluster`] with test tracing on, and an admin client of it.
async fn held_client(test: &str) -> Option<(&'static TestCluster, ClusterLock, Client)> {
    let (tc, one) = held_cluster(test).await?;
    init_test_tracing();
    let client = tc.client().await.expect("client");
    Some((tc, one, client))
}

/// A scenario's [`Market`] of `opts` on the local cluster held for it (the guard, as
/// [`held_cluster`]'s), paid by the example's payer (returned), with every node of
/// `opts` `Active` within 2 minutes; `None`: skip.
async fn active_market(test: &str, opts: MarketOpts) -> Option<(ClusterLock, Market, String)> {
    let (tc, one) = held_cluster(test).await?;
    let payer = example_payer();
    let (m, _) = Market::up_active(tc, opts, &payer, Duration::from_secs(120))
        .await
        .expect("market, its nodes Active");
    Some((one, m, payer))
}

/// Waits (90 s) until the named GpuNodes are `Active` and prints when (`test`, since
/// `t0`); their reputations. Else fails with their statuses, `context` and the logs
/// of `procs`.
async fn nodes_active_or_fail(
    client: &Client,
    names: &[&str],
    (test, t0): (&str, Instant),
    context: &str,
    procs: &[&Proc],
) -> Vec<u16> {
    let active =
        solgrid_e2e::market::wait_gpunodes_active(client, names, Duration::from_secs(90)).await;
    let Some(scores) = active else {
        let gpunodes: Api<GpuNode> = Api::all(client.clone());
        let phases: Vec<String> = futures::future::join_all(names.iter().map(|n| gpunodes.get(n)))
            .await
            .into_iter()
            .map(|g| format!("{:?}", g.ok().and_then(|g| g.status)))
            .collect();
        fail_with_logs(
            format!("GpuNodes not Active in 90 s{context}: {phases:?}"),
            procs,
        );
    };
    eprintln!(
        "{test}: GpuNodes Active at +{:.1} s, reputation {scores:?}",
        t0.elapsed().as_secs_f64()
    );
    scores
}

// the scenarios' shared set-up lives in the `Market` fixture's module
use solgrid_e2e::market::{
    Market, MarketOpts, ensure_namespace, example_payer, fund_journal, read_journal,
};

/// IO balances in the embedded ledger at one moment.
#[derive(Debug)]
struct Balances {
    payer: u64,
    escrow: u64,
    providers: std::collections::BTreeMap<String, u64>,
    supply: u128,
}

impl Balances {
    fn read(journal: &Path, payer: &str, providers: &[String]) -> Result<Balances> {
        let l = read_journal(journal)?;
        let bal = |a: Account| l.balance(&a, Token::Io);
        Ok(Balances {
            payer: bal(Account::Wallet(payer.into()))?,
            escrow: bal(Account::Escrow)?,
            providers: providers
                .iter()
                .map(|w| Ok((w.clone(), bal(Account::Wallet(w.clone()))?)))
                .collect::<Result<_>>()?,
            supply: l.total_balances(Token::Io),
        })
    }
}

/// The operator binary, as a process of its own with the admin kubeconfig.
fn start_operator(tc: &TestCluster, name: &str, journal: &Path, watch_ns: &str) -> Result<Proc> {
    let mut cmd =
        solgrid_e2e::market::operator_command(tc.kubeconfig(), "solgrid_operator=debug,info")?;
    cmd.arg(format!("--ledger-path={}", journal.display()))
        .arg(format!("--watch-namespace={watch_ns}"))
        .arg("--leader-election=false")
        .arg("--lease-namespace=solgrid-system")
        // idle-reward rounds (which mint) only at start: the supply then moves only by burns
        .arg("--reward-interval-seconds=1000000000");
    let log = tc.dir().join(format!("{name}.log"));
    Ok(Proc::spawn(name, cmd, &log)?)
}

/// The extender binary, listening where the chart's kube-scheduler calls it; its
/// metrics on a free loopback port (returned).
fn start_extender(tc: &TestCluster, name: &str) -> Result<(Proc, std::net::SocketAddr)> {
    solgrid_e2e::market::start_extender_with_metrics(tc, tc.dir(), name, None)
}

/// The sum of a counter's samples whose labels contain `label`.
fn counter(metrics_text: &str, name: &str, label: &str) -> f64 {
    metrics_text
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn fail_with_logs(msg: String, procs: &[&Proc]) -> ! {
    let mut s = msg;
    for p in procs {
        s.push_str(&format!(
            "\n--- {} ({}):\n{}",
            p.name(),
            p.log_path().display(),
            p.log_tail(4000)
        ));
    }
    panic!("{s}");
}

/// A ComputeJob from `examples/computejob-llm-finetune.yaml` (image and command
/// swapped) on two simulated RTX 4090 nodes: quoted, escrowed, placed by the real
/// kube-scheduler through the `solgrid-scheduler` profile and the extender binary,
/// run, settled by the operator binary; the fees checked against the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_llm_finetune_runs_and_settles_through_the_extender() {
    const TEST: &str = "example_llm_finetune_runs_and_settles_through_the_extender";
    let Some((tc, _exclusive, client)) = held_client(TEST).await else {
        return;
    };
    let t0 = Instant::now();
    install_crds(&client).await.expect("CRDs installed");
    ensure_namespace(&client, "solgrid-system")
        .await
        .expect("solgrid-system");
    let ns = namespace(&client, "e2e-llm").await.expect("namespace");
    wait_default_sa(&client, &ns).await.expect("default SA");

    // the example, with a worker that runs 6 s
    let (mut secret_v, mut job_v) = llm_example(&ns, &["sh", "-c", "sleep 6"]).expect("example");
    // a debit needs the wallet owner's keypair on every ledger: the example's Secret
    // names an address whose key nobody has, so the payer gets a fresh wallet
    if secret_v["stringData"]["keypair"].is_null() {
        let kp = WalletKeypair::generate().expect("keypair");
        eprintln!(
            "{TEST}: NOTE the example's Secret has no keypair: a fresh payer wallet {} instead of {}",
            kp.address(),
            secret_v["stringData"]["address"]
        );
        secret_v["stringData"]["address"] = kp.address().into();
        secret_v["stringData"]["keypair"] = kp.to_solana_json().into();
    }
    let payer = secret_v["stringData"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let job_name = job_v["metadata"]["name"].as_str().unwrap().to_string();

    // the ledger: the payer holds 1,000 IO
    let funded: u64 = 1_000_000_000_000;
    let dir = tc.dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("ledger.jsonl");
    fund_journal(&journal, &payer, funded).expect("journal funded");

    // two simulated nodes with their GpuNodes (each a provider wallet)
    let sim = NodeSim::start(
        client.clone(),
        SimConfig {
            verify_worker: Some(workspace_bin("solgrid-operator").expect("operator binary")),
        },
    );
    let nodes = [
        (
            "e2e-llm-gpu-a",
            "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
        ),
        (
            "e2e-llm-gpu-b",
            "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T",
        ),
    ];
    let gpunodes: Api<GpuNode> = Api::all(client.clone());
    for (node, wallet) in nodes {
        solgrid_e2e::market::add_gpunode(&client, &sim, node, 1, wallet, true)
            .await
            .expect("simulated node and its GpuNode");
    }
    eprintln!(
        "{TEST}: cluster up in {:.1} s; nodes registered at +{:.1} s",
        tc.started_in().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    let (mut extender, extender_metrics) =
        start_extender(tc, "solgrid-scheduler-llm").expect("extender");
    let mut operator = start_operator(tc, "solgrid-operator-llm", &journal, &ns).expect("operator");

    // honest fresh nodes verify (the real verify-worker) and become Active
    let names: Vec<&str> = nodes.iter().map(|(n, _)| *n).collect();
    let scores =
        nodes_active_or_fail(&client, &names, (TEST, t0), "", &[&operator, &extender]).await;
    if let Some(was) = solgrid_e2e::market::fit_min_reputation(&mut job_v, &scores) {
        eprintln!(
            "{TEST}: NOTE example minReputation {was} > fresh nodes': lowered to {}",
            job_v["spec"]["minReputation"]
        );
    }

    let secret: Secret = serde_json::from_value(secret_v).unwrap();
    let job: ComputeJob = serde_json::from_value(job_v).unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let wallets: Vec<String> = nodes.iter().map(|(_, w)| w.to_string()).collect();
    let before = Balances::read(&journal, &payer, &wallets).expect("journal before");
    assert_eq!(before.payer, funded);
    let jobs: Api<ComputeJob> = Api::namespaced(client.clone(), &ns);
    let created = Instant::now();
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("job created");

    // follow it to Settled
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let followed = solgrid_e2e::market::follow_to_settled(
        &jobs,
        &pods,
        &job_name,
        (TEST, created),
        Duration::from_secs(90),
        || extender.exited().is_none() && operator.exited().is_none(),
    )
    .await;
    let (seen, worker_pods) = (followed.phases, followed.workers);
    let Some(st) = followed.settled else {
        let pods_now: Vec<String> = worker_pods
            .iter()
            .map(|p| {
                format!(
                    "{} node={:?} phase={:?}",
                    p.name_any(),
                    p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    p.status.as_ref().and_then(|s| s.phase.clone())
                )
            })
            .collect();
        let j = jobs.get(&job_name).await.ok().and_then(|j| j.status);
        fail_with_logs(
            format!(
                "the job did not settle in 90 s; phases {seen:?}; workers {pods_now:?}; status {j:#?}"
            ),
            &[&operator, &extender],
        );
    };
    let settle_s = created.elapsed().as_secs_f64();

    // placed by the chart's kube-scheduler through the extender, on the simulated nodes
    solgrid_e2e::market::assert_placed_on(&worker_pods, &nodes.map(|(n, _)| n));
    let metrics = http_get(extender_metrics, "/metrics").unwrap_or_default();
    let filters = counter(&metrics, "solgrid_scheduler_requests_total", "filter");
    assert!(
        filters >= 1.0,
        "the extender was never asked to filter:\n{metrics}"
    );

    // the money: exact fee arithmetic, and the ledger agrees with the status
    let (gpu_ms, want) = billed(&st, Token::Io);
    let c = &st.cost;
    eprintln!(
        "{TEST}: settled at +{settle_s:.1} s: {gpu_ms} GPU-ms at {} per GPU-hour; cost {c:?}",
        st.quote.as_ref().expect("quote").price_per_gpu_hour
    );
    assert_billed(&st, gpu_ms, &want);
    assert_eq!(c.surcharge, 0);
    assert_eq!(c.burned, want.protocol().unwrap(), "IO fees are burned");
    assert_eq!(c.to_treasury, 0);

    let after = Balances::read(&journal, &payer, &wallets).expect("journal after");
    eprintln!("{TEST}: ledger before the job {before:?}, after {after:?}");
    assert_eq!(before.payer - after.payer, c.paid, "the payer paid C + Fr");
    assert_eq!(after.escrow, before.escrow, "escrow back where it was");
    for u in st.settlements.iter().flat_map(|s| s.usage.iter()) {
        assert!(wallets.contains(&u.wallet), "usage paid to {}", u.wallet);
    }
    let mut received = 0;
    for w in &wallets {
        let got = after.providers[w] - before.providers[w];
        assert!(got > 0, "{w} got nothing");
        received += got;
    }
    assert_eq!(received, c.received, "providers got C - Fp");
    assert_eq!(
        before.supply - after.supply,
        c.burned as u128,
        "supply fell by exactly the burn"
    );
    let ledger = read_journal(&journal).expect("journal");
    let keys = ledger.confirmed_key_counts();
    assert!(
        keys.values().all(|n| *n == 1),
        "a key confirmed twice: {keys:?}"
    );

    // billed GPU time = the workers' running time (container start to finish)
    let ran_ms = solgrid_e2e::market::workers_ran_ms(&worker_pods);
    eprintln!(
        "{TEST}: workers ran {ran_ms} ms in all (container start..finish), billed {gpu_ms} GPU-ms; phases {seen:?}"
    );
    let billing_ok = ran_ms > 0 && (gpu_ms as i64 - ran_ms).abs() <= 3_000;

    // the settled job is released on delete; the operator and the extender stop cleanly
    let _ = jobs.delete(&job_name, &Default::default()).await;
    let gone = wait_for(Duration::from_secs(30), || async {
        jobs.get_opt(&job_name).await.ok()?.is_none().then_some(())
    })
    .await;
    operator.stop(Duration::from_secs(5));
    extender.stop(Duration::from_secs(5));
    sim.shutdown().await;
    for (node, _) in nodes {
        let _ = gpunodes.delete(node, &Default::default()).await;
    }
    delete_namespace(&client, &ns).await;
    assert!(gone.is_some(), "the settled job was not released");
    eprintln!(
        "{TEST}: done in {:.1} s (job created to Settled {settle_s:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        billing_ok,
        "billed {gpu_ms} GPU-ms for {ran_ms} ms of worker running time (issue 15: usage must start at the containers' start)"
    );
}

/// `kubectl logs` works against a simulated node: the API server dials
/// 127.0.1.N:10250 (the node's only address) and gets the container's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodesim_pods_run_and_logs_flow_through_the_api_server() {
    const TEST: &str = "nodesim_pods_run_and_logs_flow_through_the_api_server";
    // scenarios that hold the cluster remove leftover `e2e-*` Nodes, and their
    // operators would put verification pods on this node's GPUs
    let Some((tc, _exclusive, client)) = held_client(TEST).await else {
        return;
    };
    let ns = namespace(&client, "e2e-sim").await.expect("namespace");
    wait_default_sa(&client, &ns).await.expect("default SA");
    let sim = NodeSim::start(
        client.clone(),
        SimConfig {
            verify_worker: None,
        },
    );
    let node = "e2e-sim-node";
    sim.add_node(SimNodeSpec::rtx4090(node, 2))
        .await
        .expect("node");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mk = |name: &str, ann: serde_json::Value| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": ann},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{"name": "main", "image": "busybox:1.36",
                    "command": ["sh", "-c", "sleep 1"],
                    "resources": {"limits": {"solgrid.dev/nvidia-gpu": "1"}}}],
            },
        }))
        .unwrap()
    };
    pods.create(&PostParams::default(), &mk("ok", serde_json::json!({})))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &mk(
            "fails",
            serde_json::json!({"sim.solgrid.dev/exit-code": "3"}),
        ),
    )
    .await
    .unwrap();
    let phases = wait_for(Duration::from_secs(30), || async {
        let a = pods.get("ok").await.ok()?.status?.phase?;
        let b = pods.get("fails").await.ok()?.status?.phase?;
        (a == "Succeeded" && b == "Failed").then_some(())
    })
    .await;
    assert!(phases.is_some(), "pods did not finish as told");
    let p = pods.get("fails").await.unwrap();
    let t = p.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 3);
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    // the log, through the API server's node proxy
    let log = pods
        .logs("ok", &Default::default())
        .await
        .expect("kubectl logs through the API server");
    assert!(log.contains("exit code 0"), "{log}");
    // kubectl itself, when installed
    if let Some(kubectl) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|f| f.is_file())
    }) {
        let out = Command::new(kubectl)
            .env("KUBECONFIG", tc.kubeconfig())
            .args(["logs", "-n", &ns, "fails"])
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl logs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("exit code 3"));
    }
    // graceful deletion is finished by the node
    pods.delete("ok", &Default::default()).await.unwrap();
    let gone = wait_for(Duration::from_secs(15), || async {
        pods.get_opt("ok").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "deletion not finished");
    sim.shutdown().await;
    delete_namespace(&client, &ns).await;
}
