//! NVIDIA health: turn NVML events into device health, the way NVIDIA's
//! k8s-device-plugin does, plus recovery.
//!
//! - A critical XID marks the device unhealthy, except the XIDs that an
//!   application causes (13, 31, 43, 45, 68, 109) and any configured extra ones.
//! - A double-bit (uncorrectable) ECC error marks the device unhealthy;
//!   single-bit (corrected) ones are ignored.
//! - An event NVML cannot attribute to a device marks every device unhealthy.
//! - A device that has been unhealthy for `recovery_after` without a new fault
//!   is probed; if the probe passes it is healthy again.

use super::api::{NvmlEvent, NvmlEventKind, Probe};
use crate::device::Health;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// XIDs caused by applications, not by the GPU (NVIDIA's plugin skips them).
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// Health settings.
#[derive(Clone, Debug)]
pub struct HealthPolicy {
    /// XIDs that do not make a device unhealthy.
    pub ignored_xids: BTreeSet<u64>,
    /// How long a device stays unhealthy before it is probed for recovery;
    /// `None`: never recover (until the plugin restarts).
    pub recovery_after: Option<Duration>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            ignored_xids: APPLICATION_XIDS.into_iter().collect(),
            recovery_after: Some(Duration::from_secs(60)),
        }
    }
}

impl HealthPolicy {
    /// The default policy with extra XIDs to ignore.
    pub fn with_extra_ignored(mut self, extra: impl IntoIterator<Item = u64>) -> Self {
        self.ignored_xids.extend(extra);
        self
    }
}

/// What the tracker decided about one event or tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Device UUID.
    pub uuid: String,
    pub health: Health,
    pub reason: String,
}

/// Classification of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a health problem (and why).
    Ignore(&'static str),
    /// The device (or every device, if NVML did not say which) is unhealthy.
    Fault(String),
}

/// Classify an event under `policy`.
pub fn classify(policy: &HealthPolicy, kind: &NvmlEventKind) -> Verdict {
    match kind {
        NvmlEventKind::Xid(x) if policy.ignored_xids.contains(x) => {
            Verdict::Ignore("application XID")
        }
        NvmlEventKind::Xid(x) => Verdict::Fault(format!("XID {x}")),
        NvmlEventKind::XidUnknown => Verdict::Fault("XID (unknown code)".into()),
        NvmlEventKind::DoubleBitEcc => Verdict::Fault("double-bit ECC error".into()),
        NvmlEventKind::SingleBitEcc => Verdict::Ignore("corrected single-bit ECC error"),
        NvmlEventKind::Other(_) => Verdict::Ignore("not a health event"),
    }
}

/// Per-device fault state.
pub struct HealthTracker {
    policy: HealthPolicy,
    uuids: Vec<String>,
    /// Devices currently unhealthy: UUID → time of the last fault.
    faulted: HashMap<String, Instant>,
}

impl HealthTracker {
    pub fn new(policy: HealthPolicy, uuids: Vec<String>) -> Self {
        HealthTracker {
            policy,
            uuids,
            faulted: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Apply one event seen at `now`.
    pub fn on_event(&mut self, event: &NvmlEvent, now: Instant) -> Vec<Change> {
        let reason = match classify(&self.policy, &event.kind) {
            Verdict::Ignore(why) => {
                tracing::debug!(?event, why, "ignoring NVML event");
                return vec![];
            }
            Verdict::Fault(reason) => reason,
        };
        let targets: Vec<String> = match &event.uuid {
            Some(u) if self.uuids.contains(u) => vec![u.clone()],
            Some(u) => {
                tracing::warn!(uuid = %u, %reason, "NVML event for a GPU this plugin does not advertise");
                return vec![];
            }
            None => self.uuids.clone(),
        };
        targets
            .into_iter()
            .map(|uuid| {
                self.faulted.insert(uuid.clone(), now);
                Change {
                    uuid,
                    health: Health::Unhealthy,
                    reason: reason.clone(),
                }
            })
            .collect()
    }

    /// Periodic work at `now`: probe devices that have been quiet long enough.
    pub fn on_tick(&mut self, now: Instant, probe: &mut dyn FnMut(&str) -> Probe) -> Vec<Change> {
        let Some(after) = self.policy.recovery_after else {
            return vec![];
        };
        let due: Vec<String> = self
            .faulted
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= after)
            .map(|(u, _)| u.clone())
            .collect();
        let mut changes = Vec::new();
        for uuid in due {
            match probe(&uuid) {
                Probe::Healthy => {
                    self.faulted.remove(&uuid);
                    changes.push(Change {
                        uuid,
                        health: Health::Healthy,
                        reason: "recovered: no fault for the recovery period and the probe passed"
                            .into(),
                    });
                }
                Probe::Unhealthy(why) => {
                    tracing::info!(%uuid, %why, "GPU still unhealthy; probing again later");
                    // try again after another recovery period
                    self.faulted.insert(uuid, now);
                }
            }
        }
        changes.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        changes
    }

    pub fn is_faulted(&self, uuid: &str) -> bool {
        self.faulted.contains_key(uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(uuid: Option<&str>, kind: NvmlEventKind) -> NvmlEvent {
        NvmlEvent {
            uuid: uuid.map(str::to_string),
            kind,
        }
    }

    fn tracker() -> HealthTracker {
        HealthTracker::new(
            HealthPolicy::default(),
            vec!["GPU-a".into(), "GPU-b".into()],
        )
    }

    #[test]
    fn application_xids_are_ignored() {
        let mut t = tracker();
        let now = Instant::now();
        for x in APPLICATION_XIDS {
            assert!(
                t.on_event(&ev(Some("GPU-a"), NvmlEventKind::Xid(x)), now)
                    .is_empty(),
                "xid {x}"
            );
        }
        assert!(!t.is_faulted("GPU-a"));
    }

    #[test]
    fn critical_xid_and_dbe_fault_the_device() {
        let mut t = tracker();
        let now = Instant::now();
        let c = t.on_event(&ev(Some("GPU-a"), NvmlEventKind::Xid(79)), now);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].uuid, "GPU-a");
        assert_eq!(c[0].health, Health::Unhealthy);
        assert_eq!(c[0].reason, "XID 79");
        let c = t.on_event(&ev(Some("GPU-b"), NvmlEventKind::DoubleBitEcc), now);
        assert_eq!(c[0].uuid, "GPU-b");
        assert!(
            t.on_event(&ev(Some("GPU-b"), NvmlEventKind::SingleBitEcc), now)
                .is_empty()
        );
    }

    #[test]
    fn extra_ignored_xids() {
        let mut t = HealthTracker::new(
            HealthPolicy::default().with_extra_ignored([48]),
            vec!["GPU-a".into()],
        );
        assert!(
            t.on_event(&ev(Some("GPU-a"), NvmlEventKind::Xid(48)), Instant::now())
                .is_empty()
        );
    }

    #[test]
    fn unattributed_event_faults_every_device() {
        let mut t = tracker();
        let c = t.on_event(&ev(None, NvmlEventKind::XidUnknown), Instant::now());
        let uuids: Vec<_> = c.iter().map(|c| c.uuid.as_str()).collect();
        assert_eq!(uuids, ["GPU-a", "GPU-b"]);
    }

    #[test]
    fn unknown_uuid_changes_nothing() {
        let mut t = tracker();
        assert!(
            t.on_event(&ev(Some("GPU-z"), NvmlEventKind::Xid(79)), Instant::now())
                .is_empty()
        );
    }

    /// One GPU, faulted by XID 79 at the instant returned.
    fn faulted_tracker(recovery_after: Option<Duration>) -> (HealthTracker, Instant) {
        let mut t = HealthTracker::new(
            HealthPolicy {
                recovery_after,
                ..HealthPolicy::default()
            },
            vec!["GPU-a".into()],
        );
        let t0 = Instant::now();
        t.on_event(&ev(Some("GPU-a"), NvmlEventKind::Xid(79)), t0);
        assert!(t.is_faulted("GPU-a"));
        (t, t0)
    }

    #[test]
    fn recovery_after_quiet_period_and_passing_probe() {
        let (mut t, t0) = faulted_tracker(Some(Duration::from_secs(10)));
        let mut healthy = |_: &str| Probe::Healthy;
        assert!(
            t.on_tick(t0 + Duration::from_secs(5), &mut healthy)
                .is_empty()
        );
        // failing probe: stays faulted and waits another period
        let mut failing = |_: &str| Probe::Unhealthy("still broken".into());
        assert!(
            t.on_tick(t0 + Duration::from_secs(11), &mut failing)
                .is_empty()
        );
        assert!(t.is_faulted("GPU-a"));
        assert!(
            t.on_tick(t0 + Duration::from_secs(15), &mut healthy)
                .is_empty()
        );
        let c = t.on_tick(t0 + Duration::from_secs(22), &mut healthy);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].health, Health::Healthy);
        assert!(!t.is_faulted("GPU-a"));
    }

    #[test]
    fn no_recovery_when_disabled() {
        let (mut t, t0) = faulted_tracker(None);
        let mut healthy = |_: &str| Probe::Healthy;
        assert!(
            t.on_tick(t0 + Duration::from_secs(3600), &mut healthy)
                .is_empty()
        );
    }
}
