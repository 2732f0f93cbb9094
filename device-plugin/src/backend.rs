//! What every vendor backend provides: discovery and health monitoring.

use crate::device::{Device, DeviceNode};
use crate::resource::ResourceManager;
use solgrid_crds::GpuVendor;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Every place the plugin looks at on the host. All are settings, so tests
/// point them at fixture trees.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// Where sysfs is mounted (`/sys`).
    pub sysfs_root: PathBuf,
    /// Where the plugin sees `/dev` (`/dev`; in a container maybe `/host/dev`).
    pub dev_root: PathBuf,
    /// Where the kubelet / container runtime sees `/dev` on the host (`/dev`):
    /// the host paths of the device nodes handed out by `Allocate`.
    pub host_dev_root: PathBuf,
    /// The flattened device tree (`/proc/device-tree`).
    pub device_tree_root: PathBuf,
    /// procfs (`/proc`), for `meminfo`.
    pub proc_root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            sysfs_root: "/sys".into(),
            dev_root: "/dev".into(),
            host_dev_root: "/dev".into(),
            device_tree_root: "/proc/device-tree".into(),
            proc_root: "/proc".into(),
        }
    }
}

impl HostPaths {
    /// Every path under one root (a fixture tree): `<root>/sys`, `<root>/dev`,
    /// `<root>/proc/device-tree`, `<root>/proc`; host device paths stay `/dev`.
    pub fn under(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        HostPaths {
            sysfs_root: root.join("sys"),
            dev_root: root.join("dev"),
            host_dev_root: "/dev".into(),
            device_tree_root: root.join("proc/device-tree"),
            proc_root: root.join("proc"),
        }
    }
}

/// What discovery found for one vendor.
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    pub devices: Vec<Device>,
    /// Nodes every container of this resource needs (e.g. `/dev/nvidiactl`).
    pub shared_nodes: Vec<DeviceNode>,
}

/// A GPU vendor backend.
pub trait Backend: Send + Sync {
    fn vendor(&self) -> GpuVendor;

    /// Find the devices. Problems (no driver, unreadable sysfs) are logged and
    /// give an empty result; they never panic.
    fn discover(&self) -> Discovered;

    /// Start watching the health of `manager`'s devices until `stop` is
    /// cancelled. Health changes go to `manager.set_health`.
    fn start_health(
        &self,
        manager: Arc<ResourceManager>,
        stop: CancellationToken,
    ) -> Option<std::thread::JoinHandle<()>>;
}

/// Run a backend's health monitor on a thread of its own called `name`. A
/// thread that cannot be started is logged, and health checks stay off.
pub(crate) fn spawn_health_thread(
    name: &str,
    monitor: impl FnOnce() + Send + 'static,
) -> Option<std::thread::JoinHandle<()>> {
    match std::thread::Builder::new().name(name.into()).spawn(monitor) {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, thread = name, "could not start a health thread: health checks are off");
            None
        }
    }
}
