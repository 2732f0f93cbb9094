//! `solgrid-sim`: run the whole market in one process and write a report and plots.

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use solgrid_sim::{SimConfig, plots};
use std::path::PathBuf;
use std::time::Instant;

/// Simulate a solgrid market: a fleet of GPU providers, buyers submitting jobs,
/// dynamic prices, settlement on the embedded ledger, emission, staking and slashing.
#[derive(Parser, Debug)]
#[command(name = "solgrid-sim", version)]
struct Args {
    /// Provider wallets (each runs 1–3 nodes); ignored when --nodes is set.
    #[arg(long, env = "SOLGRID_SIM_PROVIDERS", default_value_t = 300)]
    providers: u32,
    /// Exact number of nodes.
    #[arg(long, env = "SOLGRID_SIM_NODES")]
    nodes: Option<u32>,
    /// Exact number of jobs submitted over the run (default: derived from --load).
    #[arg(long, env = "SOLGRID_SIM_JOBS")]
    jobs: Option<u64>,
    /// Mean job arrivals per hour (instead of --jobs).
    #[arg(long, env = "SOLGRID_SIM_JOBS_PER_HOUR")]
    jobs_per_hour: Option<u64>,
    /// Target load, percent of fleet GPU-hours, when neither --jobs nor --jobs-per-hour is set.
    #[arg(long, env = "SOLGRID_SIM_LOAD", default_value_t = 65)]
    load: u32,
    /// Simulated days.
    #[arg(long, env = "SOLGRID_SIM_DAYS", default_value_t = 7)]
    days: u32,
    /// Random seed: same seed, same report.json.
    #[arg(long, env = "SOLGRID_SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// Percent of jobs paid in USDC.
    #[arg(long, env = "SOLGRID_SIM_USDC_SHARE", default_value_t = 30)]
    usdc_share: u32,
    /// Output directory (report.json, report.txt, *.svg).
    #[arg(long, env = "SOLGRID_SIM_OUT", default_value = "out/demo")]
    out: PathBuf,
    /// No progress bar, no summary (files are still written).
    #[arg(long, short, env = "SOLGRID_SIM_QUIET")]
    quiet: bool,
    /// Skip the SVG plots.
    #[arg(long)]
    no_plots: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = SimConfig {
        seed: args.seed,
        providers: args.providers,
        nodes: args.nodes,
        jobs: args.jobs,
        jobs_per_hour: args.jobs_per_hour,
        load_pct: args.load,
        days: args.days.max(1),
        usdc_share_pct: args.usdc_share.min(100),
        ..SimConfig::default()
    };
    let started = Instant::now();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cfg.days as u64 * 24 + 1)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} simulating [{bar:40}] hour {pos}/{len} ({elapsed}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let (sim, report) = solgrid_sim::run(cfg, |_| bar.inc(1)).context("simulation failed")?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("report.json"), report.to_json() + "\n")
        .context("writing report.json")?;
    let summary = report.summary();
    std::fs::write(args.out.join("report.txt"), &summary).context("writing report.txt")?;
    let plots = if args.no_plots {
        Vec::new()
    } else {
        plots::write_all(&args.out, &sim.series, report.ledger.unit).map_err(anyhow::Error::msg)?
    };
    if !args.quiet {
        print!("{summary}");
        println!(
            "wrote {}/report.json, report.txt and {} plots",
            args.out.display(),
            plots.len()
        );
    }
    println!(
        "simulated {} nodes, {} jobs, {} days in {:.2} s",
        report.fleet.nodes,
        report.jobs.submitted,
        report.fleet.days,
        elapsed.as_secs_f64()
    );
    Ok(())
}
