//! Inventory publishing against a mock API server (tower-test): the exact
//! server-side-apply requests for the GpuNode status, GpuNode creation when it
//! is missing, and the Node labels.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use solgrid_crds::{GpuNodeSpec, GpuVendor};
use solgrid_device_plugin::device::{Device, Health};
use solgrid_device_plugin::inventory::{InventoryError, Publisher};
use solgrid_device_plugin::labels::node_labels;
use solgrid_device_plugin::resource::DeviceState;
use std::collections::BTreeMap;
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

const WALLET: &str = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin";

fn states() -> Vec<DeviceState> {
    (0..2)
        .map(|i| DeviceState {
            device: Device {
                id: format!("GPU-{i}"),
                vendor: GpuVendor::Nvidia,
                model: "NVIDIA GeForce RTX 4090".into(),
                memory_mib: 24_564,
                uuid: Some(format!("GPU-{i}")),
                pci_bus_id: Some(format!("0000:0{i}:00.0")),
                numa_node: Some(0),
                index: i,
                links: BTreeMap::new(),
                nodes: vec![],
                attributes: BTreeMap::new(),
            },
            health: if i == 1 {
                Health::Unhealthy
            } else {
                Health::Healthy
            },
            reason: None,
        })
        .collect()
}

/// One request the mock API server expects, and its answer.
struct Exchange {
    method: Method,
    uri: &'static str,
    status: StatusCode,
    reply: Value,
}

/// The GpuNode status applied, answered with `status` and `reply`.
fn apply_status(status: StatusCode, reply: Value) -> Exchange {
    Exchange {
        method: Method::PATCH,
        uri: STATUS_URI,
        status,
        reply,
    }
}

/// The GpuNode created, answered with `status` and `reply`.
fn create(status: StatusCode, reply: Value) -> Exchange {
    Exchange {
        method: Method::POST,
        uri: CREATE_URI,
        status,
        reply,
    }
}

/// The GpuNode status applied successfully.
fn status_applied() -> Exchange {
    apply_status(StatusCode::OK, gpunode_reply())
}

/// The status apply finds no GpuNode, the create is answered by `create`,
/// then the status is applied again.
fn missing_then_created(create: Exchange) -> Vec<Exchange> {
    vec![
        apply_status(StatusCode::NOT_FOUND, not_found()),
        create,
        status_applied(),
    ]
}

/// Take the next request, check it is `want`, answer it; its JSON body.
async fn expect(handle: &mut Handle, want: &Exchange) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), want.method);
    assert_eq!(req.uri().to_string(), want.uri);
    if want.method == Method::POST {
        assert_eq!(req.headers()["content-type"], "application/json", "create");
    } else {
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml",
            "server-side apply"
        );
    }
    let body = req.into_body().collect_bytes().await.unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    send.send_response(
        Response::builder()
            .status(want.status)
            .body(Body::from(serde_json::to_vec(&want.reply).unwrap()))
            .unwrap(),
    );
    v
}

/// A publisher for node-a (creating it with `spec` when missing) and the
/// mock API server behind it.
fn publisher(spec: Option<GpuNodeSpec>) -> (Publisher, Handle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let publisher = Publisher::new(client, "node-a".into(), "node-a".into(), spec);
    (publisher, handle)
}

/// Serve `exchanges` in order; the task returns the request bodies.
fn serve(mut handle: Handle, exchanges: Vec<Exchange>) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut bodies = vec![];
        for want in &exchanges {
            bodies.push(expect(&mut handle, want).await);
        }
        bodies
    })
}

/// The provider's GpuNode spec.
fn provider_spec() -> GpuNodeSpec {
    GpuNodeSpec {
        node_name: "node-a".into(),
        payout_wallet: WALLET.into(),
        location: solgrid_crds::Location {
            region: "eu-west".into(),
            country: "DE".into(),
            coordinates: None,
        },
        ..Default::default()
    }
}

fn gpunode_reply() -> Value {
    json!({
        "apiVersion": "solgrid.dev/v1alpha1",
        "kind": "GpuNode",
        "metadata": { "name": "node-a" },
        "spec": {
            "nodeName": "node-a",
            "payoutWallet": WALLET,
            "location": { "region": "eu-west", "country": "DE" }
        }
    })
}

fn not_found() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "gpunodes.solgrid.dev \"node-a\" not found", "reason": "NotFound", "code": 404
    })
}

const STATUS_URI: &str = "/apis/solgrid.dev/v1alpha1/gpunodes/node-a/status?&force=true&fieldManager=solgrid-device-plugin";
/// A missing GpuNode is created (POST), never applied: a GpuNode's spec is the
/// provider's, and a plain create cannot overwrite one that appeared meanwhile.
const CREATE_URI: &str = "/apis/solgrid.dev/v1alpha1/gpunodes?&fieldManager=solgrid-device-plugin";

#[tokio::test]
async fn publishes_status_by_server_side_apply() {
    let (publisher, handle) = publisher(None);
    let server = serve(handle, vec![status_applied()]);
    publisher.publish(&states()).await.expect("published");
    let [body] = <[Value; 1]>::try_from(server.await.unwrap()).unwrap();
    assert_eq!(body["apiVersion"], "solgrid.dev/v1alpha1");
    assert_eq!(body["kind"], "GpuNode");
    assert_eq!(body["metadata"]["name"], "node-a");
    assert!(body.get("spec").is_none(), "status apply carries no spec");
    let status = &body["status"];
    assert_eq!(status["gpuCount"], 2);
    assert_eq!(status["model"], "NVIDIA GeForce RTX 4090");
    assert!(status["lastHeartbeat"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        status["gpus"],
        json!([
            { "id": "GPU-0", "uuid": "GPU-0", "vendor": "nvidia", "model": "NVIDIA GeForce RTX 4090",
              "vramMib": 24564, "health": "Healthy", "pciBusId": "0000:00:00.0", "numaNode": 0 },
            { "id": "GPU-1", "uuid": "GPU-1", "vendor": "nvidia", "model": "NVIDIA GeForce RTX 4090",
              "vramMib": 24564, "health": "Unhealthy", "pciBusId": "0000:01:00.0", "numaNode": 0 }
        ])
    );
    assert!(
        status.get("phase").is_none(),
        "the operator's fields are left alone"
    );
    assert!(status.get("reputation").is_none());
}

#[tokio::test]
async fn creates_missing_gpunode_when_a_spec_is_configured() {
    let (publisher, handle) = publisher(Some(provider_spec()));
    let server = serve(
        handle,
        missing_then_created(create(StatusCode::CREATED, gpunode_reply())),
    );
    publisher.publish(&states()).await.expect("published");
    let [first, create, second] = <[Value; 3]>::try_from(server.await.unwrap()).unwrap();
    assert_eq!(create["spec"]["nodeName"], "node-a");
    assert_eq!(create["spec"]["location"]["country"], "DE");
    assert!(create.get("status").is_none());
    assert_eq!(first["status"]["gpus"], second["status"]["gpus"]);
}

#[tokio::test]
async fn a_gpunode_created_meanwhile_keeps_its_spec() {
    let (publisher, handle) = publisher(Some(provider_spec()));
    let server = serve(
        handle,
        // the operator created it in between: 409, and no second attempt at the spec
        missing_then_created(create(
            StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "gpunodes.solgrid.dev \"node-a\" already exists",
                   "reason": "AlreadyExists", "code": 409}),
        )),
    );
    publisher.publish(&states()).await.expect("published");
    let bodies = server.await.unwrap();
    assert!(
        bodies[2].get("spec").is_none(),
        "only the inventory is applied"
    );
}

#[tokio::test]
async fn missing_gpunode_without_spec_is_an_error() {
    let (publisher, handle) = publisher(None);
    let server = serve(
        handle,
        vec![apply_status(StatusCode::NOT_FOUND, not_found())],
    );
    let err = publisher.publish(&states()).await.unwrap_err();
    assert!(
        matches!(err, InventoryError::Missing(ref n) if n == "node-a"),
        "{err}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn labels_the_node() {
    let (publisher, handle) = publisher(None);
    let server = serve(
        handle,
        vec![Exchange {
            method: Method::PATCH,
            uri: "/api/v1/nodes/node-a?&force=true&fieldManager=solgrid-device-plugin",
            status: StatusCode::OK,
            reply: json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-a" } }),
        }],
    );
    publisher
        .apply_labels(&node_labels(&states()))
        .await
        .expect("labelled");
    let body = &server.await.unwrap()[0];
    assert_eq!(
        body["metadata"]["labels"],
        json!({
            "solgrid.dev/gpu.present": "true",
            "solgrid.dev/nvidia-gpu.count": "2",
            "solgrid.dev/nvidia-gpu.memory-mib": "24564",
            "solgrid.dev/nvidia-gpu.model": "NVIDIA-GeForce-RTX-4090"
        })
    );
}

#[tokio::test]
async fn health_change_is_published_at_once() {
    use clap::Parser;
    use solgrid_device_plugin::app::inventory_loop;
    use solgrid_device_plugin::config::Settings;
    use solgrid_device_plugin::metrics::Metrics;
    use solgrid_device_plugin::resource::ResourceManager;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let (publisher, mut handle) = publisher(None);
    let devices: Vec<Device> = states().into_iter().map(|s| s.device).collect();
    let manager = Arc::new(ResourceManager::new(GpuVendor::Nvidia, devices, vec![]));
    let settings = Settings::try_parse_from([
        "x",
        "--no-node-labels",
        "--inventory-interval-seconds",
        "3600",
    ])
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(inventory_loop(
        publisher,
        vec![manager.clone()],
        settings,
        metrics.clone(),
        stop.clone(),
    ));
    let first = expect(&mut handle, &status_applied()).await;
    assert_eq!(first["status"]["gpus"][1]["health"], "Healthy");
    let t0 = Instant::now();
    manager.set_health("GPU-1", Health::Unhealthy, Some("XID 79".into()));
    let second = tokio::time::timeout(
        Duration::from_secs(1),
        expect(&mut handle, &status_applied()),
    )
    .await
    .expect("published within 1 s of the health change");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(second["status"]["gpus"][1]["health"], "Unhealthy");
    assert_eq!(second["status"]["gpus"][0]["health"], "Healthy");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        metrics
            .render()
            .contains("solgrid_device_plugin_inventory_publishes_total{result=\"ok\"} 2")
    );
}
