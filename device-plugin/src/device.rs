//! The vendor-neutral model of a GPU as the plugin advertises it.

use solgrid_crds::GpuVendor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Kubelet health strings (`k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1` constants).
pub const HEALTHY: &str = "Healthy";
/// See [`HEALTHY`].
pub const UNHEALTHY: &str = "Unhealthy";

/// Health of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Health {
    #[default]
    Healthy,
    Unhealthy,
}

impl Health {
    /// The string the kubelet expects in `Device.health`.
    pub fn as_kubelet_str(self) -> &'static str {
        match self {
            Health::Healthy => HEALTHY,
            Health::Unhealthy => UNHEALTHY,
        }
    }

    pub fn is_healthy(self) -> bool {
        self == Health::Healthy
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_kubelet_str())
    }
}

/// A device node to hand to the container (`DeviceSpec` in the kubelet API).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceNode {
    /// Path on the host, as the kubelet / container runtime sees it.
    pub host_path: PathBuf,
    /// Path inside the container.
    pub container_path: PathBuf,
    /// cgroup permissions, e.g. `rw`.
    pub permissions: String,
}

impl DeviceNode {
    /// A node under `/dev`: `rel` is relative to `/dev` (e.g. `nvidia0`, `dri/renderD128`).
    /// The host path is `<host_dev_root>/<rel>`, the container path `/dev/<rel>`.
    pub fn under_dev(host_dev_root: &Path, rel: &str) -> Self {
        DeviceNode {
            host_path: host_dev_root.join(rel),
            container_path: Path::new("/dev").join(rel),
            permissions: "rw".to_string(),
        }
    }
}

/// One GPU found by a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The ID advertised to the kubelet (NVIDIA: the GPU UUID). At most 63 characters.
    pub id: String,
    pub vendor: GpuVendor,
    /// Model name, e.g. `NVIDIA GeForce RTX 4090`, `Apple M1 Pro`.
    pub model: String,
    /// Memory in MiB (Apple: the unified memory of the machine).
    pub memory_mib: u64,
    /// NVIDIA GPU UUID.
    pub uuid: Option<String>,
    /// PCI bus ID (NVIDIA), normalised to lower case `dddd:bb:dd.f`.
    pub pci_bus_id: Option<String>,
    /// NUMA node, when the platform reports one.
    pub numa_node: Option<i32>,
    /// Enumeration index (NVML index, or order found), used for stable ordering.
    pub index: u32,
    /// NVLink peers: peer device ID → number of active links to it.
    pub links: BTreeMap<String, u32>,
    /// Device nodes that belong to this device only.
    pub nodes: Vec<DeviceNode>,
    /// Extra facts for `--list` and logs (chip, driver, minor number ...).
    pub attributes: BTreeMap<String, String>,
}

impl Device {
    /// Number of NVLinks between this device and `other` (0 if none).
    pub fn links_to(&self, other: &str) -> u32 {
        self.links.get(other).copied().unwrap_or(0)
    }
}

/// Normalise an NVML/sysfs PCI bus ID (`00000000:07:00.0`) to the sysfs form
/// (`0000:07:00.0`, lower case).
pub fn normalize_pci_bus_id(raw: &str) -> String {
    let s = raw.trim().trim_end_matches('\0').to_ascii_lowercase();
    match s.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 => {
            let trimmed = &domain[domain.len() - 4..];
            format!("{trimmed}:{rest}")
        }
        _ => s,
    }
}

/// A Kubernetes label value from free text: `[A-Za-z0-9._-]`, at most 63
/// characters, starting and ending alphanumeric.
pub fn label_value(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.truncate(63);
    out.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_bus_id_is_normalised() {
        assert_eq!(normalize_pci_bus_id("00000000:07:00.0"), "0000:07:00.0");
        assert_eq!(normalize_pci_bus_id("0000:AB:00.0"), "0000:ab:00.0");
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(
            label_value("NVIDIA GeForce RTX 4090"),
            "NVIDIA-GeForce-RTX-4090"
        );
        assert_eq!(label_value("  (weird)  name/"), "weird-name");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
        assert_eq!(label_value("H100 80GB HBM3"), "H100-80GB-HBM3");
    }

    #[test]
    fn health_strings_match_kubelet() {
        assert_eq!(Health::Healthy.as_kubelet_str(), "Healthy");
        assert_eq!(Health::Unhealthy.as_kubelet_str(), "Unhealthy");
    }
}
