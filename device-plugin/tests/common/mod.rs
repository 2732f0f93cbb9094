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

    /// The next registration, within 5 s; `what` names it when none comes.
    pub async fn expect_registration(&mut self, what: &str) -> api::RegisterRequest {
        self.next_registration(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no {what} within 5 s"))
    }

    /// No registration within `within`; `why` says what that shows.
    pub async fn assert_no_registration(&mut self, within: Duration, why: &str) {
        let reg = self.next_registration(within).await;
        assert!(reg.is_none(), "{why}: {reg:?}");
    }

    /// Connect to a plugin's endpoint as the kubelet does.
    pub async fn connect(&self, endpoint: &str) -> Client {
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

/// The kubelet's end of a plugin's gRPC socket.
pub type Client = api::device_plugin_client::DevicePluginClient<Channel>;

/// A plugin runner serving one backend's devices from `plugin_dir`, with a
/// fake kubelet listening there.
pub struct RunningPlugin {
    pub kubelet: FakeKubelet,
    pub manager: Arc<ResourceManager>,
    pub stop: CancellationToken,
    runner: tokio::task::JoinHandle<()>,
}

impl RunningPlugin {
    /// Discover `backend`'s devices, start its health monitor and serve them.
    pub async fn start(
        backend: &dyn Backend,
        plugin_dir: PathBuf,
        metrics: Option<Metrics>,
        mounts: Vec<MountSpec>,
    ) -> Self {
        std::fs::create_dir_all(&plugin_dir).unwrap();
        let kubelet = FakeKubelet::start(&plugin_dir).await;
        let found = backend.discover();
        let mut manager = ResourceManager::new(backend.vendor(), found.devices, found.shared_nodes);
        if let Some(m) = &metrics {
            manager = manager.with_metrics(m.clone());
        }
        let manager = Arc::new(manager);
        let stop = CancellationToken::new();
        backend.start_health(manager.clone(), stop.clone());
        let runner = PluginRunner::new(
            manager.clone(),
            RunnerConfig {
                plugin_dir,
                poll: POLL,
                register_timeout: Duration::from_secs(2),
                mounts,
            },
            metrics,
        );
        let runner = tokio::spawn(runner.run(stop.clone()));
        RunningPlugin {
            kubelet,
            manager,
            stop,
            runner,
        }
    }

    /// Wait for the plugin to register, then connect to the endpoint it
    /// registered, as the kubelet does.
    pub async fn registered_client(&mut self) -> (api::RegisterRequest, Client) {
        let reg = self.kubelet.expect_registration("registration").await;
        let client = self.kubelet.connect(&reg.endpoint).await;
        (reg, client)
    }

    /// Cancel the plugin and wait for its runner to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.runner)
            .await
            .expect("runner stops")
            .expect("runner did not panic");
    }
}

/// A running NVIDIA plugin over a fake NVML (derefs to its [`RunningPlugin`]).
pub struct NvidiaHarness {
    pub tmp: tempfile::TempDir,
    pub nvml: FakeNvmlHandle,
    pub metrics: Metrics,
    pub plugin: RunningPlugin,
}

impl NvidiaHarness {
    pub async fn start(gpus: Vec<NvmlGpu>, policy: HealthPolicy) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (fake, nvml) = FakeNvml::new(gpus);
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
        let mounts = vec![
            "/opt/solgrid/lib:/usr/local/solgrid:ro"
                .parse::<MountSpec>()
                .unwrap(),
        ];
        let plugin = RunningPlugin::start(
            &backend,
            tmp.path().join("device-plugins"),
            Some(metrics.clone()),
            mounts,
        )
        .await;
        NvidiaHarness {
            tmp,
            nvml,
            metrics,
            plugin,
        }
    }

    /// The metrics endpoint renders `line`.
    pub fn assert_metric(&self, line: &str) {
        let text = self.metrics.render();
        assert!(text.contains(line), "missing {line} in\n{text}");
    }

    pub async fn shutdown(self) {
        self.plugin.shutdown().await;
    }
}

impl std::ops::Deref for NvidiaHarness {
    type Target = RunningPlugin;
    fn deref(&self) -> &RunningPlugin {
        &self.plugin
    }
}

impl std::ops::DerefMut for NvidiaHarness {
    fn deref_mut(&mut self) -> &mut RunningPlugin {
        &mut self.plugin
    }
}

/// An Allocate request for one container.
pub fn alloc_req(ids: &[&str]) -> api::AllocateRequest {
    api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    }
}

/// Open ListAndWatch and take its first list (within a second).
pub async fn watch(
    client: &mut Client,
) -> (
    tonic::Streaming<api::ListAndWatchResponse>,
    api::ListAndWatchResponse,
) {
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = next_list(&mut stream, Duration::from_secs(1))
        .await
        .expect("first list");
    (stream, first)
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

/// No ListAndWatch message within `within`.
pub async fn assert_no_list(
    stream: &mut tonic::Streaming<api::ListAndWatchResponse>,
    within: Duration,
) {
    let list = next_list(stream, within).await;
    assert!(list.is_none(), "unexpected update: {list:?}");
}
