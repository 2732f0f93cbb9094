//! The production NVML backend: `nvml-wrapper`, which loads
//! `libnvidia-ml.so.1` at run time (no link-time dependency on the driver).

use super::api::{NvmlApi, NvmlEvent, NvmlEventKind, NvmlFailure, NvmlGpu, Probe};
use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use std::ffi::OsStr;
use std::time::Duration;

/// Most NVLinks one GPU can have (`NVML_NVLINK_MAX_LINKS`).
const MAX_NVLINKS: u32 = 18;

/// NVML through `nvml-wrapper`.
pub struct RealNvml {
    nvml: Nvml,
}

impl RealNvml {
    /// Load NVML (`library`: a path or name of `libnvidia-ml.so.1`; default
    /// search otherwise) and initialise it. Fails, without panicking, when
    /// there is no driver.
    pub fn init(library: Option<&OsStr>) -> Result<Self, NvmlFailure> {
        let mut builder = Nvml::builder();
        if let Some(lib) = library {
            builder.lib_path(lib);
        }
        // libloading/NVML misbehaving must not take the plugin down
        let nvml = std::panic::catch_unwind(|| builder.init())
            .map_err(|_| NvmlFailure("NVML initialisation panicked".into()))?
            .map_err(|e| NvmlFailure(format!("NVML init failed: {e}")))?;
        Ok(RealNvml { nvml })
    }
}

fn fail(what: &str, e: NvmlError) -> NvmlFailure {
    NvmlFailure(format!("{what}: {e}"))
}

impl NvmlApi for RealNvml {
    fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }

    fn gpus(&self) -> Result<Vec<NvmlGpu>, NvmlFailure> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| fail("device count", e))?;
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            // one GPU NVML cannot describe (fallen off the bus, no minor number)
            // is skipped with a log line; the others are still advertised
            let dev = match self.nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(index, error = %e, "NVML cannot open this GPU: not advertised");
                    continue;
                }
            };
            let (uuid, minor) = match (dev.uuid(), dev.minor_number()) {
                (Ok(u), Ok(m)) => (u, m),
                (u, m) => {
                    tracing::error!(index, uuid = ?u.ok(), minor = ?m.ok(), "NVML gives no UUID or minor number for this GPU: not advertised");
                    continue;
                }
            };
            let name = dev.name().unwrap_or_else(|_| "NVIDIA GPU".to_string());
            let memory_bytes = dev.memory_info().map(|m| m.total).unwrap_or(0);
            let pci_bus_id = dev.pci_info().map(|p| p.bus_id).unwrap_or_default();
            let numa_node = dev.numa_node_id().ok().and_then(|n| i32::try_from(n).ok());
            let mut nvlink_remote_bus_ids = Vec::new();
            for link in 0..MAX_NVLINKS {
                let l = dev.link_wrapper_for(link);
                match l.is_active() {
                    Ok(true) => {
                        if let Ok(remote) = l.remote_pci_info() {
                            nvlink_remote_bus_ids.push(remote.bus_id);
                        }
                    }
                    Ok(false) => {}
                    // NotSupported (no NVLink on this GPU) or InvalidArg (past the last link)
                    Err(_) => break,
                }
            }
            out.push(NvmlGpu {
                index,
                minor,
                uuid,
                name,
                memory_bytes,
                pci_bus_id,
                numa_node,
                nvlink_remote_bus_ids,
            });
        }
        Ok(out)
    }

    fn watch_events(
        &self,
        uuids: &[String],
        tick: Duration,
        sink: &mut dyn FnMut(Option<NvmlEvent>) -> bool,
    ) -> Result<(), NvmlFailure> {
        let mut set = self
            .nvml
            .create_event_set()
            .map_err(|e| fail("create event set", e))?;
        let wanted = EventTypes::CRITICAL_XID_ERROR
            | EventTypes::DOUBLE_BIT_ECC_ERROR
            | EventTypes::SINGLE_BIT_ECC_ERROR;
        for uuid in uuids {
            let dev = match self.nvml.device_by_uuid(uuid.as_str()) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(%uuid, error = %e, "cannot open GPU for health events: no health checks for it");
                    continue;
                }
            };
            // register what the device supports; a GPU without ECC still gets XIDs
            let supported = match dev.supported_event_types() {
                Ok(s) => s & wanted,
                Err(e) => {
                    tracing::warn!(%uuid, error = %e, "GPU does not report its event types: no health checks for it");
                    continue;
                }
            };
            if supported.is_empty() {
                tracing::warn!(%uuid, "GPU supports no health events: no health checks for it");
                continue;
            }
            set = dev
                .register_events(supported, set)
                .map_err(|e| NvmlFailure(format!("register events for {uuid}: {}", e.error)))?;
        }
        let timeout_ms = u32::try_from(tick.as_millis()).unwrap_or(u32::MAX).max(1);
        loop {
            let ev = match set.wait(timeout_ms) {
                Ok(data) => {
                    let uuid = data.device.uuid().ok();
                    let kind = if data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                        match data.event_data {
                            Some(XidError::Value(x)) => NvmlEventKind::Xid(x),
                            _ => NvmlEventKind::XidUnknown,
                        }
                    } else if data.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
                        NvmlEventKind::DoubleBitEcc
                    } else if data.event_type.contains(EventTypes::SINGLE_BIT_ECC_ERROR) {
                        NvmlEventKind::SingleBitEcc
                    } else {
                        NvmlEventKind::Other(data.event_type.bits())
                    };
                    Some(NvmlEvent { uuid, kind })
                }
                Err(NvmlError::Timeout) => None,
                Err(e) => {
                    // NVIDIA's plugin marks every device unhealthy when waiting fails
                    // (e.g. GPU lost); report it as an event without a device
                    tracing::error!(error = %e, "waiting for NVML events failed");
                    Some(NvmlEvent {
                        uuid: None,
                        kind: NvmlEventKind::XidUnknown,
                    })
                }
            };
            let failed_wait = matches!(
                &ev,
                Some(NvmlEvent {
                    uuid: None,
                    kind: NvmlEventKind::XidUnknown
                })
            );
            if !sink(ev) {
                return Ok(());
            }
            if failed_wait {
                std::thread::sleep(tick);
            }
        }
    }

    fn probe(&self, uuid: &str) -> Probe {
        let dev = match self.nvml.device_by_uuid(uuid) {
            Ok(d) => d,
            Err(e) => return Probe::Unhealthy(format!("device not reachable: {e}")),
        };
        if let Err(e) = dev.memory_info() {
            return Probe::Unhealthy(format!("memory info unreadable: {e}"));
        }
        match dev.are_pages_pending_retired() {
            Ok(true) => Probe::Unhealthy("retired pages pending (GPU reset needed)".into()),
            Ok(false) | Err(NvmlError::NotSupported) => Probe::Healthy,
            Err(e) => Probe::Unhealthy(format!("page retirement status: {e}")),
        }
    }
}
