//! The cluster commands against a minimal fake API server (plain HTTP on loopback,
//! named by a kubeconfig): what `kubectl solgrid nodes`, `earnings`, `jobs`, `stake`
//! and `quote` print from the objects the API returns, and that `quote` picks up the
//! chart's market ConfigMap.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Serves canned JSON by path until the test ends; unknown paths get a 404 Status.
fn serve(routes: Vec<(&'static str, String)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(req) = support::read_request(&stream) else {
                continue;
            };
            let (status, body) = match routes.iter().find(|(p, _)| *p == req.path) {
                Some((_, b)) => ("200 OK", b.clone()),
                None => (
                    "404 Not Found",
                    r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"not found","reason":"NotFound","code":404}"#.to_string(),
                ),
            };
            support::respond(&mut stream, status, &body);
        }
    });
    port
}

fn kubeconfig(dir: &Path, port: u16) -> PathBuf {
    support::kubeconfig(dir, port, "ml")
}

fn list(api_version: &str, kind: &str, items: &str) -> String {
    format!(
        r#"{{"apiVersion":"{api_version}","kind":"{kind}List","metadata":{{"resourceVersion":"1"}},"items":[{items}]}}"#
    )
}

const GPUNODE: &str = r#"{"apiVersion":"solgrid.dev/v1alpha1","kind":"GpuNode",
 "metadata":{"name":"gpu-1","creationTimestamp":"2026-01-01T00:00:00Z"},
 "spec":{"nodeName":"gpu-1","payoutWallet":"7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU","location":{"region":"eu-west","country":"DE"}},
 "status":{"phase":"Active","gpuCount":8,"allocatedGpus":4,"model":"NVIDIA H100 80GB HBM3","reputation":{"score":812,"uptime":900,"jobSuccess":800,"verification":700,"age":600},
   "stakeTotal":20000000000000,"minimumStake":16000000000000,"rewardEligible":true,
   "earnings":{"computeIo":1500000000,"computeUsdc":2500000,"idleRewardsIo":7000000000}}}"#;

const JOB: &str = r#"{"apiVersion":"solgrid.dev/v1alpha1","kind":"ComputeJob",
 "metadata":{"name":"train","namespace":"ml","creationTimestamp":"2026-01-01T00:00:00Z"},
 "spec":{"template":{"image":"busybox"},"gpus":{"count":2},"workers":2,"maxDurationSeconds":3600,"maxPricePerGpuHour":5000000,"paymentToken":"USDC","payerSecretRef":{"name":"w"}},
 "status":{"phase":"Running","quote":{"pricePerGpuHour":3100000,"token":"USDC","referencePricePerGpuHour":2200000,"urgencyFactorBps":10000,"complexityFactorBps":10000,"supplyFactorBps":10000,"maxCost":0}}}"#;

const STAKE: &str = r#"{"apiVersion":"solgrid.dev/v1alpha1","kind":"StakePosition",
 "metadata":{"name":"mine","namespace":"ml","creationTimestamp":"2026-01-01T00:00:00Z"},
 "spec":{"nodeName":"gpu-1","amount":2000000000000,"ownerSecretRef":{"name":"w"}},
 "status":{"phase":"Active","locked":2000000000000,"rewardsAccrued":3000000000}}"#;

fn fake_cluster(market: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let mut routes = vec![
        (
            "/apis/solgrid.dev/v1alpha1/gpunodes",
            list("solgrid.dev/v1alpha1", "GpuNode", GPUNODE),
        ),
        (
            "/apis/solgrid.dev/v1alpha1/namespaces/ml/computejobs",
            list("solgrid.dev/v1alpha1", "ComputeJob", JOB),
        ),
        (
            "/apis/solgrid.dev/v1alpha1/computejobs",
            list("solgrid.dev/v1alpha1", "ComputeJob", JOB),
        ),
        (
            "/apis/solgrid.dev/v1alpha1/namespaces/ml/stakepositions",
            list("solgrid.dev/v1alpha1", "StakePosition", STAKE),
        ),
    ];
    if let Some(m) = market {
        routes.push((
            "/api/v1/namespaces/solgrid-system/configmaps/solgrid-market",
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "solgrid-market", "namespace": "solgrid-system"},
                "data": {"market.json": m}})
            .to_string(),
        ));
    }
    let port = serve(routes);
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), port);
    (dir, kc)
}

fn run(kc: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-solgrid"))
        .env("KUBECONFIG", kc)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn nodes_earnings_jobs_stake_from_the_api() {
    let (_dir, kc) = fake_cluster(None);
    let (ok, t) = run(&kc, &["nodes"]);
    assert!(ok, "{t}");
    assert!(t.starts_with("NAME "), "{t}");
    assert!(t.contains("gpu-1"), "{t}");
    assert!(t.contains("NVIDIA H100 80GB HBM3"), "{t}");
    assert!(t.contains("812"), "{t}");
    assert!(t.contains("20000.000000000 IO"), "{t}");
    assert!(t.contains("yes"), "{t}");

    let (ok, t) = run(&kc, &["earnings"]);
    assert!(ok, "{t}");
    assert!(
        t.contains("1.500000000 IO") && t.contains("2.500000 USDC") && t.contains("7.000000000 IO"),
        "{t}"
    );
    let (ok, t) = run(&kc, &["earnings", "--by-wallet"]);
    assert!(ok, "{t}");
    assert!(
        t.contains("7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU   1 "),
        "{t}"
    );

    // The kubeconfig's namespace (ml) by default, every namespace with -A.
    for args in [vec!["jobs"], vec!["jobs", "-A"]] {
        let (ok, t) = run(&kc, &args);
        assert!(ok, "{args:?}: {t}");
        assert!(
            t.contains("train") && t.contains("Running") && t.contains("3.100000 USDC"),
            "{t}"
        );
    }
    let (ok, t) = run(&kc, &["stake"]);
    assert!(ok, "{t}");
    assert!(
        t.contains("mine") && t.contains("2000.000000000 IO") && t.contains("3.000000000 IO"),
        "{t}"
    );
}

#[test]
fn quote_reads_gpunodes_and_the_market_configmap() {
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/h100-job.yaml");
    // Defaults: no ConfigMap (a note says so).
    let (_d1, kc) = fake_cluster(None);
    let (ok, t) = run(&kc, &["quote", "-f", job.to_str().unwrap()]);
    assert!(ok, "{t}");
    assert!(t.contains("using the market library's defaults"), "{t}");
    // 1 Active H100 node, 8 GPUs, 4 allocated: 50 % -> supply 1.175x; $2.20 x 1.02 x 1.175.
    assert!(t.contains("utilization 50.0 %"), "{t}");
    assert!(t.contains("$2.636700 per GPU-hour"), "{t}");
    // The chart's market.json with a dearer H100.
    let (_d2, kc) = fake_cluster(Some(
        r#"{"pricing": {"referenceMicroUsd": {"h100": 3000000}}}"#,
    ));
    let (ok, t) = run(&kc, &["quote", "-f", job.to_str().unwrap()]);
    assert!(ok, "{t}");
    assert!(t.contains("$3.595500 per GPU-hour"), "{t}");
}
