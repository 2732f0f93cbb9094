//! The extender's bounds: body size (sized from kube-scheduler v1.36's real
//! requests), concurrency, and the deadline inside the handler.

mod common;

use axum::body::Body;
use common::*;
use futures::StreamExt;
use solgrid_scheduler::server::{self, AppState, DEFAULT_MAX_BODY_BYTES, ServerConfig};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(b)))
}

fn post(path: &str, body: Vec<u8>) -> http::Request<Body> {
    http::Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// A request whose body sends its first bytes and then nothing.
fn stalled(path: &str) -> http::Request<Body> {
    let first: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(b"{\"Pod\":".to_vec())];
    let s = futures::stream::iter(first).chain(futures::stream::pending());
    http::Request::post(path)
        .body(Body::from_stream(s))
        .unwrap()
}

/// A router with `slots` concurrency slots and a deadline of `timeout_ms`, and its state.
fn limited(slots: usize, timeout_ms: u64) -> (AppState, axum::Router) {
    let cfg = ServerConfig {
        max_concurrent_requests: slots,
        request_timeout: Duration::from_millis(timeout_ms),
        ..Default::default()
    };
    let state = testdata_state().with_config(&cfg);
    (state.clone(), server::router(state, &cfg))
}

/// Sends a request; the status and the JSON body.
async fn send(app: &axum::Router, req: http::Request<Body>) -> (u16, serde_json::Value) {
    let (code, out) = body_of(app.clone().oneshot(req).await.unwrap()).await;
    (code, json(&out))
}

/// The fixture's node list grown to `n` nodes (each the fixture's first node, renamed).
fn nodelist_body(n: usize) -> Vec<u8> {
    let mut v = json(&fixture("filter-nodelist.json"));
    let node = v["Nodes"]["items"][0].clone();
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut m = node.clone();
            let name = format!("gpu-node-{i:05}");
            m["metadata"]["labels"]["kubernetes.io/hostname"] = name.clone().into();
            m["metadata"]["name"] = name.into();
            m
        })
        .collect();
    v["Nodes"]["items"] = items.into();
    serde_json::to_vec(&v).unwrap()
}

/// The sizes docs/scheduler.md and `DEFAULT_MAX_BODY_BYTES` are based on, measured on
/// the real kube-scheduler requests: every nodeCacheCapable request of a 5,000-node
/// cluster fits the default, even with names of the maximum length and a pod as
/// large as etcd stores; a 5,000-node nodelist request does not.
#[tokio::test]
async fn the_default_body_limit_is_sized_from_real_requests() {
    let app = server::router(testdata_state(), &ServerConfig::default());
    // nodeCacheCapable (what the chart ships): pod + names
    let short: Vec<String> = (0..5000).map(|i| format!("gpu-node-{i:05}")).collect();
    let short: Vec<&str> = short.iter().map(String::as_str).collect();
    let typical = with_names(&fixture("filter-nodecache.json"), &short);
    assert!(
        (80_000..100_000).contains(&typical.len()),
        "5,000 short names: {} bytes",
        typical.len()
    );
    let long = "n".repeat(253);
    let longest = with_names(
        &fixture("filter-nodecache.json"),
        &vec![long.as_str(); 5000],
    );
    assert!(
        (1_200_000..1_350_000).contains(&longest.len()),
        "5,000 names of 253 characters: {} bytes",
        longest.len()
    );
    // ...plus a pod padded to etcd's default request limit (1.5 MiB)
    let mut v = json(&longest);
    v["Pod"]["metadata"]["annotations"]["pad"] = "x".repeat(3 << 19).into();
    let worst = serde_json::to_vec(&v).unwrap();
    assert!(
        worst.len() < DEFAULT_MAX_BODY_BYTES,
        "{} bytes",
        worst.len()
    );
    for body in [typical, worst] {
        let r = app.clone().oneshot(post("/filter", body)).await.unwrap();
        let (code, out) = body_of(r).await;
        assert_eq!(
            code,
            200,
            "{}",
            String::from_utf8_lossy(&out[..out.len().min(300)])
        );
        assert_eq!(json(&out)["Error"], "");
    }
    // nodeCacheCapable: false sends whole Nodes: 2.2 KB each for the fixture's
    // minimal nodes, so 5,000 of them are 10.9 MB; over the default: 413.
    let nodelist = nodelist_body(5000);
    let per_node = (nodelist.len() - fixture("filter-nodecache.json").len()) / 5000;
    assert!(
        (2_000..2_400).contains(&per_node),
        "{per_node} bytes per node"
    );
    assert!(
        (10_500_000..11_500_000).contains(&nodelist.len()),
        "{} bytes",
        nodelist.len()
    );
    let r = app
        .clone()
        .oneshot(post("/filter", nodelist.clone()))
        .await
        .unwrap();
    let (code, out) = body_of(r).await;
    assert_eq!(code, 413);
    assert!(error_of(&out).contains("--max-body-bytes"));
    // ...and fine with the limit raised as docs/scheduler.md says
    let raised = server::router(
        testdata_state(),
        &ServerConfig {
            max_body_bytes: 16 << 20,
            ..Default::default()
        },
    );
    let r = raised.oneshot(post("/filter", nodelist)).await.unwrap();
    assert_eq!(body_of(r).await.0, 200);
}

/// Over a real socket, too: a body over the limit gets 413 before it is read.
#[tokio::test]
async fn an_oversized_body_gets_413_over_tcp() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server::router(
        testdata_state(),
        &ServerConfig {
            max_body_bytes: 64 << 10,
            ..Default::default()
        },
    );
    let srv = tokio::spawn(server::serve(listener, router, std::future::pending()));
    let client: Client<_, Full<axum::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let big = with_names(&fixture("filter-nodecache.json"), &vec!["n"; 40_000]);
    assert!(big.len() > 64 << 10);
    let req = http::Request::post(format!("http://{addr}/filter"))
        .body(Full::new(axum::body::Bytes::from(big)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&b).contains("larger than the limit of 65536 bytes"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    srv.abort();
}

/// At most `max_concurrent_requests` requests are in flight; the next one waits for
/// a slot, and gets one when a stalled request's deadline frees it.
#[tokio::test]
async fn requests_beyond_the_concurrency_limit_wait_for_a_slot() {
    let (state, app) = limited(2, 400);
    let holders: Vec<_> = (0..2)
        .map(|_| tokio::spawn(app.clone().oneshot(stalled("/filter"))))
        .collect();
    let t = Instant::now();
    while state.slots().available_permits() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "holders never got slots"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state.metrics.in_flight.get(), 2);
    // a complete request, sent 200 ms into the holders' 400 ms, waits until a
    // holder's deadline frees a slot (~200 ms), well within its own deadline (the
    // margin keeps the test steady on a loaded machine)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = app
        .clone()
        .oneshot(post("/filter", fixture("filter-nodecache.json")))
        .await
        .unwrap();
    let waited = started.elapsed();
    let (code, out) = body_of(r).await;
    assert_eq!(code, 200);
    let v = json(&out);
    assert_eq!(v["Error"], "", "{v}");
    assert_eq!(
        v["NodeNames"],
        serde_json::json!(["fake-node-1", "fake-node-2"])
    );
    assert!(
        waited >= Duration::from_millis(100),
        "it should have waited for a slot, took {waited:?}"
    );
    for h in holders {
        let (code, out) = body_of(h.await.unwrap().unwrap()).await;
        assert_eq!(code, 200);
        assert!(
            error_of(&out).contains("did not arrive within 400ms"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    assert_eq!(state.metrics.in_flight.get(), 0, "slots are released");
    assert_eq!(state.slots().available_permits(), 2);
    let m = state.metrics.render();
    assert!(
        m.contains(
            "solgrid_scheduler_requests_rejected_total{reason=\"timeout\",verb=\"filter\"} 2"
        ),
        "{m}"
    );
}

/// When no slot frees within the deadline, filter answers with an Error result
/// naming the limit (kube-scheduler reports it for the pod) and prioritize with 503.
#[tokio::test]
async fn no_slot_within_the_deadline_is_an_error_result_not_a_hang() {
    let (state, app) = limited(3, 200);
    let held = state.slots().clone().acquire_many_owned(3).await.unwrap();
    let t = Instant::now();
    let (code, v) = send(&app, post("/filter", fixture("filter-nodecache.json"))).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(code, 200);
    let err = v["Error"].as_str().unwrap();
    assert!(
        err.contains("busy") && err.contains("all 3 request slots"),
        "{err}"
    );
    assert!(
        v["NodeNames"].is_null(),
        "no node passes an unanswered filter"
    );
    let prioritize = || post("/prioritize", fixture("prioritize-nodecache.json"));
    let (code, v) = send(&app, prioritize()).await;
    assert_eq!(code, 503);
    assert!(v["Error"].as_str().unwrap().contains("busy"));
    // slots back: answered normally
    drop(held);
    let (code, v) = send(&app, prioritize()).await;
    assert_eq!(code, 200, "{v}");
    assert!(v.is_array());
    let m = state.metrics.render();
    for want in [
        "solgrid_scheduler_requests_rejected_total{reason=\"busy\",verb=\"filter\"} 1",
        "solgrid_scheduler_requests_rejected_total{reason=\"busy\",verb=\"prioritize\"} 1",
    ] {
        assert!(m.contains(want), "missing {want}\n{m}");
    }
}

/// A stalled prioritize body: 503 with an Error, within the deadline.
#[tokio::test]
async fn a_stalled_prioritize_times_out_with_503() {
    let cfg = ServerConfig {
        request_timeout: Duration::from_millis(150),
        ..Default::default()
    };
    let app = server::router(testdata_state(), &cfg);
    let t = Instant::now();
    let (code, out) = body_of(app.oneshot(stalled("/prioritize")).await.unwrap()).await;
    assert_eq!(code, 503);
    assert!(error_of(&out).contains("did not arrive within 150ms"));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn defaults_are_loopback_and_bounded() {
    assert!(solgrid_scheduler::DEFAULT_LISTEN.starts_with("127.0.0.1:"));
    assert_ne!(
        solgrid_scheduler::DEFAULT_LISTEN.rsplit(':').next(),
        solgrid_scheduler::DEFAULT_METRICS_LISTEN.rsplit(':').next(),
        "metrics have a port of their own"
    );
    let d = ServerConfig::default();
    assert_eq!(d.max_body_bytes, 4 << 20);
    assert!(
        d.request_timeout < Duration::from_secs(2),
        "below kube-scheduler's httpTimeout"
    );
    assert!(d.max_concurrent_requests >= 2);
    let _ = AppState::with_config; // public: tests and embedders size the limits
}
