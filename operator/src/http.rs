//! The HTTP server: `/metrics` (Prometheus text), `/healthz` (the process lives),
//! `/readyz` (start-up finished; a standby replica is ready too: it is waiting for
//! the leader's ledger journal or the lease, and `/metrics` says
//! `solgrid_operator_is_leader 0`).

use crate::leader::State;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State as AxState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct App {
    metrics: Arc<Metrics>,
    state: Arc<State>,
}

/// The router (exposed for tests).
pub fn router(metrics: Arc<Metrics>, state: Arc<State>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(App { metrics, state })
}

async fn metrics_handler(AxState(app): AxState<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

async fn ready(AxState(app): AxState<App>) -> impl IntoResponse {
    if app.state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// Serves until `shutdown` fires.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "http server listening");
    axum::serve(listener, router(metrics, state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn endpoints() {
        let metrics = Arc::new(Metrics::new());
        let state = Arc::new(State::default());
        let app = router(metrics.clone(), state.clone());
        assert_eq!(get(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(get(app.clone(), "/readyz").await.0, StatusCode::OK);
        let (s, body) = get(app, "/metrics").await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("solgrid_operator_is_leader"));
    }
}
