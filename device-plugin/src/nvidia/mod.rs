//! NVIDIA GPUs through NVML.

pub mod api;
pub mod fake;
pub mod health;
pub mod real;

use crate::backend::{Backend, Discovered, HostPaths, spawn_health_thread};
use crate::device::{Device, DeviceNode, normalize_pci_bus_id};
use crate::metrics::Metrics;
use crate::resource::ResourceManager;
use api::{NvmlApi, NvmlGpu};
use health::{HealthPolicy, HealthTracker};
use solgrid_crds::GpuVendor;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Device nodes shared by every NVIDIA container, when present.
const SHARED_NODES: [&str; 4] = [
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// Health settings of the NVIDIA backend.
#[derive(Clone, Debug)]
pub struct NvidiaHealthConfig {
    /// Turn NVML event health checks off.
    pub disabled: bool,
    pub policy: HealthPolicy,
    /// How often the health loop wakes up without an event.
    pub tick: Duration,
}

impl Default for NvidiaHealthConfig {
    fn default() -> Self {
        NvidiaHealthConfig {
            disabled: false,
            policy: HealthPolicy::default(),
            tick: Duration::from_millis(500),
        }
    }
}

/// The NVIDIA backend. `api` is `None` when NVML could not be loaded.
pub struct NvidiaBackend {
    api: Option<Arc<dyn NvmlApi>>,
    paths: HostPaths,
    health: NvidiaHealthConfig,
    metrics: Option<Metrics>,
}

impl NvidiaBackend {
    pub fn new(
        api: Option<Arc<dyn NvmlApi>>,
        paths: HostPaths,
        health: NvidiaHealthConfig,
    ) -> Self {
        NvidiaBackend {
            api,
            paths,
            health,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Load the real NVML; without a driver the backend reports no devices.
    pub fn with_real_nvml(
        library: Option<&std::ffi::OsStr>,
        paths: HostPaths,
        health: NvidiaHealthConfig,
    ) -> Self {
        let api: Option<Arc<dyn NvmlApi>> = match real::RealNvml::init(library) {
            Ok(n) => {
                tracing::info!(
                    driver = n.driver_version().as_deref().unwrap_or("?"),
                    "NVML loaded"
                );
                Some(Arc::new(n))
            }
            Err(e) => {
                tracing::info!(error = %e, "NVML not available (no NVIDIA driver on this node?): the nvidia backend reports no devices");
                None
            }
        };
        Self::new(api, paths, health)
    }

    fn numa_from_sysfs(&self, bus_id: &str) -> Option<i32> {
        let p = self
            .paths
            .sysfs_root
            .join("bus/pci/devices")
            .join(bus_id)
            .join("numa_node");
        let n: i32 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
        (n >= 0).then_some(n)
    }

    /// Turn NVML's view into advertised devices.
    pub fn devices_from(&self, gpus: &[NvmlGpu], driver: Option<&str>) -> Vec<Device> {
        let by_bus: HashMap<String, &str> = gpus
            .iter()
            .map(|g| (normalize_pci_bus_id(&g.pci_bus_id), g.uuid.as_str()))
            .collect();
        gpus.iter()
            .map(|g| {
                let bus = normalize_pci_bus_id(&g.pci_bus_id);
                let mut links: BTreeMap<String, u32> = BTreeMap::new();
                for remote in &g.nvlink_remote_bus_ids {
                    if let Some(peer) = by_bus.get(&normalize_pci_bus_id(remote))
                        && *peer != g.uuid
                    {
                        *links.entry((*peer).to_string()).or_default() += 1;
                    }
                }
                let mut attributes = BTreeMap::new();
                attributes.insert("minor".into(), g.minor.to_string());
                if let Some(d) = driver {
                    attributes.insert("driver".into(), d.to_string());
                }
                if g.nvlink_remote_bus_ids.len() > links.values().sum::<u32>() as usize {
                    attributes.insert("nvswitch-or-external-links".into(), "true".into());
                }
                Device {
                    id: g.uuid.clone(),
                    vendor: GpuVendor::Nvidia,
                    model: g.name.clone(),
                    memory_mib: g.memory_bytes / (1024 * 1024),
                    uuid: Some(g.uuid.clone()),
                    numa_node: self.numa_from_sysfs(&bus).or(g.numa_node),
                    pci_bus_id: (!bus.is_empty()).then_some(bus),
                    index: g.index,
                    links,
                    nodes: vec![DeviceNode::under_dev(
                        &self.paths.host_dev_root,
                        &format!("nvidia{}", g.minor),
                    )],
                    attributes,
                }
            })
            .collect()
    }

    fn shared_nodes(&self) -> Vec<DeviceNode> {
        SHARED_NODES
            .iter()
            .filter(|n| **n == "nvidiactl" || self.paths.dev_root.join(n).exists())
            .map(|n| DeviceNode::under_dev(&self.paths.host_dev_root, n))
            .collect()
    }
}

impl Backend for NvidiaBackend {
    fn vendor(&self) -> GpuVendor {
        GpuVendor::Nvidia
    }

    fn discover(&self) -> Discovered {
        let Some(api) = &self.api else {
            return Discovered::default();
        };
        match api.gpus() {
            Ok(gpus) => {
                let driver = api.driver_version();
                let devices = self.devices_from(&gpus, driver.as_deref());
                tracing::info!(count = devices.len(), "NVIDIA GPUs found");
                Discovered {
                    shared_nodes: if devices.is_empty() {
                        vec![]
                    } else {
                        self.shared_nodes()
                    },
                    devices,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "listing NVIDIA GPUs through NVML failed: reporting none");
                Discovered::default()
            }
        }
    }

    fn start_health(
        &self,
        manager: Arc<ResourceManager>,
        stop: CancellationToken,
    ) -> Option<std::thread::JoinHandle<()>> {
        let api = self.api.clone()?;
        if self.health.disabled {
            tracing::info!("NVIDIA health checks are disabled");
            return None;
        }
        let uuids: Vec<String> = manager.devices().iter().map(|d| d.id.clone()).collect();
        if uuids.is_empty() {
            return None;
        }
        let cfg = self.health.clone();
        let metrics = self.metrics.clone();
        spawn_health_thread("nvml-health", move || {
            let mut tracker = HealthTracker::new(cfg.policy.clone(), uuids.clone());
            let resource = manager.resource_name().to_string();
            let mut sink = |ev: Option<api::NvmlEvent>| -> bool {
                if stop.is_cancelled() {
                    return false;
                }
                let now = Instant::now();
                let changes = match ev {
                    Some(ev) => {
                        if let Some(m) = &metrics {
                            m.health_event(&resource, &event_kind_label(&ev.kind));
                        }
                        tracker.on_event(&ev, now)
                    }
                    None => tracker.on_tick(now, &mut |uuid| api.probe(uuid)),
                };
                if !changes.is_empty() {
                    let batch: Vec<_> = changes
                        .into_iter()
                        .map(|c| (c.uuid, c.health, Some(c.reason)))
                        .collect();
                    manager.set_health_many(&batch);
                }
                true
            };
            if let Err(e) = api.watch_events(&uuids, cfg.tick, &mut sink) {
                tracing::error!(error = %e, "NVML health events unavailable: health checks are off for this run");
            }
        })
    }
}

fn event_kind_label(kind: &api::NvmlEventKind) -> String {
    match kind {
        api::NvmlEventKind::Xid(x) => format!("xid_{x}"),
        api::NvmlEventKind::XidUnknown => "xid_unknown".into(),
        api::NvmlEventKind::DoubleBitEcc => "ecc_double_bit".into(),
        api::NvmlEventKind::SingleBitEcc => "ecc_single_bit".into(),
        api::NvmlEventKind::Other(_) => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvidia::fake::FakeNvml;

    #[test]
    fn nvlink_peers_and_numa_are_resolved() {
        let gpus = FakeNvml::h100_box(8, 2);
        let be = NvidiaBackend::new(
            None,
            HostPaths::under("/nonexistent"),
            NvidiaHealthConfig::default(),
        );
        let devs = be.devices_from(&gpus, Some("550"));
        assert_eq!(devs.len(), 8);
        assert_eq!(devs[0].links_to("GPU-fake-1"), 2);
        assert_eq!(devs[0].links_to("GPU-fake-4"), 0);
        assert_eq!(devs[5].links.len(), 3);
        assert_eq!(devs[5].numa_node, Some(1));
        assert_eq!(devs[3].pci_bus_id.as_deref(), Some("0000:04:00.0"));
        assert_eq!(devs[3].memory_mib, 81_559);
        assert_eq!(
            devs[3].nodes[0].host_path,
            std::path::Path::new("/dev/nvidia3")
        );
        assert_eq!(
            devs[3].nodes[0].container_path,
            std::path::Path::new("/dev/nvidia3")
        );
    }

    #[test]
    fn no_nvml_means_no_devices() {
        let be = NvidiaBackend::new(None, HostPaths::default(), NvidiaHealthConfig::default());
        assert!(be.discover().devices.is_empty());
    }
}
