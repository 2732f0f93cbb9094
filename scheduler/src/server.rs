//! The HTTP service: `POST /filter`, `POST /prioritize`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics`, all on one address.
//!
//! Bodies are read whole (up to `max_body_bytes`, else 413), parsed without
//! panicking (else 400 with the parse error), and each request is bounded by
//! `request_timeout` (else 503). Errors are JSON: `{"Error": "..."}` — the same key
//! kube-scheduler reads in a filter result, so its log shows the message either way.

use crate::cache::Cache;
use crate::extender::{Extender, now_ms};
use crate::metrics::{Metrics, Verb};
use crate::wire::{self, ParseError};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Service settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 8 << 20,
            request_timeout: Duration::from_secs(5),
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
}

impl AppState {
    pub fn new(cache: Arc<Cache>, extender: Extender, metrics: Metrics) -> AppState {
        AppState {
            cache,
            extender,
            metrics,
            max_body_bytes: ServerConfig::default().max_body_bytes,
        }
    }
}

/// The router of the service.
pub fn router(mut state: AppState, cfg: &ServerConfig) -> Router {
    let timeout = cfg.request_timeout;
    state.max_body_bytes = cfg.max_body_bytes;
    Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            (state.metrics.clone(), timeout),
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

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no such endpoint: use POST /filter, POST /prioritize, GET /healthz, /readyz, /metrics",
    )
}

/// Timeout, then metrics (count by verb and code, latency by verb).
async fn observe(
    State((metrics, timeout)): State<(Metrics, Duration)>,
    req: Request,
    next: Next,
) -> Response {
    let verb = match req.uri().path() {
        "/filter" => "filter",
        "/prioritize" => "prioritize",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        _ => "other",
    };
    let start = Instant::now();
    let resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("request timed out after {timeout:?}"),
        ),
    };
    metrics.observe_request(verb, resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
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
    match read_body(req, state.max_body_bytes).await {
        Ok(b) => filter_bytes(&state, &b),
        Err(r) => r,
    }
}

async fn prioritize(State(state): State<AppState>, req: Request) -> Response {
    match read_body(req, state.max_body_bytes).await {
        Ok(b) => prioritize_bytes(&state, &b),
        Err(r) => r,
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
