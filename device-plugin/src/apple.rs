//! Apple silicon GPUs under Linux, driven by the `asahi` DRM driver.
//!
//! Discovery: every `<sysfs>/class/drm/renderD*` whose `device/driver` link
//! points at a driver named `asahi`, with its device node under the dev root.
//! The chip comes from the GPU's device-tree node (`device/of_node/compatible`,
//! e.g. `apple,agx-t6000`) or the machine's (`<device tree>/compatible`, e.g.
//! `apple,j314s\0apple,t6000\0apple,arm-platform`). Memory is unified: the
//! machine's `MemTotal`. The card node (`card*`) of the same device is handed
//! out with the render node.
//!
//! Health: the render node must exist and still be bound to `asahi`; checked
//! every poll interval.

use crate::backend::{Backend, Discovered, HostPaths, spawn_health_thread};
use crate::device::{Device, DeviceNode, Health};
use crate::resource::ResourceManager;
use solgrid_crds::GpuVendor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The Linux DRM driver of Apple silicon GPUs.
pub const ASAHI_DRIVER: &str = "asahi";

/// Marketing name of an Apple SoC from its device-tree code (`t6000`), by
/// generation: M1 (t8103, t600x), M2 (t8112, t602x), M3 (t8122, t603x), M4 (t8132, t604x).
pub fn chip_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "t8103" => "Apple M1",
        "t6000" => "Apple M1 Pro",
        "t6001" => "Apple M1 Max",
        "t6002" => "Apple M1 Ultra",
        "t8112" => "Apple M2",
        "t6020" => "Apple M2 Pro",
        "t6021" => "Apple M2 Max",
        "t6022" => "Apple M2 Ultra",
        "t8122" => "Apple M3",
        "t6030" => "Apple M3 Pro",
        "t6031" | "t6034" => "Apple M3 Max",
        "t8132" => "Apple M4",
        "t6040" => "Apple M4 Pro",
        "t6041" => "Apple M4 Max",
        _ => return None,
    })
}

/// The SoC code in a NUL-separated `compatible` list: the first entry
/// `apple,tNNNN` or `apple,agx-tNNNN`.
pub fn soc_code(compatible: &[u8]) -> Option<String> {
    compatible
        .split(|b| *b == 0)
        .filter_map(|e| std::str::from_utf8(e).ok())
        .filter_map(|e| e.trim().strip_prefix("apple,"))
        .map(|e| e.strip_prefix("agx-").unwrap_or(e))
        .find(|e| e.len() == 5 && e.starts_with('t') && e[1..].chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
}

/// `MemTotal` of a `meminfo` file, in MiB.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kib / 1024)
    })
}

/// The Apple backend.
pub struct AppleBackend {
    paths: HostPaths,
    poll: Duration,
}

fn driver_name(dev_dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dev_dir.join("driver")).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

impl AppleBackend {
    pub fn new(paths: HostPaths, poll: Duration) -> Self {
        AppleBackend { paths, poll }
    }

    fn drm_dir(&self) -> PathBuf {
        self.paths.sysfs_root.join("class/drm")
    }

    /// Whether `<sysfs>/class/drm/<node>` is an asahi render node present under the dev root.
    fn node_ok(&self, node: &str) -> bool {
        let dev = self.drm_dir().join(node).join("device");
        driver_name(&dev).as_deref() == Some(ASAHI_DRIVER)
            && self.paths.dev_root.join("dri").join(node).exists()
    }

    fn find(&self) -> std::io::Result<Vec<Device>> {
        let drm = self.drm_dir();
        let mut names: Vec<String> = std::fs::read_dir(&drm)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let machine_compat = std::fs::read(self.paths.device_tree_root.join("compatible")).ok();
        let mem_mib = std::fs::read_to_string(self.paths.proc_root.join("meminfo"))
            .ok()
            .and_then(|m| mem_total_mib(&m))
            .unwrap_or(0);
        let mut out = Vec::new();
        for render in names.iter().filter(|n| n.starts_with("renderD")) {
            let dev_dir = drm.join(render).join("device");
            let driver = driver_name(&dev_dir);
            if driver.as_deref() != Some(ASAHI_DRIVER) {
                tracing::debug!(node = %render, driver = ?driver, "DRM render node not driven by asahi; skipped");
                continue;
            }
            if !self.paths.dev_root.join("dri").join(render).exists() {
                tracing::warn!(node = %render, dev_root = %self.paths.dev_root.display(), "asahi render node has no device file; skipped");
                continue;
            }
            let canonical = std::fs::canonicalize(&dev_dir).ok();
            // the card node of the same device
            let card = names
                .iter()
                .filter(|n| {
                    n.starts_with("card")
                        && n[4..].chars().all(|c| c.is_ascii_digit())
                        && n.len() > 4
                })
                .find(|n| {
                    canonical.is_some()
                        && std::fs::canonicalize(drm.join(n).join("device")).ok() == canonical
                })
                .cloned();
            let gpu_compat = std::fs::read(dev_dir.join("of_node/compatible")).ok();
            let code = gpu_compat
                .as_deref()
                .and_then(soc_code)
                .or_else(|| machine_compat.as_deref().and_then(soc_code));
            let model = code
                .as_deref()
                .and_then(chip_name)
                .map(str::to_string)
                .unwrap_or_else(|| match &code {
                    Some(c) => format!("Apple {c}"),
                    None => "Apple GPU".to_string(),
                });
            let dev_name = canonical
                .as_ref()
                .and_then(|c| c.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| render.clone());
            let id: String = format!("apple-{dev_name}")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .take(63)
                .collect();
            let mut nodes = vec![DeviceNode::under_dev(
                &self.paths.host_dev_root,
                &format!("dri/{render}"),
            )];
            if let Some(card) = &card {
                nodes.push(DeviceNode::under_dev(
                    &self.paths.host_dev_root,
                    &format!("dri/{card}"),
                ));
            }
            let mut attributes = BTreeMap::new();
            attributes.insert("driver".into(), ASAHI_DRIVER.into());
            attributes.insert("render-node".into(), render.clone());
            if let Some(card) = card {
                attributes.insert("card-node".into(), card);
            }
            if let Some(code) = code {
                attributes.insert("soc".into(), code);
            }
            out.push(Device {
                id,
                vendor: GpuVendor::Apple,
                model,
                memory_mib: mem_mib,
                uuid: None,
                pci_bus_id: None,
                numa_node: None,
                index: u32::try_from(out.len()).unwrap_or(u32::MAX),
                links: BTreeMap::new(),
                nodes,
                attributes,
            });
        }
        Ok(out)
    }
}

impl Backend for AppleBackend {
    fn vendor(&self) -> GpuVendor {
        GpuVendor::Apple
    }

    fn discover(&self) -> Discovered {
        let devices = self.find().unwrap_or_else(|e| {
            tracing::info!(error = %e, dir = %self.drm_dir().display(), "no DRM devices readable: the apple backend reports none");
            vec![]
        });
        if !devices.is_empty() {
            tracing::info!(count = devices.len(), "Apple (asahi) GPUs found");
        }
        Discovered {
            devices,
            shared_nodes: vec![],
        }
    }

    fn start_health(
        &self,
        manager: Arc<ResourceManager>,
        stop: CancellationToken,
    ) -> Option<std::thread::JoinHandle<()>> {
        if manager.is_empty() {
            return None;
        }
        let me = AppleBackend::new(self.paths.clone(), self.poll);
        spawn_health_thread("asahi-health", move || {
            while !stop.is_cancelled() {
                for d in manager.devices() {
                    let Some(render) = d.attributes.get("render-node") else {
                        continue;
                    };
                    let (health, reason) = if me.node_ok(render) {
                        (Health::Healthy, None)
                    } else {
                        (
                            Health::Unhealthy,
                            Some(format!(
                                "{render} gone or no longer bound to {ASAHI_DRIVER}"
                            )),
                        )
                    };
                    manager.set_health(&d.id, health, reason);
                }
                std::thread::sleep(me.poll);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soc_codes() {
        assert_eq!(
            soc_code(b"apple,j314s\0apple,t6000\0apple,arm-platform\0").as_deref(),
            Some("t6000")
        );
        assert_eq!(
            soc_code(b"apple,agx-t8103\0apple,agx-g13g\0").as_deref(),
            Some("t8103")
        );
        assert_eq!(soc_code(b"raspberrypi,4-model-b\0brcm,bcm2711\0"), None);
        assert_eq!(soc_code(b""), None);
        assert_eq!(chip_name("t6000"), Some("Apple M1 Pro"));
        assert_eq!(chip_name("t6022"), Some("Apple M2 Ultra"));
        assert_eq!(chip_name("t9999"), None);
    }

    #[test]
    fn meminfo() {
        assert_eq!(
            mem_total_mib("MemTotal:       32617504 kB\nMemFree: 1 kB\n"),
            Some(31853)
        );
        assert_eq!(mem_total_mib("garbage"), None);
    }

    #[test]
    fn missing_sysfs_reports_nothing() {
        let be = AppleBackend::new(
            HostPaths::under("/nonexistent-root"),
            Duration::from_millis(10),
        );
        assert!(be.discover().devices.is_empty());
    }
}
