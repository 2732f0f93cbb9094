//! `kubectl-solgrid`: on PATH, `kubectl solgrid <command>` runs it.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kubectl_solgrid::{MarketConfig, format, quote, validate, views, wallet};
use solgrid_crds::{ComputeJob, GpuNode, StakePosition};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-solgrid",
    bin_name = "kubectl solgrid",
    version,
    about = "solgrid from kubectl: quote a job, list jobs, GPU nodes, earnings and stake, validate manifests, create wallets, fund them (admins)"
)]
struct Cli {
    /// Namespace of ComputeJobs and StakePositions (default: the kubeconfig's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    /// Namespace solgrid is installed in (for its market ConfigMap).
    #[arg(
        long,
        global = true,
        env = "SOLGRID_NAMESPACE",
        default_value = "solgrid-system"
    )]
    solgrid_namespace: String,
    /// Name of the chart's market ConfigMap (`<release>-market`).
    #[arg(long, global = true, default_value = "solgrid-market")]
    market_configmap: String,
    /// Market tables from this file (the chart's market.json) instead of the cluster's ConfigMap.
    #[arg(long, global = true)]
    market_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What a ComputeJob would cost now: the quote per GPU-hour and the escrow.
    Quote {
        /// File with the ComputeJob (other documents are ignored); `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Price against GpuNodes from this file instead of the cluster (offline).
        #[arg(long)]
        nodes: Option<PathBuf>,
    },
    /// ComputeJobs: phase, GPUs, locked price, cost, age.
    Jobs,
    /// GpuNodes: phase, GPUs, model, reputation, stake, reward eligibility.
    Nodes,
    /// What each node (or payout wallet) has earned.
    Earnings {
        /// Sum per payout wallet instead of per node.
        #[arg(long)]
        by_wallet: bool,
    },
    /// StakePositions: amount, phase, rewards, unbonding.
    Stake,
    /// Check manifests offline, as the API server would; exit 1 on the first refusal.
    Validate {
        /// Files to check (`-` for stdin); repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Wallet Secrets (address + keypair) that ComputeJobs and StakePositions pay from.
    Wallet {
        #[command(subcommand)]
        command: WalletCommand,
    },
    /// Fund a wallet on the embedded ledger (cluster admins only): creates a
    /// LedgerGrant, which the operator executes exactly once, and waits for it.
    Fund {
        /// The wallet address (`kubectl solgrid wallet address --secret NAME`).
        #[arg(long)]
        wallet: String,
        /// IO or USDC.
        #[arg(long, default_value = "IO")]
        token: String,
        /// Base units of the token (IO has 9 decimals: 1 IO = 1000000000; USDC 6).
        #[arg(long)]
        amount: u64,
        /// Name of the LedgerGrant (default: generated). Running again with the same
        /// name never funds twice: it waits for the grant already there.
        #[arg(long)]
        name: Option<String>,
        /// Seconds to wait for the operator to execute it; 0 returns at once.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
}

#[derive(Subcommand, Debug)]
enum WalletCommand {
    /// Generate a new keypair and store it in a Secret (`address`, `keypair`) in the
    /// namespace (-n); prints the address. Never replaces an existing Secret.
    New {
        /// Name of the Secret (what payerSecretRef / ownerSecretRef name).
        #[arg(long)]
        secret: String,
        /// Print the Secret's manifest (with the keypair!) instead of creating it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the wallet address a Secret holds.
    Address {
        #[arg(long)]
        secret: String,
    },
}

fn read(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

async fn client() -> Result<kube::Client> {
    kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a Kubernetes cluster: {e}\n\
             (kubectl solgrid reads the cluster of your current kubeconfig context, or the \
             in-cluster service account; check `kubectl config current-context`)"
        )
    })
}

/// The market tables: --market-config, else the cluster's ConfigMap, else defaults.
async fn market(cli: &Cli, client: Option<&kube::Client>) -> Result<MarketConfig> {
    if let Some(p) = &cli.market_config {
        return kubectl_solgrid::parse_market_config(&read(p)?)
            .with_context(|| format!("parsing {}", p.display()));
    }
    if let Some(c) = client {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), &cli.solgrid_namespace);
        if let Ok(Some(cm)) = api.get_opt(&cli.market_configmap).await
            && let Some(text) = cm.data.as_ref().and_then(|d| d.get("market.json"))
        {
            return kubectl_solgrid::parse_market_config(text)
                .context("parsing the market ConfigMap");
        }
        eprintln!(
            "note: no ConfigMap {}/{} with market.json: using the market library's defaults",
            cli.solgrid_namespace, cli.market_configmap
        );
    }
    Ok(MarketConfig::default())
}

fn namespaced<K>(c: &kube::Client, cli: &Cli) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    if cli.all_namespaces {
        Api::all(c.clone())
    } else if let Some(ns) = &cli.namespace {
        Api::namespaced(c.clone(), ns)
    } else {
        Api::default_namespaced(c.clone())
    }
}

/// The cluster's client and its market tables.
async fn cluster(cli: &Cli) -> Result<(kube::Client, MarketConfig)> {
    let c = client().await?;
    let market = market(cli, Some(&c)).await?;
    Ok((c, market))
}

/// Every object `api` serves (`what` names them in the error).
async fn list<K>(api: Api<K>, what: &str) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {what}"))?
        .items)
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", format::table(header, rows));
}

fn parse_docs<T: serde::de::DeserializeOwned>(text: &str, kind: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(de)?;
        if v["kind"] == kind {
            out.push(serde_json::from_value(v).with_context(|| format!("a {kind} document"))?);
        }
    }
    Ok(out)
}

/// The namespace of namespaced writes: -n, else the kubeconfig's.
fn namespace_of(c: &kube::Client, cli: &Cli) -> String {
    cli.namespace
        .clone()
        .unwrap_or_else(|| c.default_namespace().to_string())
}

async fn wallet_command(cli: &Cli, command: &WalletCommand) -> Result<ExitCode> {
    use k8s_openapi::api::core::v1::Secret;
    match command {
        WalletCommand::New { secret, dry_run } => {
            let kp = solgrid_ledger::WalletKeypair::generate()?;
            if *dry_run {
                let ns = cli.namespace.clone().unwrap_or_else(|| "default".into());
                let s = wallet::wallet_secret(secret, &ns, &kp);
                let mut v = serde_json::to_value(&s)?;
                v["apiVersion"] = "v1".into();
                v["kind"] = "Secret".into();
                eprintln!(
                    "note: this manifest holds the wallet's keypair: whoever reads it can spend from {}",
                    kp.address()
                );
                print!("{}", serde_yaml_ng::to_string(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let c = client().await?;
            let ns = namespace_of(&c, cli);
            let api: Api<Secret> = Api::namespaced(c, &ns);
            match api
                .create(
                    &kube::api::PostParams::default(),
                    &wallet::wallet_secret(secret, &ns, &kp),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => bail!(
                    "Secret {ns}/{secret} already exists: a wallet Secret is never replaced \
                     (its keypair may hold funds); choose another name"
                ),
                Err(e) => return Err(e).with_context(|| format!("creating Secret {ns}/{secret}")),
            }
            eprintln!(
                "created Secret {ns}/{secret} with a new wallet (address and keypair); \
                 name it in payerSecretRef / ownerSecretRef"
            );
            println!("{}", kp.address());
        }
        WalletCommand::Address { secret } => {
            let c = client().await?;
            let ns = namespace_of(&c, cli);
            let api: Api<Secret> = Api::namespaced(c, &ns);
            let s = api
                .get(secret)
                .await
                .with_context(|| format!("reading Secret {ns}/{secret}"))?;
            match wallet::secret_address(&s) {
                Some(a) => println!("{a}"),
                None => bail!("Secret {ns}/{secret} holds no valid wallet `address`"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn fund(
    wallet_address: &str,
    token: &str,
    amount: u64,
    name: Option<&str>,
    wait: u64,
) -> Result<ExitCode> {
    use kube::api::PostParams;
    use solgrid_crds::LedgerGrant;
    use wallet::GrantState;
    let token = wallet::parse_token(token).map_err(|e| anyhow::anyhow!(e))?;
    let grant = wallet::ledger_grant(name, wallet_address, token, amount)
        .map_err(|e| anyhow::anyhow!(e))?;
    let c = client().await?;
    let api: Api<LedgerGrant> = Api::all(c);
    let created = match api.create(&PostParams::default(), &grant).await {
        Ok(g) => g,
        Err(kube::Error::Api(e)) if e.code == 409 && name.is_some() => {
            let name = name.unwrap_or_default();
            let existing = api.get(name).await?;
            if existing.spec != grant.spec {
                bail!(
                    "LedgerGrant {name} already exists for another wallet, token or amount: \
                     choose another --name"
                );
            }
            eprintln!("LedgerGrant {name} already exists: not funding twice, waiting for it");
            existing
        }
        Err(kube::Error::Api(e)) if e.code == 403 => bail!(
            "not allowed to create LedgerGrants: funding a wallet is for cluster administrators ({})",
            e.message
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "the LedgerGrant CRD is not installed (install or upgrade the solgrid chart): {}",
            e.message
        ),
        Err(e) => return Err(e).context("creating the LedgerGrant"),
    };
    let gname = kube::ResourceExt::name_any(&created);
    eprintln!("LedgerGrant {gname}: {amount} {token} base units to {wallet_address}");
    if wait == 0 {
        println!("{gname}");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    let mut current = created;
    loop {
        match wallet::grant_state(&current) {
            GrantState::Executed(msg) => {
                println!("funded: LedgerGrant {gname}: {msg}");
                return Ok(ExitCode::SUCCESS);
            }
            GrantState::Refused(msg) => {
                eprintln!("LedgerGrant {gname} {msg}");
                return Ok(ExitCode::from(1));
            }
            GrantState::Pending => {}
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "LedgerGrant {gname} not executed after {wait}s: is the solgrid operator running? \
                 (`kubectl get ledgergrant {gname}` shows when it is)"
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        current = api.get(&gname).await.context("reading the LedgerGrant")?;
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let now = chrono::Utc::now();
    match &cli.command {
        Command::Wallet { command } => return wallet_command(&cli, command).await,
        Command::Fund {
            wallet,
            token,
            amount,
            name,
            wait,
        } => return fund(wallet, token, *amount, name.as_deref(), *wait).await,
        Command::Validate { files } => {
            let mut bad = false;
            for f in files {
                let verdicts = validate::validate_text(&read(f)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                print!("{}", validate::render(&f.display().to_string(), &verdicts));
                bad |= verdicts.iter().any(validate::Verdict::is_invalid);
            }
            return Ok(if bad {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Quote { file, nodes } => {
            let text = read(file)?;
            // Refuse what the API server would refuse before pricing it.
            let verdicts = validate::validate_text(&text).map_err(|e| anyhow::anyhow!(e))?;
            if verdicts.iter().any(validate::Verdict::is_invalid) {
                print!(
                    "{}",
                    validate::render(&file.display().to_string(), &verdicts)
                );
                return Ok(ExitCode::from(1));
            }
            let jobs: Vec<ComputeJob> = parse_docs(&text, "ComputeJob")?;
            if jobs.is_empty() {
                bail!("{}: no ComputeJob in the file", file.display());
            }
            let (gpunodes, market) = match nodes {
                Some(p) => (
                    parse_docs::<GpuNode>(&read(p)?, "GpuNode")?,
                    market(&cli, None).await?,
                ),
                None => {
                    let c = client().await?;
                    let nodes = list(Api::<GpuNode>::all(c.clone()), "GpuNodes").await?;
                    (nodes, market(&cli, Some(&c)).await?)
                }
            };
            for (i, job) in jobs.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                let name = job.metadata.name.clone().unwrap_or_default();
                let q = quote::quote_job(&job.spec, &gpunodes, &market.pricing, &market.fees)
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                print!("{}", quote::render(&name, &job.spec, &q, &market.pricing));
            }
        }
        Command::Jobs => {
            let (c, market) = cluster(&cli).await?;
            let jobs = list(namespaced::<ComputeJob>(&c, &cli), "ComputeJobs").await?;
            print_table(
                views::JOBS_HEADER,
                &views::job_rows(&jobs, &market.pricing, now),
            );
        }
        Command::Nodes => {
            let (c, market) = cluster(&cli).await?;
            let nodes = list(Api::<GpuNode>::all(c), "GpuNodes").await?;
            print_table(
                views::NODES_HEADER,
                &views::node_rows(&nodes, &market.pricing, now),
            );
        }
        Command::Earnings { by_wallet } => {
            let (c, market) = cluster(&cli).await?;
            let nodes = list(Api::<GpuNode>::all(c), "GpuNodes").await?;
            let header = if *by_wallet {
                views::EARNINGS_BY_WALLET_HEADER
            } else {
                views::EARNINGS_BY_NODE_HEADER
            };
            print_table(
                header,
                &views::earnings_rows(&nodes, &market.pricing, *by_wallet),
            );
        }
        Command::Stake => {
            let (c, market) = cluster(&cli).await?;
            let stakes = list(namespaced::<StakePosition>(&c, &cli), "StakePositions").await?;
            print_table(
                views::STAKE_HEADER,
                &views::stake_rows(&stakes, &market.pricing, now),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
