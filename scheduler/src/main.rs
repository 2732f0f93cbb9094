//! `solgrid-scheduler`: the kube-scheduler HTTP extender.

use anyhow::Context;
use clap::Parser;
use solgrid_scheduler::cache::Cache;
use solgrid_scheduler::convert::MarketConfig;
use solgrid_scheduler::extender::Extender;
use solgrid_scheduler::metrics::Metrics;
use solgrid_scheduler::server::{self, AppState, ServerConfig};
use solgrid_scheduler::snapshot::{self, Snapshot};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "solgrid-scheduler",
    version,
    about = "kube-scheduler HTTP extender: filters and scores nodes by GPU fit, price, reputation and location"
)]
struct Args {
    /// Address of POST /filter and POST /prioritize (loopback: kube-scheduler calls
    /// the extender from the same pod).
    #[arg(long, env = "SOLGRID_SCHEDULER_LISTEN", default_value = solgrid_scheduler::DEFAULT_LISTEN)]
    listen: String,
    /// Address of GET /healthz, /readyz and /metrics [default: 0.0.0.0:8889; when
    /// not given and that address is taken, the extender runs without it].
    #[arg(long, env = "SOLGRID_SCHEDULER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Serve from this YAML/JSON file of GpuNodes, ComputeJobs (and Nodes) instead of a cluster.
    #[arg(long, env = "SOLGRID_SCHEDULER_SNAPSHOT")]
    snapshot: Option<PathBuf>,
    /// Write a synthetic snapshot of N GpuNodes (and two ComputeJobs) to --out (or stdout) and exit.
    #[arg(long, value_name = "N")]
    gen_snapshot: Option<usize>,
    /// Where --gen-snapshot writes (JSON if it ends in .json, else YAML).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of --gen-snapshot.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Market configuration (YAML/JSON: `matching:` weights and thresholds, `pricing:` token rates).
    #[arg(long, env = "SOLGRID_MARKET_CONFIG")]
    market_config: Option<PathBuf>,
    /// Largest filter/prioritize body accepted (bytes); larger ones get 413. The
    /// default fits every nodeCacheCapable request of a 5,000-node cluster (see
    /// docs/scheduler.md); raise it for nodeCacheCapable: false.
    #[arg(long, env = "SOLGRID_SCHEDULER_MAX_BODY_BYTES", default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// filter/prioritize requests handled at once; more wait for a slot (within
    /// the request timeout).
    #[arg(long, env = "SOLGRID_SCHEDULER_MAX_CONCURRENT_REQUESTS", default_value_t = server::DEFAULT_MAX_CONCURRENT_REQUESTS)]
    max_concurrent_requests: usize,
    /// Every request is answered within this (ms): past it, filter answers with an
    /// Error result and prioritize with 503. Keep it below kube-scheduler's
    /// httpTimeout for the extender (2 s as shipped).
    #[arg(
        long,
        env = "SOLGRID_SCHEDULER_REQUEST_TIMEOUT_MS",
        default_value_t = server::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64
    )]
    request_timeout_ms: u64,
    /// At most one cache rebuild per this many ms while watch events stream in.
    #[arg(long, default_value_t = 100)]
    rebuild_debounce_ms: u64,
    /// Log as JSON lines.
    #[arg(long, env = "SOLGRID_LOG_JSON")]
    log_json: bool,
    /// Worker threads of the runtime (0: one per core).
    #[arg(long, env = "SOLGRID_SCHEDULER_THREADS", default_value_t = 0)]
    threads: usize,
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

fn load_market_config(path: Option<&PathBuf>) -> anyhow::Result<MarketConfig> {
    let Some(p) = path else {
        return Ok(MarketConfig::default());
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.gen_snapshot {
        let s = snapshot::generate(n, args.seed);
        let json = args
            .out
            .as_ref()
            .is_some_and(|p| p.extension().is_some_and(|e| e == "json"));
        let text = if json { s.to_json()? } else { s.to_yaml()? };
        match &args.out {
            Some(p) => {
                std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?
            }
            None => print!("{text}"),
        }
        return Ok(());
    }
    init_logs(args.log_json);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    rt.build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let market = Arc::new(load_market_config(args.market_config.as_ref())?);
    let metrics = Metrics::new();
    let extender = Extender::new(market.matching.clone(), Some(metrics.clone()));
    let cache = Arc::new(Cache::new());
    let mut watch_task = None;
    if let Some(path) = &args.snapshot {
        let s =
            Snapshot::load(path).with_context(|| format!("loading snapshot {}", path.display()))?;
        let index = s.index(&market);
        metrics.set_cache_sizes(index.gpunode_count, index.node_count, index.jobs.len());
        tracing::info!(
            path = %path.display(),
            gpunodes = index.gpunode_count,
            nodes = index.node_count,
            computejobs = index.jobs.len(),
            skipped = s.skipped,
            "serving from a snapshot file"
        );
        cache.publish(index);
        cache.set_ready();
        metrics.cache_ready.set(1);
    } else {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the cluster (use --snapshot FILE to run without one)")?;
        let (c, m, mk) = (cache.clone(), metrics.clone(), market.clone());
        let debounce = Duration::from_millis(args.rebuild_debounce_ms);
        watch_task = Some(tokio::spawn(async move {
            if let Err(e) = solgrid_scheduler::watch::run(client, c, mk, m, debounce).await {
                tracing::error!(error = %e, "watches stopped");
            }
        }));
    }
    let cfg = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        max_concurrent_requests: args.max_concurrent_requests.max(1),
    };
    let state = AppState::new(cache, extender, metrics);
    let app = server::router(state.clone(), &cfg);
    let ops = server::ops_router(state, &cfg);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let ops_listener = match &args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?,
        ),
        None => {
            match tokio::net::TcpListener::bind(solgrid_scheduler::DEFAULT_METRICS_LISTEN).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(
                        addr = solgrid_scheduler::DEFAULT_METRICS_LISTEN,
                        error = %e,
                        "default metrics address unavailable: serving without /metrics, /healthz and /readyz (set --metrics-listen)"
                    );
                    None
                }
            }
        }
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        max_body_bytes = cfg.max_body_bytes,
        max_concurrent_requests = cfg.max_concurrent_requests,
        request_timeout_ms = cfg.request_timeout.as_millis() as u64,
        "solgrid-scheduler extender (filter, prioritize) listening"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ops_task = match ops_listener {
        Some(l) => {
            tracing::info!(metrics = %l.local_addr()?, "metrics, healthz and readyz listening");
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(server::serve(l, ops, async move {
                let _ = rx.wait_for(|s| *s).await;
            })))
        }
        None => None,
    };
    server::serve(listener, app, server::shutdown_signal()).await?;
    let _ = stop_tx.send(true);
    if let Some(t) = ops_task {
        let _ = t.await;
    }
    if let Some(t) = watch_task {
        t.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
