//! The HTTP service: status codes and error bodies, health, readiness, metrics,
//! request limits, and a real TCP server with graceful shutdown.

mod common;

use axum::body::Body;
use common::*;
use futures::StreamExt;
use solgrid_scheduler::cache::{Cache, Index};
use solgrid_scheduler::convert::MarketConfig;
use solgrid_scheduler::extender::Extender;
use solgrid_scheduler::metrics::Metrics;
use solgrid_scheduler::server::{self, AppState, ServerConfig};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

fn app(cfg: ServerConfig) -> axum::Router {
    server::router(testdata_state(), &cfg)
}

async fn call(app: &axum::Router, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    let (code, b) = body_of(r).await;
    (code, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test]
async fn malformed_requests_get_4xx_with_a_clear_error() {
    let app = app(ServerConfig::default());
    let cases: Vec<(&[u8], &str)> = vec![
        (b"", "not valid ExtenderArgs JSON"),
        (b"{", "not valid ExtenderArgs JSON"),
        (b"[1,2,3]", "not valid ExtenderArgs JSON"),
        (b"{\"NodeNames\":[\"a\"]}", "has no Pod"),
        (
            b"{\"Pod\":{},\"Nodes\":null,\"NodeNames\":null}",
            "neither NodeNames nor Nodes",
        ),
        (
            b"{\"Pod\":{\"metadata\":{}},\"NodeNames\":[1]}",
            "not valid ExtenderArgs JSON",
        ),
        (
            b"{\"Pod\":{\"kind\":\"Node\"},\"NodeNames\":[]}",
            "not valid ExtenderArgs JSON",
        ),
        (b"\xff\xfe\x00garbage", "not valid ExtenderArgs JSON"),
    ];
    for verb in ["/filter", "/prioritize"] {
        for (body, want) in &cases {
            let (code, out) = call(&app, "POST", verb, body.to_vec()).await;
            assert_eq!(
                code,
                400,
                "{verb} {:?}: {out}",
                String::from_utf8_lossy(body)
            );
            assert!(error_of(&out).contains(want), "{verb}: {out} !~ {want}");
        }
    }
    let (code, out) = call(&app, "POST", "/bind", b"{}".to_vec()).await;
    assert_eq!(code, 404);
    assert!(error_of(&out).contains("no such endpoint"));
    let (code, _) = call(&app, "GET", "/filter", vec![]).await;
    assert_eq!(code, 405);
    // the operations endpoints are not on the extender's listener
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (code, out) = call(&app, "GET", path, vec![]).await;
        assert_eq!(code, 404, "{path}");
        assert!(error_of(&out).contains("metrics listener"), "{out}");
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = app(ServerConfig {
        max_body_bytes: 1024,
        ..Default::default()
    });
    let big = with_names(&fixture("filter-nodecache.json"), &["x"; 200]);
    assert!(big.len() > 1024);
    let (code, out) = call(&app, "POST", "/filter", big.clone()).await;
    assert_eq!(code, 413);
    assert!(error_of(&out).contains("larger than the limit of 1024 bytes"));
    // without a Content-Length (chunked): still 413
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(100).map(|c| Ok(c.to_vec())).collect();
    let req = http::Request::post("/filter")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let (code, _) = body_of(app.clone().oneshot(req).await.unwrap()).await;
    assert_eq!(code, 413);
    // the limit is the limit: a small body passes
    let (code, _) = call(&app, "POST", "/filter", fixture("filter-nodecache.json")).await;
    assert_eq!(code, 413, "fixture is 2 KiB > 1 KiB");
    let app = self::app(ServerConfig {
        max_body_bytes: 4096,
        ..Default::default()
    });
    let (code, _) = call(&app, "POST", "/filter", fixture("filter-nodecache.json")).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let app = app(ServerConfig {
        request_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    let first: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(b"{\"Pod\":".to_vec())];
    let stalled = futures::stream::iter(first).chain(futures::stream::pending());
    let req = http::Request::post("/filter")
        .body(Body::from_stream(stalled))
        .unwrap();
    let t = std::time::Instant::now();
    let (code, out) = body_of(app.oneshot(req).await.unwrap()).await;
    // filter: an ExtenderFilterResult with Error (kube-scheduler reads it from a 200)
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        v["Error"]
            .as_str()
            .unwrap()
            .contains("did not arrive within"),
        "{v}"
    );
    assert!(v["NodeNames"].is_null() && v["Nodes"].is_null(), "{v}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let metrics = Metrics::new();
    let cache = Arc::new(Cache::new());
    let ext = Extender::new(MarketConfig::default().matching, Some(metrics.clone()));
    let state = AppState::new(cache.clone(), ext, metrics);
    let app = server::router(state.clone(), &ServerConfig::default());
    let ops = server::ops_router(state, &ServerConfig::default());
    assert_eq!(call(&ops, "GET", "/healthz", vec![]).await.0, 200);
    let (code, out) = call(&ops, "GET", "/readyz", vec![]).await;
    assert_eq!(code, 503, "not ready before the caches sync");
    assert!(out.contains("not synced"));
    cache.publish(testdata_snapshot().index(&MarketConfig::default()));
    cache.set_ready();
    assert_eq!(call(&ops, "GET", "/readyz", vec![]).await.0, 200);
    let (code, out) = call(&ops, "POST", "/filter", vec![]).await;
    assert_eq!(code, 404, "filter is not on the metrics listener");
    assert!(error_of(&out).contains("extender listener"));
    call(&app, "POST", "/filter", fixture("filter-nodecache.json")).await;
    call(
        &app,
        "POST",
        "/prioritize",
        fixture("prioritize-nodecache.json"),
    )
    .await;
    call(&app, "POST", "/filter", b"nope".to_vec()).await;
    let (code, m) = call(&ops, "GET", "/metrics", vec![]).await;
    assert_eq!(code, 200);
    for want in [
        "solgrid_scheduler_requests_total{code=\"200\",verb=\"filter\"} 1",
        "solgrid_scheduler_requests_total{code=\"400\",verb=\"filter\"} 1",
        "solgrid_scheduler_requests_total{code=\"200\",verb=\"prioritize\"} 1",
        "solgrid_scheduler_request_duration_seconds_count{verb=\"filter\"} 2",
        "solgrid_scheduler_request_duration_seconds_bucket{verb=\"prioritize\",le=\"0.001\"}",
        "solgrid_scheduler_cache_objects{kind=\"gpunode\"} 10",
        "solgrid_scheduler_cache_objects{kind=\"node\"} 2",
        "solgrid_scheduler_cache_objects{kind=\"computejob\"} 3",
        "solgrid_scheduler_cache_ready 1",
    ] {
        assert!(m.contains(want), "missing {want}\n{m}");
    }
}

#[tokio::test]
async fn cache_swaps_are_seen_by_the_next_request() {
    let state = state_of(Index::default());
    let body = owned_variant(
        &fixture("filter-nodecache.json"),
        "ml-team",
        "llama-finetune",
        None,
        false,
    );
    let body = with_names(&body, &["gpu-a-4090"]);
    let (_, out) = body_of(server::filter_bytes(&state, &body)).await;
    assert!(String::from_utf8_lossy(&out).contains("not in the scheduler's cache"));
    state
        .cache
        .publish(testdata_snapshot().index(&MarketConfig::default()));
    let (_, out) = body_of(server::filter_bytes(&state, &body)).await;
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["NodeNames"], serde_json::json!(["gpu-a-4090"]));
}

/// A real server on a TCP port: requests over keep-alive, then graceful shutdown.
#[tokio::test]
async fn tcp_server_serves_and_shuts_down_gracefully() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server::router(testdata_state(), &ServerConfig::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let srv = tokio::spawn(server::serve(listener, router, async {
        let _ = rx.await;
    }));
    let client: Client<_, Full<bytes_::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..3 {
        let req = http::Request::post(format!("http://{addr}/filter"))
            .header("content-type", "application/json")
            .body(Full::new(bytes_::Bytes::from(fixture(
                "filter-nodecache.json",
            ))))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&b).contains("\"NodeNames\":[\"fake-node-1\",\"fake-node-2\"]")
        );
    }
    tx.send(()).unwrap();
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), srv)
        .await
        .expect("server stops after shutdown")
        .unwrap()
        .unwrap();
}

mod bytes_ {
    pub use axum::body::Bytes;
}
