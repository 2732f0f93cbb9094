//! `kubectl-solgrid`: on PATH, `kubectl solgrid <command>` runs it.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kubectl_solgrid::{MarketConfig, format, quote, validate, views};
use solgrid_crds::{ComputeJob, GpuNode, StakePosition};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-solgrid",
    bin_name = "kubectl solgrid",
    version,
    about = "solgrid from kubectl: quote a job, list jobs, GPU nodes, earnings and stake, validate manifests"
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
        return MarketConfig::parse(&read(p)?).with_context(|| format!("parsing {}", p.display()));
    }
    if let Some(c) = client {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), &cli.solgrid_namespace);
        if let Ok(Some(cm)) = api.get_opt(&cli.market_configmap).await
            && let Some(text) = cm.data.as_ref().and_then(|d| d.get("market.json"))
        {
            return MarketConfig::parse(text).context("parsing the market ConfigMap");
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

async fn run(cli: Cli) -> Result<ExitCode> {
    let now = chrono::Utc::now();
    match &cli.command {
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
                    let list = Api::<GpuNode>::all(c.clone())
                        .list(&ListParams::default())
                        .await
                        .context("listing GpuNodes")?;
                    (list.items, market(&cli, Some(&c)).await?)
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
            let c = client().await?;
            let market = market(&cli, Some(&c)).await?;
            let jobs = namespaced::<ComputeJob>(&c, &cli)
                .list(&ListParams::default())
                .await
                .context("listing ComputeJobs")?;
            print!(
                "{}",
                format::table(
                    views::JOBS_HEADER,
                    &views::job_rows(&jobs.items, &market.pricing, now)
                )
            );
        }
        Command::Nodes => {
            let c = client().await?;
            let market = market(&cli, Some(&c)).await?;
            let nodes = Api::<GpuNode>::all(c.clone())
                .list(&ListParams::default())
                .await
                .context("listing GpuNodes")?;
            print!(
                "{}",
                format::table(
                    views::NODES_HEADER,
                    &views::node_rows(&nodes.items, &market.pricing, now)
                )
            );
        }
        Command::Earnings { by_wallet } => {
            let c = client().await?;
            let market = market(&cli, Some(&c)).await?;
            let nodes = Api::<GpuNode>::all(c.clone())
                .list(&ListParams::default())
                .await
                .context("listing GpuNodes")?;
            let header = if *by_wallet {
                views::EARNINGS_BY_WALLET_HEADER
            } else {
                views::EARNINGS_BY_NODE_HEADER
            };
            print!(
                "{}",
                format::table(
                    header,
                    &views::earnings_rows(&nodes.items, &market.pricing, *by_wallet)
                )
            );
        }
        Command::Stake => {
            let c = client().await?;
            let market = market(&cli, Some(&c)).await?;
            let stakes = namespaced::<StakePosition>(&c, &cli)
                .list(&ListParams::default())
                .await
                .context("listing StakePositions")?;
            print!(
                "{}",
                format::table(
                    views::STAKE_HEADER,
                    &views::stake_rows(&stakes.items, &market.pricing, now)
                )
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
