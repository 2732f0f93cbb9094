//! The example job of `example_llm_finetune_runs_and_settles_through_the_extender`,
//! with the operator binary settling on a real `solana-test-validator` instead of
//! the embedded ledger (`--solana-rpc-url --io-mint --usdc-mint --authority-keypair`).
//! The API server, the validator and the operator share the test's network
//! namespace (`scripts/test-in-netns.sh`: only loopback).
//!
//! The chain is read the way any client would, through JSON-RPC
//! (`getTokenAccountBalance`, `getTokenSupply`, `getSignaturesForAddress`,
//! `getTransaction`): the provider paid, the fees burned, the escrow refunded, the
//! IO supply fell by exactly the burn, and the memo (idempotency key) of the escrow
//! and of each settlement on chain exactly once — against the fee arithmetic of
//! `solgrid_market::fees`. Then the same job paid in USDC (6 decimals): the 2 %
//! surcharge, the protocol's share to the treasury account, the USDC supply unmoved.
//! Meanwhile a job whose payer holds no tokens: its escrow is rejected in preflight
//! and must end `EscrowFailed` with the reason (not stay `Quoted` for ever).
//!
//! Skips (prints why) without the local control plane or without a validator
//! (`SOLGRID_VALIDATOR`, `.tools/bin/solana-test-validator`, `PATH`); with
//! `SOLGRID_REQUIRE_VALIDATOR=1` (`make test`) a missing validator fails.

use super::*;
use serde_json::{Value, json};
use solgrid_crds::{ComputeJobStatus, PaymentToken, SettlementState as RecState};
use solgrid_market::ledger::Amount;
use solgrid_solana::testing::{IO_DECIMALS, LocalChain, USDC_DECIMALS, fund, keypair_json};
use solgrid_solana::{Commitment, Keypair, Signer as _, create_mint};
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};

/// Short slots (8 ticks instead of 64): a transaction rejected in preflight expires
/// in ~20 s instead of ~75 s (more on a loaded machine), so the unfunded payer's
/// escrow fails within the scenario.
const FAST_SLOTS: &[&str] = &["--ticks-per-slot", "8"];
/// What the payer holds before the jobs: 1,000 IO (9 decimals) and 1,000 USDC (6).
const FUNDED: u64 = 1_000 * 1_000_000_000;
const FUNDED_USDC: u64 = 1_000 * 1_000_000;
/// Reward periods of ~31 years, the last ended one marked distributed before the
/// operator starts ([`seed_reward_state`]): no idle-reward round mints or pays
/// during the scenario, so the supply moves only by the job's burn. (Left alone, the
/// operator's first tick distributes the last ended period — on Solana confirmed
/// only at the next tick, a minute later.)
const REWARD_INTERVAL_S: u64 = 1_000_000_000;

/// The token accounts of one mint the test reads (base58).
struct Accounts {
    token: Token,
    mint: String,
    decimals: u8,
    escrow: String,
    treasury: String,
    payer: String,
    providers: Vec<(String, String)>, // (wallet, its token account)
}

/// The local control plane, held exclusively (one operator and one extender at a
/// time: cluster-wide singletons), and a fresh validator with both mints; `None`
/// (printed why) to skip.
fn cluster_and_chain(
    test: &str,
) -> Option<(
    &'static TestCluster,
    tokio::sync::MutexGuard<'static, ()>,
    LocalChain,
    Instant,
)> {
    let tc = local_cluster(test)?;
    let exclusive = tc.exclusive_blocking();
    init_test_tracing();
    let t0 = Instant::now();
    let chain = LocalChain::start(test, IO_DECIMALS, USDC_DECIMALS, FAST_SLOTS)?;
    Some((tc, exclusive, chain, t0))
}

/// A client of the control plane with the CRDs installed, and a fresh namespace.
async fn client_and_namespace(tc: &TestCluster, prefix: &str) -> (Client, String) {
    let client = tc.client().await.expect("client");
    install_crds(&client).await.expect("CRDs installed");
    let ns = namespace(&client, prefix).await.expect("namespace");
    (client, ns)
}

/// The scenarios' runtime (made after the blocking set-up on chain).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn example_llm_finetune_settles_on_solana_through_the_operator_binary() {
    const TEST: &str = "example_llm_finetune_settles_on_solana_through_the_operator_binary";
    let Some((tc, _exclusive, chain, t0)) = cluster_and_chain(TEST) else {
        return;
    };
    // blocking set-up on chain (the blocking RPC client runs its own runtime: before ours)
    // a mint with decimals other than those the market prices IO in (9)
    let io_mint_6 = create_mint(
        chain.rpc_url(),
        &chain.authority(),
        6,
        Commitment::Confirmed,
    )
    .expect("a 6-decimal mint");
    let payer = Keypair::new();
    let providers = [Keypair::new(), Keypair::new()];
    let accounts = {
        let ledger = chain.ledger_with(|_| {}).expect("ledger");
        ledger.ensure_custody_accounts().expect("custody accounts");
        let wallet = |k: &Keypair| k.pubkey().to_string();
        for (token, amount) in [(Token::Io, FUNDED), (Token::Usdc, FUNDED_USDC)] {
            let key = format!("e2e-fund/payer/{token}");
            fund(&ledger, &key, &wallet(&payer), token, amount).expect("payer funded");
        }
        let accounts = |token: Token, mint: &str, decimals: u8| {
            let ata = |w: String| {
                ledger
                    .token_account(&Account::Wallet(w), token)
                    .expect("token account")
                    .to_string()
            };
            let custody = |a: Account| ledger.custody_address(&a, token).expect("custody");
            Accounts {
                token,
                mint: mint.to_string(),
                decimals,
                escrow: custody(Account::Escrow),
                treasury: custody(Account::Treasury),
                payer: ata(wallet(&payer)),
                providers: providers
                    .iter()
                    .map(|k| (wallet(k), ata(wallet(k))))
                    .collect(),
            }
        };
        [
            accounts(Token::Io, &chain.io_mint, IO_DECIMALS),
            accounts(Token::Usdc, &chain.usdc_mint, USDC_DECIMALS),
        ]
    };
    eprintln!(
        "{TEST}: validator and mints ready at +{:.1} s ({chain:?})",
        t0.elapsed().as_secs_f64()
    );
    let rt = runtime();
    rt.block_on(scenario(
        TEST, tc, &chain, &io_mint_6, &payer, &accounts, t0,
    ));
    drop(rt);
    drop(chain);
}

async fn scenario(
    test: &str,
    tc: &'static TestCluster,
    chain: &LocalChain,
    io_mint_6: &str,
    payer: &Keypair,
    accounts: &[Accounts; 2],
    t0: Instant,
) {
    let rpc_url = chain.rpc_url().to_string();
    let authority = chain.authority_address();
    let (client, ns) = client_and_namespace(tc, "e2e-sol").await;
    wait_default_sa(&client, &ns).await.expect("default SA");

    let (mut secret_v, mut job_v) = llm_example(&ns, &["sh", "-c", "sleep 6"]).expect("example");
    // the payer's wallet: its address and its keypair (a debit needs its signature)
    let payer_wallet = payer.pubkey().to_string();
    let payer_json = keypair_json(payer);
    secret_v["stringData"] = json!({"address": payer_wallet, "keypair": payer_json});

    // the operator's authority keypair, as a mounted Secret file would hold it
    let dir = tc.dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let authority_file = dir.join("authority.json");
    chain
        .write_authority_keypair(&authority_file)
        .expect("authority keypair written");

    // two simulated nodes, each a GpuNode paying out to a fresh wallet
    let sim = NodeSim::start(
        client.clone(),
        SimConfig {
            verify_worker: Some(workspace_bin("solgrid-operator").expect("operator binary")),
        },
    );
    let nodes: Vec<(String, String)> = accounts[0]
        .providers
        .iter()
        .enumerate()
        .map(|(i, (w, _))| {
            (
                format!("e2e-sol-gpu-{}", (b'a' + i as u8) as char),
                w.clone(),
            )
        })
        .collect();
    let gpunodes: Api<GpuNode> = Api::all(client.clone());
    for (node, wallet) in &nodes {
        solgrid_e2e::market::add_gpunode(&client, &sim, node, 1, wallet, true)
            .await
            .expect("simulated node and its GpuNode");
    }

    seed_reward_state(&client, &ns).await.expect("reward state");
    let mut extender = start_extender_proc(tc, "solgrid-scheduler-sol").expect("extender");
    // an IO mint whose decimals are not those prices are converted with is refused
    // at start (else every IO amount would be off by a factor of 1,000)
    let mut wrong = start_solana_operator(
        tc,
        "solgrid-operator-sol-6-decimals",
        chain,
        io_mint_6,
        &authority_file,
        &ns,
    )
    .expect("operator");
    let refused = {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = wrong.exited() {
                break Some(st);
            }
            if Instant::now() > until {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let wrong_log = wrong.log_tail(20_000);
    wrong.stop(Duration::from_secs(2));
    assert!(
        refused.is_some_and(|st| !st.success()) && wrong_log.contains("decimals"),
        "an operator with a 6-decimal IO mint (prices in 9) did not refuse to start: {refused:?}\n{wrong_log}"
    );
    eprintln!(
        "{test}: a 6-decimal IO mint refused: {}",
        wrong_log
            .lines()
            .rfind(|l| l.contains("decimals"))
            .unwrap_or_default()
    );

    let mut operator = start_solana_operator(
        tc,
        "solgrid-operator-sol",
        chain,
        &chain.io_mint,
        &authority_file,
        &ns,
    )
    .expect("operator");

    // honest fresh nodes verify and become Active
    let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    let scores = nodes_active_or_fail(
        &client,
        &names,
        (test, t0),
        &format!(" (operator on Solana at {rpc_url})"),
        &[&operator, &extender],
    )
    .await;
    solgrid_e2e::market::fit_min_reputation(&mut job_v, &scores);

    for (acc, funded) in accounts.iter().zip([FUNDED, FUNDED_USDC]) {
        let s = Snapshot::take(&rpc_url, acc).await;
        assert_eq!(
            (s.supply, s.payer),
            (funded, funded),
            "{}: only the payer's funding minted",
            acc.token
        );
    }

    let secret: Secret = serde_json::from_value(secret_v).unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let jobs: Api<ComputeJob> = Api::namespaced(client.clone(), &ns);
    let mut run = JobRun {
        test,
        rpc_url: &rpc_url,
        authority: &authority,
        payer: &payer_wallet,
        nodes: &nodes,
        jobs: jobs.clone(),
        pods: Api::namespaced(client.clone(), &ns),
        operator: &mut operator,
        extender: &mut extender,
    };

    // meanwhile, the same job for a payer whose wallet holds nothing (a keypair, no
    // token account): its escrow is rejected in preflight, and must fail visibly
    let broke = unfunded_job(&client, &ns, &job_v).await;

    // the example, paid in IO: fees burned
    let io = run.settle_and_check(job_v.clone(), &accounts[0]).await;
    // the same job paid in USDC (the other mint, 6 decimals): surcharge, treasury
    let mut usdc_job = io.job.clone();
    usdc_job["metadata"] = json!({"name": format!("{}-usdc", io.name), "namespace": ns});
    usdc_job["spec"]["paymentToken"] = "USDC".into();
    // $3.50 per GPU-hour at most (the USDC example's cap)
    usdc_job["spec"]["maxPricePerGpuHour"] = 3_500_000u64.into();
    let usdc = run.settle_and_check(usdc_job, &accounts[1]).await;

    let funded = wait_for(Duration::from_secs(120), || async {
        let st = jobs.get(&broke).await.ok()?.status?;
        let c = st.conditions.iter().find(|c| c.type_ == "Funded")?;
        (c.status == "False").then(|| (st.phase, c.reason.clone(), c.message.clone()))
    })
    .await;
    let Some((phase, reason, message)) = funded else {
        let st = jobs.get(&broke).await.ok().and_then(|j| j.status);
        fail_with_logs(
            format!("{broke}: no visible escrow failure in 120 s: {st:#?}"),
            &[&operator, &extender],
        );
    };
    eprintln!("{test}: {broke}: {phase:?} {reason}: {message}");
    assert_eq!(reason, "EscrowFailed");
    assert!(message.contains("rejected in preflight"), "{message}");

    // no secret in the operator's log
    let log = operator.log_tail(10_000_000);
    let authority_json = std::fs::read_to_string(&authority_file).unwrap();
    for (what, secret) in [("payer", &payer_json), ("authority", &authority_json)] {
        assert!(
            !log.contains(&secret[..40]),
            "the {what} keypair is in the operator's log"
        );
    }

    let mut gone = true;
    for name in [&io.name, &usdc.name, &broke] {
        let _ = jobs.delete(name, &Default::default()).await;
        // a deleted job whose escrow is in flight (the unfunded one retries it every
        // minute) waits for that transaction to expire: it might have moved tokens
        gone &= wait_for(Duration::from_secs(90), || async {
            jobs.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await
        .is_some();
    }
    operator.stop(Duration::from_secs(5));
    extender.stop(Duration::from_secs(5));
    sim.shutdown().await;
    for (node, _) in &nodes {
        let _ = gpunodes.delete(node, &Default::default()).await;
    }
    delete_namespace(&client, &ns).await;
    assert!(gone, "a settled (or unfunded) job was not released");
    eprintln!(
        "{test}: done in {:.1} s (jobs created to Settled: IO {:.1} s, USDC {:.1} s)",
        t0.elapsed().as_secs_f64(),
        io.settle_s,
        usdc.settle_s
    );
    for j in [&io, &usdc] {
        assert!(
            j.ran_ms > 0 && (j.gpu_ms as i64 - j.ran_ms).abs() <= 3_000,
            "{}: billed {} GPU-ms for {} ms of worker running time (issue 15)",
            j.name,
            j.gpu_ms,
            j.ran_ms
        );
    }
}

/// What a scenario's jobs share: the API, the chain, the processes.
struct JobRun<'a> {
    test: &'a str,
    rpc_url: &'a str,
    authority: &'a str,
    payer: &'a str,
    nodes: &'a [(String, String)],
    jobs: Api<ComputeJob>,
    pods: Api<Pod>,
    operator: &'a mut Proc,
    extender: &'a mut Proc,
}

/// A settled job, checked.
struct Settled {
    name: String,
    job: Value,
    settle_s: f64,
    gpu_ms: u64,
    ran_ms: i64,
}

impl JobRun<'_> {
    /// Creates `job`, follows it to Settled, and checks its status against the fee
    /// arithmetic and the chain (`acc`: the accounts of its payment token).
    async fn settle_and_check(&mut self, job: Value, acc: &Accounts) -> Settled {
        let test = self.test;
        let token = acc.token;
        let before = Snapshot::take(self.rpc_url, acc).await;
        eprintln!("{test}: {token} before the job: {before:?}");
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        let created = Instant::now();
        self.jobs
            .create(
                &PostParams::default(),
                &serde_json::from_value(job.clone()).unwrap(),
            )
            .await
            .expect("job created");

        // follow it to Settled (keep the last view of the workers: deleted after)
        let followed = solgrid_e2e::market::follow_to_settled(
            &self.jobs,
            &self.pods,
            &name,
            (test, created),
            Duration::from_secs(120),
            || self.extender.exited().is_none() && self.operator.exited().is_none(),
        )
        .await;
        let (seen, worker_pods) = (followed.phases, followed.workers);
        let settled = followed.settled;
        let Some(st) = settled else {
            let j = self.jobs.get(&name).await.ok().and_then(|j| j.status);
            fail_with_logs(
                format!("{name} did not settle on Solana in 120 s; phases {seen:?}; status {j:#?}"),
                &[self.operator, self.extender],
            );
        };
        let settle_s = created.elapsed().as_secs_f64();
        let nodes: Vec<&str> = self.nodes.iter().map(|(n, _)| n.as_str()).collect();
        solgrid_e2e::market::assert_placed_on(&worker_pods, &nodes);

        // the status: exact fee arithmetic (ECONOMICS.md, solgrid_market::fees)
        let (gpu_ms, want) = solgrid_e2e::billed(&st, token);
        let c = &st.cost;
        eprintln!(
            "{test}: {name} settled at +{settle_s:.1} s: {gpu_ms} GPU-ms at {} {token} base units per GPU-hour; cost {c:?}",
            st.quote.as_ref().expect("quote").price_per_gpu_hour
        );
        assert_eq!(st.payer_wallet.as_deref(), Some(self.payer));
        solgrid_e2e::assert_billed(&st, gpu_ms, &want);
        let protocol = want.protocol().unwrap();
        if token == Token::Io {
            assert_eq!(c.surcharge, 0);
            assert_eq!((c.burned, c.to_treasury), (protocol, 0), "IO fees burned");
        } else {
            assert!(c.surcharge > 0, "the stablecoin surcharge");
            assert_eq!(
                (c.burned, c.to_treasury),
                (0, protocol),
                "USDC fees to the treasury"
            );
        }
        // what the status says each provider wallet got
        let mut paid_to: BTreeMap<String, u64> = BTreeMap::new();
        for s in &st.settlements {
            for p in &s.payouts {
                if p.to != solgrid_operator::settlement::REFUND {
                    *paid_to.entry(p.wallet.clone()).or_default() += p.amount;
                }
            }
        }
        assert_eq!(paid_to.values().sum::<u64>(), c.received);

        // the chain, through JSON-RPC
        let after = Snapshot::take(self.rpc_url, acc).await;
        eprintln!("{test}: {token} after the job: {after:?}");
        assert_eq!(
            after.payer,
            before.payer - c.paid,
            "the payer paid C + Fr + S"
        );
        assert_eq!(after.escrow, before.escrow, "the escrow refunded the rest");
        let mut providers_got = 0;
        for (wallet, _) in &acc.providers {
            let got = after.providers[wallet] - before.providers[wallet];
            assert!(got > 0, "both nodes ran a worker: {wallet} paid");
            assert_eq!(
                got,
                paid_to.get(wallet).copied().unwrap_or(0),
                "provider {wallet} paid C - Fp for its share"
            );
            providers_got += got;
        }
        assert_eq!(providers_got, c.received);
        assert_eq!(
            before.supply - after.supply,
            c.burned,
            "the {token} supply fell by exactly the burn"
        );
        assert_eq!(
            after.treasury - before.treasury,
            c.to_treasury,
            "the treasury got the protocol's share"
        );
        assert_eq!(
            (before.payer - after.payer) - providers_got,
            c.burned + c.to_treasury,
            "paid = received + protocol"
        );

        // the memos: the escrow and each settlement (each part), on chain exactly once
        let mut records = vec![st.escrow.clone().expect("escrow record")];
        records.extend(st.settlements.iter().flat_map(|s| s.records().cloned()));
        let history = memo_history(self.rpc_url, self.authority).await;
        for r in &records {
            landed_once(self.rpc_url, &history, r).await;
        }
        eprintln!(
            "{test}: memos on chain: {:?}",
            records
                .iter()
                .map(|r| (&r.key, r.signature.as_deref().unwrap_or("")))
                .collect::<Vec<_>>()
        );

        // billed GPU time = the workers' running time (container start to finish)
        let ran_ms = solgrid_e2e::market::workers_ran_ms(&worker_pods);
        eprintln!(
            "{test}: {name}: workers ran {ran_ms} ms in all, billed {gpu_ms} GPU-ms; phases {seen:?}"
        );
        Settled {
            name,
            job,
            settle_s,
            gpu_ms,
            ran_ms,
        }
    }
}

/// Submits a copy of `job` whose payer Secret holds a fresh keypair with no tokens;
/// returns the job's name.
async fn unfunded_job(client: &Client, ns: &str, job: &Value) -> String {
    let wallet = Keypair::new();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "unfunded-wallet", "namespace": ns},
        "stringData": {"address": wallet.pubkey().to_string(), "keypair": keypair_json(&wallet)},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let mut job = job.clone();
    let name = format!("{}-unfunded", job["metadata"]["name"].as_str().unwrap());
    job["metadata"] = json!({"name": name, "namespace": ns});
    job["spec"]["payerSecretRef"]["name"] = "unfunded-wallet".into();
    Api::<ComputeJob>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(job).unwrap(),
        )
        .await
        .expect("job created");
    name
}

/// The operator binary settling on `chain`, watching `ns` (its reward state and
/// verification pods in `ns` too, apart from other scenarios' operators).
fn start_solana_operator(
    tc: &TestCluster,
    name: &str,
    chain: &LocalChain,
    io_mint: &str,
    authority: &Path,
    ns: &str,
) -> Result<Proc> {
    let mut cmd = solgrid_e2e::market::operator_command(
        tc.kubeconfig(),
        "solgrid_operator=debug,solgrid_solana=debug,info",
    )?;
    cmd.arg(format!("--solana-rpc-url={}", chain.rpc_url()))
        .arg(format!("--io-mint={io_mint}"))
        .arg(format!("--usdc-mint={}", chain.usdc_mint))
        .arg(format!("--authority-keypair={}", authority.display()))
        .arg(format!("--watch-namespace={ns}"))
        .arg("--leader-election=false")
        .arg(format!("--lease-namespace={ns}"))
        .arg(format!("--reward-interval-seconds={REWARD_INTERVAL_S}"));
    let log = tc.dir().join(format!("{name}.log"));
    Ok(Proc::spawn(name, cmd, &log)?)
}

/// Marks the last ended reward period distributed in the operator's reward state
/// (ConfigMap `solgrid-rewards` in `ns`, its `--lease-namespace`).
async fn seed_reward_state(client: &Client, ns: &str) -> Result<()> {
    use solgrid_operator::rewards::{CONFIGMAP, RewardState, STATE_KEY};
    let period_ms = REWARD_INTERVAL_S * 1000;
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    let ended = (now_ms / period_ms).checked_sub(1);
    let state = RewardState {
        genesis_period: ended,
        last_period: ended,
        ..RewardState::default()
    };
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": ns},
        "data": {STATE_KEY: serde_json::to_string(&state)?},
    }))?;
    Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await?;
    Ok(())
}

/// The extender binary where the chart's kube-scheduler calls it, with the market
/// rules a fresh cluster can meet.
fn start_extender_proc(tc: &TestCluster, name: &str) -> Result<Proc> {
    solgrid_e2e::market::start_extender(tc, tc.dir(), name, None)
}

/// Balances (base units) of one mint's accounts and its supply, read through JSON-RPC.
#[derive(Debug)]
struct Snapshot {
    supply: Amount,
    payer: Amount,
    escrow: Amount,
    treasury: Amount,
    providers: BTreeMap<String, Amount>,
}

impl Snapshot {
    async fn take(url: &str, acc: &Accounts) -> Snapshot {
        let supply = rpc(url, "getTokenSupply", json!([acc.mint, commitment()]))
            .await
            .expect("getTokenSupply");
        assert_eq!(supply["value"]["decimals"], acc.decimals, "{}", acc.token);
        let mut providers = BTreeMap::new();
        for (w, a) in &acc.providers {
            providers.insert(w.clone(), token_balance(url, a).await.unwrap_or(0));
        }
        Snapshot {
            supply: amount(&supply["value"]),
            payer: token_balance(url, &acc.payer)
                .await
                .expect("the payer's token account"),
            escrow: token_balance(url, &acc.escrow)
                .await
                .expect("the escrow account"),
            treasury: token_balance(url, &acc.treasury)
                .await
                .expect("the treasury account"),
            providers,
        }
    }
}

fn commitment() -> Value {
    json!({"commitment": "confirmed"})
}

fn amount(v: &Value) -> Amount {
    v["amount"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no amount in {v}"))
}

/// `getTokenAccountBalance` of a token account; `None` when it does not exist.
async fn token_balance(url: &str, account: &str) -> Option<Amount> {
    match rpc(
        url,
        "getTokenAccountBalance",
        json!([account, commitment()]),
    )
    .await
    {
        Ok(v) => Some(amount(&v["value"])),
        Err(e) if e.to_string().contains("could not find account") => None,
        Err(e) => panic!("getTokenAccountBalance {account}: {e:#}"),
    }
}

/// The memo texts of a transaction (`getTransaction`, jsonParsed): asserts it
/// succeeded.
async fn transaction_memos(url: &str, signature: &str) -> Vec<String> {
    let tx = rpc(
        url,
        "getTransaction",
        json!([signature, {"encoding": "jsonParsed", "commitment": "confirmed",
                           "maxSupportedTransactionVersion": 0}]),
    )
    .await
    .unwrap_or_else(|e| panic!("getTransaction {signature}: {e:#}"));
    assert!(!tx.is_null(), "{signature} is not on chain");
    assert!(
        tx["meta"]["err"].is_null(),
        "{signature} failed on chain: {}",
        tx["meta"]["err"]
    );
    tx["transaction"]["message"]["instructions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ix| ix["program"] == "spl-memo")
        .filter_map(|ix| ix["parsed"].as_str().map(str::to_string))
        .collect()
}

/// Asserts that record `r`'s key is on chain exactly once (in `history`, from
/// [`memo_history`]), in the transaction of its recorded signature; returns it.
async fn landed_once(
    url: &str,
    history: &[(String, Vec<String>)],
    r: &solgrid_crds::LedgerRecord,
) -> String {
    let sig = r
        .signature
        .clone()
        .unwrap_or_else(|| panic!("{} has no signature", r.key));
    let memos = transaction_memos(url, &sig).await;
    assert!(
        memos.contains(&r.key),
        "{sig} ({}): memo {memos:?} on chain, not the key",
        r.purpose
    );
    let landed: Vec<&String> = history
        .iter()
        .filter(|(_, keys)| keys.contains(&r.key))
        .map(|(s, _)| s)
        .collect();
    assert_eq!(landed, vec![&sig], "{}: landed once, as recorded", r.key);
    sig
}

/// The successful transactions of `address`'s history with the memo texts of each
/// (`getSignaturesForAddress`: `memo` is `"[len] text; [len] text"`).
async fn memo_history(url: &str, address: &str) -> Vec<(String, Vec<String>)> {
    let page = rpc(
        url,
        "getSignaturesForAddress",
        json!([address, {"limit": 1000, "commitment": "confirmed"}]),
    )
    .await
    .expect("getSignaturesForAddress");
    page.as_array()
        .expect("an array")
        .iter()
        .filter(|s| s["err"].is_null())
        .map(|s| {
            let memos = s["memo"]
                .as_str()
                .unwrap_or_default()
                .split("; ")
                .map(|m| match m.strip_prefix('[') {
                    Some(rest) => rest.split_once("] ").map_or(rest, |(_, t)| t).to_string(),
                    None => m.to_string(),
                })
                .collect();
            (
                s["signature"].as_str().unwrap_or_default().to_string(),
                memos,
            )
        })
        .collect()
}

/// One JSON-RPC call over plain HTTP/1.0 (loopback), off the async threads.
async fn rpc(url: &str, method: &str, params: Value) -> Result<Value> {
    let url = url.to_string();
    let method = method.to_string();
    tokio::task::spawn_blocking(move || rpc_blocking(&url, &method, params))
        .await
        .context("RPC task")?
}

fn rpc_blocking(url: &str, method: &str, params: Value) -> Result<Value> {
    let addr = url
        .strip_prefix("http://")
        .context("an http:// RPC URL")?
        .trim_end_matches('/');
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    write!(
        s,
        "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("a UTF-8 answer")?;
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method}: no HTTP header in {text:?}"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{method}: {head}"
    );
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)?
    } else {
        payload.to_string()
    };
    let v: Value =
        serde_json::from_str(&payload).with_context(|| format!("{method}: {payload}"))?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("{method}: {e}");
    }
    Ok(v["result"].clone())
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("a chunk size")?;
        let n = usize::from_str_radix(size.trim(), 16).context("a hex chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("a whole chunk")?);
        s = rest.get(n + 2..).unwrap_or_default();
    }
}

/// Provider wallets of the split settlement: more than one transaction holds.
const SPLIT_WALLETS: usize = 40;

/// A ComputeJob that ran 40 workers on 40 nodes, each paying out to its own fresh
/// wallet, settled on the validator in several transactions, exactly once:
///
/// 1. by the operator's own settlement code (`billing::plan`, `settlement::split`
///    by the `SolanaLedger`'s size model, `JobStore` writing the job's status on
///    the API server, the exactly-once executor), with the operator dying twice
///    mid-way: after part 0 was sent, and after part 0 was confirmed and part 1
///    sent; the restarted operator reads the status back from the API server;
/// 2. by the operator binary on its own: a second such job, from `Succeeded` to
///    `Settled` (and released on delete).
///
/// Then, through JSON-RPC: each part's key on chain exactly once under its
/// recorded signature, every provider paid to the unit (ECONOMICS.md fees), the
/// burns, the refunds, the escrow emptied. The control plane holds the statuses
/// (its CRD schema must keep `parts`: a pruned split would lose the record of what
/// was sent). The 40 workers' GpuNodes do not exist: the jobs are written as the
/// operator leaves them when their workers finish (no verification, no pods), so
/// the test takes seconds, not the minutes 40 simulated nodes would.
#[test]
fn a_forty_wallet_settlement_lands_in_several_transactions_exactly_once() {
    const TEST: &str = "a_forty_wallet_settlement_lands_in_several_transactions_exactly_once";
    // held exclusively: no operator reconciles the job meanwhile
    let Some((tc, _exclusive, chain, t0)) = cluster_and_chain(TEST) else {
        return;
    };
    let ledger = chain.ledger_with(|_| {}).expect("ledger");
    ledger.ensure_custody_accounts().expect("custody accounts");
    eprintln!(
        "{TEST}: validator and mints ready at +{:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let rt = runtime();
    rt.block_on(split_scenario(
        TEST,
        tc,
        &chain,
        std::sync::Arc::new(ledger),
        t0,
    ));
    drop(rt);
    drop(chain);
}

/// A status writer whose operator dies (writes nothing more, errs) at the first
/// write after the one that recorded part `part` `Sent` (whatever that next write
/// is: that part confirmed, or the next part sent); never with `None`.
struct DiesAfterSent {
    inner: solgrid_operator::settlement::ApiWriter,
    part: Option<usize>,
    armed: bool,
}

impl solgrid_operator::settlement::StatusWriter for DiesAfterSent {
    fn write(
        &mut self,
        st: &ComputeJobStatus,
    ) -> Result<(), solgrid_operator::settlement::JobStoreError> {
        if self.armed {
            return Err(solgrid_operator::settlement::JobStoreError::Write(
                "the operator died here (injected)".into(),
            ));
        }
        self.inner.write(st)?;
        self.armed = self
            .part
            .is_some_and(|p| part_state(st, p) == Some(RecState::Sent));
        Ok(())
    }
}

/// The state of part `part` of the job's first settlement.
fn part_state(st: &ComputeJobStatus, part: usize) -> Option<RecState> {
    st.settlements.first()?.records().nth(part).map(|r| r.state)
}

/// One operator process settling the job from its status on the API server: runs
/// passes until nothing is unsettled (or `passes` ran, or its writer dies).
/// Returns whether it died and the transactions it sent.
async fn settle_process(
    jobs: &Api<ComputeJob>,
    name: &str,
    ledger: &std::sync::Arc<solgrid_solana::SolanaLedger>,
    staged: Option<(solgrid_crds::JobSettlement, Vec<solgrid_market::Intent>)>,
    passes: usize,
    dies_after_sent: Option<usize>,
) -> (bool, usize) {
    use solgrid_operator::settlement::{ApiWriter, job_store};
    let job = jobs.get(name).await.expect("the job");
    let writer = DiesAfterSent {
        inner: ApiWriter {
            api: jobs.clone(),
            name: name.to_string(),
            field_manager: "solgrid-operator".into(),
            handle: tokio::runtime::Handle::current(),
            resource_version: job.metadata.resource_version.clone(),
        },
        part: dies_after_sent,
        armed: false,
    };
    let uid = job.metadata.uid.clone().expect("uid");
    let status = job.status.clone().expect("status");
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = job_store(uid, PaymentToken::Io, status, chrono::Utc::now(), writer);
        let intents = match staged {
            Some((js, intents)) => {
                store.staged = vec![js];
                intents
            }
            None => Vec::new(),
        };
        let mut exec = solgrid_ledger::Executor::new(
            &*ledger,
            &mut store,
            solgrid_ledger::ExecutorConfig::default(),
        );
        if exec.plan(&intents).is_err() {
            return (true, 0);
        }
        let mut txs = 0;
        for _ in 0..passes {
            match exec.settle_pass() {
                Ok(r) => {
                    txs += r.txs();
                    if r.remaining == 0 {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("settlement pass ended: {e}");
                    return (true, txs);
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        (false, txs)
    })
    .await
    .expect("settlement task")
}

/// A finished job that ran 90 s on 40 nodes, each paying out to a fresh wallet (no
/// token account yet: the settlement creates them), escrow funded on chain.
struct FortyWalletJob {
    name: String,
    uid: String,
    spec: solgrid_crds::ComputeJobSpec,
    status: ComputeJobStatus,
    payer: String,
    wallets: Vec<String>,
    start_ms: u64,
    end_ms: u64,
}

/// 1 IO per GPU-hour; 1,000 IO in escrow.
const SPLIT_PRICE: u64 = 1_000_000_000;
const SPLIT_MAX_COST: u64 = 1_000 * 1_000_000_000;

fn split_node(i: usize) -> String {
    format!("split-gpu-{i:02}")
}

/// Creates [`FortyWalletJob`] `name` with its status (as the operator would have
/// written it when the workers finished), and mints its escrow on chain.
async fn forty_wallet_job(
    jobs: &Api<ComputeJob>,
    ns: &str,
    name: &str,
    ledger: &std::sync::Arc<solgrid_solana::SolanaLedger>,
) -> FortyWalletJob {
    use solgrid_crds::{JobOutcome, LedgerRecord, NodeBook, Quote, WorkerStatus};
    let (_, mut job_v) = llm_example(ns, &["true"]).expect("example");
    job_v["metadata"]["name"] = name.into();
    job_v["spec"]["workers"] = (SPLIT_WALLETS as u64).into();
    let job = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(job_v).unwrap(),
        )
        .await
        .expect("job created");
    let uid = job.metadata.uid.clone().expect("uid");
    let payer = Keypair::new().pubkey().to_string();
    let wallets: Vec<String> = (0..SPLIT_WALLETS)
        .map(|_| Keypair::new().pubkey().to_string())
        .collect();
    let end = chrono::Utc::now();
    let start = end - chrono::Duration::seconds(90);
    let status = ComputeJobStatus {
        phase: ComputeJobPhase::Succeeded,
        attempts: 1,
        quote: Some(Quote {
            price_per_gpu_hour: SPLIT_PRICE,
            max_cost: SPLIT_MAX_COST,
            ..Default::default()
        }),
        payer_wallet: Some(payer.clone()),
        escrow: Some(LedgerRecord {
            key: format!("{uid}/escrow"),
            purpose: "escrow".into(),
            state: RecState::Confirmed,
            ..Default::default()
        }),
        escrowed: SPLIT_MAX_COST,
        workers: (0..SPLIT_WALLETS)
            .map(|i| WorkerStatus {
                index: i as u32,
                pod: format!("{name}-a1-w{i}"),
                node: Some(split_node(i)),
                phase: "Succeeded".into(),
                payout_wallet: Some(wallets[i].clone()),
            })
            .collect(),
        start_time: Some(solgrid_operator::conditions::time(start)),
        end_time: Some(solgrid_operator::conditions::time(end)),
        // the nodes' bookkeeping is done (no GpuNodes here: nothing to release)
        node_book: NodeBook {
            allocated: true,
            outcome: JobOutcome::Succeeded,
            released: true,
            ..Default::default()
        },
        ..Default::default()
    };
    jobs.patch_status(
        name,
        &PatchParams::apply("solgrid-operator").force(),
        &Patch::Apply(solgrid_operator::settlement::status_patch(&status, None)),
    )
    .await
    .expect("status written");
    // the escrow holds the job's maximum cost (minted there: the escrow step is the
    // other scenario's)
    let l = ledger.clone();
    let fund_key = format!("{uid}/e2e-escrow-funding");
    tokio::task::spawn_blocking(move || {
        let p = l
            .prepare(&[solgrid_market::Intent {
                key: fund_key,
                movements: vec![solgrid_market::ledger::Movement {
                    token: Token::Io,
                    op: solgrid_market::ledger::Op::Mint {
                        to: Account::Escrow,
                        amount: SPLIT_MAX_COST,
                    },
                }],
            }])
            .expect("prepare");
        assert_eq!(
            l.send_and_confirm(&p, Duration::from_secs(60))
                .expect("sent"),
            solgrid_market::ledger::TxStatus::Confirmed
        );
    })
    .await
    .unwrap();
    FortyWalletJob {
        name: name.to_string(),
        uid,
        spec: job.spec,
        status,
        payer,
        wallets,
        start_ms: start.timestamp_millis() as u64,
        end_ms: end.timestamp_millis() as u64,
    }
}

/// Checks a settled [`FortyWalletJob`] on chain (JSON-RPC): each part's key in
/// exactly one transaction, the recorded one; each provider paid `C_i - Fp_i`, the
/// payer refunded the rest, to the unit (ECONOMICS.md). Returns the number of
/// transactions and what was burned.
async fn check_paid_once(
    rpc_url: &str,
    authority: &str,
    ledger: &solgrid_solana::SolanaLedger,
    job: &FortyWalletJob,
    st: &ComputeJobStatus,
) -> (usize, u64) {
    use solgrid_operator::settlement::REFUND;
    assert_eq!(st.settlements.len(), 1, "one (final) settlement");
    let s = &st.settlements[0];
    assert_eq!(s.state(), RecState::Confirmed, "{s:#?}");
    let history = memo_history(rpc_url, authority).await;
    let mut signatures = std::collections::BTreeSet::new();
    for r in s.records() {
        assert_eq!(r.state, RecState::Confirmed, "{}", r.key);
        signatures.insert(landed_once(rpc_url, &history, r).await);
    }
    let parts = s.parts.len() + 1;
    assert_eq!(signatures.len(), parts, "one transaction per part");
    let gpu_ms = 90_000 * job.spec.gpus.count as u64;
    let per_node = solgrid_e2e::settlement_fees([gpu_ms].into_iter(), SPLIT_PRICE, Token::Io);
    let ata = |w: &str| {
        ledger
            .token_account(&Account::Wallet(w.to_string()), Token::Io)
            .unwrap()
            .to_string()
    };
    let mut received = 0;
    for w in &job.wallets {
        let got = token_balance(rpc_url, &ata(w))
            .await
            .expect("provider account");
        assert_eq!(got, per_node.received().unwrap(), "{w}: C - Fp");
        received += got;
    }
    let cost = &s.cost;
    assert_eq!(received, cost.received);
    let n = SPLIT_WALLETS as u64;
    let total = solgrid_e2e::settlement_fees(
        std::iter::repeat_n(gpu_ms, SPLIT_WALLETS),
        SPLIT_PRICE,
        Token::Io,
    );
    assert_eq!(cost.compute, per_node.compute * n);
    assert_eq!(cost.compute, total.compute);
    assert_eq!(cost.requester_fee, total.requester_fee);
    assert_eq!(cost.provider_fee, per_node.provider_fee * n);
    assert_eq!(cost.burned, total.protocol().unwrap());
    assert_eq!(cost.paid, cost.received + cost.burned);
    let refund = s.payouts.iter().find(|p| p.to == REFUND).unwrap().amount;
    assert_eq!(refund, SPLIT_MAX_COST - cost.paid);
    assert_eq!(token_balance(rpc_url, &ata(&job.payer)).await, Some(refund));
    (parts, cost.burned)
}

async fn io_supply(rpc_url: &str, mint: &str) -> Amount {
    let v = rpc(rpc_url, "getTokenSupply", json!([mint, commitment()]))
        .await
        .expect("getTokenSupply");
    amount(&v["value"])
}

async fn split_scenario(
    test: &str,
    tc: &'static TestCluster,
    chain: &LocalChain,
    ledger: std::sync::Arc<solgrid_solana::SolanaLedger>,
    t0: Instant,
) {
    let rpc_url = chain.rpc_url().to_string();
    let authority = chain.authority_address();
    let (client, ns) = client_and_namespace(tc, "e2e-split").await;
    let jobs: Api<ComputeJob> = Api::namespaced(client.clone(), &ns);
    let supply_before = io_supply(&rpc_url, &chain.io_mint).await;

    // 1. the operator's settlement code, dying twice mid-way
    let a = forty_wallet_job(&jobs, &ns, "forty-wallets", &ledger).await;
    let (crash_parts, crash_s) = settle_across_crashes(test, &jobs, &ledger, &a, t0).await;
    let st = jobs.get(&a.name).await.unwrap().status.unwrap();
    let (parts, burned_a) = check_paid_once(&rpc_url, &authority, &ledger, &a, &st).await;
    assert_eq!(parts, crash_parts);
    // no operator ran: no finalizer
    jobs.delete(&a.name, &Default::default()).await.unwrap();

    // 2. the operator binary on its own: a second such job from Succeeded to Settled
    let b = forty_wallet_job(&jobs, &ns, "forty-wallets-operator", &ledger).await;
    let authority_file = tc.dir().join(&ns).join("authority.json");
    std::fs::create_dir_all(authority_file.parent().unwrap()).unwrap();
    chain
        .write_authority_keypair(&authority_file)
        .expect("authority keypair written");
    seed_reward_state(&client, &ns).await.expect("reward state");
    let mut operator = start_solana_operator(
        tc,
        "solgrid-operator-split",
        chain,
        &chain.io_mint,
        &authority_file,
        &ns,
    )
    .expect("operator");
    let started = Instant::now();
    let settled = wait_for(Duration::from_secs(60), || async {
        let st = jobs.get(&b.name).await.ok()?.status?;
        (st.phase == ComputeJobPhase::Settled).then_some(st)
    })
    .await;
    let Some(st) = settled else {
        let st = jobs.get(&b.name).await.ok().and_then(|j| j.status);
        fail_with_logs(
            format!("{}: not Settled in 60 s: {st:#?}", b.name),
            &[&operator],
        );
    };
    let operator_s = started.elapsed().as_secs_f64();
    let (operator_parts, burned_b) = check_paid_once(&rpc_url, &authority, &ledger, &b, &st).await;
    assert!(operator_parts >= 3, "{operator_parts} transactions");
    assert!(
        operator
            .log_tail(1_000_000)
            .contains("settlement split into several transactions"),
        "the operator says it split the settlement"
    );
    // both escrows paid out to the unit, the supply fell by exactly both burns
    let escrow = ledger
        .custody_address(&Account::Escrow, Token::Io)
        .expect("escrow account");
    assert_eq!(token_balance(&rpc_url, &escrow).await, Some(0));
    let supply_after = io_supply(&rpc_url, &chain.io_mint).await;
    // (each job's escrow was minted)
    assert_eq!(
        supply_before + 2 * SPLIT_MAX_COST - supply_after,
        burned_a + burned_b
    );
    let _ = jobs.delete(&b.name, &Default::default()).await;
    let gone = wait_for(Duration::from_secs(30), || async {
        jobs.get_opt(&b.name).await.ok()?.is_none().then_some(())
    })
    .await;
    operator.stop(Duration::from_secs(5));
    delete_namespace(&client, &ns).await;
    assert!(gone.is_some(), "a settled job was not released");
    eprintln!(
        "{test}: {parts} transactions, each key once, settled in {crash_s:.1} s across two crashes; \
         the operator binary settled the same in {operator_parts} transactions {operator_s:.1} s after it started; test {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Settles [`FortyWalletJob`] `job` with the operator's own settlement code: plans
/// it, splits it by the `SolanaLedger`'s size model, and runs three operator
/// processes over its status on the API server: the first dies right after
/// recording part 0 sent, the second right after recording part 0 confirmed and
/// part 1 sent, the third finishes. Returns the parts and the seconds it took.
async fn settle_across_crashes(
    test: &str,
    jobs: &Api<ComputeJob>,
    ledger: &std::sync::Arc<solgrid_solana::SolanaLedger>,
    job: &FortyWalletJob,
    t0: Instant,
) -> (usize, f64) {
    let name = &job.name;
    let wallet_of: std::collections::HashMap<String, String> = (0..SPLIT_WALLETS)
        .map(|i| (split_node(i), job.wallets[i].clone()))
        .collect();
    let (js, _) = solgrid_operator::computejob::billing::plan(
        &job.uid,
        &job.spec,
        &job.status,
        0,
        job.start_ms,
        job.end_ms,
        true,
        &wallet_of,
        &FeeConfig::default(),
    )
    .expect("plan");
    // split by the ledger's own size model (it asks the chain which token accounts
    // exist: the transactions create the missing ones)
    let l = ledger.clone();
    let p = job.payer.clone();
    let (js, intents) = tokio::task::spawn_blocking(move || {
        solgrid_operator::settlement::split(js, &p, PaymentToken::Io, |i| {
            l.fits(std::slice::from_ref(i))
        })
    })
    .await
    .unwrap()
    .expect("split");
    let parts = intents.len();
    eprintln!(
        "{test}: {} payouts split into {parts} transactions at +{:.1} s: {:?} movements",
        js.payouts.len(),
        t0.elapsed().as_secs_f64(),
        intents
            .iter()
            .map(|i| i.movements.len())
            .collect::<Vec<_>>()
    );
    assert!(parts >= 3, "40 wallets need several transactions: {parts}");

    // operator 1 dies right after recording part 0 sent
    let started = Instant::now();
    let (died, txs1) =
        settle_process(jobs, name, ledger, Some((js, intents.clone())), 4, Some(0)).await;
    assert!(died, "operator 1 was to die mid-way");
    let st = jobs.get(name).await.unwrap().status.unwrap();
    assert_eq!(part_state(&st, 0), Some(RecState::Sent));
    assert!((1..parts).all(|p| part_state(&st, p) == Some(RecState::Planned)));
    assert_eq!(
        st.settlements[0].parts.len() + 1,
        parts,
        "the API server kept every part's record"
    );
    let sig0 = st.settlements[0].record.signature.clone().expect("sig 0");
    let l = ledger.clone();
    let landed = tokio::task::spawn_blocking(move || l.wait(&sig0, Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("part 0 looked up");
    assert_eq!(landed, solgrid_market::ledger::TxStatus::Confirmed);

    // operator 2 records part 0 confirmed, then dies right after recording part 1 sent
    let (died, txs2) = settle_process(jobs, name, ledger, None, 4, Some(1)).await;
    assert!(died, "operator 2 was to die mid-way");
    let st = jobs.get(name).await.unwrap().status.unwrap();
    assert_eq!(part_state(&st, 0), Some(RecState::Confirmed));
    assert_eq!(part_state(&st, 1), Some(RecState::Sent));
    assert!((2..parts).all(|p| part_state(&st, p) == Some(RecState::Planned)));
    assert_eq!(
        st.settlements[0].state(),
        RecState::Sent,
        "not confirmed while parts are not"
    );

    // operator 3 (the restart) finishes from the status alone
    let (died, txs3) = settle_process(jobs, name, ledger, None, 200, None).await;
    assert!(!died);
    // operators 1 and 2 died inside their pass (their reports were lost with them)
    assert_eq!((txs1, txs2), (0, 0));
    assert_eq!(
        txs3,
        parts - 2,
        "the restart sent only the parts never sent"
    );
    (parts, started.elapsed().as_secs_f64())
}
