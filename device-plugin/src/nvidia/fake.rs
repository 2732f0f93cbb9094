//! A fake NVML for tests and benchmarks: a fixed list of GPUs, events injected
//! through a channel, probe results set by the test. Never used in production.

use super::api::{NvmlApi, NvmlEvent, NvmlFailure, NvmlGpu, Probe};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fake NVML (see module docs).
pub struct FakeNvml {
    gpus: Vec<NvmlGpu>,
    events: Mutex<Option<Receiver<NvmlEvent>>>,
    probes: Arc<Mutex<HashMap<String, Probe>>>,
}

/// The test's side of a [`FakeNvml`]: inject events, set probe results.
#[derive(Clone)]
pub struct FakeNvmlHandle {
    events: Sender<NvmlEvent>,
    probes: Arc<Mutex<HashMap<String, Probe>>>,
}

impl FakeNvmlHandle {
    /// Deliver an event to the health watcher. Returns false if nobody listens.
    pub fn send(&self, event: NvmlEvent) -> bool {
        self.events.send(event).is_ok()
    }

    /// What `probe(uuid)` answers from now on (default: healthy).
    pub fn set_probe(&self, uuid: &str, probe: Probe) {
        if let Ok(mut p) = self.probes.lock() {
            p.insert(uuid.to_string(), probe);
        }
    }
}

impl FakeNvml {
    pub fn new(gpus: Vec<NvmlGpu>) -> (Self, FakeNvmlHandle) {
        let (tx, rx) = mpsc::channel();
        let probes = Arc::new(Mutex::new(HashMap::new()));
        (
            FakeNvml {
                gpus,
                events: Mutex::new(Some(rx)),
                probes: probes.clone(),
            },
            FakeNvmlHandle { events: tx, probes },
        )
    }

    /// `n` GPUs named like an H100 box: UUIDs `GPU-fake-<i>`, minors `i`,
    /// bus IDs `00000000:<i+1>:00.0`, NUMA node `i / 4`, and NVLinks between
    /// GPUs of the same group of four (`links` links per pair).
    pub fn h100_box(n: u32, links: u32) -> Vec<NvmlGpu> {
        let bus = |i: u32| format!("00000000:{:02X}:00.0", i + 1);
        (0..n)
            .map(|i| {
                let group = i / 4;
                let mut remotes = Vec::new();
                for j in (group * 4)..((group * 4 + 4).min(n)) {
                    if j != i {
                        for _ in 0..links {
                            remotes.push(bus(j));
                        }
                    }
                }
                NvmlGpu {
                    index: i,
                    minor: i,
                    uuid: format!("GPU-fake-{i}"),
                    name: "NVIDIA H100 80GB HBM3".into(),
                    memory_bytes: 85_520_809_984,
                    pci_bus_id: bus(i),
                    numa_node: Some(i32::try_from(group).unwrap_or(0)),
                    nvlink_remote_bus_ids: remotes,
                }
            })
            .collect()
    }
}

impl NvmlApi for FakeNvml {
    fn driver_version(&self) -> Option<String> {
        Some("fake-550.54.15".into())
    }

    fn gpus(&self) -> Result<Vec<NvmlGpu>, NvmlFailure> {
        Ok(self.gpus.clone())
    }

    fn watch_events(
        &self,
        _uuids: &[String],
        tick: Duration,
        sink: &mut dyn FnMut(Option<NvmlEvent>) -> bool,
    ) -> Result<(), NvmlFailure> {
        let rx = self
            .events
            .lock()
            .map_err(|_| NvmlFailure("fake event lock poisoned".into()))?
            .take()
            .ok_or_else(|| NvmlFailure("fake NVML events are already being watched".into()))?;
        loop {
            let keep_going = match rx.recv_timeout(tick) {
                Ok(ev) => sink(Some(ev)),
                Err(RecvTimeoutError::Timeout) => sink(None),
                Err(RecvTimeoutError::Disconnected) => {
                    // no more events can come; keep ticking until told to stop
                    std::thread::sleep(tick);
                    sink(None)
                }
            };
            if !keep_going {
                return Ok(());
            }
        }
    }

    fn probe(&self, uuid: &str) -> Probe {
        self.probes
            .lock()
            .ok()
            .and_then(|p| p.get(uuid).cloned())
            .unwrap_or(Probe::Healthy)
    }
}
