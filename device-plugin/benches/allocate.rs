//! `Allocate` latency through the real gRPC server on a unix socket, in
//! process (tokio runtime, tonic client and server), against 8 fake NVIDIA
//! GPUs. Besides criterion's estimates it prints p50/p99/p99.9 over 20,000
//! sequential calls, since the target is `Allocate` p99 < 1 ms: for the
//! handler alone, over gRPC on a current-thread runtime (what the binary
//! uses), and over gRPC on a 2-worker multi-thread runtime (for comparison:
//! its tail suffers most when the CPUs are oversubscribed).
//!
//! Run: `cargo bench -p solgrid-device-plugin --bench allocate`

use criterion::{Criterion, criterion_group};
use solgrid_crds::GpuVendor;
use solgrid_device_plugin::backend::{Backend, HostPaths};
use solgrid_device_plugin::kubelet::connect_unix;
use solgrid_device_plugin::nvidia::api::NvmlApi;
use solgrid_device_plugin::nvidia::fake::FakeNvml;
use solgrid_device_plugin::nvidia::{NvidiaBackend, NvidiaHealthConfig};
use solgrid_device_plugin::plugin::PluginService;
use solgrid_device_plugin::proto::v1beta1 as api;
use solgrid_device_plugin::resource::ResourceManager;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

type Client = api::device_plugin_client::DevicePluginClient<tonic::transport::Channel>;

struct Setup {
    rt: tokio::runtime::Runtime,
    client: Client,
    svc: PluginService,
    _dir: tempfile::TempDir,
    _stop: CancellationToken,
}

/// `threads == 0`: a current-thread runtime (client and server on one thread).
fn setup(threads: usize) -> Setup {
    let rt = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, _handle) = FakeNvml::new(FakeNvml::h100_box(8, 2));
    let nvml: Arc<dyn NvmlApi> = Arc::new(fake);
    let backend = NvidiaBackend::new(
        Some(nvml),
        HostPaths::default(),
        NvidiaHealthConfig::default(),
    );
    let found = backend.discover();
    let manager = Arc::new(ResourceManager::new(
        GpuVendor::Nvidia,
        found.devices,
        found.shared_nodes,
    ));
    let stop = CancellationToken::new();
    let sock = dir.path().join("solgrid-nvidia.sock");
    let svc = PluginService::new(manager, &[], None, stop.clone());
    let handler = svc.clone();
    let client = rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let s = stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(api::device_plugin_server::DevicePluginServer::new(svc))
                .serve_with_incoming_shutdown(
                    UnixListenerStream::new(listener),
                    s.cancelled_owned(),
                ),
        );
        let ch = connect_unix(&sock, Duration::from_secs(5))
            .await
            .expect("connect");
        api::device_plugin_client::DevicePluginClient::new(ch)
    });
    Setup {
        rt,
        client,
        svc: handler,
        _dir: dir,
        _stop: stop,
    }
}

fn request(n: u32) -> api::AllocateRequest {
    api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest {
            devices_ids: (0..n).map(|i| format!("GPU-fake-{i}")).collect(),
        }],
    }
}

fn percentiles(s: &mut Setup, label: &str, n: u32, calls: usize) {
    let req = request(n);
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..1000 {
        s.rt.block_on(s.client.allocate(req.clone()))
            .expect("allocate");
    }
    for _ in 0..calls {
        let t = Instant::now();
        let r =
            s.rt.block_on(s.client.allocate(req.clone()))
                .expect("allocate");
        lat.push(t.elapsed());
        assert_eq!(r.into_inner().container_responses.len(), 1);
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    eprintln!(
        "Allocate {n} GPU(s), {calls} calls over gRPC/unix socket ({label}): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        p(0.50),
        p(0.99),
        p(0.999),
        lat[lat.len() - 1]
    );
}

/// The handler alone (no gRPC, no socket): what the plugin itself costs.
fn handler_percentiles(s: &Setup, n: u32, calls: usize) {
    let req = request(n);
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let r = s.svc.allocate_all(&req).expect("allocate");
        lat.push(t.elapsed());
        assert!(r.container_responses[0].devices.len() > n as usize);
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    eprintln!(
        "Allocate handler only, {n} GPU(s), {calls} calls: p50 {:?}  p99 {:?}  p99.9 {:?}",
        p(0.50),
        p(0.99),
        p(0.999)
    );
}

fn bench(c: &mut Criterion) {
    let mut s = setup(2);
    let mut single = setup(0);
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        eprintln!("load average at start: {}", load.trim());
    }
    for n in [1u32, 8] {
        handler_percentiles(&s, n, 100_000);
    }
    for n in [1u32, 8] {
        percentiles(&mut s, "2 worker threads", n, 20_000);
        percentiles(&mut single, "current-thread runtime", n, 20_000);
        let req = request(n);
        // criterion measures the production configuration (current-thread runtime)
        let Setup { rt, client, .. } = &mut single;
        c.bench_function(&format!("allocate_{n}_gpu_grpc_unix"), |b| {
            b.iter(|| rt.block_on(client.allocate(req.clone())).expect("allocate"))
        });
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
