//! Apple (asahi) discovery on a fixture tree, allocation of render + card
//! nodes over gRPC, health from sysfs, and `--list` of the real binary.

mod common;

use common::*;
use solgrid_crds::GpuVendor;
use solgrid_device_plugin::apple::AppleBackend;
use solgrid_device_plugin::backend::{Backend, HostPaths};
use solgrid_device_plugin::device::Device;
use std::path::Path;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const DEVICE: &str = "apple-206400000.gpu";
const RESOURCE: &str = "solgrid.dev/apple-gpu";
const ENDPOINT: &str = "solgrid-apple.sock";
const GPU: &str = "sys/devices/platform/soc/206400000.gpu";

fn backend(root: &Path) -> AppleBackend {
    AppleBackend::new(HostPaths::under(root), Duration::from_millis(50))
}

/// What the backend finds on the fixture after `edit` changed it.
fn discover_after(edit: impl FnOnce(&Path)) -> Vec<Device> {
    let root = apple_fixture();
    edit(root.path());
    backend(root.path()).discover().devices
}

/// The real binary, its host paths in the fixture at `root`, NVML missing.
fn plugin_binary(root: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_solgrid-device-plugin"));
    cmd.args(args);
    for (flag, path) in [
        ("--sysfs-root", "sys"),
        ("--dev-root", "dev"),
        ("--device-tree-root", "proc/device-tree"),
        ("--proc-root", "proc"),
        ("--nvml-library", "no-such-libnvidia-ml.so.1"),
    ] {
        cmd.arg(flag).arg(root.join(path));
    }
    cmd.env_remove("NODE_NAME");
    cmd
}

#[test]
fn discovers_the_asahi_gpu_and_ignores_others() {
    let found = discover_after(|_| {});
    assert_eq!(found.len(), 1, "{found:?}");
    let d = &found[0];
    assert_eq!(d.id, DEVICE);
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
    let found = discover_after(|root| {
        std::fs::remove_file(root.join(GPU).join("of_node/compatible")).unwrap();
        // a Mac Studio M2 Ultra
        std::fs::write(
            root.join("proc/device-tree/compatible"),
            b"apple,j475d\0apple,t6022\0apple,arm-platform\0",
        )
        .unwrap();
    });
    assert_eq!(found[0].model, "Apple M2 Ultra");
}

#[test]
fn render_node_without_dev_file_is_skipped() {
    let found = discover_after(|root| {
        std::fs::remove_file(root.join("dev/dri/renderD128")).unwrap();
    });
    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test]
async fn allocates_render_and_card_nodes_and_reports_health() {
    let root = apple_fixture();
    let mut plugin = RunningPlugin::start(
        &backend(root.path()),
        root.path().join("device-plugins"),
        None,
        vec![],
    )
    .await;
    let (reg, mut client) = plugin.registered_client().await;
    assert_eq!(reg.resource_name, RESOURCE);
    assert_eq!(reg.endpoint, ENDPOINT);
    let resp = client
        .allocate(alloc_req(&[DEVICE]))
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
    assert_eq!(c.envs["SOLGRID_DEVICE_IDS"], DEVICE);

    let (mut stream, list) = watch(&mut client).await;
    assert_eq!(health_of(&list, DEVICE), "Healthy");
    // the driver is unbound: unhealthy within a second
    let driver = root.path().join(GPU).join("driver");
    let t0 = Instant::now();
    std::fs::remove_file(&driver).unwrap();
    let list = next_list(&mut stream, SEC)
        .await
        .expect("update within 1 s");
    assert_eq!(health_of(&list, DEVICE), "Unhealthy");
    assert!(t0.elapsed() < SEC);
    // bound again: healthy again
    std::os::unix::fs::symlink("../../../../bus/platform/drivers/asahi", &driver).unwrap();
    let list = next_list(&mut stream, SEC).await.expect("recovery");
    assert_eq!(health_of(&list, DEVICE), "Healthy");

    plugin.shutdown().await;
    assert!(
        !root.path().join("device-plugins").join(ENDPOINT).exists(),
        "socket removed on exit"
    );
}

#[test]
fn list_flag_prints_what_would_be_advertised() {
    let root = apple_fixture();
    let out = plugin_binary(
        root.path(),
        &["--list", "--json", "--vendors", "apple,nvidia"],
    )
    .output()
    .expect("run the binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["resources"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["resources"][0]["resource"], RESOURCE);
    assert_eq!(v["resources"][0]["devices"][0]["model"], "Apple M1 Pro");
    assert_eq!(v["resources"][0]["devices"][0]["health"], "Healthy");
    assert_eq!(v["labels"]["solgrid.dev/apple-gpu.model"], "Apple-M1-Pro");
    assert_eq!(v["labels"]["solgrid.dev/apple-gpu.count"], "1");
    // NVML missing is logged, not fatal
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NVML not available"), "{stderr}");

    // and the text form
    let out = plugin_binary(root.path(), &["--list", "--vendors", "apple"])
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
    let mut cmd = plugin_binary(
        root.path(),
        &["--vendors", "apple,nvidia", "--socket-poll-ms", "50"],
    );
    cmd.arg("--device-plugin-dir")
        .arg(&plugin_dir)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"));
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    let reg = kubelet
        .next_registration(10 * SEC)
        .await
        .expect("the binary registers");
    assert_eq!(reg.resource_name, RESOURCE);
    let mut client = kubelet.connect(ENDPOINT).await;
    let err = client
        .allocate(alloc_req(&["GPU-not-here"]))
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
    assert!(!plugin_dir.join(ENDPOINT).exists());
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
