//! Heartbeat → standing (pure): `firstSeen`, `onlineSince` (reset by a restart), the
//! uptime track, reputation, the stake behind the node and its minimum, and reward
//! eligibility.

use super::heartbeat::Heartbeat;
use super::machine;
use super::plan::Note;
use crate::stake::machine as stake_machine;
use crate::toolkit::{ms_time, time_ms};
use crate::{Error, Result};
use solgrid_crds::{GpuNodePhase, GpuNodeStatus, ReputationStatus, StakePositionStatus};
use solgrid_market::MarketConfig;
use solgrid_market::gpu::model_groups;
use solgrid_market::reputation::{EvidenceAge, ReputationInputs, UptimeTrack};
use solgrid_market::staking::EligibilityInput;

/// What the standing is computed from besides the status.
pub struct StandingInput<'a> {
    pub hb: &'a Heartbeat,
    /// The GpuNode's creation time.
    pub created_ms: u64,
    /// `onlineSince` before this reconcile.
    pub prev_online_since: Option<u64>,
    /// The uptime track from the `solgrid.dev/uptime` annotation.
    pub prev_track: Option<UptimeTrack>,
    /// Statuses of the StakePositions on the node.
    pub stakes: &'a [StakePositionStatus],
    pub now: u64,
}

/// The standing's outputs that are not status fields.
pub struct Standing {
    pub track: UptimeTrack,
    pub eligible: bool,
    pub why: String,
    pub online_since: Option<u64>,
}

/// Updates the times, reputation, stake and eligibility of `st` (its phase decided).
pub fn assess(
    st: &mut GpuNodeStatus,
    i: &StandingInput<'_>,
    cfg: &MarketConfig,
    events: &mut Vec<Note>,
) -> Result<Standing> {
    let now = i.now;
    let first_seen = st
        .first_seen
        .as_ref()
        .map(time_ms)
        .unwrap_or(i.created_ms.min(now));
    st.first_seen = Some(ms_time(first_seen));
    let since = machine::online_since(i.hb, i.prev_online_since, now);
    if i.prev_online_since.is_some() && since.is_some() && since != i.prev_online_since {
        events.push((
            true,
            "Restarted",
            "the node restarted: continuous uptime starts again".into(),
        ));
    }
    st.online_since = since.map(ms_time);
    let rcfg = &cfg.reputation;
    let track = UptimeTrack::observe(i.prev_track, i.hb.online, now, rcfg.uptime_half_life_ms);
    let age_ms = now.saturating_sub(first_seen);
    let rep = rcfg.score_decayed(
        &ReputationInputs {
            uptime_ppm: rcfg.uptime_ppm(&track, age_ms, now),
            jobs_succeeded: st.jobs.succeeded,
            jobs_failed_provider: st.jobs.failed_by_provider,
            verifications_passed: st.verification.passed,
            verifications_failed: st.verification.failed,
            age_ms,
            slashed: st.phase == GpuNodePhase::Slashed,
        },
        EvidenceAge {
            jobs_ms: st
                .jobs
                .last_outcome
                .as_ref()
                .map(|t| now.saturating_sub(time_ms(t))),
            verification_ms: st
                .verification
                .last_run
                .as_ref()
                .map(|t| now.saturating_sub(time_ms(t))),
        },
    );
    st.reputation = ReputationStatus {
        score: rep.score,
        uptime: rep.uptime,
        job_success: rep.job_success,
        verification: rep.verification,
        age: rep.age,
    };
    st.stake_total = i
        .stakes
        .iter()
        .filter(|s| stake_machine::counts_for_node(s.phase))
        .fold(0u64, |acc, s| acc.saturating_add(s.locked));
    let (groups, unknown) = model_groups(st.gpus.iter().map(|d| d.model.as_str()));
    st.minimum_stake = cfg
        .staking
        .min_stake_inventory(&groups, unknown)
        .map_err(Error::market)?;
    let (eligible, why) = machine::eligibility(
        &cfg.staking,
        &EligibilityInput {
            phase: st.phase,
            verified: st.verification.verified,
            online_since_ms: since,
            first_seen_ms: first_seen,
            stake: st.stake_total,
            min_stake: st.minimum_stake,
            slashed: st.phase == GpuNodePhase::Slashed,
        },
        now,
    );
    st.reward_eligible = eligible;
    st.eligibility_reason = Some(why.clone());
    Ok(Standing {
        track,
        eligible,
        why,
        online_since: since,
    })
}
