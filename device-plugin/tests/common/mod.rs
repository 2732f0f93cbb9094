//! Test support: a fake kubelet (Registration server on a temp socket),
//! fixture trees, and a plugin wired to a fake NVML.
#![allow(dead_code)]

use solgrid_device_plugin::backend::{Backend, HostPaths};
use solgrid_device_plugin::kubelet::{KUBELET_SOCKET, PluginRunner, RunnerConfig, connect_unix};
use solgrid_device_plugin::metrics::Metrics;
use solgrid_device_plugin::nvidia::api::{NvmlApi, NvmlGpu};
use solgrid_device_plugin::nvidia::fake::{FakeNvml, FakeNvmlHandle};
use solgrid_device_plugin::nvidia::health::HealthPolicy;
use solgrid_device_plugin::nvidia::{NvidiaBackend, NvidiaHealthConfig};
use solgrid_device_plugin::plugin::MountSpec;
use solgrid_device_plugin::proto::v1beta1 as api;
use solgrid_device_plugin::resource::ResourceManager;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

pub const POLL: Duration = Duration::from_millis(50);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn link(root: &Path, at: &str, target: &str) {
    std::os::unix::fs::symlink(target, root.join(at)).unwrap();
}

/// The Apple M1 Pro fixture in a temp dir, with its sysfs symlinks.
pub fn apple_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(&fixture("apple-m1pro"), root);
    let gpu = "sys/devices/platform/soc/206400000.gpu";
    let igpu = "sys/devices/pci0000:00/0000:00:02.0";
    link(
        root,
        &format!("{gpu}/driver"),
        "../../../../bus/platform/drivers/asahi",
    );
    link(
        root,
        &format!("{igpu}/driver"),
        "../../../../bus/pci/drivers/i915",
    );
    for node in ["renderD128", "card0"] {
        link(root, &format!("{gpu}/drm/{node}/device"), "../..");
        link(
            root,
            &format!("sys/class/drm/{node}"),
            &format!("../../devices/platform/soc/206400000.gpu/drm/{node}"),
        );
    }
    link(root, &format!("{igpu}/drm/renderD129/device"), "../..");
    link(
        root,
        "sys/class/drm/renderD129",
        "../../devices/pci0000:00/0000:00:02.0/drm/renderD129",
    );
    dir
}

/// A fake kubelet: the Registration service on `<dir>/kubelet.sock`.
pub struct FakeKubelet {
    pub dir: PathBuf,
    pub registrations: mpsc::UnboundedReceiver<api::RegisterRequest>,
    tx: mpsc::UnboundedSender<api::RegisterRequest>,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct Registrar(mpsc::UnboundedSender<api::RegisterRequest>);

#[tonic::async_trait]
impl api::registration_server::Registration for Registrar {
    async fn register(
        &self,
        request: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(api::Empty {}))
    }
}

impl FakeKubelet {
    pub async fn start(dir: &Path) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut k = FakeKubelet {
            dir: dir.to_path_buf(),
            registrations: rx,
            tx,
            stop: CancellationToken::new(),
            server: None,
        };
        k.serve();
        k
    }

    fn serve(&mut self) {
        let sock = self.dir.join(KUBELET_SOCKET);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).unwrap();
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        let reg = Registrar(self.tx.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(api::registration_server::RegistrationServer::new(reg))
                .serve_with_incoming_shutdown(
                    UnixListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await;
        }));
    }

    /// Stop, delete kubelet.sock (and, like a real kubelet, every plugin
    /// socket when `wipe_plugins`), wait `gap`, then serve a new kubelet.sock.
    pub async fn restart(&mut self, wipe_plugins: bool, gap: Duration) {
        self.stop.cancel();
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        let _ = std::fs::remove_file(self.dir.join(KUBELET_SOCKET));
        if wipe_plugins {
            for e in std::fs::read_dir(&self.dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "sock") {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
        tokio::time::sleep(gap).await;
        self.serve();
    }

    /// Stop serving and delete kubelet.sock.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        let _ = std::fs::remove_file(self.dir.join(KUBELET_SOCKET));
    }

    /// Serve kubelet.sock again after [`FakeKubelet::stop`].
    pub fn serve_again(&mut self) {
        self.serve();
    }

    /// The next registration, within `within`.
    pub async fn next_registration(&mut self, within: Duration) -> Option<api::RegisterRequest> {
        tokio::time::timeout(within, self.registrations.recv())
            .await
            .ok()
            .flatten()
    }

    /// Connect to a plugin's endpoint as the kubelet does.
    pub async fn connect(
        &self,
        endpoint: &str,
    ) -> api::device_plugin_client::DevicePluginClient<Channel> {
        let ch = connect_unix(&self.dir.join(endpoint), Duration::from_secs(5))
            .await
            .expect("connect to the plugin socket");
        api::device_plugin_client::DevicePluginClient::new(ch)
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running NVIDIA plugin over a fake NVML.
pub struct NvidiaHarness {
    pub tmp: tempfile::TempDir,
    pub kubelet: FakeKubelet,
    pub manager: Arc<ResourceManager>,
    pub nvml: FakeNvmlHandle,
    pub metrics: Metrics,
    pub stop: CancellationToken,
    pub runner: tokio::task::JoinHandle<()>,
}

impl NvidiaHarness {
    pub async fn start(gpus: Vec<NvmlGpu>, policy: HealthPolicy) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let plugin_dir = tmp.path().join("device-plugins");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        let kubelet = FakeKubelet::start(&plugin_dir).await;
        let (fake, handle) = FakeNvml::new(gpus);
        let api: Arc<dyn NvmlApi> = Arc::new(fake);
        let mut paths = HostPaths::under(fixture("nvidia"));
        paths.host_dev_root = "/host/dev".into();
        let metrics = Metrics::new().unwrap();
        let backend = NvidiaBackend::new(
            Some(api),
            paths,
            NvidiaHealthConfig {
                disabled: false,
                policy,
                tick: Duration::from_millis(50),
            },
        )
        .with_metrics(metrics.clone());
        let found = backend.discover();
        let manager = Arc::new(
            ResourceManager::new(backend.vendor(), found.devices, found.shared_nodes)
                .with_metrics(metrics.clone()),
        );
        let stop = CancellationToken::new();
        backend.start_health(manager.clone(), stop.clone());
        let runner = PluginRunner::new(
            manager.clone(),
            RunnerConfig {
                plugin_dir,
                poll: POLL,
                register_timeout: Duration::from_secs(2),
                mounts: vec![
                    "/opt/solgrid/lib:/usr/local/solgrid:ro"
                        .parse::<MountSpec>()
                        .unwrap(),
                ],
            },
            Some(metrics.clone()),
        );
        let runner = tokio::spawn(runner.run(stop.clone()));
        NvidiaHarness {
            tmp,
            kubelet,
            manager,
            nvml: handle,
            metrics,
            stop,
            runner,
        }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.runner)
            .await
            .expect("runner stops")
            .expect("runner did not panic");
    }
}

/// Wait for the next ListAndWatch message, at most `within`.
pub async fn next_list(
    stream: &mut tonic::Streaming<api::ListAndWatchResponse>,
    within: Duration,
) -> Option<api::ListAndWatchResponse> {
    tokio::time::timeout(within, stream.message())
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten()
}

pub fn health_of(list: &api::ListAndWatchResponse, id: &str) -> String {
    list.devices
        .iter()
        .find(|d| d.id == id)
        .map(|d| d.health.clone())
        .unwrap_or_default()
}
