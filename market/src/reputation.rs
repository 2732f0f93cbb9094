//! Node reputation: an integer 0–1000 from uptime, job success, proof-of-work
//! verification and age, with a neutral prior for new nodes and decay toward it.
//!
//! Components, each 0–1000 (`P` = prior, default 500):
//!
//! ```text
//! uptime       = uptime_ppm / 1000                      (P during the warm-up)
//! job_success  = (1000*ok + P*k_jobs) / (ok + failed + k_jobs)          (k_jobs = 5)
//! verification = (1000*passed + P*k_ver) / (passed + failed_ver + k_ver) (k_ver = 3)
//! age          = P + (1000 - P) * min(age, full_age) / full_age         (full_age = 30 d)
//! score        = (w_up*uptime + w_job*job_success + w_ver*verification + w_age*age) / 10_000
//! ```
//!
//! with weights 3,500 / 3,000 / 2,500 / 1,000 bps. The pseudo-counts `k` shrink few
//! observations toward the prior, so a new node sits at `P`. `failed` counts only
//! failures the provider caused. A slashed node scores the floor (0). Every
//! component is monotone in its good signal (non-decreasing) and bad signal
//! (non-increasing), so the score is too, and it stays within 0–1000.
//!
//! Decay: with no fresh evidence, a score moves toward `P`:
//! `score' = P + (score - P) * r(t)` where `r` halves every `half_life`
//! (linear between halvings; integer ppm).
//!
//! [`ReputationConfig::score_decayed`] applies it to the evidence itself: the job
//! and verification counts weigh `r(age)` of their face value, `age` being the time
//! since the last job outcome (verification run) was recorded:
//!
//! ```text
//! job_success = (1000*ok*r + P*k_jobs*1e6) / ((ok + failed)*r + k_jobs*1e6)    (r in ppm)
//! ```
//!
//! a weighted mean of the observed rate and the prior, so an old record moves
//! toward `P` (never past it) and a fresh outcome (age 0) counts in full.

use serde::{Deserialize, Serialize};

/// The largest score.
pub const MAX_SCORE: u16 = 1000;

/// Reputation parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReputationConfig {
    pub prior: u16,
    pub floor: u16,
    pub uptime_weight_bps: u32,
    pub job_weight_bps: u32,
    pub verification_weight_bps: u32,
    pub age_weight_bps: u32,
    pub job_prior_count: u32,
    pub verification_prior_count: u32,
    pub full_age_ms: u64,
    pub decay_half_life_ms: u64,
    /// Half-life of the uptime track ([`UptimeTrack`], default 24 h).
    pub uptime_half_life_ms: u64,
    /// A new node keeps the neutral uptime prior this long (default 1 h).
    pub uptime_warmup_ms: u64,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        ReputationConfig {
            prior: 500,
            floor: 0,
            uptime_weight_bps: 3_500,
            job_weight_bps: 3_000,
            verification_weight_bps: 2_500,
            age_weight_bps: 1_000,
            job_prior_count: 5,
            verification_prior_count: 3,
            full_age_ms: 30 * 24 * 3_600_000,
            decay_half_life_ms: 7 * 24 * 3_600_000,
            uptime_half_life_ms: 24 * 3_600_000,
            uptime_warmup_ms: 3_600_000,
        }
    }
}

/// The evidence about a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReputationInputs {
    /// Time online, exponentially weighted ([`UptimeTrack`]), ppm; `None` during the warm-up.
    pub uptime_ppm: Option<u32>,
    pub jobs_succeeded: u32,
    /// Failures the provider caused (node lost, GPU fault, pod evicted by the node).
    pub jobs_failed_provider: u32,
    pub verifications_passed: u32,
    pub verifications_failed: u32,
    pub age_ms: u64,
    pub slashed: bool,
}

/// A score and its components, each 0–1000.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reputation {
    pub score: u16,
    pub uptime: u16,
    pub job_success: u16,
    pub verification: u16,
    pub age: u16,
}

/// `smoothed` with the observations weighing `retain_ppm` / 1e6 each.
fn smoothed_weighted(good: u32, bad: u32, prior: u16, k: u32, retain_ppm: u32) -> u16 {
    let (g, b, p, k, r) = (
        good as u128,
        bad as u128,
        prior.min(MAX_SCORE) as u128,
        k as u128,
        retain_ppm.min(1_000_000) as u128,
    );
    let den = (g + b) * r + k * 1_000_000;
    if den == 0 {
        return p as u16;
    }
    ((1000 * g * r + p * k * 1_000_000) / den).min(1000) as u16
}

/// How old a node's evidence is, ms (`None`: none recorded, nothing to decay).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceAge {
    /// Since the last job outcome was counted.
    pub jobs_ms: Option<u64>,
    /// Since the last verification ran.
    pub verification_ms: Option<u64>,
}

impl ReputationConfig {
    /// Computes the reputation from evidence (module docs give the formula).
    pub fn score(&self, i: &ReputationInputs) -> Reputation {
        self.score_decayed(i, EvidenceAge::default())
    }

    /// [`Self::score`] with the job and verification evidence decayed by its age
    /// (module docs): with no fresh evidence those components move toward the prior.
    pub fn score_decayed(&self, i: &ReputationInputs, age: EvidenceAge) -> Reputation {
        let p = self.prior.min(MAX_SCORE);
        let retain = |a: Option<u64>| a.map_or(1_000_000, |ms| self.retain_ppm(ms));
        let uptime = i.uptime_ppm.map_or(p, |u| (u.min(1_000_000) / 1000) as u16);
        let job_success = smoothed_weighted(
            i.jobs_succeeded,
            i.jobs_failed_provider,
            p,
            self.job_prior_count,
            retain(age.jobs_ms),
        );
        let verification = smoothed_weighted(
            i.verifications_passed,
            i.verifications_failed,
            p,
            self.verification_prior_count,
            retain(age.verification_ms),
        );
        let age = if self.full_age_ms == 0 {
            MAX_SCORE
        } else {
            let a = i.age_ms.min(self.full_age_ms) as u128;
            (p as u128 + (1000 - p as u128) * a / self.full_age_ms as u128) as u16
        };
        let w = [
            self.uptime_weight_bps,
            self.job_weight_bps,
            self.verification_weight_bps,
            self.age_weight_bps,
        ];
        let c = [uptime, job_success, verification, age];
        let wsum: u128 = w.iter().map(|x| *x as u128).sum();
        let weighted: u128 = w.iter().zip(c).map(|(w, c)| *w as u128 * c as u128).sum();
        let score = if i.slashed {
            self.floor.min(MAX_SCORE)
        } else {
            weighted.checked_div(wsum).map_or(p, |s| s.min(1000) as u16)
        };
        Reputation {
            score,
            uptime,
            job_success,
            verification,
            age,
        }
    }

    /// `r(t)` in ppm: 1,000,000 at 0, halving every `decay_half_life_ms`, linear in between.
    pub fn retain_ppm(&self, elapsed_ms: u64) -> u32 {
        retain_ppm(elapsed_ms, self.decay_half_life_ms)
    }

    /// The `uptime_ppm` input of a node `age_ms` old whose uptime track is `track`:
    /// `None` (the neutral prior) during the warm-up.
    pub fn uptime_ppm(&self, track: &UptimeTrack, age_ms: u64, now_ms: u64) -> Option<u32> {
        (age_ms >= self.uptime_warmup_ms).then(|| track.at(now_ms, self.uptime_half_life_ms))
    }

    /// Moves `score` toward the prior for `elapsed_ms` without fresh evidence.
    pub fn decay(&self, score: u16, elapsed_ms: u64) -> u16 {
        let p = self.prior.min(MAX_SCORE) as i64;
        let s = score.min(MAX_SCORE) as i64;
        let r = self.retain_ppm(elapsed_ms) as i64;
        (p + (s - p) * r / 1_000_000) as u16
    }

    /// Decays an evidence counter (e.g. old job failures weigh less): `floor(count * r(t))`.
    pub fn decay_count(&self, count: u32, elapsed_ms: u64) -> u32 {
        (count as u64 * self.retain_ppm(elapsed_ms) as u64 / 1_000_000) as u32
    }
}

/// `2^(-elapsed / half_life)` in ppm: 1,000,000 at 0, exact at whole half-lives,
/// linear in between; 0 for a zero half-life.
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
    // linear from `at` to `at/2` over one half-life
    (at - at * frac / (2 * half_life_ms as u128)) as u32
}

/// Uptime as an exponentially weighted fraction of time online (the `uptime_ppm`
/// input of [`ReputationInputs`]): `u(t) = s + (u0 - s) * r(t - t0)` where `s` is
/// the current state (1,000,000 ppm online, 0 offline), `(u0, t0)` the value at the
/// last online/offline flip and `r` [`retain_ppm`] with the uptime half-life.
/// The operator keeps it in an annotation ([`UptimeTrack::encode`]); the simulator
/// observes its nodes with the same track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        // the warm-up keeps the prior
        let cfg = ReputationConfig::default();
        assert_eq!(cfg.uptime_ppm(&off, cfg.uptime_warmup_ms - 1, 3_000), None);
        assert_eq!(
            cfg.uptime_ppm(&off, cfg.uptime_warmup_ms, 3_000),
            Some(off.at(3_000, cfg.uptime_half_life_ms))
        );
    }

    #[test]
    fn new_node_is_neutral_and_slashed_is_floor() {
        let cfg = ReputationConfig::default();
        let r = cfg.score(&ReputationInputs::default());
        assert_eq!(r.score, 500);
        assert_eq!(
            (r.uptime, r.job_success, r.verification, r.age),
            (500, 500, 500, 500)
        );
        let s = cfg.score(&ReputationInputs {
            slashed: true,
            uptime_ppm: Some(1_000_000),
            ..Default::default()
        });
        assert_eq!(s.score, 0);
    }

    #[test]
    fn exact_numbers() {
        let cfg = ReputationConfig::default();
        let r = cfg.score(&ReputationInputs {
            uptime_ppm: Some(990_000),
            jobs_succeeded: 95,
            jobs_failed_provider: 0,
            verifications_passed: 17,
            verifications_failed: 0,
            age_ms: 15 * 24 * 3_600_000,
            slashed: false,
        });
        assert_eq!(r.uptime, 990);
        assert_eq!(r.job_success, 975); // (95000 + 2500) / 100
        assert_eq!(r.verification, 925); // (17000 + 1500) / 20
        assert_eq!(r.age, 750);
        // (3500*990 + 3000*975 + 2500*925 + 1000*750) / 10000 = 945.25
        assert_eq!(r.score, 945);
    }

    #[test]
    fn decay_moves_toward_prior() {
        let cfg = ReputationConfig::default();
        let hl = cfg.decay_half_life_ms;
        assert_eq!(cfg.decay(900, 0), 900);
        assert_eq!(cfg.decay(900, hl), 700);
        assert_eq!(cfg.decay(100, hl), 300);
        assert_eq!(cfg.decay(900, 100 * hl), 500);
        assert_eq!(cfg.decay_count(10, hl), 5);
    }

    #[test]
    fn decayed_evidence_exact_numbers() {
        let cfg = ReputationConfig::default();
        let hl = cfg.decay_half_life_ms;
        let i = ReputationInputs {
            jobs_succeeded: 95,
            ..Default::default()
        };
        let at = |ms| {
            cfg.score_decayed(
                &i,
                EvidenceAge {
                    jobs_ms: Some(ms),
                    verification_ms: None,
                },
            )
            .job_success
        };
        assert_eq!(at(0), 975); // (95000 + 2500) / 100
        // one half-life: the 95 successes weigh 47.5: (47500 + 2500) / 52.5
        assert_eq!(at(hl), 952);
        assert_eq!(at(40 * hl), 500, "no evidence left: the prior");
    }

    proptest! {
        #[test]
        fn monotone_and_bounded(up1 in 0u32..=1_100_000, up2 in 0u32..=1_100_000,
                                ok1 in 0u32..100_000, ok2 in 0u32..100_000,
                                f1 in 0u32..100_000, f2 in 0u32..100_000,
                                vp1 in 0u32..10_000, vp2 in 0u32..10_000,
                                vf1 in 0u32..10_000, vf2 in 0u32..10_000,
                                a1 in 0u64..10_000_000_000, a2 in 0u64..10_000_000_000,
                                prior in 0u16..=1000) {
            let cfg = ReputationConfig { prior, ..Default::default() };
            let worse = ReputationInputs {
                uptime_ppm: Some(up1.min(up2)), jobs_succeeded: ok1.min(ok2), jobs_failed_provider: f1.max(f2),
                verifications_passed: vp1.min(vp2), verifications_failed: vf1.max(vf2), age_ms: a1.min(a2), slashed: false,
            };
            let better = ReputationInputs {
                uptime_ppm: Some(up1.max(up2)), jobs_succeeded: ok1.max(ok2), jobs_failed_provider: f1.min(f2),
                verifications_passed: vp1.max(vp2), verifications_failed: vf1.min(vf2), age_ms: a1.max(a2), slashed: false,
            };
            let (w, b) = (cfg.score(&worse), cfg.score(&better));
            prop_assert!(w.score <= b.score);
            prop_assert!(w.uptime <= b.uptime && w.job_success <= b.job_success);
            prop_assert!(w.verification <= b.verification && w.age <= b.age);
            prop_assert!(b.score <= 1000);
            prop_assert_eq!(cfg.score(&ReputationInputs { slashed: true, ..better }).score, 0);
        }

        #[test]
        fn old_evidence_moves_toward_the_prior(ok in 0u32..100_000, f in 0u32..100_000,
                                              vp in 0u32..10_000, vf in 0u32..10_000,
                                              t1 in 0u64..100_000_000_000, t2 in 0u64..100_000_000_000,
                                              prior in 0u16..=1000) {
            let cfg = ReputationConfig { prior, ..Default::default() };
            let i = ReputationInputs {
                uptime_ppm: Some(900_000), jobs_succeeded: ok, jobs_failed_provider: f,
                verifications_passed: vp, verifications_failed: vf, age_ms: 0, slashed: false,
            };
            let (e1, e2) = (t1.min(t2), t1.max(t2));
            let at = |ms| cfg.score_decayed(&i, EvidenceAge { jobs_ms: Some(ms), verification_ms: Some(ms) });
            let (fresh, d1, d2) = (cfg.score(&i), at(e1), at(e2));
            prop_assert_eq!(at(0), fresh);
            let dist = |x: u16| (x as i32 - prior as i32).abs();
            for (a, b) in [(fresh, d1), (d1, d2)] {
                prop_assert!(dist(b.job_success) <= dist(a.job_success));
                prop_assert!(dist(b.verification) <= dist(a.verification));
                // never past the prior
                prop_assert!((a.job_success as i32 - prior as i32) * (b.job_success as i32 - prior as i32) >= 0);
                prop_assert!(b.score <= 1000 && b.uptime == a.uptime && b.age == a.age);
            }
        }

        #[test]
        fn decayed_score_is_still_monotone(ok1 in 0u32..10_000, ok2 in 0u32..10_000,
                                           f1 in 0u32..10_000, f2 in 0u32..10_000,
                                           age in 0u64..100_000_000_000) {
            let cfg = ReputationConfig::default();
            let a = EvidenceAge { jobs_ms: Some(age), verification_ms: None };
            let worse = ReputationInputs { jobs_succeeded: ok1.min(ok2), jobs_failed_provider: f1.max(f2), ..Default::default() };
            let better = ReputationInputs { jobs_succeeded: ok1.max(ok2), jobs_failed_provider: f1.min(f2), ..Default::default() };
            prop_assert!(cfg.score_decayed(&worse, a).score <= cfg.score_decayed(&better, a).score);
        }

        #[test]
        fn uptime_track_bounded_and_follows_the_state(flips in proptest::collection::vec((any::<bool>(), 0u64..10_000_000), 1..30),
                                                    hl in 1u64..5_000_000) {
            let (mut t, mut now) = (None::<UptimeTrack>, 0u64);
            for (online, dt) in flips {
                now += dt;
                let before = t.map(|x| x.at(now, hl));
                let next = UptimeTrack::observe(t, online, now, hl);
                prop_assert!(next.base_ppm <= 1_000_000);
                // a flip keeps the value it flipped at
                if let Some(b) = before { prop_assert_eq!(next.at(now, hl), b); }
                // later, it only moves toward the state it is in
                let (a1, a2) = (next.at(now + hl / 2, hl), next.at(now + 3 * hl, hl));
                if online { prop_assert!(a1 <= a2); } else { prop_assert!(a1 >= a2); }
                prop_assert_eq!(UptimeTrack::decode(&next.encode()), Some(next));
                t = Some(next);
            }
        }

        #[test]
        fn decay_bounded_and_monotone(s in 0u16..=1000, t1 in 0u64..100_000_000_000, t2 in 0u64..100_000_000_000) {
            let cfg = ReputationConfig::default();
            let (e1, e2) = (t1.min(t2), t1.max(t2));
            let (d1, d2) = (cfg.decay(s, e1), cfg.decay(s, e2));
            let p = cfg.prior;
            // closer to the prior with more time, never past it
            prop_assert!((d2 as i32 - p as i32).abs() <= (d1 as i32 - p as i32).abs());
            prop_assert!((d1 as i32 - p as i32).abs() <= (s as i32 - p as i32).abs());
            prop_assert!(d2 <= 1000);
            prop_assert!(cfg.retain_ppm(e1) >= cfg.retain_ppm(e2));
        }
    }
}
