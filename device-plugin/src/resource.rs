//! The resource manager: the devices of one resource (one vendor), their live
//! health, and the change feed that `ListAndWatch` streams.

use crate::device::{Device, DeviceNode, Health};
use crate::metrics::Metrics;
use crate::proto::v1beta1 as api;
use solgrid_crds::GpuVendor;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// A device together with its current health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceState {
    pub device: Device,
    pub health: Health,
    /// Why it is unhealthy (last event), for logs and `--list`.
    pub reason: Option<String>,
}

/// The devices of one extended resource and their health.
pub struct ResourceManager {
    vendor: GpuVendor,
    resource_name: String,
    devices: Vec<Device>,
    by_id: HashMap<String, usize>,
    /// Nodes every container of this resource gets (e.g. `/dev/nvidiactl`).
    shared_nodes: Vec<DeviceNode>,
    health: RwLock<Vec<(Health, Option<String>)>>,
    feed: watch::Sender<Arc<api::ListAndWatchResponse>>,
    metrics: Option<Metrics>,
}

impl ResourceManager {
    pub fn new(vendor: GpuVendor, devices: Vec<Device>, shared_nodes: Vec<DeviceNode>) -> Self {
        let by_id = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        let health = vec![(Health::Healthy, None); devices.len()];
        let initial = Arc::new(build_response(&devices, &health));
        let (feed, _) = watch::channel(initial);
        ResourceManager {
            vendor,
            resource_name: vendor.resource_name().to_string(),
            devices,
            by_id,
            shared_nodes,
            health: RwLock::new(health),
            feed,
            metrics: None,
        }
    }

    /// Report device counts by health to `metrics` from now on.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self.update_metrics();
        self
    }

    pub fn vendor(&self) -> GpuVendor {
        self.vendor
    }

    /// The extended resource name, e.g. `solgrid.dev/nvidia-gpu`.
    pub fn resource_name(&self) -> &str {
        &self.resource_name
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn shared_nodes(&self) -> &[DeviceNode] {
        &self.shared_nodes
    }

    /// Index of a device by its advertised ID.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.index_of(id).map(|i| &self.devices[i])
    }

    pub fn health_of(&self, id: &str) -> Option<Health> {
        let i = self.index_of(id)?;
        Some(self.read_health()[i].0)
    }

    /// Set the health of one device. Returns whether it changed; a change is
    /// pushed to every `ListAndWatch` stream at once.
    pub fn set_health(&self, id: &str, health: Health, reason: Option<String>) -> bool {
        let Some(i) = self.index_of(id) else {
            return false;
        };
        self.set_many(&[(i, health, reason)])
    }

    /// Apply several health changes at once: `ListAndWatch` sees them in one update.
    /// Unknown IDs are skipped. Returns whether anything changed.
    pub fn set_health_many(&self, changes: &[(String, Health, Option<String>)]) -> bool {
        let resolved: Vec<_> = changes
            .iter()
            .filter_map(|(id, h, r)| Some((self.index_of(id)?, *h, r.clone())))
            .collect();
        self.set_many(&resolved)
    }

    /// Set the health of every device.
    pub fn set_all(&self, health: Health, reason: Option<String>) -> bool {
        let changes: Vec<_> = (0..self.devices.len())
            .map(|i| (i, health, reason.clone()))
            .collect();
        self.set_many(&changes)
    }

    fn set_many(&self, changes: &[(usize, Health, Option<String>)]) -> bool {
        let snapshot = {
            let mut guard = match self.health.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let mut changed = false;
            for (i, health, reason) in changes {
                if let Some(slot) = guard.get_mut(*i) {
                    if slot.0 != *health {
                        changed = true;
                        match health {
                            Health::Unhealthy => tracing::warn!(
                                resource = %self.resource_name,
                                device = %self.devices[*i].id,
                                reason = reason.as_deref().unwrap_or(""),
                                "device became unhealthy"
                            ),
                            Health::Healthy => tracing::info!(
                                resource = %self.resource_name,
                                device = %self.devices[*i].id,
                                "device is healthy again"
                            ),
                        }
                    }
                    *slot = (*health, reason.clone());
                }
            }
            if !changed {
                return false;
            }
            build_response(&self.devices, &guard)
        };
        // metrics first: whoever sees the update also sees the new counts
        self.update_metrics();
        self.feed.send_replace(Arc::new(snapshot));
        true
    }

    fn read_health(&self) -> std::sync::RwLockReadGuard<'_, Vec<(Health, Option<String>)>> {
        match self.health.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Every device with its health, in enumeration order.
    pub fn snapshot(&self) -> Vec<DeviceState> {
        let health = self.read_health();
        self.devices
            .iter()
            .zip(health.iter())
            .map(|(d, (h, r))| DeviceState {
                device: d.clone(),
                health: *h,
                reason: r.clone(),
            })
            .collect()
    }

    /// The current device list as `ListAndWatch` sends it.
    pub fn current(&self) -> Arc<api::ListAndWatchResponse> {
        self.feed.borrow().clone()
    }

    /// A receiver that sees the current list first, then every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<api::ListAndWatchResponse>> {
        self.feed.subscribe()
    }

    fn update_metrics(&self) {
        if let Some(m) = &self.metrics {
            let health = self.read_health();
            let healthy = health.iter().filter(|(h, _)| h.is_healthy()).count();
            m.set_devices(&self.resource_name, healthy, health.len() - healthy);
        }
    }
}

fn build_response(
    devices: &[Device],
    health: &[(Health, Option<String>)],
) -> api::ListAndWatchResponse {
    api::ListAndWatchResponse {
        devices: devices
            .iter()
            .zip(health.iter())
            .map(|(d, (h, _))| api::Device {
                id: d.id.clone(),
                health: h.as_kubelet_str().to_string(),
                topology: d.numa_node.filter(|n| *n >= 0).map(|n| api::TopologyInfo {
                    nodes: vec![api::NumaNode { id: i64::from(n) }],
                }),
            })
            .collect(),
    }
}
