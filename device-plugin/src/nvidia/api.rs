//! The slice of NVML the plugin uses, behind a trait so that discovery, health
//! and allocation are tested against [`super::fake::FakeNvml`] while production
//! uses [`super::real::RealNvml`] (`nvml-wrapper`, NVML loaded at run time).

use std::time::Duration;

/// One GPU as NVML describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmlGpu {
    pub index: u32,
    /// Minor number: the device node is `/dev/nvidia<minor>`.
    pub minor: u32,
    pub uuid: String,
    pub name: String,
    pub memory_bytes: u64,
    /// As NVML reports it, e.g. `00000000:07:00.0`.
    pub pci_bus_id: String,
    /// NUMA node from NVML, if it reports one (sysfs is tried first).
    pub numa_node: Option<i32>,
    /// PCI bus IDs at the remote end of each active NVLink (one entry per link).
    pub nvlink_remote_bus_ids: Vec<String>,
}

/// What happened, as far as health is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NvmlEventKind {
    /// An XID error (critical XID event) with its code.
    Xid(u64),
    /// A critical XID event whose code NVML could not give.
    XidUnknown,
    /// Uncorrectable (double bit) ECC error.
    DoubleBitEcc,
    /// Correctable (single bit) ECC error: not a health problem.
    SingleBitEcc,
    /// Anything else NVML reported.
    Other(u64),
}

/// One NVML event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmlEvent {
    /// UUID of the GPU it happened on; `None` when NVML could not tell.
    pub uuid: Option<String>,
    pub kind: NvmlEventKind,
}

/// What a recovery probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Healthy,
    Unhealthy(String),
}

/// Errors of the NVML layer (already rendered: NVML's own error types carry
/// lifetimes and are not `Send` in every case).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NvmlFailure(pub String);

/// The NVML operations the plugin needs.
pub trait NvmlApi: Send + Sync + 'static {
    /// Driver version, for logs and `--list`.
    fn driver_version(&self) -> Option<String>;
    /// Every GPU.
    fn gpus(&self) -> Result<Vec<NvmlGpu>, NvmlFailure>;
    /// Register for health events on `uuids` and deliver them to `sink`
    /// until it returns `false`. `sink(None)` is called whenever `tick` passes
    /// without an event, so the caller can do periodic work and stop.
    fn watch_events(
        &self,
        uuids: &[String],
        tick: Duration,
        sink: &mut dyn FnMut(Option<NvmlEvent>) -> bool,
    ) -> Result<(), NvmlFailure>;
    /// Check whether a GPU that had a fault looks usable again.
    fn probe(&self, uuid: &str) -> Probe;
}
