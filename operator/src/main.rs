//! `solgrid-operator`: runs the controllers while this replica holds the leader
//! lease, and serves `/metrics`, `/healthz`, `/readyz`.

use clap::Parser;
use solgrid_operator::config::Cli;
use solgrid_operator::context::{Caches, Context, LedgerHandle, LedgerHandleError, SystemClock};
use solgrid_operator::leader::{self, State};
use solgrid_operator::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `solgrid-operator verify-worker --seed <u64> --size <n>`: the proof-of-work
    // worker run by the verification pods (docs/staking.md)
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("verify-worker") {
        std::process::exit(solgrid_operator::verification::worker_main(&args[2..]));
    }
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    let config = Arc::new(cli.resolve()?);
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(State::default());
    let shutdown = CancellationToken::new();

    let http = tokio::spawn(solgrid_operator::http::serve(
        config.http_addr,
        metrics.clone(),
        state.clone(),
        shutdown.clone(),
    ));

    let client = kube::Client::try_default().await?;
    // With the embedded ledger, the journal file is locked by the replica that has
    // it open (the leader, which has the volume): a standby waits for it here
    // rather than crash-looping, and takes over when the leader's process ends.
    let ledger = loop {
        let cfg = config.clone();
        match tokio::task::spawn_blocking(move || LedgerHandle::from_config(&cfg)).await? {
            Ok(ledger) => break ledger,
            Err(LedgerHandleError::Embedded(solgrid_ledger::LedgerError::Locked { path })) => {
                info!(path = %path.display(), "ledger journal is held by another replica; waiting");
                // A standby is ready (as one waiting for the lease is): a rolling
                // update (maxUnavailable 0) stops the old leader only once the new
                // pod is ready, and only then is the journal free.
                state.ready.store(true, Ordering::Release);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    info!(ledger = ledger.kind(), "ledger opened");
    let caches = Caches::spawn(client.clone(), &config, shutdown.clone());
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            config.clone(),
            Arc::new(ledger),
            metrics.clone(),
            Arc::new(SystemClock),
        )
        .with_caches(caches),
    );
    state.ready.store(true, Ordering::Release);

    {
        let on_ctrl_c = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            info!("shutting down");
            on_ctrl_c.cancel();
        });
        #[cfg(unix)]
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    term.recv().await;
                    info!("SIGTERM: shutting down");
                    shutdown.cancel();
                }
            });
        }
    }

    let result = leader::run_as_leader(client, config, metrics, state, shutdown.clone(), |token| {
        solgrid_operator::run_controllers(ctx.clone(), token)
    })
    .await;
    shutdown.cancel();
    if let Err(e) = &result {
        error!(error = %e, "leader election failed");
    }
    let _ = http.await;
    result
}

fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // colours only on a terminal: a log file or a container log stays plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
