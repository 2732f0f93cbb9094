//! Node labels describing the GPUs, so the scheduler and users can select nodes.
//!
//! For each vendor with devices:
//! `solgrid.dev/<vendor>-gpu.count`, `solgrid.dev/<vendor>-gpu.model`
//! (the most common model, as a label value), `solgrid.dev/<vendor>-gpu.memory-mib`
//! (the smallest memory, so a selector never over-promises); plus
//! `solgrid.dev/gpu.present=true` on any node with a GPU.

use crate::device::label_value;
use crate::resource::DeviceState;
use std::collections::BTreeMap;

pub use solgrid_crds::labels::LABEL_PREFIX as PREFIX;
use solgrid_crds::labels::{LABEL_GPU_PRESENT, gpu_label};

/// The most common model (ties: the one seen first).
pub fn primary_model<'a>(models: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for m in models {
        match counts.iter_mut().find(|(n, _)| *n == m) {
            Some((_, c)) => *c += 1,
            None => counts.push((m, 1)),
        }
    }
    let mut best: Option<(&str, usize)> = None;
    for (m, c) in counts {
        if best.is_none_or(|(_, bc)| c > bc) {
            best = Some((m, c));
        }
    }
    best.map(|(m, _)| m.to_string())
}

/// Labels for the devices of every vendor (pass all resources' snapshots).
pub fn node_labels(states: &[DeviceState]) -> BTreeMap<String, String> {
    let mut by_vendor: BTreeMap<String, Vec<&DeviceState>> = BTreeMap::new();
    for s in states {
        by_vendor
            .entry(s.device.vendor.to_string())
            .or_default()
            .push(s);
    }
    let mut labels = BTreeMap::new();
    for (vendor, devs) in &by_vendor {
        let key = |k: &str| gpu_label(vendor, k);
        labels.insert(key("count"), devs.len().to_string());
        if let Some(model) = primary_model(devs.iter().map(|d| d.device.model.as_str())) {
            labels.insert(key("model"), label_value(&model));
        }
        if let Some(mem) = devs.iter().map(|d| d.device.memory_mib).min() {
            labels.insert(key("memory-mib"), mem.to_string());
        }
    }
    if !by_vendor.is_empty() {
        labels.insert(LABEL_GPU_PRESENT.to_string(), "true".into());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Device, Health};
    use solgrid_crds::GpuVendor;

    fn st(id: &str, vendor: GpuVendor, model: &str, mem: u64) -> DeviceState {
        DeviceState {
            device: Device {
                id: id.into(),
                vendor,
                model: model.into(),
                memory_mib: mem,
                uuid: None,
                pci_bus_id: None,
                numa_node: None,
                index: 0,
                links: Default::default(),
                nodes: vec![],
                attributes: Default::default(),
            },
            health: Health::Healthy,
            reason: None,
        }
    }

    #[test]
    fn labels_for_mixed_nvidia_box() {
        let l = node_labels(&[
            st("a", GpuVendor::Nvidia, "NVIDIA GeForce RTX 4090", 24_564),
            st("b", GpuVendor::Nvidia, "NVIDIA GeForce RTX 3090", 24_268),
            st("c", GpuVendor::Nvidia, "NVIDIA GeForce RTX 4090", 24_564),
        ]);
        assert_eq!(l["solgrid.dev/nvidia-gpu.count"], "3");
        assert_eq!(l["solgrid.dev/nvidia-gpu.model"], "NVIDIA-GeForce-RTX-4090");
        assert_eq!(l["solgrid.dev/nvidia-gpu.memory-mib"], "24268");
        assert_eq!(l["solgrid.dev/gpu.present"], "true");
        assert!(!l.contains_key("solgrid.dev/apple-gpu.count"));
    }

    #[test]
    fn no_devices_no_labels() {
        assert!(node_labels(&[]).is_empty());
    }

    #[test]
    fn apple_labels() {
        let l = node_labels(&[st("x", GpuVendor::Apple, "Apple M1 Pro", 31_853)]);
        assert_eq!(l["solgrid.dev/apple-gpu.model"], "Apple-M1-Pro");
        assert_eq!(l["solgrid.dev/apple-gpu.count"], "1");
    }
}
