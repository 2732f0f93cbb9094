//! The HTTP endpoint: `/healthz` and `/metrics`.

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use solgrid_device_plugin::metrics::{Metrics, router};
use tower::ServiceExt;

async fn get(m: &Metrics, path: &str) -> (StatusCode, String) {
    let resp = router(m.clone())
        .oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn healthz_and_metrics() {
    let m = Metrics::new().unwrap();
    let (s, body) = get(&m, "/healthz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, "ok");

    m.registration("solgrid.dev/apple-gpu", true);
    m.registration("solgrid.dev/apple-gpu", false);
    m.set_devices("solgrid.dev/apple-gpu", 1, 0);
    m.allocation("solgrid.dev/apple-gpu", false, 1);
    let (s, body) = get(&m, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    for line in [
        "solgrid_device_plugin_registrations_total{resource=\"solgrid.dev/apple-gpu\",result=\"ok\"} 1",
        "solgrid_device_plugin_registrations_total{resource=\"solgrid.dev/apple-gpu\",result=\"error\"} 1",
        "solgrid_device_plugin_devices{health=\"Healthy\",resource=\"solgrid.dev/apple-gpu\"} 1",
        "solgrid_device_plugin_allocate_requests_total{resource=\"solgrid.dev/apple-gpu\",result=\"error\"} 1",
    ] {
        assert!(body.contains(line), "missing {line} in\n{body}");
    }
    let (s, _) = get(&m, "/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
