//! `solgrid-scheduler-load`: an HTTP load generator for the extender.
//!
//! Fires `filter` + `prioritize` pairs (one kube-scheduler scheduling cycle each)
//! from `--concurrency` keep-alive connections at a running
//! `solgrid-scheduler --snapshot` for `--duration` seconds, then prints calls per
//! second and latency percentiles per verb. The request bodies are those of a pod
//! of the generated job `bench-train` over the generated node names
//! (`solgrid-scheduler --gen-snapshot N`); prioritize gets the nodes that passed
//! filter, as kube-scheduler sends them.

use anyhow::{Context, bail};
use axum::body::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use solgrid_scheduler::snapshot::{self, GEN_JOB};
use solgrid_scheduler::wire::ExtenderFilterResult;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "solgrid-scheduler-load",
    about = "HTTP load generator for solgrid-scheduler"
)]
struct Args {
    /// The extender's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    url: String,
    /// Concurrent keep-alive connections, each sending filter then prioritize in a loop.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Nodes in the server's generated snapshot (names gpu-node-00000 ...).
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Candidate names per filter request (default: all --nodes; kube-scheduler sends
    /// the nodes its own filters passed, e.g. ~10% of a 5,000-node cluster).
    #[arg(long)]
    names: Option<usize>,
    /// The generated job whose pod is scheduled.
    #[arg(long, default_value = GEN_JOB)]
    job: String,
    /// Runtime threads of the load generator (1 leaves the other core to the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many calls in all (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_calls: u64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn post(client: &HttpClient, url: &str, body: &Bytes) -> anyhow::Result<(u16, Bytes)> {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let b = resp.into_body().collect().await?.to_bytes();
    Ok((status, b))
}

#[derive(Default)]
struct Stats {
    filter: Vec<u32>,
    prioritize: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn line(name: &str, v: &mut [u32], secs: f64) -> String {
    v.sort_unstable();
    format!(
        "  {name:<11} {:>8} calls {:>9.0}/s   p50 {:>7.3} ms   p90 {:>7.3} ms   p99 {:>7.3} ms   max {:>8.3} ms",
        v.len(),
        v.len() as f64 / secs,
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 0.99),
        v.last().copied().unwrap_or(0) as f64 / 1000.0
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build_http();
    let n = args.names.unwrap_or(args.nodes).min(args.nodes);
    // spread the candidates over the fleet
    let step = (args.nodes / n.max(1)).max(1);
    let names: Vec<String> = (0..n).map(|i| snapshot::gen_node_name(i * step)).collect();
    let filter_body = Bytes::from(snapshot::gen_args_body(&args.job, &names));
    let filter_url = format!("{base}/filter");
    let prio_url = format!("{base}/prioritize");
    let (code, out) = post(&client, &filter_url, &filter_body)
        .await
        .with_context(|| format!("first filter call to {filter_url}"))?;
    if code != 200 {
        bail!("filter answered {code}: {}", String::from_utf8_lossy(&out));
    }
    let res: ExtenderFilterResult = serde_json::from_slice(&out).context("filter answer")?;
    let passed = res.node_names.unwrap_or_default();
    if !res.error.is_empty() {
        // e.g. the job is not in the extender's snapshot: every call is answered
        // with this (transient) error; the load still measures the path
        println!(
            "load: note: the first filter call answered an error: {}",
            res.error
        );
    }
    let prio_body = Bytes::from(snapshot::gen_args_body(&args.job, &passed));
    println!(
        "load: {} connections, {:.0} s, filter on {} names ({} KiB), prioritize on the {} that pass ({} KiB)",
        args.concurrency,
        args.duration,
        names.len(),
        filter_body.len() / 1024,
        passed.len(),
        prio_body.len() / 1024
    );
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration.max(0.1));
    let start = Instant::now();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, fu, pu, fb, pb) = (
            client.clone(),
            filter_url.clone(),
            prio_url.clone(),
            filter_body.clone(),
            prio_body.clone(),
        );
        let calls = calls.clone();
        let max = args.max_calls;
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            while Instant::now() < deadline
                && (max == 0 || calls.load(std::sync::atomic::Ordering::Relaxed) < max)
            {
                for (url, body, is_filter) in [(&fu, &fb, true), (&pu, &pb, false)] {
                    let t = Instant::now();
                    let r = post(&client, url, body).await;
                    let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match r {
                        Ok((200, _)) => {
                            if is_filter {
                                st.filter.push(us)
                            } else {
                                st.prioritize.push(us)
                            }
                        }
                        Ok((c, b)) => {
                            st.errors += 1;
                            st.first_error.get_or_insert_with(|| {
                                format!("{c}: {}", String::from_utf8_lossy(&b))
                            });
                        }
                        Err(e) => {
                            st.errors += 1;
                            st.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
            st
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        let st = t.await?;
        all.filter.extend(st.filter);
        all.prioritize.extend(st.prioritize);
        all.errors += st.errors;
        if all.first_error.is_none() {
            all.first_error = st.first_error;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let total = all.filter.len() + all.prioritize.len();
    let mut both: Vec<u32> = all
        .filter
        .iter()
        .chain(all.prioritize.iter())
        .copied()
        .collect();
    println!("results over {secs:.2} s:");
    println!("{}", line("filter", &mut all.filter, secs));
    println!("{}", line("prioritize", &mut all.prioritize, secs));
    println!("{}", line("all", &mut both, secs));
    println!(
        "calls/s: {:.0} (filter + prioritize; {:.0} scheduling cycles/s), errors: {}",
        total as f64 / secs,
        total as f64 / secs / 2.0,
        all.errors
    );
    if let Some(e) = all.first_error {
        println!("first error: {e}");
    }
    if all.errors > 0 {
        bail!("{} requests failed", all.errors);
    }
    Ok(())
}
