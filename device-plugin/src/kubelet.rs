//! Talking to the kubelet: unix-socket gRPC, registration, and the plugin
//! server's lifecycle (serve, register, re-register after a kubelet restart,
//! restart when our socket is removed).

use crate::metrics::Metrics;
use crate::plugin::{MountSpec, PluginService};
use crate::proto::v1beta1 as api;
use crate::resource::ResourceManager;
use solgrid_crds::GpuVendor;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};

/// The device plugin API version this plugin speaks.
pub const API_VERSION: &str = "v1beta1";
/// The kubelet's registration socket, in the device plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// Where the kubelet expects device plugin sockets.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";

/// The socket file name of a vendor's plugin server: `solgrid-<vendor>.sock`.
pub fn socket_name(vendor: GpuVendor) -> String {
    format!("solgrid-{vendor}.sock")
}

/// A gRPC channel over a unix socket.
pub async fn connect_unix(
    path: &Path,
    timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("connecting to {0}: {1}")]
    Connect(PathBuf, tonic::transport::Error),
    #[error("kubelet refused the registration: {0}")]
    Refused(tonic::Status),
}

/// Register `resource_name`, served on `endpoint` (a file name in the plugin
/// directory), with the kubelet listening on `kubelet_socket`.
pub async fn register(
    kubelet_socket: &Path,
    endpoint: &str,
    resource_name: &str,
    timeout: Duration,
) -> Result<(), RegisterError> {
    let channel = connect_unix(kubelet_socket, timeout)
        .await
        .map_err(|e| RegisterError::Connect(kubelet_socket.to_path_buf(), e))?;
    let mut client = api::registration_client::RegistrationClient::new(channel);
    client
        .register(api::RegisterRequest {
            version: API_VERSION.to_string(),
            endpoint: endpoint.to_string(),
            resource_name: resource_name.to_string(),
            options: Some(PluginService::options()),
        })
        .await
        .map_err(RegisterError::Refused)?;
    Ok(())
}

/// Identity of a file: a re-created socket has a different one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    })
}

/// Settings of a plugin server.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The kubelet's device plugin directory.
    pub plugin_dir: PathBuf,
    /// How often the directory is checked for a re-created kubelet socket
    /// or a removed plugin socket.
    pub poll: Duration,
    /// Timeout of one registration attempt.
    pub register_timeout: Duration,
    /// Mounts added to every allocation.
    pub mounts: Vec<MountSpec>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            plugin_dir: DEFAULT_PLUGIN_DIR.into(),
            poll: Duration::from_secs(1),
            register_timeout: Duration::from_secs(5),
            mounts: vec![],
        }
    }
}

/// Serves one resource's `DevicePlugin` and keeps it registered.
pub struct PluginRunner {
    manager: Arc<ResourceManager>,
    config: RunnerConfig,
    metrics: Option<Metrics>,
}

impl PluginRunner {
    pub fn new(
        manager: Arc<ResourceManager>,
        config: RunnerConfig,
        metrics: Option<Metrics>,
    ) -> Self {
        PluginRunner {
            manager,
            config,
            metrics,
        }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.config
            .plugin_dir
            .join(socket_name(self.manager.vendor()))
    }

    /// Serve until `shutdown` is cancelled. The socket is removed on the way out.
    pub async fn run(self, shutdown: CancellationToken) {
        let resource = self.manager.resource_name().to_string();
        let sock = self.socket_path();
        let endpoint = socket_name(self.manager.vendor());
        let kubelet_sock = self.config.plugin_dir.join(KUBELET_SOCKET);
        'serve: while !shutdown.is_cancelled() {
            if let Err(e) = std::fs::remove_file(&sock)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(socket = %sock.display(), error = %e, "could not remove the old plugin socket");
            }
            let listener = match UnixListener::bind(&sock) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(socket = %sock.display(), error = %e, "cannot listen on the plugin socket; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'serve,
                        _ = tokio::time::sleep(self.config.poll) => continue 'serve,
                    }
                }
            };
            let own_id = file_id(&sock);
            let stop = shutdown.child_token();
            let svc = PluginService::new(
                self.manager.clone(),
                &self.config.mounts,
                self.metrics.clone(),
                stop.clone(),
            );
            let server = tokio::spawn(
                Server::builder()
                    .add_service(api::device_plugin_server::DevicePluginServer::new(svc))
                    .serve_with_incoming_shutdown(
                        UnixListenerStream::new(listener),
                        stop.clone().cancelled_owned(),
                    ),
            );
            tracing::info!(%resource, socket = %sock.display(), "plugin server listening");
            let mut registered_with: Option<FileId> = None;
            let mut next_attempt = Instant::now();
            let mut backoff = self.config.poll;
            loop {
                // our socket first: after a kubelet restart that wiped the
                // directory, register only once the new server listens
                if file_id(&sock) != own_id {
                    tracing::warn!(%resource, socket = %sock.display(), "plugin socket removed or replaced: restarting the plugin server");
                    stop.cancel();
                    let _ = server.await;
                    continue 'serve;
                }
                if server.is_finished() {
                    tracing::error!(%resource, "plugin server stopped unexpectedly: restarting it");
                    stop.cancel();
                    let _ = server.await;
                    continue 'serve;
                }
                match file_id(&kubelet_sock) {
                    Some(k) if registered_with != Some(k) && Instant::now() >= next_attempt => {
                        if registered_with.is_some() {
                            tracing::info!(%resource, "kubelet socket re-created (kubelet restart): registering again");
                        }
                        let r = register(
                            &kubelet_sock,
                            &endpoint,
                            &resource,
                            self.config.register_timeout,
                        )
                        .await;
                        if let Some(m) = &self.metrics {
                            m.registration(&resource, r.is_ok());
                        }
                        match r {
                            Ok(()) => {
                                tracing::info!(%resource, kubelet = %kubelet_sock.display(), "registered with the kubelet");
                                registered_with = Some(k);
                                backoff = self.config.poll;
                            }
                            Err(e) => {
                                tracing::warn!(%resource, error = %e, retry_in = ?backoff, "registration failed");
                                next_attempt = Instant::now() + backoff;
                                backoff = (backoff * 2).min(Duration::from_secs(30));
                            }
                        }
                    }
                    Some(_) => {}
                    None => {
                        if registered_with.take().is_some() {
                            tracing::warn!(%resource, "kubelet socket gone; will register when it is back");
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        stop.cancel();
                        let _ = server.await;
                        break 'serve;
                    }
                    _ = tokio::time::sleep(self.config.poll) => {}
                }
            }
        }
        if file_id(&sock).is_some() {
            let _ = std::fs::remove_file(&sock);
        }
        tracing::info!(%resource, "plugin server stopped");
    }
}
