//! The plugin seen from the kubelet: registration, ListAndWatch, Allocate,
//! GetPreferredAllocation, health updates and kubelet restarts, over real gRPC
//! on temp unix sockets, with a fake NVML.

mod common;

use common::*;
use solgrid_device_plugin::nvidia::api::{NvmlEvent, NvmlEventKind, Probe};
use solgrid_device_plugin::nvidia::fake::FakeNvml;
use solgrid_device_plugin::nvidia::health::HealthPolicy;
use solgrid_device_plugin::proto::v1beta1 as api;
use std::time::{Duration, Instant};
use tonic::Code;

const ENDPOINT: &str = "solgrid-nvidia.sock";
const SEC: Duration = Duration::from_secs(1);
const RESOURCE: &str = "solgrid.dev/nvidia-gpu";

fn no_recovery() -> HealthPolicy {
    HealthPolicy {
        recovery_after: None,
        ..HealthPolicy::default()
    }
}

/// An NVML event for `uuid` (`None`: one NVML cannot attribute to a GPU).
fn event(uuid: Option<&str>, kind: NvmlEventKind) -> NvmlEvent {
    NvmlEvent {
        uuid: uuid.map(str::to_string),
        kind,
    }
}

/// `count` H100s (`links` NVLinks a pair), registered, with a kubelet client.
async fn registered(count: u32, links: u32, policy: HealthPolicy) -> (NvidiaHarness, Client) {
    let mut h = NvidiaHarness::start(FakeNvml::h100_box(count, links), policy).await;
    let (reg, client) = h.registered_client().await;
    assert_eq!(reg.endpoint, ENDPOINT);
    assert_eq!(reg.resource_name, RESOURCE);
    (h, client)
}

#[tokio::test]
async fn registers_then_serves_list_and_watch_and_allocate() {
    let mut h = NvidiaHarness::start(FakeNvml::h100_box(4, 2), no_recovery()).await;
    let (reg, mut client) = h.registered_client().await;
    assert_eq!(reg.version, "v1beta1");
    assert_eq!(reg.endpoint, ENDPOINT);
    assert_eq!(reg.resource_name, RESOURCE);
    let opts = reg.options.expect("options");
    assert!(opts.get_preferred_allocation_available);
    assert!(!opts.pre_start_required);

    let opts = client
        .get_device_plugin_options(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(opts.get_preferred_allocation_available);

    let (_stream, list) = watch(&mut client).await;
    let ids: Vec<&str> = list.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["GPU-fake-0", "GPU-fake-1", "GPU-fake-2", "GPU-fake-3"]
    );
    assert!(list.devices.iter().all(|d| d.health == "Healthy"));
    let numa: Vec<i64> = list
        .devices
        .iter()
        .map(|d| d.topology.as_ref().unwrap().nodes[0].id)
        .collect();
    // GPU-fake-2's NUMA node comes from the sysfs fixture (1), not from NVML (0)
    assert_eq!(numa, [0, 0, 1, 0]);

    let resp = client
        .allocate(alloc_req(&["GPU-fake-1", "GPU-fake-3"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.container_responses.len(), 1);
    let c = &resp.container_responses[0];
    assert_eq!(c.envs["NVIDIA_VISIBLE_DEVICES"], "GPU-fake-1,GPU-fake-3");
    assert_eq!(c.envs["SOLGRID_DEVICE_IDS"], "GPU-fake-1,GPU-fake-3");
    let nodes: Vec<(&str, &str, &str)> = c
        .devices
        .iter()
        .map(|d| {
            (
                d.host_path.as_str(),
                d.container_path.as_str(),
                d.permissions.as_str(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("/host/dev/nvidia1", "/dev/nvidia1", "rw"),
            ("/host/dev/nvidia3", "/dev/nvidia3", "rw"),
            ("/host/dev/nvidiactl", "/dev/nvidiactl", "rw"),
            ("/host/dev/nvidia-uvm", "/dev/nvidia-uvm", "rw"),
        ],
        "per-GPU nodes, then the shared ones present in the fixture /dev"
    );
    assert_eq!(c.mounts.len(), 1);
    assert_eq!(c.mounts[0].host_path, "/opt/solgrid/lib");
    assert_eq!(c.mounts[0].container_path, "/usr/local/solgrid");
    assert!(c.mounts[0].read_only);

    let pre = client
        .pre_start_container(api::PreStartContainerRequest {
            devices_ids: vec!["GPU-fake-1".into()],
        })
        .await;
    assert!(pre.is_ok());
    h.assert_metric(
        "solgrid_device_plugin_allocated_devices_total{resource=\"solgrid.dev/nvidia-gpu\"} 2",
    );
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_device_is_invalid_argument() {
    let (h, mut client) = registered(2, 0, no_recovery()).await;
    for ids in [
        &["GPU-nope"][..],
        &["GPU-fake-0", "GPU-nope"][..],
        &[][..],
        &["GPU-fake-0", "GPU-fake-0"][..],
    ] {
        let err = client
            .allocate(alloc_req(ids))
            .await
            .expect_err("must fail");
        assert_eq!(err.code(), Code::InvalidArgument, "{ids:?}: {err:?}");
    }
    let err = client.allocate(alloc_req(&["GPU-nope"])).await.unwrap_err();
    assert!(err.message().contains("GPU-nope"), "{}", err.message());

    let err = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["GPU-fake-0".into(), "GPU-bogus".into()],
                must_include_device_i_ds: vec![],
                allocation_size: 1,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    h.shutdown().await;
}

#[tokio::test]
async fn double_bit_ecc_marks_unhealthy() {
    let (h, mut client) = registered(2, 0, no_recovery()).await;
    let (mut stream, _) = watch(&mut client).await;
    h.nvml
        .send(event(Some("GPU-fake-1"), NvmlEventKind::SingleBitEcc));
    assert_no_list(&mut stream, Duration::from_millis(300)).await;
    h.nvml
        .send(event(Some("GPU-fake-1"), NvmlEventKind::DoubleBitEcc));
    let list = next_list(&mut stream, SEC).await.expect("update");
    assert_eq!(health_of(&list, "GPU-fake-1"), "Unhealthy");
    assert_eq!(health_of(&list, "GPU-fake-0"), "Healthy");
    h.shutdown().await;
}

#[tokio::test]
async fn health_change_reaches_list_and_watch_within_a_second() {
    let policy = HealthPolicy {
        recovery_after: Some(Duration::from_millis(300)),
        ..HealthPolicy::default()
    };
    let (h, mut client) = registered(4, 0, policy).await;
    let (mut stream, _) = watch(&mut client).await;

    // an application XID changes nothing
    assert!(
        h.nvml
            .send(event(Some("GPU-fake-2"), NvmlEventKind::Xid(43)))
    );
    assert_no_list(&mut stream, Duration::from_millis(300)).await;

    // the GPU must stay faulted for a while: the probe fails at first
    h.nvml
        .set_probe("GPU-fake-2", Probe::Unhealthy("pending retirement".into()));
    let sent = Instant::now();
    assert!(
        h.nvml
            .send(event(Some("GPU-fake-2"), NvmlEventKind::Xid(79)))
    );
    let list = next_list(&mut stream, SEC)
        .await
        .expect("update within 1 s");
    let latency = sent.elapsed();
    assert!(latency < SEC, "{latency:?}");
    assert_eq!(health_of(&list, "GPU-fake-2"), "Unhealthy");
    assert_eq!(health_of(&list, "GPU-fake-0"), "Healthy");
    assert_eq!(list.devices.len(), 4, "the full list is sent again");
    eprintln!("health change reached ListAndWatch in {latency:?}");

    // still unhealthy after a failed probe
    assert_no_list(&mut stream, Duration::from_millis(500)).await;
    // recovery: the probe passes, the next recovery check reports it healthy
    h.nvml.set_probe("GPU-fake-2", Probe::Healthy);
    let list = next_list(&mut stream, 2 * SEC)
        .await
        .expect("recovery update");
    assert_eq!(health_of(&list, "GPU-fake-2"), "Healthy");

    // an event NVML cannot attribute to a GPU: every GPU is unhealthy
    assert!(h.nvml.send(event(None, NvmlEventKind::XidUnknown)));
    let list = next_list(&mut stream, SEC).await.expect("update");
    assert!(
        list.devices.iter().all(|d| d.health == "Unhealthy"),
        "{list:?}"
    );
    h.assert_metric(
        "solgrid_device_plugin_devices{health=\"Unhealthy\",resource=\"solgrid.dev/nvidia-gpu\"} 4",
    );
    h.shutdown().await;
}

#[tokio::test]
async fn kubelet_socket_recreated_leads_to_reregistration() {
    let (mut h, _) = registered(2, 0, no_recovery()).await;
    h.kubelet
        .assert_no_registration(Duration::from_millis(300), "registers once")
        .await;
    h.kubelet.restart(false, Duration::from_millis(120)).await;
    let reg = h.kubelet.expect_registration("re-registration").await;
    assert_eq!(reg.resource_name, RESOURCE);
    // the plugin counts it once the kubelet's answer is back
    let deadline = Instant::now() + SEC;
    while h.metrics.registrations_ok(RESOURCE) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.metrics.registrations_ok(RESOURCE), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn kubelet_restart_wiping_sockets_restarts_the_server() {
    let (mut h, mut client) = registered(2, 0, no_recovery()).await;
    let (mut old_stream, _) = watch(&mut client).await;

    // no gap: the plugin sees the new kubelet.sock and its own socket gone at once
    h.kubelet.restart(true, Duration::ZERO).await;
    let reg = h.kubelet.expect_registration("re-registration").await;
    assert_eq!(reg.endpoint, ENDPOINT);
    h.kubelet
        .assert_no_registration(
            Duration::from_millis(300),
            "registers once, after its new server listens",
        )
        .await;
    // the old stream ended with the old server
    let ended = tokio::time::timeout(2 * SEC, old_stream.message())
        .await
        .expect("old stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    // the new server answers
    let mut client = h.kubelet.connect(ENDPOINT).await;
    let (_stream, list) = watch(&mut client).await;
    assert_eq!(list.devices.len(), 2, "list from the new server");
    h.shutdown().await;
}

#[tokio::test]
async fn kubelet_down_for_a_while_then_back() {
    let (mut h, _) = registered(1, 0, no_recovery()).await;
    h.kubelet.stop().await;
    h.kubelet
        .assert_no_registration(
            Duration::from_millis(400),
            "nothing to register with while it is down",
        )
        .await;
    h.kubelet.serve_again();
    let reg = h
        .kubelet
        .expect_registration("registration when back")
        .await;
    assert_eq!(reg.resource_name, RESOURCE);
    h.shutdown().await;
}

#[tokio::test]
async fn preferred_allocation_keeps_gpus_on_nvlink() {
    // 8 GPUs: NVLink islands 0-3 and 4-7 (2 links per pair)
    let (h, mut client) = registered(8, 2, no_recovery()).await;
    let ids = |v: &[u32]| {
        v.iter()
            .map(|i| format!("GPU-fake-{i}"))
            .collect::<Vec<_>>()
    };
    let resp = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![
                api::ContainerPreferredAllocationRequest {
                    available_device_i_ds: ids(&[0, 2, 4, 5, 6, 7]),
                    must_include_device_i_ds: vec![],
                    allocation_size: 3,
                },
                api::ContainerPreferredAllocationRequest {
                    available_device_i_ds: ids(&[0, 1, 2, 3, 4, 5]),
                    must_include_device_i_ds: ids(&[5]),
                    allocation_size: 2,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.container_responses[0].device_i_ds, ids(&[4, 5, 6]));
    assert_eq!(resp.container_responses[1].device_i_ds, ids(&[5, 4]));
    h.shutdown().await;
}
