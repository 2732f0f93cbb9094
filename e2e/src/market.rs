//! A whole market on the local control plane, for one scenario: a namespace, an
//! embedded-ledger journal with a funded payer, simulated GPU nodes with their
//! GpuNodes, the real `solgrid-scheduler` extender where the chart's kube-scheduler
//! calls it, and one or more real `solgrid-operator` processes.
//!
//! [`Market::up`] brings it up and waits until the honest nodes are `Active`;
//! [`Market::submit`] creates a job from an example; [`Market::wait_job`] follows it;
//! [`Market::balances`] reads the ledger; [`Market::down`] tears it down. Every
//! failure message carries the tail of the operators' and the extender's logs.

use crate::cluster::{TestCluster, free_addr};
use crate::nodesim::{Faults, NodeSim, SimConfig, SimNodeSpec};
use crate::process::Proc;
use crate::{delete_namespace, install_crds, namespace, wait_default_sa, wait_for, workspace_bin};
use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use solgrid_crds::{
    ComputeJob, ComputeJobPhase, ComputeJobStatus, GpuNode, GpuNodePhase, StakePhase, StakePosition,
};
use solgrid_ledger::embedded::{EmbeddedConfig, EmbeddedLedger};
use solgrid_market::ledger::{Account, Intent, Ledger as _, Movement, Op, Token};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Provider wallets the scenarios' nodes are paid to (valid base58 addresses).
pub const PROVIDER_WALLETS: [&str; 4] = [
    "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
    "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T",
    "3ZpJ5b1F8kq8pP7oQYvK1wqK5X3nBDmCzk6UXhN5Lr2g",
    "8qbHbw2BbbTHBW1sbeqakYXVKRQM8Ne7pLK7m6CVfeR",
];

/// What a market is made of.
#[derive(Clone, Debug)]
pub struct MarketOpts {
    /// Namespace prefix (also names the logs).
    pub prefix: String,
    /// Nodes (name, GPUs); each gets a GpuNode paying `PROVIDER_WALLETS[i]`.
    pub nodes: Vec<(String, u32)>,
    /// IO the example's payer holds.
    pub payer_funds: u64,
    /// Operator processes (more than one: leader election on one Lease).
    pub operators: usize,
    /// Extra operator flags.
    pub operator_args: Vec<String>,
    /// Nodes that corrupt their proof of work from the start.
    pub corrupt_proof: Vec<String>,
    /// Run the operators with this kubeconfig (a ServiceAccount's token) instead of
    /// the admin's.
    pub operator_kubeconfig: Option<PathBuf>,
    /// Run the extender with this kubeconfig instead of the admin's.
    pub extender_kubeconfig: Option<PathBuf>,
    /// The leader-election Lease (default: one per scenario, named after its
    /// namespace); leader election runs when this is set or with 2+ operators.
    pub lease_name: Option<String>,
    /// Publish the nodes' inventory with the admin (else the scenario publishes it,
    /// e.g. with each node's device-plugin token, before [`Market::wait_active`]).
    pub publish_inventory: bool,
    /// Idle-reward period, seconds. `None`: one period longer than any test, so
    /// rounds (which mint) never run and the supply moves only by burns. With a
    /// period, the rewards state (ConfigMap `solgrid-rewards`) and the Lease live in
    /// the scenario's own namespace, so no other scenario's rounds mix in.
    pub reward_interval_s: Option<u64>,
    /// The operator's `--market-config` (JSON), if any.
    pub operator_market: Option<serde_json::Value>,
}

impl MarketOpts {
    pub fn new(prefix: &str, nodes: &[(&str, u32)]) -> Self {
        MarketOpts {
            prefix: prefix.into(),
            nodes: nodes.iter().map(|(n, g)| (n.to_string(), *g)).collect(),
            payer_funds: 1_000_000_000_000,
            operators: 1,
            operator_args: Vec::new(),
            corrupt_proof: Vec::new(),
            operator_kubeconfig: None,
            extender_kubeconfig: None,
            publish_inventory: true,
            lease_name: None,
            reward_interval_s: None,
            operator_market: None,
        }
    }
}

/// A running market.
pub struct Market {
    pub tc: &'static TestCluster,
    pub client: Client,
    pub ns: String,
    pub dir: PathBuf,
    pub journal: PathBuf,
    pub sim: NodeSim,
    pub operators: Vec<Proc>,
    pub extender: Proc,
    /// (node, payout wallet)
    pub nodes: Vec<(String, String)>,
    opts: MarketOpts,
}

/// IO balances in the embedded ledger at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balances {
    pub payer: u64,
    pub escrow: u64,
    pub providers: BTreeMap<String, u64>,
    pub supply: u128,
}

impl Market {
    /// Brings the market up: CRDs, namespace, funded journal, nodes (those named in
    /// `honest` must become Active), extender, operators.
    pub async fn up(tc: &'static TestCluster, opts: MarketOpts, payer: &str) -> Result<Market> {
        let client = tc.client().await?;
        install_crds(&client).await?;
        remove_leftovers(&client).await?;
        ensure_namespace(&client, "solgrid-system").await?;
        let ns = namespace(&client, &opts.prefix).await?;
        wait_default_sa(&client, &ns).await?;
        let dir = tc.dir().join(&ns);
        std::fs::create_dir_all(&dir)?;
        let journal = dir.join("ledger.jsonl");
        fund_journal(&journal, payer, opts.payer_funds)?;
        let sim = NodeSim::start(
            client.clone(),
            SimConfig {
                verify_worker: Some(workspace_bin("solgrid-operator")?),
            },
        );
        let mut nodes = Vec::new();
        for (i, (node, gpus)) in opts.nodes.iter().enumerate() {
            let wallet = PROVIDER_WALLETS[i % PROVIDER_WALLETS.len()].to_string();
            add_gpunode(&client, &sim, node, *gpus, &wallet, opts.publish_inventory).await?;
            if opts.corrupt_proof.contains(node)
                && let Some(f) = sim.faults(node)
            {
                f.corrupt_proof
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            nodes.push((node.clone(), wallet));
        }
        let extender = start_extender(
            tc,
            &dir,
            &format!("{}-extender", opts.prefix),
            opts.extender_kubeconfig.as_deref(),
        )?;
        let mut m = Market {
            tc,
            client,
            ns,
            dir,
            journal,
            sim,
            operators: Vec::new(),
            extender,
            nodes,
            opts,
        };
        for i in 0..m.opts.operators {
            let p = m.start_operator(i)?;
            m.operators.push(p);
        }
        Ok(m)
    }

    /// [`Market::up`], then waits (up to `timeout`) until every node of `opts` is
    /// `Active`; the market and the nodes' reputations.
    pub async fn up_active(
        tc: &'static TestCluster,
        opts: MarketOpts,
        payer: &str,
        timeout: Duration,
    ) -> Result<(Market, Vec<u16>)> {
        let m = Market::up(tc, opts, payer).await?;
        let names: Vec<&str> = m.nodes.iter().map(|(n, _)| n.as_str()).collect();
        let scores = m.wait_active(&names, timeout).await?;
        Ok((m, scores))
    }

    /// Starts operator replica `i` (its log: `<dir>/<prefix>-operator-<i>.log`).
    pub fn start_operator(&self, i: usize) -> Result<Proc> {
        let name = format!("{}-operator-{i}", self.opts.prefix);
        let kubeconfig = self
            .opts
            .operator_kubeconfig
            .clone()
            .unwrap_or_else(|| self.tc.kubeconfig().to_path_buf());
        let mut cmd = operator_command(&kubeconfig, "solgrid_operator=debug,info")?;
        cmd.env("POD_NAME", &name)
            .arg(format!("--ledger-path={}", self.journal.display()))
            .arg(format!("--watch-namespace={}", self.ns))
            .arg(format!(
                "--leader-election={}",
                self.opts.operators > 1 || self.opts.lease_name.is_some()
            ))
            .arg(format!(
                "--lease-name={}",
                self.opts.lease_name.as_deref().unwrap_or(&self.ns)
            ))
            .arg(format!(
                "--lease-namespace={}",
                match self.opts.reward_interval_s {
                    Some(_) => self.ns.as_str(),
                    None => "solgrid-system",
                }
            ))
            .arg(format!(
                "--reward-interval-seconds={}",
                self.opts.reward_interval_s.unwrap_or(1_000_000_000)
            ))
            .args(&self.opts.operator_args);
        if let Some(market) = &self.opts.operator_market {
            let path = self.dir.join(format!("{name}-market.json"));
            std::fs::write(&path, serde_json::to_vec(market)?)?;
            cmd.arg(format!("--market-config={}", path.display()));
        }
        let log = self.dir.join(format!("{name}.log"));
        Ok(Proc::spawn(&name, cmd, &log)?)
    }

    /// Replaces the extra operator flags the next [`Market::start_operator`] passes
    /// (a replica of a new release next to the old one's).
    pub fn set_operator_args(&mut self, args: Vec<String>) {
        self.opts.operator_args = args;
    }

    /// Waits until the named nodes' GpuNodes are `Active`; their reputations.
    pub async fn wait_active(&self, names: &[&str], timeout: Duration) -> Result<Vec<u16>> {
        let api: Api<GpuNode> = Api::all(self.client.clone());
        match wait_gpunodes_active(&self.client, names, timeout).await {
            Some(s) => Ok(s),
            None => {
                let mut phases = Vec::new();
                for n in names {
                    let st = api.get(n).await.ok().and_then(|g| g.status);
                    phases.push(format!(
                        "{n}: {:?}",
                        st.map(|s| (s.phase, s.eligibility_reason, s.verification))
                    ));
                }
                Err(self.with_logs(format!("GpuNodes not Active in {timeout:?}: {phases:?}")))
            }
        }
    }

    /// The example's Secret and job in this namespace, the job's worker replaced by
    /// `command` (the simulated kubelet runs `sleep N` for N seconds).
    pub fn example(&self, command: &[&str]) -> Result<(serde_json::Value, serde_json::Value)> {
        crate::llm_example(&self.ns, command)
    }

    /// Creates the Secret (if missing) and the job.
    pub async fn submit(&self, secret: &serde_json::Value, job: &serde_json::Value) -> Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let s: Secret = serde_json::from_value(secret.clone())?;
        if secrets.get_opt(&s.name_any()).await?.is_none() {
            secrets.create(&PostParams::default(), &s).await?;
        }
        let j: ComputeJob = serde_json::from_value(job.clone())?;
        self.jobs().create(&PostParams::default(), &j).await?;
        Ok(())
    }

    pub fn jobs(&self) -> Api<ComputeJob> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Follows job `name` until `done` holds for its status (printing each phase).
    pub async fn wait_job(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&ComputeJobStatus) -> bool,
    ) -> Result<ComputeJobStatus> {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some(st) = self.jobs().get_opt(name).await?.and_then(|j| j.status) {
                if last.as_ref() != Some(&st.phase) {
                    eprintln!(
                        "[{}] +{:.1} s {name}: {:?} {}",
                        self.ns,
                        start.elapsed().as_secs_f64(),
                        st.phase,
                        st.message.clone().unwrap_or_default()
                    );
                    last = Some(st.phase);
                }
                if done(&st) {
                    return Ok(st);
                }
            }
            if start.elapsed() > timeout {
                let st = self
                    .jobs()
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|j| j.status);
                return Err(self.with_logs(format!(
                    "job {name} not done in {timeout:?}; status {st:#?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Follows job `name` until it is in `phase` ([`Market::wait_job`]).
    pub async fn wait_phase(
        &self,
        name: &str,
        timeout: Duration,
        phase: ComputeJobPhase,
    ) -> Result<ComputeJobStatus> {
        self.wait_job(name, timeout, |st| st.phase == phase).await
    }

    /// Balances of the payer, the escrow and the providers (a copy of the journal).
    pub fn balances(&self, payer: &str) -> Result<Balances> {
        let l = read_journal(&self.journal)?;
        let bal = |a: Account| l.balance(&a, Token::Io);
        Ok(Balances {
            payer: bal(Account::Wallet(payer.into()))?,
            escrow: bal(Account::Escrow)?,
            providers: self
                .nodes
                .iter()
                .map(|(_, w)| Ok((w.clone(), bal(Account::Wallet(w.clone()))?)))
                .collect::<Result<_>>()?,
            supply: l.total_balances(Token::Io),
        })
    }

    /// Every intent key confirmed at most once in the journal.
    pub fn confirmed_once(&self) -> Result<()> {
        let l = read_journal(&self.journal)?;
        let keys = l.confirmed_key_counts();
        match keys.iter().find(|(_, n)| **n > 1) {
            Some((k, n)) => Err(anyhow!("intent {k} confirmed {n} times")),
            None => Ok(()),
        }
    }

    /// The faults switch of a node.
    pub fn faults(&self, node: &str) -> Arc<Faults> {
        self.sim.faults(node).unwrap_or_default()
    }

    /// Adds a node (with its GpuNode) while the market runs.
    pub async fn add_node(&mut self, node: &str, gpus: u32) -> Result<()> {
        let wallet = PROVIDER_WALLETS[self.nodes.len() % PROVIDER_WALLETS.len()].to_string();
        add_gpunode(&self.client, &self.sim, node, gpus, &wallet, true).await?;
        self.nodes.push((node.to_string(), wallet));
        Ok(())
    }

    /// A stake of the example's owner (`examples/stakeposition.yaml`, funded by a
    /// LedgerGrant for exactly its amount) on `node`, once `Active`.
    pub async fn stake(&self, node: &str) -> Result<StakePosition> {
        let docs = crate::example("stakeposition.yaml")?;
        let (mut secret, mut sp) = (docs[0].clone(), docs[1].clone());
        secret["metadata"]["namespace"] = self.ns.as_str().into();
        sp["metadata"]["namespace"] = self.ns.as_str().into();
        sp["metadata"]["name"] = format!("carol-on-{node}").into();
        sp["spec"]["nodeName"] = node.into();
        let grant = serde_json::json!({
            "apiVersion": solgrid_crds::API_VERSION, "kind": "LedgerGrant",
            "metadata": {"name": format!("{}-staker-{node}", self.ns)},
            "spec": {"wallet": secret["stringData"]["address"], "token": "IO",
                     "amount": sp["spec"]["amount"]},
        });
        for d in [&grant, &secret, &sp] {
            crate::chart::apply(&self.client, d, "solgrid-e2e").await?;
        }
        let name = format!("carol-on-{node}");
        let api: Api<StakePosition> = Api::namespaced(self.client.clone(), &self.ns);
        wait_for(Duration::from_secs(60), || async {
            let p = api.get(&name).await.ok()?;
            (p.status.as_ref()?.phase == StakePhase::Active).then_some(p)
        })
        .await
        .ok_or_else(|| anyhow!("StakePosition {name} not Active in 60 s"))
    }

    /// An error with the tail of every component's log.
    pub fn with_logs(&self, msg: String) -> anyhow::Error {
        let mut s = msg;
        for p in self.operators.iter().chain(std::iter::once(&self.extender)) {
            s.push_str(&format!(
                "\n--- {} ({}):\n{}",
                p.name(),
                p.log_path().display(),
                p.log_tail(3000)
            ));
        }
        anyhow!(s)
    }

    /// Stops everything and deletes what the scenario made.
    pub async fn down(mut self) {
        for p in &mut self.operators {
            p.stop(Duration::from_secs(5));
        }
        self.extender.stop(Duration::from_secs(5));
        let gpunodes: Api<GpuNode> = Api::all(self.client.clone());
        for (n, _) in &self.nodes {
            let _ = gpunodes.delete(n, &Default::default()).await;
        }
        self.sim.shutdown().await;
        delete_namespace(&self.client, &self.ns).await;
    }
}

/// Deletes the GpuNodes and Nodes an earlier scenario left behind (one that failed
/// before its teardown): every scenario's nodes are named `e2e-*`, and scenarios run
/// one at a time.
async fn remove_leftovers(client: &Client) -> Result<()> {
    let gpunodes: Api<GpuNode> = Api::all(client.clone());
    for g in gpunodes.list(&Default::default()).await? {
        if g.spec.node_name.starts_with("e2e-") {
            let _ = gpunodes.delete(&g.name_any(), &Default::default()).await;
        }
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for n in nodes.list(&Default::default()).await? {
        if n.name_any().starts_with("e2e-") {
            let _ = nodes.delete(&n.name_any(), &Default::default()).await;
        }
    }
    Ok(())
}

/// Creates namespace `name` if missing and waits for its default ServiceAccount.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    wait_default_sa(client, name).await
}

/// The operator binary with what every e2e operator shares: `kubeconfig`, its log
/// filter (`SOLGRID_E2E_OPERATOR_LOG`, else `default_log`), a free loopback HTTP
/// address, a 2-second requeue of running jobs, the e2e verifier image and the
/// simulated nodes' cheap proof-of-work settings ([`crate::SIM_VERIFY_ENV`]).
pub fn operator_command(kubeconfig: &Path, default_log: &str) -> Result<Command> {
    let mut cmd = Command::new(workspace_bin("solgrid-operator")?);
    cmd.env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("SOLGRID_E2E_OPERATOR_LOG").unwrap_or_else(|_| default_log.into()),
        )
        .arg(format!("--http-addr={}", free_addr("127.0.0.1")?))
        .arg("--running-requeue-seconds=2")
        .arg("--verifier-image=ghcr.io/solgrid/verifier:e2e")
        .envs(crate::SIM_VERIFY_ENV);
    Ok(cmd)
}

/// What following a job to `Settled` saw ([`follow_to_settled`]).
pub struct Followed {
    /// The status once `Settled`; `None` when it failed, a process died or time ran out.
    pub settled: Option<ComputeJobStatus>,
    /// Each phase and when it was first seen (seconds after `since`).
    pub phases: Vec<(ComputeJobPhase, f64)>,
    /// The last view of each worker pod (the workers may be deleted after settling).
    pub workers: Vec<Pod>,
}

/// Follows job `name` until it is `Settled` (or `Failed`, or `alive()` says a
/// process it needs died, or `timeout`), printing each phase as `label`, and keeps
/// the last view of its worker pods, looked at once more after settling (the last
/// view taken while following may predate a worker's finish).
pub async fn follow_to_settled(
    jobs: &Api<ComputeJob>,
    pods: &Api<Pod>,
    name: &str,
    (label, since): (&str, Instant),
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Followed {
    let workers = ListParams::default().labels(&format!("solgrid.dev/job={name}"));
    let mut f = Followed {
        settled: None,
        phases: Vec::new(),
        workers: Vec::new(),
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(j) = jobs.get(name).await
            && let Some(st) = j.status
        {
            if f.phases.last().map(|s| &s.0) != Some(&st.phase) {
                let at = since.elapsed().as_secs_f64();
                eprintln!(
                    "{label}: {name} +{at:.1} s {:?} {}",
                    st.phase,
                    st.message.clone().unwrap_or_default()
                );
                f.phases.push((st.phase, at));
            }
            match st.phase {
                ComputeJobPhase::Settled => {
                    f.settled = Some(st);
                    break;
                }
                ComputeJobPhase::Failed => break,
                _ => {}
            }
        }
        if let Ok(l) = pods.list(&workers).await
            && !l.items.is_empty()
        {
            f.workers = l.items;
        }
        if !alive() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if f.settled.is_some()
        && let Ok(l) = pods.list(&workers).await
    {
        for p in l.items {
            match f.workers.iter_mut().find(|w| w.name_any() == p.name_any()) {
                Some(w) => *w = p,
                None => f.workers.push(p),
            }
        }
    }
    f
}

/// The workers were seen, each placed by `solgrid-scheduler` (the chart's
/// kube-scheduler with the extender) on one of the `nodes`.
pub fn assert_placed_on(workers: &[Pod], nodes: &[&str]) {
    assert!(!workers.is_empty(), "no worker pod seen");
    for p in workers {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.scheduler_name.as_deref(), Some("solgrid-scheduler"));
        let node = spec.node_name.clone().unwrap_or_default();
        assert!(nodes.contains(&node.as_str()), "{} on {node}", p.name_any());
    }
}

/// The workers' running time in all, ms: each terminated container's start to
/// finish (what a job is billed for).
pub fn workers_ran_ms(workers: &[Pod]) -> i64 {
    workers
        .iter()
        .filter_map(|p| {
            let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
            let t = cs.state.as_ref()?.terminated.as_ref()?;
            Some(
                t.finished_at.as_ref()?.0.as_millisecond()
                    - t.started_at.as_ref()?.0.as_millisecond(),
            )
        })
        .sum()
}

/// The payer address of the example job's Secret (`examples/computejob-llm-finetune.yaml`).
pub fn example_payer() -> String {
    crate::example("computejob-llm-finetune.yaml").expect("the example")[0]["stringData"]["address"]
        .as_str()
        .expect("the example Secret's address")
        .to_string()
}

/// A fresh cluster: the example's `minReputation` (600) is above what a node has
/// after its first verification; lowers it to the least of `scores` (what the
/// honest nodes have). Returns the value it was lowered from, if it was.
pub fn fit_min_reputation(job: &mut serde_json::Value, scores: &[u16]) -> Option<u64> {
    let min_score = scores.iter().copied().min().unwrap_or(0) as u64;
    let asked = job["spec"]["minReputation"].as_u64().unwrap_or(0);
    (asked > min_score).then(|| {
        job["spec"]["minReputation"] = min_score.into();
        asked
    })
}

/// Waits until the named GpuNodes are `Active`; their reputations (`None` on timeout).
pub async fn wait_gpunodes_active(
    client: &Client,
    names: &[&str],
    timeout: Duration,
) -> Option<Vec<u16>> {
    let api: Api<GpuNode> = Api::all(client.clone());
    wait_for(timeout, || async {
        let mut scores = Vec::new();
        for n in names {
            let st = api.get(n).await.ok()?.status?;
            (st.phase == GpuNodePhase::Active).then_some(())?;
            scores.push(st.reputation.score);
        }
        Some(scores)
    })
    .await
}

/// A simulated node, its GpuNode (provider-owned spec) and its inventory.
pub async fn add_gpunode(
    client: &Client,
    sim: &NodeSim,
    node: &str,
    gpus: u32,
    wallet: &str,
    inventory: bool,
) -> Result<()> {
    sim.add_node(SimNodeSpec::rtx4090(node, gpus)).await?;
    let gn = serde_json::json!({
        "apiVersion": solgrid_crds::API_VERSION, "kind": "GpuNode",
        "metadata": {"name": node},
        "spec": {
            "nodeName": node, "payoutWallet": wallet,
            "location": {"region": "eu-west", "country": "DE",
                         "coordinates": {"latitude": 50.11, "longitude": 8.68}},
        },
    });
    Api::<GpuNode>::all(client.clone())
        .patch(
            node,
            &PatchParams::apply("solgrid-e2e").force(),
            &Patch::Apply(gn),
        )
        .await
        .with_context(|| format!("GpuNode {node}"))?;
    if inventory {
        sim.publish_inventory(node, node).await?;
    }
    Ok(())
}

/// Writes an embedded-ledger journal where `payer` holds `amount` IO (before an
/// operator opens it).
pub fn fund_journal(path: &Path, payer: &str, amount: u64) -> Result<()> {
    mint_journal(
        path,
        &format!("e2e-fund-{payer}"),
        Token::Io,
        Account::Wallet(payer.to_string()),
        amount,
    )
}

/// Mints `amount` of `token` into `to` in a journal no operator holds (before the
/// operators start, or while they are stopped), once per `key`.
pub fn mint_journal(path: &Path, key: &str, token: Token, to: Account, amount: u64) -> Result<()> {
    let ledger = EmbeddedLedger::open(path, journal_config())?;
    ledger.apply(&[Intent {
        key: key.to_string(),
        movements: vec![Movement {
            token,
            op: Op::Mint { to, amount },
        }],
    }])?;
    ledger.sync()?;
    Ok(())
}

fn journal_config() -> EmbeddedConfig {
    EmbeddedConfig {
        block_time: Some(Duration::from_millis(400)),
        ..EmbeddedConfig::default()
    }
}

/// Reads a journal an operator holds (locked) through a copy.
pub fn read_journal(path: &Path) -> Result<EmbeddedLedger> {
    let copy = path.with_extension(format!("copy-{}.jsonl", std::process::id()));
    std::fs::copy(path, &copy)?;
    let l = EmbeddedLedger::open(&copy, EmbeddedConfig::default())
        .with_context(|| format!("replaying a copy of {}", path.display()))?;
    let _ = std::fs::remove_file(&copy);
    Ok(l)
}

/// The extender binary where the chart's kube-scheduler calls it, with the market
/// rules a fresh cluster can meet (nodes hired at once, no stake required).
pub fn start_extender(
    tc: &TestCluster,
    dir: &Path,
    name: &str,
    kubeconfig: Option<&Path>,
) -> Result<Proc> {
    Ok(start_extender_with_metrics(tc, dir, name, kubeconfig)?.0)
}

/// [`start_extender`], also returning the loopback address of its metrics.
///
/// A fresh cluster cannot meet two market rules the extender enforces: nodes are
/// hired only 12 h after they are first seen, and only when staked. The extender
/// runs with `--market-config` `{"matching": {"minNodeAgeMs": 0, "requireStake":
/// false}}` so the first jobs can run on brand-new nodes.
pub fn start_extender_with_metrics(
    tc: &TestCluster,
    dir: &Path,
    name: &str,
    kubeconfig: Option<&Path>,
) -> Result<(Proc, std::net::SocketAddr)> {
    let market = dir.join(format!("{name}-market.json"));
    std::fs::write(
        &market,
        serde_json::to_vec(&serde_json::json!({
            "matching": {"minNodeAgeMs": 0, "requireStake": false}
        }))?,
    )?;
    let metrics = free_addr("127.0.0.1")?;
    let mut cmd = Command::new(workspace_bin("solgrid-scheduler")?);
    cmd.env("KUBECONFIG", kubeconfig.unwrap_or(tc.kubeconfig()))
        .env("RUST_LOG", "info")
        .arg(format!("--listen={}", tc.extender_addr()))
        .arg(format!("--metrics-listen={metrics}"))
        .arg(format!("--market-config={}", market.display()));
    let proc = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
    Ok((proc, metrics))
}
