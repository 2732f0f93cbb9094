//! Apple (asahi) discovery on a fixture tree, allocation of render + card
//! nodes over gRPC, health from sysfs, and `--list` of the real binary.

mod common;

use common::*;
use solgrid_crds::GpuVendor;
use solgrid_device_plugin::apple::AppleBackend;
use solgrid_device_plugin::backend::{Backend, HostPaths};
use solgrid_device_plugin::kubelet::{PluginRunner, RunnerConfig};
use solgrid_device_plugin::proto::v1beta1 as api;
use solgrid_device_plugin::resource::ResourceManager;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn discovers_the_asahi_gpu_and_ignores_others() {
    let root = apple_fixture();
    let be = AppleBackend::new(HostPaths::under(root.path()), Duration::from_millis(50));
    let found = be.discover();
    assert_eq!(found.devices.len(), 1, "{:?}", found.devices);
    let d = &found.devices[0];
    assert_eq!(d.id, "apple-206400000.gpu");
    assert_eq!(d.vendor, GpuVendor::Apple);
    assert_eq!(d.model, "Apple M1 Pro");
    assert_eq!(d.memory_mib, 31_853);
    assert_eq!(d.attributes["soc"], "t6000");
    assert_eq!(d.attributes["render-node"], "renderD128");
    assert_eq!(d.attributes["card-node"], "card0");
    let hosts: Vec<_> = d
        .nodes
        .iter()
        .map(|n| n.host_path.display().to_string())
        .collect();
    assert_eq!(hosts, ["/dev/dri/renderD128", "/dev/dri/card0"]);
}

#[test]
fn chip_from_machine_device_tree_when_gpu_node_has_none() {
    let root = apple_fixture();
    std::fs::remove_file(
        root.path()
            .join("sys/devices/platform/soc/206400000.gpu/of_node/compatible"),
    )
    .unwrap();
    // a Mac Studio M2 Ultra
    std::fs::write(
        root.path().join("proc/device-tree/compatible"),
        b"apple,j475d\0apple,t6022\0apple,arm-platform\0",
    )
    .unwrap();
    let be = AppleBackend::new(HostPaths::under(root.path()), Duration::from_millis(50));
    assert_eq!(be.discover().devices[0].model, "Apple M2 Ultra");
}

#[test]
fn render_node_without_dev_file_is_skipped() {
    let root = apple_fixture();
    std::fs::remove_file(root.path().join("dev/dri/renderD128")).unwrap();
    let be = AppleBackend::new(HostPaths::under(root.path()), Duration::from_millis(50));
    assert!(be.discover().devices.is_empty());
}

#[tokio::test]
async fn allocates_render_and_card_nodes_and_reports_health() {
    let root = apple_fixture();
    let plugin_dir = root.path().join("device-plugins");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let mut kubelet = FakeKubelet::start(&plugin_dir).await;
    let be = AppleBackend::new(HostPaths::under(root.path()), Duration::from_millis(50));
    let found = be.discover();
    let mgr = Arc::new(ResourceManager::new(
        GpuVendor::Apple,
        found.devices,
        found.shared_nodes,
    ));
    let stop = CancellationToken::new();
    be.start_health(mgr.clone(), stop.clone());
    let runner = PluginRunner::new(
        mgr.clone(),
        RunnerConfig {
            plugin_dir,
            poll: POLL,
            ..RunnerConfig::default()
        },
        None,
    );
    let task = tokio::spawn(runner.run(stop.clone()));

    let reg = kubelet
        .next_registration(5 * SEC)
        .await
        .expect("registration");
    assert_eq!(reg.resource_name, "solgrid.dev/apple-gpu");
    assert_eq!(reg.endpoint, "solgrid-apple.sock");
    let mut client = kubelet.connect("solgrid-apple.sock").await;
    let resp = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["apple-206400000.gpu".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let c = &resp.container_responses[0];
    let nodes: Vec<_> = c
        .devices
        .iter()
        .map(|d| (d.host_path.as_str(), d.container_path.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/dri/renderD128", "/dev/dri/renderD128"),
            ("/dev/dri/card0", "/dev/dri/card0")
        ]
    );
    assert!(!c.envs.contains_key("NVIDIA_VISIBLE_DEVICES"));
    assert_eq!(c.envs["SOLGRID_DEVICE_IDS"], "apple-206400000.gpu");

    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let list = next_list(&mut stream, SEC).await.expect("first list");
    assert_eq!(health_of(&list, "apple-206400000.gpu"), "Healthy");
    // the driver is unbound: unhealthy within a second
    let t0 = Instant::now();
    std::fs::remove_file(
        root.path()
            .join("sys/devices/platform/soc/206400000.gpu/driver"),
    )
    .unwrap();
    let list = next_list(&mut stream, SEC)
        .await
        .expect("update within 1 s");
    assert_eq!(health_of(&list, "apple-206400000.gpu"), "Unhealthy");
    assert!(t0.elapsed() < SEC);
    // bound again: healthy again
    std::os::unix::fs::symlink(
        "../../../../bus/platform/drivers/asahi",
        root.path()
            .join("sys/devices/platform/soc/206400000.gpu/driver"),
    )
    .unwrap();
    let list = next_list(&mut stream, SEC).await.expect("recovery");
    assert_eq!(health_of(&list, "apple-206400000.gpu"), "Healthy");

    stop.cancel();
    tokio::time::timeout(5 * SEC, task).await.unwrap().unwrap();
    assert!(
        !root
            .path()
            .join("device-plugins/solgrid-apple.sock")
            .exists(),
        "socket removed on exit"
    );
}

#[test]
fn list_flag_prints_what_would_be_advertised() {
    let root = apple_fixture();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_solgrid-device-plugin"))
        .args(["--list", "--json", "--vendors", "apple,nvidia"])
        .arg("--sysfs-root")
        .arg(root.path().join("sys"))
        .arg("--dev-root")
        .arg(root.path().join("dev"))
        .arg("--device-tree-root")
        .arg(root.path().join("proc/device-tree"))
        .arg("--proc-root")
        .arg(root.path().join("proc"))
        .arg("--nvml-library")
        .arg(root.path().join("no-such-libnvidia-ml.so.1"))
        .env_remove("NODE_NAME")
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["resources"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["resources"][0]["resource"], "solgrid.dev/apple-gpu");
    assert_eq!(v["resources"][0]["devices"][0]["model"], "Apple M1 Pro");
    assert_eq!(v["resources"][0]["devices"][0]["health"], "Healthy");
    assert_eq!(v["labels"]["solgrid.dev/apple-gpu.model"], "Apple-M1-Pro");
    assert_eq!(v["labels"]["solgrid.dev/apple-gpu.count"], "1");
    // NVML missing is logged, not fatal
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NVML not available"), "{stderr}");

    // and the text form
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_solgrid-device-plugin"))
        .args(["--list", "--vendors", "apple"])
        .arg("--sysfs-root")
        .arg(root.path().join("sys"))
        .arg("--dev-root")
        .arg(root.path().join("dev"))
        .arg("--proc-root")
        .arg(root.path().join("proc"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("resource solgrid.dev/apple-gpu (1 devices)"),
        "{text}"
    );
    assert!(
        text.contains("solgrid.dev/apple-gpu.memory-mib=31853"),
        "{text}"
    );
}

/// The real binary, end to end: registers with a fake kubelet, serves
/// Allocate, answers /healthz, and on SIGTERM exits cleanly and removes its socket.
#[tokio::test]
async fn binary_serves_until_sigterm() {
    let root = apple_fixture();
    let plugin_dir = root.path().join("device-plugins");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let mut kubelet = FakeKubelet::start(&plugin_dir).await;
    // a free port for the metrics endpoint
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_solgrid-device-plugin"))
        .args(["--vendors", "apple,nvidia", "--socket-poll-ms", "50"])
        .arg("--device-plugin-dir")
        .arg(&plugin_dir)
        .arg("--sysfs-root")
        .arg(root.path().join("sys"))
        .arg("--dev-root")
        .arg(root.path().join("dev"))
        .arg("--device-tree-root")
        .arg(root.path().join("proc/device-tree"))
        .arg("--proc-root")
        .arg(root.path().join("proc"))
        .arg("--nvml-library")
        .arg(root.path().join("no-such-libnvidia-ml.so.1"))
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("NODE_NAME")
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    let reg = kubelet
        .next_registration(10 * SEC)
        .await
        .expect("the binary registers");
    assert_eq!(reg.resource_name, "solgrid.dev/apple-gpu");
    let mut client = kubelet.connect("solgrid-apple.sock").await;
    let err = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["GPU-not-here".into()],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // /metrics over plain HTTP/1.1 (the count lands once the kubelet's answer is back)
    let want = "solgrid_device_plugin_registrations_total{resource=\"solgrid.dev/apple-gpu\",result=\"ok\"} 1";
    let mut resp = String::new();
    for _ in 0..40 {
        resp = http_get(port, "/metrics").await;
        if resp.contains(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(want), "{resp}");
    assert!(http_get(port, "/healthz").await.ends_with("ok"));

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(10 * SEC, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!plugin_dir.join("solgrid-apple.sock").exists());
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    resp
}
