//! deploy/kube-scheduler-config.yaml parses and names what the server serves.

mod common;

use serde_yaml_ng::Value;
use solgrid_scheduler::{DEFAULT_LISTEN, FILTER_VERB, PRIORITIZE_VERB};
use tower::ServiceExt;

fn config() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kube-scheduler-config.yaml"
    ))
    .unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

#[test]
fn config_wires_the_extender() {
    let c = config();
    assert_eq!(
        c["apiVersion"].as_str(),
        Some("kubescheduler.config.k8s.io/v1")
    );
    assert_eq!(c["kind"].as_str(), Some("KubeSchedulerConfiguration"));
    let profiles = c["profiles"].as_sequence().unwrap();
    assert!(
        profiles
            .iter()
            .any(|p| p["schedulerName"].as_str() == Some("solgrid-scheduler"))
    );
    let ext = &c["extenders"].as_sequence().unwrap()[0];
    let url = ext["urlPrefix"].as_str().unwrap();
    let port = DEFAULT_LISTEN.rsplit(':').next().unwrap();
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    assert_eq!(ext["filterVerb"].as_str(), Some(FILTER_VERB));
    assert_eq!(ext["prioritizeVerb"].as_str(), Some(PRIORITIZE_VERB));
    assert!(ext.get("bindVerb").is_none(), "the extender serves no bind");
    assert_eq!(ext["nodeCacheCapable"].as_bool(), Some(true));
    assert_eq!(ext["ignorable"].as_bool(), Some(false));
    let w = ext["weight"].as_i64().unwrap();
    assert!(w > 0);
    let t = ext["httpTimeout"].as_str().unwrap();
    let secs: f64 = t.strip_suffix('s').unwrap().parse().unwrap();
    assert!((0.5..=10.0).contains(&secs), "{t}");
    let managed: Vec<(&str, bool)> = ext["managedResources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["ignoredByScheduler"].as_bool().unwrap(),
            )
        })
        .collect();
    for v in [
        solgrid_crds::GpuVendor::Nvidia,
        solgrid_crds::GpuVendor::Apple,
    ] {
        assert!(managed.contains(&(v.resource_name(), false)), "{managed:?}");
    }
}

#[tokio::test]
async fn the_router_serves_the_configured_verbs() {
    let state = common::testdata_state();
    let app = solgrid_scheduler::server::router(state, &Default::default());
    let c = config();
    let ext = &c["extenders"][0];
    for verb in [
        ext["filterVerb"].as_str().unwrap(),
        ext["prioritizeVerb"].as_str().unwrap(),
    ] {
        let req = http::Request::post(format!("/{verb}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(common::fixture(
                "filter-nodecache.json",
            )))
            .unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), 200, "{verb}");
    }
}
