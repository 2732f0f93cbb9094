//! The GpuNode phase machine and the numbers derived from a node's facts: pure
//! functions of their inputs (time is passed in as milliseconds since the epoch).
//!
//! ```text
//!            inventory published        first verification passed
//!  Pending ───────────────────► Verifying ───────────────────► Active ◄──► Draining
//!     ▲                                                          │  ▲   (cordoned or spec.draining)
//!     │ (no GPUs)                                    lease expired│  │ heartbeats again
//!     │                                    or Node gone          ▼  │
//!     └──────────────────────────────────────────────────────── Offline
//!  any ── cheating (wrong result / far too slow) ──► Slashed ── clear-slash annotation ──► Verifying
//! ```
//!
//! Priority when several facts hold: Slashed (until cleared) > Offline (Node gone or
//! heartbeat lease missing/expired) > Draining (Node cordoned or `spec.draining`) >
//! Pending (no GPUs in the inventory) > Verifying (not verified) > Active.

use crate::gpunode::heartbeat::Heartbeat;
use solgrid_crds::GpuNodePhase;
use solgrid_market::GpuModel;
use solgrid_market::matching::NodePhase;
use solgrid_market::money::MoneyError;
use solgrid_market::reputation::{EvidenceAge, Reputation, ReputationConfig, ReputationInputs};
use solgrid_market::staking::{EligibilityInput, Ineligible, StakingConfig};

/// The facts the phase is decided from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhaseInput {
    pub current: GpuNodePhase,
    /// The Kubernetes Node exists.
    pub node_exists: bool,
    /// `spec.unschedulable` of the Node (cordoned).
    pub cordoned: bool,
    /// `spec.draining` of the GpuNode.
    pub draining: bool,
    /// Heartbeat state (lease).
    pub online: bool,
    /// GPUs in the published inventory.
    pub gpus: u32,
    /// Passed a verification since it was last slashed.
    pub verified: bool,
    /// An admin asked to clear a slash (`solgrid.dev/clear-slash=true`).
    pub clear_slash: bool,
}

/// Why the phase is what it is (a condition reason, CamelCase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseReason {
    Slashed,
    SlashCleared,
    NodeGone,
    HeartbeatExpired,
    Cordoned,
    DrainRequested,
    NoInventory,
    AwaitingVerification,
    Ready,
}

impl PhaseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseReason::Slashed => "Slashed",
            PhaseReason::SlashCleared => "SlashCleared",
            PhaseReason::NodeGone => "NodeGone",
            PhaseReason::HeartbeatExpired => "HeartbeatExpired",
            PhaseReason::Cordoned => "NodeCordoned",
            PhaseReason::DrainRequested => "DrainRequested",
            PhaseReason::NoInventory => "NoInventory",
            PhaseReason::AwaitingVerification => "AwaitingVerification",
            PhaseReason::Ready => "Ready",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            PhaseReason::Slashed => {
                "caught cheating: stake slashed, no rewards until an admin sets solgrid.dev/clear-slash=true"
            }
            PhaseReason::SlashCleared => "slash cleared by an admin; re-verifying",
            PhaseReason::NodeGone => "the Kubernetes Node no longer exists",
            PhaseReason::HeartbeatExpired => "the node's heartbeat lease is missing or expired",
            PhaseReason::Cordoned => "the Node is cordoned: no new jobs",
            PhaseReason::DrainRequested => "spec.draining is set: no new jobs",
            PhaseReason::NoInventory => "the device plugin has not published any GPU yet",
            PhaseReason::AwaitingVerification => "waiting for a proof-of-work verification to pass",
            PhaseReason::Ready => "verified, online and taking jobs",
        }
    }
}

/// The next phase and why.
pub fn next_phase(i: &PhaseInput) -> (GpuNodePhase, PhaseReason) {
    let mut cleared = false;
    if i.current == GpuNodePhase::Slashed {
        if !i.clear_slash {
            return (GpuNodePhase::Slashed, PhaseReason::Slashed);
        }
        cleared = true;
    }
    if !i.node_exists {
        return (GpuNodePhase::Offline, PhaseReason::NodeGone);
    }
    if !i.online {
        return (GpuNodePhase::Offline, PhaseReason::HeartbeatExpired);
    }
    if i.cordoned {
        return (GpuNodePhase::Draining, PhaseReason::Cordoned);
    }
    if i.draining {
        return (GpuNodePhase::Draining, PhaseReason::DrainRequested);
    }
    if i.gpus == 0 {
        return (GpuNodePhase::Pending, PhaseReason::NoInventory);
    }
    // A cleared slash must verify again (its `verified` is reset on slashing).
    if !i.verified || cleared {
        let r = if cleared {
            PhaseReason::SlashCleared
        } else {
            PhaseReason::AwaitingVerification
        };
        return (GpuNodePhase::Verifying, r);
    }
    (GpuNodePhase::Active, PhaseReason::Ready)
}

/// The market's view of a phase.
pub fn market_phase(p: GpuNodePhase) -> NodePhase {
    match p {
        GpuNodePhase::Pending => NodePhase::Pending,
        GpuNodePhase::Verifying => NodePhase::Verifying,
        GpuNodePhase::Active => NodePhase::Active,
        GpuNodePhase::Draining => NodePhase::Draining,
        GpuNodePhase::Offline => NodePhase::Offline,
        GpuNodePhase::Slashed => NodePhase::Slashed,
    }
}

/// Whether a node in this phase runs the periodic verification.
pub fn verifies(p: GpuNodePhase) -> bool {
    matches!(p, GpuNodePhase::Verifying | GpuNodePhase::Active)
}

/// The start of the current unbroken online stretch.
///
/// - offline: `None`;
/// - online: the previous start, moved forward to the latest restart signal (the
///   Node's `Ready` condition turning true again after a reboot or kubelet restart,
///   or the lease being re-acquired), or `now` when there was none.
pub fn online_since(hb: &Heartbeat, previous_ms: Option<u64>, now_ms: u64) -> Option<u64> {
    if !hb.online {
        return None;
    }
    let start = previous_ms.unwrap_or(now_ms);
    let restarted = [hb.ready_since_ms, hb.acquired_ms]
        .into_iter()
        .flatten()
        .filter(|t| *t <= now_ms)
        .max();
    Some(match restarted {
        Some(r) if r > start => r,
        _ => start,
    })
}

/// Uptime over a sliding window, as an exponentially weighted fraction of time
/// online: `u(t) = s + (u0 - s) * 2^(-(t - t0) / half_life)` where `s` is the current
/// state (1,000,000 ppm online, 0 offline) and `(u0, t0)` the value at the last
/// online/offline flip. Halving is exact at whole half-lives and linear in between
/// (integer ppm, like the market's reputation decay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UptimeTrack {
    /// ppm at the last flip.
    pub base_ppm: u32,
    /// When the state last flipped, ms.
    pub since_ms: u64,
    pub online: bool,
}

impl UptimeTrack {
    /// The annotation form `"<ppm>/<ms>/<0|1>"`.
    pub fn encode(&self) -> String {
        format!(
            "{}/{}/{}",
            self.base_ppm,
            self.since_ms,
            u8::from(self.online)
        )
    }

    /// Parses [`UptimeTrack::encode`]; `None` when malformed.
    pub fn decode(s: &str) -> Option<UptimeTrack> {
        let mut it = s.split('/');
        let base_ppm: u32 = it.next()?.parse().ok()?;
        let since_ms: u64 = it.next()?.parse().ok()?;
        let online = match it.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        if it.next().is_some() || base_ppm > 1_000_000 {
            return None;
        }
        Some(UptimeTrack {
            base_ppm,
            since_ms,
            online,
        })
    }

    /// The uptime now, ppm.
    pub fn at(&self, now_ms: u64, half_life_ms: u64) -> u32 {
        let target: i64 = if self.online { 1_000_000 } else { 0 };
        let r = retain_ppm(now_ms.saturating_sub(self.since_ms), half_life_ms) as i64;
        (target + (self.base_ppm as i64 - target) * r / 1_000_000).clamp(0, 1_000_000) as u32
    }

    /// The track after observing `online` at `now_ms`: unchanged while the state
    /// holds, a new base at a flip. A node seen for the first time starts at the
    /// state it is in.
    pub fn observe(
        prev: Option<UptimeTrack>,
        online: bool,
        now_ms: u64,
        half_life_ms: u64,
    ) -> Self {
        match prev {
            Some(p) if p.online == online => p,
            Some(p) => UptimeTrack {
                base_ppm: p.at(now_ms, half_life_ms),
                since_ms: now_ms,
                online,
            },
            None => UptimeTrack {
                base_ppm: if online { 1_000_000 } else { 0 },
                since_ms: now_ms,
                online,
            },
        }
    }
}

/// `2^(-elapsed / half_life)` in ppm, linear between whole half-lives.
pub fn retain_ppm(elapsed_ms: u64, half_life_ms: u64) -> u32 {
    if half_life_ms == 0 {
        return 0;
    }
    let halvings = elapsed_ms / half_life_ms;
    if halvings >= 32 {
        return 0;
    }
    let frac = (elapsed_ms % half_life_ms) as u128;
    let at = 1_000_000u128 >> halvings;
    (at - at * frac / (2 * half_life_ms as u128)) as u32
}

/// The facts reputation is computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReputationFacts {
    /// `None` while the node is too new to have an uptime record.
    pub uptime_ppm: Option<u32>,
    pub jobs_succeeded: u32,
    pub jobs_failed_provider: u32,
    pub verifications_passed: u32,
    pub verifications_failed: u32,
    pub age_ms: u64,
    pub slashed: bool,
    /// How old the job and verification evidence is (it decays toward the prior).
    pub evidence_age: EvidenceAge,
}

/// The node's reputation (the market library's formula, with decay).
pub fn reputation(cfg: &ReputationConfig, f: &ReputationFacts) -> Reputation {
    cfg.score_decayed(
        &ReputationInputs {
            uptime_ppm: f.uptime_ppm,
            jobs_succeeded: f.jobs_succeeded,
            jobs_failed_provider: f.jobs_failed_provider,
            verifications_passed: f.verifications_passed,
            verifications_failed: f.verifications_failed,
            age_ms: f.age_ms,
            slashed: f.slashed,
        },
        f.evidence_age,
    )
}

/// GPU groups of an inventory: `(model, count)` for models the market knows, and
/// the number of GPUs of unknown models.
pub fn gpu_groups<'a>(models: impl IntoIterator<Item = &'a str>) -> (Vec<(GpuModel, u32)>, u32) {
    let mut groups: Vec<(GpuModel, u32)> = Vec::new();
    let mut unknown = 0u32;
    for m in models {
        match GpuModel::parse(m) {
            Some(model) => match groups.iter_mut().find(|(g, _)| *g == model) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => groups.push((model, 1)),
            },
            None => unknown = unknown.saturating_add(1),
        }
    }
    (groups, unknown)
}

/// The node's minimum stake: the market's formula per known model group, and the
/// base stake (multiplier 1x) per GPU of an unknown model.
pub fn minimum_stake(
    cfg: &StakingConfig,
    groups: &[(GpuModel, u32)],
    unknown: u32,
) -> Result<u64, MoneyError> {
    let known = cfg.min_stake_node(groups)?;
    let per_unknown = (cfg.base_stake_io as u128)
        .checked_mul(cfg.unit as u128)
        .and_then(|x| x.checked_mul(unknown as u128))
        .ok_or(MoneyError::Overflow("min_stake"))?;
    solgrid_market::money::add(
        known,
        solgrid_market::money::to_amount(per_unknown, "min_stake")?,
        "min_stake",
    )
}

/// Reward eligibility (the market's rules) and its human reason.
pub fn eligibility(cfg: &StakingConfig, input: &EligibilityInput, now_ms: u64) -> (bool, String) {
    match cfg.reward_eligibility(input, now_ms) {
        Ok(()) => (true, "eligible for idle rewards".to_string()),
        Err(e) => (false, describe(&e)),
    }
}

fn describe(e: &Ineligible) -> String {
    e.to_string()
}

/// The dominant model of an inventory (most GPUs; ties by table order).
pub fn dominant_model(groups: &[(GpuModel, u32)]) -> Option<(GpuModel, u32)> {
    groups
        .iter()
        .copied()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PhaseInput {
        PhaseInput {
            current: GpuNodePhase::Pending,
            node_exists: true,
            cordoned: false,
            draining: false,
            online: true,
            gpus: 2,
            verified: false,
            clear_slash: false,
        }
    }

    #[test]
    fn phase_walk() {
        use GpuNodePhase::*;
        let mut i = PhaseInput { gpus: 0, ..base() };
        assert_eq!(next_phase(&i), (Pending, PhaseReason::NoInventory));
        i.gpus = 2;
        assert_eq!(next_phase(&i).0, Verifying);
        i.current = Verifying;
        i.verified = true;
        assert_eq!(next_phase(&i), (Active, PhaseReason::Ready));
        i.current = Active;
        i.cordoned = true;
        assert_eq!(next_phase(&i), (Draining, PhaseReason::Cordoned));
        i.cordoned = false;
        i.draining = true;
        assert_eq!(next_phase(&i), (Draining, PhaseReason::DrainRequested));
        i.draining = false;
        i.online = false;
        assert_eq!(next_phase(&i), (Offline, PhaseReason::HeartbeatExpired));
        i.node_exists = false;
        assert_eq!(next_phase(&i), (Offline, PhaseReason::NodeGone));
        i.node_exists = true;
        i.online = true;
        i.current = Offline;
        assert_eq!(next_phase(&i).0, Active);
        // Slashed sticks, whatever else holds, until cleared
        i.current = Slashed;
        i.verified = false;
        assert_eq!(next_phase(&i), (Slashed, PhaseReason::Slashed));
        i.online = false;
        assert_eq!(next_phase(&i).0, Slashed);
        i.online = true;
        i.clear_slash = true;
        assert_eq!(next_phase(&i), (Verifying, PhaseReason::SlashCleared));
        // cleared but offline: Offline
        i.online = false;
        assert_eq!(next_phase(&i).0, Offline);
        assert!(verifies(Active) && verifies(Verifying) && !verifies(Draining));
        assert!(!verifies(Slashed) && !verifies(Offline) && !verifies(Pending));
    }

    #[test]
    fn online_since_resets_on_restart() {
        let hb = |online, ready, acq| Heartbeat {
            online,
            renew_ms: Some(1_000),
            ready_since_ms: ready,
            acquired_ms: acq,
        };
        assert_eq!(online_since(&hb(false, None, None), Some(5), 100), None);
        assert_eq!(online_since(&hb(true, None, None), None, 100), Some(100));
        assert_eq!(
            online_since(&hb(true, Some(10), None), Some(50), 100),
            Some(50)
        );
        // the Node became Ready again after the stretch started: a restart
        assert_eq!(
            online_since(&hb(true, Some(70), None), Some(50), 100),
            Some(70)
        );
        assert_eq!(
            online_since(&hb(true, None, Some(80)), Some(50), 100),
            Some(80)
        );
        // a future timestamp (clock skew) is ignored
        assert_eq!(
            online_since(&hb(true, Some(500), None), Some(50), 100),
            Some(50)
        );
    }

    #[test]
    fn uptime_track() {
        let hl = 1_000;
        let t = UptimeTrack::observe(None, true, 0, hl);
        assert_eq!(t.at(10_000, hl), 1_000_000);
        let t2 = UptimeTrack::observe(Some(t), true, 500, hl);
        assert_eq!(t2, t);
        let off = UptimeTrack::observe(Some(t), false, 2_000, hl);
        assert_eq!(off.base_ppm, 1_000_000);
        assert_eq!(off.at(3_000, hl), 500_000);
        assert_eq!(off.at(4_000, hl), 250_000);
        let on = UptimeTrack::observe(Some(off), true, 3_000, hl);
        assert_eq!(on.base_ppm, 500_000);
        assert_eq!(on.at(4_000, hl), 750_000);
        assert_eq!(UptimeTrack::decode(&on.encode()), Some(on));
        for bad in ["", "1/2", "1/2/3", "x/1/1", "2000000/1/1", "1/1/1/1"] {
            assert_eq!(UptimeTrack::decode(bad), None, "{bad}");
        }
        assert_eq!(retain_ppm(0, 0), 0);
        assert_eq!(retain_ppm(u64::MAX, 1), 0);
        assert_eq!(retain_ppm(500, 1_000), 750_000);
    }

    #[test]
    fn stake_minimum_and_groups() {
        let cfg = StakingConfig::default();
        let (g, unknown) = gpu_groups([
            "NVIDIA H100 80GB HBM3",
            "NVIDIA H100 80GB HBM3",
            "NVIDIA GeForce RTX 4070",
            "Radeon",
        ]);
        assert_eq!(g, vec![(GpuModel::H100, 2), (GpuModel::Rtx4070, 1)]);
        assert_eq!(unknown, 1);
        let io = 1_000_000_000u64;
        // 200*10*2 + 200*1 + 200*1 (unknown at 1x)
        assert_eq!(minimum_stake(&cfg, &g, unknown).unwrap(), 4_400 * io);
        assert_eq!(dominant_model(&g), Some((GpuModel::H100, 2)));
        assert_eq!(dominant_model(&[]), None);
    }

    #[test]
    fn reputation_slashed_is_floor_and_eligibility_reason() {
        let cfg = ReputationConfig::default();
        let f = ReputationFacts {
            uptime_ppm: Some(1_000_000),
            verifications_passed: 10,
            ..Default::default()
        };
        assert!(reputation(&cfg, &f).score > 500);
        assert_eq!(
            reputation(&cfg, &ReputationFacts { slashed: true, ..f }).score,
            0
        );
        let s = StakingConfig::default();
        let input = EligibilityInput {
            phase: NodePhase::Active,
            verified: true,
            online_since_ms: Some(0),
            first_seen_ms: 0,
            stake: 1,
            min_stake: 2,
            slashed: false,
        };
        let (ok, why) = eligibility(&s, &input, 13 * 3_600_000);
        assert!(!ok);
        assert!(why.contains("below its minimum"), "{why}");
        let (ok, _) = eligibility(&s, &EligibilityInput { stake: 2, ..input }, 13 * 3_600_000);
        assert!(ok);
    }
}
