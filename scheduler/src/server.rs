//! The HTTP services: the extender API (`POST /filter`, `POST /prioritize`) for
//! kube-scheduler, and the operations endpoints (`GET /healthz`, `GET /readyz`,
//! `GET /metrics`) on a listener of their own.
//!
//! The API listens on loopback by default ([`crate::DEFAULT_LISTEN`]): the extender
//! is a sidecar of kube-scheduler, and nothing else in the cluster should be able
//! to hold up GPU scheduling. Each API request is bounded:
//! - **body size**: read whole up to `max_body_bytes`, else **413** (sizing:
//!   [`DEFAULT_MAX_BODY_BYTES`]);
//! - **concurrency**: at most `max_concurrent_requests` are read and decided at
//!   once; more wait for a slot;
//! - **time**: every request is answered within `request_timeout` (waiting for a
//!   slot, reading the body and deciding, which runs on the blocking pool so that
//!   the deadline can abandon it). Past it, `filter` answers **200** with an
//!   `ExtenderFilterResult` whose `Error` says why — kube-scheduler reads `Error`
//!   only from a 200, and reports it for the pod — and `prioritize` (whose result
//!   has no error field) answers **503** `{"Error": ...}`; kube-scheduler ignores a
//!   failed prioritize and scores by its plugins alone.
//!
//! Malformed bodies get **400** with the parse error. Errors are JSON
//! `{"Error": "..."}`.

use crate::cache::Cache;
use crate::extender::{Extender, now_ms};
use crate::metrics::{Metrics, Verb};
use crate::wire::{self, FilterResult, ParseError};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The default body limit: 4 MiB.
///
/// Sized from kube-scheduler v1.36's real requests (`shared/fixtures/kube-scheduler-v1.36`,
/// measured in `tests/limits.rs`): with `nodeCacheCapable: true` (what the chart
/// ships) a body is the pod plus node names — 87 KB for 5,000 nodes with 14-character
/// names, 1.28 MB with 5,000 names of the 253-character maximum. A pod is at most
/// what etcd stores (1.5 MiB by default), so the worst possible nodeCacheCapable
/// request is under 2.9 MB. With `nodeCacheCapable: false` kube-scheduler sends
/// whole Node objects instead: 2.2 KB each for the fixtures' minimal nodes (10.9 MB
/// for 5,000), several times that for real nodes (images, conditions, managed
/// fields); raise `--max-body-bytes` to nodes × node size if you run that mode.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;
/// The default concurrency limit. kube-scheduler calls the extender from its one
/// scheduling loop (filter, then prioritize), so a handful is plenty; the limit is
/// there so that no caller can make the extender decode unboundedly many bodies.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 32;
/// The default time limit of a request, well under the 2 s `httpTimeout` of the
/// shipped KubeSchedulerConfiguration, so that kube-scheduler gets the extender's
/// own Error rather than a timeout of its own.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// Service settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    pub cache: Arc<Cache>,
    pub extender: Extender,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
}

impl AppState {
    pub fn new(cache: Arc<Cache>, extender: Extender, metrics: Metrics) -> AppState {
        let cfg = ServerConfig::default();
        AppState {
            cache,
            extender,
            metrics,
            max_body_bytes: cfg.max_body_bytes,
            request_timeout: cfg.request_timeout,
            slots: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            max_concurrent: cfg.max_concurrent_requests,
        }
    }

    /// The state with `cfg`'s limits (a new set of concurrency slots when their
    /// number changes).
    pub fn with_config(mut self, cfg: &ServerConfig) -> AppState {
        self.max_body_bytes = cfg.max_body_bytes;
        self.request_timeout = cfg.request_timeout;
        let n = cfg.max_concurrent_requests.max(1);
        if n != self.max_concurrent {
            self.slots = Arc::new(Semaphore::new(n));
            self.max_concurrent = n;
        }
        self
    }

    /// The concurrency slots filter/prioritize take (for tests and diagnostics:
    /// `available_permits()` is how many more requests could start now).
    pub fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }
}

/// The extender API: `POST /filter` and `POST /prioritize` (serve it on loopback).
pub fn router(state: AppState, cfg: &ServerConfig) -> Router {
    let state = state.with_config(cfg);
    Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize))
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            (state.metrics.clone(), true),
            observe,
        ))
        .with_state(state)
}

/// The operations endpoints: `GET /healthz`, `GET /readyz`, `GET /metrics` (for the
/// kubelet's probes and Prometheus), each bounded by the request timeout.
pub fn ops_router(state: AppState, cfg: &ServerConfig) -> Router {
    let state = state.with_config(cfg);
    let timeout = cfg.request_timeout;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(ops_not_found)
        .layer(middleware::from_fn_with_state(timeout, ops_timeout))
        .layer(middleware::from_fn_with_state(
            (state.metrics.clone(), false),
            observe,
        ))
        .with_state(state)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON error body `{"Error": msg}` with a status.
pub fn error_response(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::to_vec(&serde_json::json!({ "Error": msg })).unwrap_or_default();
    json_response(status, body)
}

/// The answer of a request that got no decision: for `filter` a 200
/// `ExtenderFilterResult` carrying `Error` (what kube-scheduler reports), for
/// `prioritize` a 503 `{"Error": ...}`.
pub fn verb_error(verb: Verb, msg: &str) -> Response {
    match verb {
        Verb::Filter => {
            let result = FilterResult {
                error: msg.to_string(),
                ..Default::default()
            };
            match result.to_json() {
                Ok(b) => json_response(StatusCode::OK, b),
                Err(_) => error_response(StatusCode::SERVICE_UNAVAILABLE, msg),
            }
        }
        Verb::Prioritize => error_response(StatusCode::SERVICE_UNAVAILABLE, msg),
    }
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no such endpoint: use POST /filter or POST /prioritize (/healthz, /readyz and /metrics are on the metrics listener)",
    )
}

async fn ops_not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no such endpoint: use GET /healthz, /readyz or /metrics (filter/prioritize are on the extender listener)",
    )
}

/// Metrics: count by verb and code, latency by verb.
async fn observe(
    State((metrics, api)): State<(Metrics, bool)>,
    req: Request,
    next: Next,
) -> Response {
    let verb = match (api, req.uri().path()) {
        (true, "/filter") => "filter",
        (true, "/prioritize") => "prioritize",
        (false, "/healthz") => "healthz",
        (false, "/readyz") => "readyz",
        (false, "/metrics") => "metrics",
        _ => "other",
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.observe_request(verb, resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
}

async fn ops_timeout(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("request timed out after {timeout:?}"),
        ),
    }
}

/// Reads the body (at most `max` bytes), answering 413/400 with a clear message.
/// The Content-Type is not checked (kube-scheduler sends `application/json`;
/// `curl -d` does not).
async fn read_body(req: Request, max: usize) -> Result<Bytes, Response> {
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is larger than the limit of {max} bytes (--max-body-bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(req.into_body(), max).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut limit = false;
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    limit = true;
                    break;
                }
                src = s.source();
            }
            if limit {
                Err(too_large())
            } else {
                Err(error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("could not read request body: {e}"),
                ))
            }
        }
    }
}

fn parse_error(e: ParseError) -> Response {
    error_response(StatusCode::BAD_REQUEST, &e.to_string())
}

/// `POST /filter` on raw bytes (used by the router, tests and the fuzz target).
pub fn filter_bytes(state: &AppState, body: &[u8]) -> Response {
    let args = match wire::parse_args(body) {
        Ok(a) => a,
        Err(e) => return parse_error(e),
    };
    let index = state.cache.load();
    let result = state.extender.filter(&index, args, now_ms());
    match result.to_json() {
        Ok(b) => json_response(StatusCode::OK, b),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /prioritize` on raw bytes.
pub fn prioritize_bytes(state: &AppState, body: &[u8]) -> Response {
    let args = match wire::parse_args(body) {
        Ok(a) => a,
        Err(e) => return parse_error(e),
    };
    let index = state.cache.load();
    let result = state.extender.prioritize(&index, &args, now_ms());
    match serde_json::to_vec(&result) {
        Ok(b) => json_response(StatusCode::OK, b),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn filter(State(state): State<AppState>, req: Request) -> Response {
    bounded(state, req, Verb::Filter).await
}

async fn prioritize(State(state): State<AppState>, req: Request) -> Response {
    bounded(state, req, Verb::Prioritize).await
}

/// A concurrency slot, counted in `solgrid_scheduler_requests_in_flight` while held.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Slot {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, metrics: &Metrics) -> Slot {
        metrics.in_flight.inc();
        Slot {
            _permit: permit,
            gauge: metrics.in_flight.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

const WAITING: u8 = 0;
const READING: u8 = 1;
const DECIDING: u8 = 2;

/// One API request under the concurrency limit and the deadline: wait for a slot,
/// read the body, decide on the blocking pool (holding the slot until the decision
/// is made, even if the deadline answered first).
async fn bounded(state: AppState, req: Request, verb: Verb) -> Response {
    let timeout = state.request_timeout;
    let stage = AtomicU8::new(WAITING);
    let work = async {
        let slot = match state.slots.clone().acquire_owned().await {
            Ok(permit) => Slot::new(permit, &state.metrics),
            Err(_) => return verb_error(verb, "the extender is shutting down"),
        };
        stage.store(READING, Ordering::Relaxed);
        let body = match read_body(req, state.max_body_bytes).await {
            Ok(b) => b,
            Err(r) => {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    state.metrics.rejected(verb, "too_large");
                }
                return r;
            }
        };
        stage.store(DECIDING, Ordering::Relaxed);
        let st = state.clone();
        let decided = tokio::task::spawn_blocking(move || {
            let r = match verb {
                Verb::Filter => filter_bytes(&st, &body),
                Verb::Prioritize => prioritize_bytes(&st, &body),
            };
            drop(slot);
            r
        })
        .await;
        decided.unwrap_or_else(|e| {
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the {} decision failed: {e}", verb.as_str()),
            )
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            let (reason, msg) = match stage.load(Ordering::Relaxed) {
                WAITING => (
                    "busy",
                    format!(
                        "solgrid extender busy: all {} request slots (--max-concurrent-requests) stayed taken for {timeout:?}",
                        state.max_concurrent
                    ),
                ),
                READING => (
                    "timeout",
                    format!(
                        "solgrid extender: the request body did not arrive within {timeout:?} (--request-timeout-ms)"
                    ),
                ),
                _ => (
                    "timeout",
                    format!(
                        "solgrid extender: no {} decision within {timeout:?} (--request-timeout-ms)",
                        verb.as_str()
                    ),
                ),
            };
            state.metrics.rejected(verb, reason);
            tracing::warn!(verb = verb.as_str(), reason, "{msg}");
            verb_error(verb, &msg)
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.cache.is_ready() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let idx = state.cache.load();
    state
        .metrics
        .set_cache_sizes(idx.gpunode_count, idx.node_count, idx.jobs.len());
    state
        .metrics
        .cache_ready
        .set(i64::from(state.cache.is_ready()));
    let mut r = Response::new(Body::from(state.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Verb of a path, for callers outside the router.
pub fn verb_of(path: &str) -> Option<Verb> {
    match path {
        "/filter" => Some(Verb::Filter),
        "/prioritize" => Some(Verb::Prioritize),
        _ => None,
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight
/// requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
