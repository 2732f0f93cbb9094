//! Matching: the scheduler extender's `filter` and `score` over a node snapshot.
//!
//! The hot path (5,000 nodes, filter + score, under 1 ms): neither function
//! allocates; a [`Rejection`] carries plain data and formats its human-readable
//! reason only when displayed.
//!
//! **Filter** (first failing check wins): phase must be `Active`, not draining,
//! node at least `min_node_age_ms` old (not hired in its first 12 h), staked at
//! least its minimum, reputation ≥ the job's minimum, floor price ≤ the job's
//! locked price (both micro-USD per GPU-hour), region among the job's regions when
//! they are strict, and one GPU group with the vendor, an allowed model, enough
//! VRAM and `gpus_per_worker` healthy free GPUs. Only a lack of *free* GPUs where
//! enough *healthy* ones exist is resolvable (preemption could help); every other
//! rejection is unresolvable.
//!
//! **Score** 0–100 = `sum(weight_k * component_k) / 100` with components 0–100:
//!
//! ```text
//! price       = 100 * (price - floor) / price             (100 when no price)
//! reputation  = reputation / 10
//! proximity   = 100 * H / (H + d_km)   with coordinates (haversine; H = 1000 km)
//!               else 100 if the node's region is preferred, 25 if regions are
//!               preferred but not this one, 50 when nothing is known
//! packing     = 100 * gpus_per_worker / free GPUs of the group   (best fit)
//! performance = 100 * speed(model) / max speed                   (relative compute)
//! ```
//!
//! Weights (price, reputation, proximity, packing, performance):
//! `cheapest` 50/20/10/20/0, `fastest` 0/25/25/10/40, `balanced` 25/25/20/20/10.
//! [`extender_score`] maps 0–100 to the extender's 0–10 (rounded half up).

use crate::gpu::{GpuModel, GpuVendor, ModelSet, ModelTable, default_speed_permille};
use crate::ledger::Amount;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The lifecycle of a GpuNode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum NodePhase {
    /// Seen, inventory not yet published.
    #[default]
    Pending,
    /// Inventory known; the first proof-of-work verification is running.
    Verifying,
    /// Verified, online, taking jobs.
    Active,
    /// Taking no new jobs (spec.draining or the Node is cordoned).
    Draining,
    /// Heartbeats stopped.
    Offline,
    /// Caught cheating: stake slashed, reputation at the floor, earns nothing until cleared.
    Slashed,
}

impl fmt::Display for NodePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A point on Earth, degrees (for proximity only: never money).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

impl GeoPoint {
    /// Great-circle distance, km (haversine, R = 6371 km).
    pub fn distance_km(&self, o: &GeoPoint) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), o.lat.to_radians());
        let dp = p2 - p1;
        let dl = (o.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * 6371.0 * a.sqrt().min(1.0).asin()
    }
}

/// The GPUs of one model on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuGroup {
    pub model: GpuModel,
    /// Memory per GPU, MiB.
    pub vram_mib: u64,
    /// All GPUs of the group.
    pub total: u32,
    /// Healthy GPUs (free or in use).
    pub healthy: u32,
    /// Healthy GPUs not allocated to any pod.
    pub healthy_free: u32,
}

impl GpuGroup {
    pub fn vendor(&self) -> GpuVendor {
        self.model.vendor()
    }
}

/// What the extender's cache knows of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSnapshot {
    pub name: String,
    pub gpus: Vec<GpuGroup>,
    pub phase: NodePhase,
    pub draining: bool,
    /// Stake backing the node (IO base units) and its minimum ([`crate::staking::StakingConfig::min_stake`]).
    pub stake: Amount,
    pub min_stake: Amount,
    /// 0–1000.
    pub reputation: u16,
    /// Provider's floor, micro-USD per GPU-hour (0 = none).
    pub floor_micro_usd: u64,
    pub region: String,
    pub country: String,
    pub coords: Option<GeoPoint>,
    /// When the node was first seen (ms since the epoch).
    pub first_seen_ms: u64,
}

/// How placement weighs price against speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    Cheapest,
    Fastest,
    #[default]
    Balanced,
}

/// What a job's pods need.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequirements {
    /// `None`: any vendor.
    pub vendor: Option<GpuVendor>,
    /// Allowed models; empty: any.
    pub models: ModelSet,
    pub min_vram_mib: u64,
    pub gpus_per_worker: u32,
    /// The locked price (or budget cap before locking), micro-USD per GPU-hour;
    /// nodes whose floor is above it are filtered out. 0: no price check.
    pub price_micro_usd: u64,
    pub min_reputation: u16,
    /// Preferred regions (empty: anywhere).
    pub preferred_regions: Vec<String>,
    /// When true, nodes outside `preferred_regions` are filtered out; otherwise
    /// the regions only raise the proximity score.
    pub strict_regions: bool,
    /// Where the requester is, for proximity.
    pub location: Option<GeoPoint>,
    pub preference: Preference,
}

/// Component weights (sum 100 for a 0–100 score).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Weights {
    pub price: u32,
    pub reputation: u32,
    pub proximity: u32,
    pub packing: u32,
    pub performance: u32,
}

impl Weights {
    fn total(&self) -> u32 {
        self.price + self.reputation + self.proximity + self.packing + self.performance
    }
}

/// Matching configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MatchConfig {
    /// A node is not hired before it is this old (default 12 h).
    pub min_node_age_ms: u64,
    /// Nodes must be staked at least their minimum to be hired.
    pub require_stake: bool,
    pub cheapest: Weights,
    pub fastest: Weights,
    pub balanced: Weights,
    /// Relative speed per model (per-mille of an RTX 4090).
    #[serde(deserialize_with = "de_speed")]
    pub speed_permille: ModelTable<u32>,
    /// Distance at which proximity is 50 (km).
    pub proximity_half_km: u32,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            min_node_age_ms: 12 * 3_600_000,
            require_stake: true,
            cheapest: Weights {
                price: 50,
                reputation: 20,
                proximity: 10,
                packing: 20,
                performance: 0,
            },
            fastest: Weights {
                price: 0,
                reputation: 25,
                proximity: 25,
                packing: 10,
                performance: 40,
            },
            balanced: Weights {
                price: 25,
                reputation: 25,
                proximity: 20,
                packing: 20,
                performance: 10,
            },
            speed_permille: default_speed_permille(),
            proximity_half_km: 1000,
        }
    }
}

fn de_speed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModelTable<u32>, D::Error> {
    crate::gpu::deserialize_overlay(d, default_speed_permille())
}

impl MatchConfig {
    pub fn weights(&self, p: Preference) -> &Weights {
        match p {
            Preference::Cheapest => &self.cheapest,
            Preference::Fastest => &self.fastest,
            Preference::Balanced => &self.balanced,
        }
    }
}

/// Why a node cannot take a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum RejectReason {
    NotActive {
        phase: NodePhase,
    },
    Draining,
    TooNew {
        age_ms: u64,
        min_age_ms: u64,
    },
    Understaked {
        stake: Amount,
        min_stake: Amount,
    },
    Reputation {
        have: u16,
        min: u16,
    },
    FloorAbovePrice {
        floor_micro_usd: u64,
        price_micro_usd: u64,
    },
    Region,
    NoGpus,
    Vendor {
        have: GpuVendor,
        want: GpuVendor,
    },
    Model {
        have: GpuModel,
        allowed: ModelSet,
    },
    Vram {
        have_mib: u64,
        need_mib: u64,
    },
    NotEnoughGpus {
        need: u32,
        free: u32,
        healthy: u32,
    },
}

/// A rejection: its reason, and whether preemption could not help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub reason: RejectReason,
    /// True when evicting lower-priority pods would not make the node fit
    /// (kube-scheduler's `UnschedulableAndUnresolvable`).
    pub unresolvable: bool,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::NotActive { phase } => write!(f, "node is {phase}, not Active"),
            RejectReason::Draining => f.write_str("node is draining"),
            RejectReason::TooNew { age_ms, min_age_ms } => write!(
                f,
                "node is new ({} min old); nodes are hired after {} min",
                age_ms / 60_000,
                min_age_ms / 60_000
            ),
            RejectReason::Understaked { stake, min_stake } => {
                write!(
                    f,
                    "node stake {stake} is below its minimum {min_stake} (IO base units)"
                )
            }
            RejectReason::Reputation { have, min } => {
                write!(f, "node reputation {have} is below the job's minimum {min}")
            }
            RejectReason::FloorAbovePrice {
                floor_micro_usd,
                price_micro_usd,
            } => write!(
                f,
                "node floor {floor_micro_usd} micro-USD/GPU-hour is above the job's price {price_micro_usd}"
            ),
            RejectReason::Region => f.write_str("node region is not among the job's regions"),
            RejectReason::NoGpus => f.write_str("node has no GPUs"),
            RejectReason::Vendor { have, want } => {
                write!(f, "node GPUs are {have}, job needs {want}")
            }
            RejectReason::Model { have, allowed } => write!(
                f,
                "node GPU model {have} is not among the job's models ({allowed})"
            ),
            RejectReason::Vram { have_mib, need_mib } => {
                write!(
                    f,
                    "node GPU memory {have_mib} MiB is below the job's minimum {need_mib} MiB"
                )
            }
            RejectReason::NotEnoughGpus {
                need,
                free,
                healthy,
            } => {
                write!(
                    f,
                    "job needs {need} GPUs per worker; node has {free} free of {healthy} healthy"
                )
            }
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.reason, f)
    }
}

/// A node that passed the filter, and the GPU group the job fits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    pub group: usize,
}

fn reject(reason: RejectReason) -> Rejection {
    Rejection {
        reason,
        unresolvable: true,
    }
}

/// Whether `node` can run one worker of `job` now. Allocation-free.
pub fn filter(
    node: &NodeSnapshot,
    job: &JobRequirements,
    cfg: &MatchConfig,
    now_ms: u64,
) -> Result<Fit, Rejection> {
    if node.phase != NodePhase::Active {
        return Err(reject(RejectReason::NotActive { phase: node.phase }));
    }
    if node.draining {
        return Err(reject(RejectReason::Draining));
    }
    let age_ms = now_ms.saturating_sub(node.first_seen_ms);
    if age_ms < cfg.min_node_age_ms {
        return Err(reject(RejectReason::TooNew {
            age_ms,
            min_age_ms: cfg.min_node_age_ms,
        }));
    }
    if cfg.require_stake && node.stake < node.min_stake {
        return Err(reject(RejectReason::Understaked {
            stake: node.stake,
            min_stake: node.min_stake,
        }));
    }
    if node.reputation < job.min_reputation {
        return Err(reject(RejectReason::Reputation {
            have: node.reputation,
            min: job.min_reputation,
        }));
    }
    if job.price_micro_usd > 0 && node.floor_micro_usd > job.price_micro_usd {
        return Err(reject(RejectReason::FloorAbovePrice {
            floor_micro_usd: node.floor_micro_usd,
            price_micro_usd: job.price_micro_usd,
        }));
    }
    if job.strict_regions
        && !job.preferred_regions.is_empty()
        && !job.preferred_regions.contains(&node.region)
    {
        return Err(reject(RejectReason::Region));
    }
    let need = job.gpus_per_worker.max(1);
    // The most relevant reason across groups: a count shortfall beats a VRAM
    // mismatch beats a model mismatch beats a vendor mismatch.
    let mut best: Option<(u8, Rejection)> = None;
    let mut fit: Option<(usize, u32)> = None;
    for (i, g) in node.gpus.iter().enumerate() {
        let r = if job.vendor.is_some_and(|v| v != g.vendor()) {
            (
                0,
                reject(RejectReason::Vendor {
                    have: g.vendor(),
                    want: job.vendor.unwrap_or(g.vendor()),
                }),
            )
        } else if !job.models.allows(g.model) {
            (
                1,
                reject(RejectReason::Model {
                    have: g.model,
                    allowed: job.models,
                }),
            )
        } else if g.vram_mib < job.min_vram_mib {
            (
                2,
                reject(RejectReason::Vram {
                    have_mib: g.vram_mib,
                    need_mib: job.min_vram_mib,
                }),
            )
        } else if g.healthy_free < need {
            let r = RejectReason::NotEnoughGpus {
                need,
                free: g.healthy_free,
                healthy: g.healthy,
            };
            (
                3,
                Rejection {
                    reason: r,
                    unresolvable: g.healthy < need,
                },
            )
        } else {
            // best fit: the group with the fewest free GPUs that still fits
            if fit.is_none_or(|(_, free)| g.healthy_free < free) {
                fit = Some((i, g.healthy_free));
            }
            continue;
        };
        if best.is_none_or(|(rank, b)| {
            r.0 > rank || (r.0 == rank && b.unresolvable && !r.1.unresolvable)
        }) {
            best = Some(r);
        }
    }
    match (fit, best) {
        (Some((group, _)), _) => Ok(Fit { group }),
        (None, Some((_, r))) => Err(r),
        (None, None) => Err(reject(RejectReason::NoGpus)),
    }
}

/// The score components of a fitting node, each 0–100.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreParts {
    pub price: u8,
    pub reputation: u8,
    pub proximity: u8,
    pub packing: u8,
    pub performance: u8,
    /// The weighted total, 0–100.
    pub total: u8,
}

/// Scores a node that passed [`filter`] (with its [`Fit`]), 0–100.
pub fn score_parts(
    node: &NodeSnapshot,
    job: &JobRequirements,
    cfg: &MatchConfig,
    fit: Fit,
) -> ScoreParts {
    let price = if job.price_micro_usd == 0 {
        100
    } else {
        let p = job.price_micro_usd as u128;
        (100 * p.saturating_sub(node.floor_micro_usd as u128) / p) as u8
    };
    let reputation = (node.reputation.min(1000) / 10) as u8;
    let proximity = match (job.location, node.coords) {
        (Some(a), Some(b)) => {
            let d = a.distance_km(&b);
            let h = cfg.proximity_half_km.max(1) as f64;
            let v = 100.0 * h / (h + d);
            if v.is_finite() {
                v.clamp(0.0, 100.0) as u8
            } else {
                50
            }
        }
        _ if job.preferred_regions.is_empty() => 50,
        _ if job.preferred_regions.contains(&node.region) => 100,
        _ => 25,
    };
    let packing = match node.gpus.get(fit.group) {
        Some(g) if g.healthy_free > 0 => {
            (100 * job.gpus_per_worker.max(1).min(g.healthy_free) / g.healthy_free) as u8
        }
        _ => 0,
    };
    let max_speed = cfg
        .speed_permille
        .0
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let performance = node.gpus.get(fit.group).map_or(0, |g| {
        (100 * cfg.speed_permille.get(g.model).min(max_speed) / max_speed) as u8
    });
    let w = cfg.weights(job.preference);
    let total_w = w.total().max(1);
    let sum = w.price * price as u32
        + w.reputation * reputation as u32
        + w.proximity * proximity as u32
        + w.packing * packing as u32
        + w.performance * performance as u32;
    let total = (sum / total_w).min(100) as u8;
    ScoreParts {
        price,
        reputation,
        proximity,
        packing,
        performance,
        total,
    }
}

/// Scores a node that passed [`filter`], 0–100.
pub fn score(node: &NodeSnapshot, job: &JobRequirements, cfg: &MatchConfig, fit: Fit) -> u8 {
    score_parts(node, job, cfg, fit).total
}

/// Filter then score: `Ok(score 0–100)` or the rejection.
pub fn evaluate(
    node: &NodeSnapshot,
    job: &JobRequirements,
    cfg: &MatchConfig,
    now_ms: u64,
) -> Result<u8, Rejection> {
    filter(node, job, cfg, now_ms).map(|fit| score(node, job, cfg, fit))
}

/// Maps a 0–100 score to kube-scheduler's extender range 0–10 (rounded half up).
pub fn extender_score(score: u8) -> i64 {
    (score.min(100) as i64 + 5) / 10
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 100 * 3_600_000;

    fn node() -> NodeSnapshot {
        NodeSnapshot {
            name: "n1".into(),
            gpus: vec![GpuGroup {
                model: GpuModel::H100,
                vram_mib: 81_920,
                total: 8,
                healthy: 8,
                healthy_free: 8,
            }],
            phase: NodePhase::Active,
            draining: false,
            stake: 16_000,
            min_stake: 16_000,
            reputation: 800,
            floor_micro_usd: 1_000_000,
            region: "eu-west".into(),
            country: "DE".into(),
            coords: Some(GeoPoint {
                lat: 50.1,
                lon: 8.7,
            }),
            first_seen_ms: 0,
        }
    }

    fn job() -> JobRequirements {
        JobRequirements {
            vendor: Some(GpuVendor::Nvidia),
            models: ModelSet::of(&[GpuModel::H100, GpuModel::H200]),
            min_vram_mib: 80_000,
            gpus_per_worker: 8,
            price_micro_usd: 2_000_000,
            min_reputation: 500,
            preferred_regions: vec!["eu-west".into()],
            strict_regions: false,
            location: Some(GeoPoint {
                lat: 48.9,
                lon: 2.35,
            }),
            preference: Preference::Balanced,
        }
    }

    #[test]
    fn passes_and_scores() {
        let cfg = MatchConfig::default();
        let fit = filter(&node(), &job(), &cfg, NOW).unwrap();
        let p = score_parts(&node(), &job(), &cfg, fit);
        assert_eq!(p.price, 50);
        assert_eq!(p.reputation, 80);
        assert_eq!(p.packing, 100);
        assert!(p.proximity > 60 && p.proximity < 70, "{p:?}"); // Frankfurt-Paris ~480 km
        assert_eq!(p.performance, 88); // 2400/2700
        assert!(p.total > 0 && p.total <= 100);
        assert_eq!(extender_score(p.total), (p.total as i64 + 5) / 10);
        assert_eq!(extender_score(100), 10);
        assert_eq!(extender_score(0), 0);
    }

    #[test]
    fn reasons() {
        let cfg = MatchConfig::default();
        let cases: Vec<(NodeSnapshot, JobRequirements, &str, bool)> = vec![
            (
                NodeSnapshot {
                    phase: NodePhase::Offline,
                    ..node()
                },
                job(),
                "Offline",
                true,
            ),
            (
                NodeSnapshot {
                    draining: true,
                    ..node()
                },
                job(),
                "draining",
                true,
            ),
            (
                NodeSnapshot {
                    first_seen_ms: NOW - 3_600_000,
                    ..node()
                },
                job(),
                "new (60 min old)",
                true,
            ),
            (
                NodeSnapshot { stake: 1, ..node() },
                job(),
                "stake 1 is below",
                true,
            ),
            (
                NodeSnapshot {
                    reputation: 10,
                    ..node()
                },
                job(),
                "reputation 10",
                true,
            ),
            (
                NodeSnapshot {
                    floor_micro_usd: 3_000_000,
                    ..node()
                },
                job(),
                "floor 3000000",
                true,
            ),
            (
                node(),
                JobRequirements {
                    strict_regions: true,
                    preferred_regions: vec!["us-east".into()],
                    ..job()
                },
                "region",
                true,
            ),
            (
                node(),
                JobRequirements {
                    vendor: Some(GpuVendor::Apple),
                    ..job()
                },
                "nvidia, job needs apple",
                true,
            ),
            (
                node(),
                JobRequirements {
                    models: ModelSet::of(&[GpuModel::A100_80]),
                    ..job()
                },
                "h100 is not among",
                true,
            ),
            (
                node(),
                JobRequirements {
                    min_vram_mib: 100_000,
                    ..job()
                },
                "81920 MiB",
                true,
            ),
            (
                node(),
                JobRequirements {
                    gpus_per_worker: 16,
                    ..job()
                },
                "16 GPUs per worker; node has 8 free of 8",
                true,
            ),
            (
                NodeSnapshot {
                    gpus: vec![],
                    ..node()
                },
                job(),
                "no GPUs",
                true,
            ),
        ];
        for (n, j, want, unres) in cases {
            let r = filter(&n, &j, &cfg, NOW).unwrap_err();
            assert!(r.to_string().contains(want), "{r} !~ {want}");
            assert_eq!(r.unresolvable, unres, "{r}");
        }
        // busy GPUs: preemption could help
        let mut n = node();
        n.gpus[0].healthy_free = 4;
        let r = filter(&n, &job(), &cfg, NOW).unwrap_err();
        assert!(!r.unresolvable);
        assert!(r.to_string().contains("4 free of 8 healthy"));
    }

    #[test]
    fn best_fit_group_and_preferences() {
        let cfg = MatchConfig::default();
        let mut n = node();
        n.gpus.push(GpuGroup {
            model: GpuModel::H200,
            vram_mib: 143_360,
            total: 8,
            healthy: 8,
            healthy_free: 2,
        });
        let j = JobRequirements {
            gpus_per_worker: 2,
            ..job()
        };
        let fit = filter(&n, &j, &cfg, NOW).unwrap();
        assert_eq!(fit.group, 1);
        assert_eq!(score_parts(&n, &j, &cfg, fit).packing, 100);
        // a cheaper floor scores higher for `cheapest`
        let cheap = NodeSnapshot {
            floor_micro_usd: 0,
            ..node()
        };
        let jc = JobRequirements {
            preference: Preference::Cheapest,
            ..job()
        };
        assert!(
            evaluate(&cheap, &jc, &cfg, NOW).unwrap() > evaluate(&node(), &jc, &cfg, NOW).unwrap()
        );
    }

    proptest! {
        #[test]
        fn score_bounded_and_monotone_in_reputation(r1 in 0u16..=1000, r2 in 0u16..=1000, floor in 0u64..2_000_000,
                                                     free in 1u32..16, lat in -90.0f64..90.0, lon in -180.0f64..180.0,
                                                     pref in 0usize..3) {
            let cfg = MatchConfig::default();
            let preference = [Preference::Cheapest, Preference::Fastest, Preference::Balanced][pref];
            let j = JobRequirements { gpus_per_worker: 1, min_reputation: 0, preference, ..job() };
            let mk = |rep| NodeSnapshot {
                reputation: rep, floor_micro_usd: floor, coords: Some(GeoPoint { lat, lon }),
                gpus: vec![GpuGroup { model: GpuModel::H100, vram_mib: 81_920, total: 16, healthy: 16, healthy_free: free }],
                ..node()
            };
            let a = evaluate(&mk(r1.min(r2)), &j, &cfg, NOW).unwrap();
            let b = evaluate(&mk(r1.max(r2)), &j, &cfg, NOW).unwrap();
            prop_assert!(a <= b && b <= 100);
            prop_assert!(extender_score(b) <= 10);
        }
    }
}
