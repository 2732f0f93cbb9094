//! Hourly idle rewards: each period (`--reward-interval-seconds`, hourly by default)
//! the period's emission ([`solgrid_market::emission`]) plus the dust carried from
//! the previous period is split among the reward-eligible GpuNodes by weight
//! (model multiplier × GPUs × idle fraction), each node's share going first to the
//! provider's commission and the rest to its stakers pro rata
//! ([`solgrid_market::staking::split_rewards`]); floors everywhere, and what is
//! left over (dust) is carried to the next period, so nothing is lost.
//!
//! Entry point: [`run`]`(ctx)` — `main` spawns it next to the controllers (under the
//! leader lease); it wakes every minute and distributes a period once it has ended.
//!
//! **Durable state**: a ConfigMap `solgrid-rewards` in the operator's namespace
//! (`--lease-namespace`), key `state.json` ([`RewardState`]): the schedule's genesis
//! period (the first period distributed is emission hour 0), the last distributed
//! period, the carried dust, and the round in progress. Every write is guarded by
//! the ConfigMap's `resourceVersion`.
//!
//! **Exactly once**: a round's payouts are planned (recorded in the ConfigMap) before
//! anything is sent, then paid through the `solgrid_settlement` executor with
//! the ConfigMap as its store. The key of the first (or only) transaction is
//! `rewards/<period>`; a round too large for one transaction (`Ledger::fits`)
//! is split into `rewards/<period>`, `rewards/<period>/1`, `rewards/<period>/2`, ...,
//! each minting what it pays out (the last one also mints the leftover, which stays
//! in the emission pool as carried dust). Missed periods (operator down) are not
//! lost: their emission is added to the next round's pool.
//!
//! **Display counters**: once the round is confirmed, each provider's commission is
//! added to its GpuNode's `status.earnings.idleRewardsIo` and each staker's share to
//! its StakePosition's `status.rewardsAccrued` (merge patches guarded by
//! `resourceVersion`), with the progress saved in the ConfigMap after each one. A
//! crash between a counter's patch and the progress save can count that one
//! counter twice; the ledger itself is never paid twice.
//!
//! Idle fraction: by time over the period `[start, end)` distributed
//! ([`solgrid_market::idle`]): `1 - busy GPU-ms / (gpus × period)`, where the busy
//! time comes from the GpuNode's `status.allocations` (held since `since`, through
//! the end of the period) and `status.allocationHistory` (finished spans
//! `[from, to)`, kept a few hours), both written by the ComputeJob controller. A
//! GPU allocated for 15 minutes of the hour earns for 45.

use crate::cmstore::{ConfigMapStore, Rounds, settle_pass};
use crate::{Context, Error, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use solgrid_crds::{GpuNode, GpuNodeStatus, StakePosition};
use solgrid_market::emission::EmissionSchedule;
use solgrid_market::gpu::model_groups;
use solgrid_market::idle::{BusySpan, IdleWindow};
use solgrid_market::ledger::{Account, Intent, Ledger, Movement, Op, Token};
use solgrid_market::staking::{Recipient, RewardNode, StakeShare, StakingConfig, split_rewards};
use solgrid_settlement::{Settlement, SettlementState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The ConfigMap holding the state.
pub const CONFIGMAP: &str = "solgrid-rewards";
/// Its key.
pub use crate::cmstore::STATE_KEY;
/// The most periods one round catches up on (older missed emission is still
/// carried: it is added to the pool in full).
pub const MAX_CATCH_UP: u64 = 24 * 366;

/// Who a credit is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credit {
    /// `GpuNode` or `StakePosition`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub amount: u64,
}

/// A round in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Round {
    pub period: u64,
    pub emission: u64,
    pub pool: u64,
    pub distributed: u64,
    pub dust_after: u64,
    pub settlements: Vec<Settlement>,
    pub credits: Vec<Credit>,
    /// How many credits are applied.
    pub credited: usize,
}

/// The durable state (ConfigMap `solgrid-rewards`, key `state.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RewardState {
    /// The period distributed as emission hour 0.
    pub genesis_period: Option<u64>,
    pub last_period: Option<u64>,
    /// Carried dust, base units.
    pub dust: u64,
    /// Everything distributed so far, base units.
    pub distributed_total: u64,
    pub round: Option<Round>,
}

/// The spans a node's GPUs were held by jobs: its allocations (still held: until
/// `until_ms`) and its recent history (an allocation in both counts once).
pub fn busy_spans(st: &GpuNodeStatus, until_ms: u64) -> Vec<BusySpan> {
    let ms = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        crate::toolkit::from_time(t).timestamp_millis().max(0) as u64
    };
    let mut out: Vec<BusySpan> = st
        .allocations
        .iter()
        .map(|a| BusySpan {
            gpus: a.gpus,
            from_ms: ms(&a.since),
            to_ms: until_ms,
        })
        .collect();
    out.extend(
        st.allocation_history
            .iter()
            .filter(|h| !st.allocations.iter().any(|a| a.uid == h.uid))
            .map(|h| BusySpan {
                gpus: h.gpus,
                from_ms: ms(&h.from),
                to_ms: ms(&h.to),
            }),
    );
    out
}

/// The eligible nodes of a round, from the GpuNodes and StakePositions; each
/// node's idle fraction over the period `[from_ms, to_ms)` (module docs).
pub fn reward_nodes(
    cfg: &StakingConfig,
    nodes: &[GpuNode],
    stakes: &[StakePosition],
    (from_ms, to_ms): (u64, u64),
) -> Vec<RewardNode> {
    let mut out = Vec::new();
    for n in nodes {
        let Some(st) = n.status.as_ref() else {
            continue;
        };
        if !st.reward_eligible {
            continue;
        }
        let name = n.name_any();
        let gpus = st.gpus.len() as u32;
        if gpus == 0 {
            continue;
        }
        let (groups, _) = model_groups(st.gpus.iter().map(|g| g.model.as_str()));
        let mult = cfg.node_multiplier(&groups);
        let window = IdleWindow {
            gpus,
            from_ms,
            to_ms,
        };
        let idle_ppm = window.idle_ppm(&busy_spans(st, to_ms));
        let mut shares: Vec<StakeShare> = stakes
            .iter()
            .filter(|p| p.spec.node_name == name)
            .filter_map(|p| {
                let s = p.status.as_ref()?;
                if !crate::stake::machine::counts_for_node(s.phase) || s.locked == 0 {
                    return None;
                }
                Some(StakeShare {
                    position: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                    wallet: s.owner_wallet.clone()?,
                    amount: s.locked,
                })
            })
            .collect();
        shares.sort_by(|a, b| a.position.cmp(&b.position));
        out.push(RewardNode {
            node: name,
            provider_wallet: n.spec.payout_wallet.clone(),
            multiplier_permille: mult,
            gpus,
            idle_ppm,
            commission_bps: n.spec.staker_commission_bps as u32,
            stakes: shares,
        });
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// Splits a round's payouts into intents that each fit `fits`: chunk `k` mints what
/// the earlier chunks have not yet minted of the emission, up to what it pays; the
/// last chunk mints the rest (module docs).
pub fn chunk_intents(
    period: u64,
    emission: u64,
    transfers: &[(String, u64)],
    fits: impl Fn(&Intent) -> bool,
) -> Vec<Intent> {
    let key = |i: usize| {
        if i == 0 {
            format!("rewards/{period}")
        } else {
            format!("rewards/{period}/{i}")
        }
    };
    let mint = |amount: u64| Movement {
        token: Token::Io,
        op: Op::Mint {
            to: Account::EmissionPool,
            amount,
        },
    };
    let pay = |w: &str, amount: u64| Movement {
        token: Token::Io,
        op: Op::Transfer {
            from: Account::EmissionPool,
            to: Account::Wallet(w.to_string()),
            amount,
        },
    };
    // group transfers greedily (a placeholder mint keeps the size honest)
    let mut groups: Vec<Vec<(String, u64)>> = vec![Vec::new()];
    for (w, a) in transfers {
        let probe_key = key(groups.len());
        let cur = groups.last_mut().expect("never empty");
        cur.push((w.clone(), *a));
        let mut mv = vec![mint(u64::MAX)];
        mv.extend(cur.iter().map(|(w, a)| pay(w, *a)));
        let probe = Intent {
            key: probe_key,
            movements: mv,
        };
        if cur.len() > 1 && !fits(&probe) {
            let last = cur.pop().expect("just pushed");
            groups.push(vec![last]);
        }
    }
    let mut minted = 0u64;
    let n = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let pays: u64 = g.iter().map(|(_, a)| *a).sum();
            let m = if i + 1 == n {
                emission.saturating_sub(minted)
            } else {
                pays.min(emission.saturating_sub(minted))
            };
            minted = minted.saturating_add(m);
            let mut movements = Vec::with_capacity(g.len() + 1);
            if m > 0 {
                movements.push(mint(m));
            }
            movements.extend(g.iter().map(|(w, a)| pay(w, *a)));
            Intent {
                key: key(i),
                movements,
            }
        })
        .collect()
}

/// Plans the round for `period` (the last ended period): pure.
pub fn plan_round(
    cfg: &StakingConfig,
    schedule: &EmissionSchedule,
    state: &RewardState,
    period: u64,
    nodes: &[RewardNode],
    fits: impl Fn(&Intent) -> bool,
) -> Result<Round> {
    let genesis = state.genesis_period.unwrap_or(period);
    let first = state.last_period.map_or(period, |l| l + 1).max(genesis);
    let first = first.max(period.saturating_sub(MAX_CATCH_UP));
    let mut emission = 0u64;
    for p in first..=period {
        emission = emission.saturating_add(schedule.hourly(p - genesis));
    }
    let pool = emission
        .checked_add(state.dust)
        .ok_or_else(|| Error::market("reward pool overflow"))?;
    let split = split_rewards(pool, nodes, cfg.max_commission_bps).map_err(Error::market)?;
    let mut transfers = Vec::with_capacity(split.payouts.len());
    let mut credits: BTreeMap<(String, Option<String>, String), u64> = BTreeMap::new();
    for p in &split.payouts {
        let n = &nodes[p.node];
        match p.to {
            Recipient::Provider => {
                transfers.push((n.provider_wallet.clone(), p.amount));
                *credits
                    .entry(("GpuNode".into(), None, n.node.clone()))
                    .or_default() += p.amount;
            }
            Recipient::Staker(j) => {
                let s = &n.stakes[j];
                transfers.push((s.wallet.clone(), p.amount));
                let (ns, name) = s.position.split_once('/').unwrap_or(("", &s.position));
                *credits
                    .entry((
                        "StakePosition".into(),
                        Some(ns.to_string()),
                        name.to_string(),
                    ))
                    .or_default() += p.amount;
            }
        }
    }
    let intents = chunk_intents(period, emission, &transfers, fits);
    Ok(Round {
        period,
        emission,
        pool,
        distributed: split.distributed,
        dust_after: split.dust,
        settlements: intents
            .into_iter()
            .map(|intent| Settlement {
                intent,
                state: SettlementState::Planned,
                payload: None,
            })
            .collect(),
        credits: credits
            .into_iter()
            .map(|((kind, namespace, name), amount)| Credit {
                kind,
                namespace,
                name,
                amount,
            })
            .collect(),
        credited: 0,
    })
}

// ------------------------------------------------------------------ store

/// The state in its ConfigMap (the store shared with the buyback: [`crate::cmstore`]).
pub type StateStore = ConfigMapStore<RewardState>;

impl Rounds for RewardState {
    fn settlements(&self) -> Option<&Vec<Settlement>> {
        self.round.as_ref().map(|r| &r.settlements)
    }
    fn settlements_mut(&mut self) -> Option<&mut Vec<Settlement>> {
        self.round.as_mut().map(|r| &mut r.settlements)
    }
}

// ------------------------------------------------------------------ loop

/// What a tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// The period planned this tick, if any.
    pub planned: Option<u64>,
    /// The period completed (paid and credited) this tick, if any.
    pub completed: Option<u64>,
    /// Settlements confirmed this tick.
    pub confirmed: usize,
}

/// Runs the rewards loop until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let every = ctx.config.reward_interval.min(Duration::from_secs(60));
    crate::toolkit::every(&ctx, "rewards", "idle rewards", every, || tick(&ctx), |r| {
        if r.completed.is_some() || r.planned.is_some() {
            tracing::info!(planned = ?r.planned, completed = ?r.completed, confirmed = r.confirmed, "idle rewards");
        }
    })
    .await;
}

/// One step of the loop: resume the round in progress, or plan the last ended
/// period's round when it is due, then pay and credit it.
pub async fn tick(ctx: &Context) -> Result<TickReport> {
    let _timer = ctx.metrics.reconcile("rewards");
    let ns = ctx.config.lease_namespace.clone();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let mut store: StateStore = crate::cmstore::load(cms, CONFIGMAP).await?;
    let mut report = TickReport::default();
    let period_ms = (ctx.config.reward_interval.as_millis() as u64).max(1);
    let now = crate::toolkit::now_ms(ctx);
    let current = now / period_ms;
    let Some(ended) = current.checked_sub(1) else {
        return Ok(report);
    };

    if store.state.round.is_none() {
        if store.state.last_period.is_some_and(|l| l >= ended) {
            return Ok(report);
        }
        let gpunodes: Api<GpuNode> = Api::all(ctx.client.clone());
        let stakes: Api<StakePosition> = Api::all(ctx.client.clone());
        let nodes = gpunodes.list(&ListParams::default()).await?.items;
        let positions = stakes.list(&ListParams::default()).await?.items;
        let cfg = &ctx.config.market.staking;
        let window = (ended * period_ms, (ended + 1) * period_ms);
        let rn = reward_nodes(cfg, &nodes, &positions, window);
        let schedule = schedule(io_decimals(ctx.ledger.unit(Token::Io)))?;
        let ledger = ctx.ledger.clone();
        let round = plan_round(cfg, &schedule, &store.state, ended, &rn, |i| {
            ledger.fits(std::slice::from_ref(i))
        })?;
        if store.state.genesis_period.is_none() {
            store.state.genesis_period = Some(ended);
        }
        store.state.round = Some(round);
        store.save().await?; // plans recorded before anything is sent
        report.planned = Some(ended);
    }

    // pay
    let (store, confirmed) = settle_pass(ctx, "rewards", store).await?;
    let mut store = store;
    report.confirmed = confirmed;
    let Some(round) = store.state.round.clone() else {
        return Ok(report);
    };
    if round
        .settlements
        .iter()
        .any(|s| !matches!(s.state, SettlementState::Confirmed { .. }))
    {
        // waiting, or failed (surfaced in the log and the ConfigMap)
        for s in &round.settlements {
            if let SettlementState::Failed { reason, .. } = &s.state {
                tracing::error!(key = %s.intent.key, reason = %reason, "idle reward payment failed");
            }
        }
        return Ok(report);
    }

    // credit the display counters
    for i in round.credited..round.credits.len() {
        credit(ctx, &round.credits[i]).await?;
        if let Some(r) = store.state.round.as_mut() {
            r.credited = i + 1;
        }
        store.save().await?;
    }
    store.state.last_period = Some(round.period);
    store.state.dust = round.dust_after;
    store.state.distributed_total = store
        .state
        .distributed_total
        .saturating_add(round.distributed);
    store.state.round = None;
    store.save().await?;
    report.completed = Some(round.period);
    Ok(report)
}

/// The emission schedule of a mint (computed once per process: exact bignum work).
fn schedule(decimals: u8) -> Result<Arc<EmissionSchedule>> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<BTreeMap<u8, Arc<EmissionSchedule>>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = map.get(&decimals) {
        return Ok(s.clone());
    }
    let s = Arc::new(EmissionSchedule::new(decimals).map_err(Error::market)?);
    map.insert(decimals, s.clone());
    Ok(s)
}

fn io_decimals(unit: u64) -> u8 {
    let mut d = 0u8;
    let mut u = unit;
    while u >= 10 && d < 19 {
        u /= 10;
        d += 1;
    }
    d
}

async fn credit(ctx: &Context, c: &Credit) -> Result<()> {
    match c.kind.as_str() {
        "GpuNode" => {
            let api: Api<GpuNode> = Api::all(ctx.client.clone());
            let Some(n) = api.get_opt(&c.name).await? else {
                return Ok(());
            };
            let mut e = n
                .status
                .as_ref()
                .map(|s| s.earnings.clone())
                .unwrap_or_default();
            e.idle_rewards_io = e.idle_rewards_io.saturating_add(c.amount);
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": n.resource_version()},
                "status": {"earnings": e},
            });
            api.patch_status(&c.name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        "StakePosition" => {
            let ns = c.namespace.clone().unwrap_or_default();
            let api: Api<StakePosition> = Api::namespaced(ctx.client.clone(), &ns);
            let Some(p) = api.get_opt(&c.name).await? else {
                return Ok(());
            };
            let acc = p.status.as_ref().map_or(0, |s| s.rewards_accrued);
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": p.resource_version()},
                "status": {"rewardsAccrued": acc.saturating_add(c.amount)},
            });
            api.patch_status(&c.name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            let _ = StakePosition::kind(&());
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_crds::StakePhase;
    use solgrid_crds::{
        Allocation, AllocationSpan, GpuDevice, GpuNodeSpec, StakePositionSpec, StakePositionStatus,
        WalletSecretRef,
    };

    fn node(
        name: &str,
        model: &str,
        gpus: usize,
        alloc: u32,
        eligible: bool,
        comm: u16,
    ) -> GpuNode {
        let mut n = GpuNode::new(
            name,
            GpuNodeSpec {
                node_name: name.into(),
                payout_wallet: format!("prov-{name}"),
                staker_commission_bps: comm,
                ..Default::default()
            },
        );
        n.status = Some(GpuNodeStatus {
            gpus: (0..gpus)
                .map(|i| GpuDevice {
                    id: format!("g{i}"),
                    model: model.into(),
                    ..Default::default()
                })
                .collect(),
            allocated_gpus: alloc,
            // held since long before the period
            allocations: (alloc > 0)
                .then(|| Allocation {
                    uid: "u".into(),
                    job: "ns/j".into(),
                    gpus: alloc,
                    since: crate::toolkit::time(chrono::DateTime::UNIX_EPOCH),
                })
                .into_iter()
                .collect(),
            reward_eligible: eligible,
            ..Default::default()
        });
        n
    }

    const H: u64 = 3_600_000;
    const HOUR: (u64, u64) = (100 * H, 101 * H);

    #[test]
    fn idle_fraction_is_by_time_in_the_period() {
        let cfg = StakingConfig::default();
        let at = |ms: u64| {
            crate::toolkit::time(chrono::DateTime::from_timestamp_millis(ms as i64).unwrap())
        };
        let mut busy = node("busy", "h100", 2, 0, true, 0);
        let st = busy.status.as_mut().unwrap();
        // both GPUs for the first 15 minutes (a finished job), one GPU since the half hour
        st.allocation_history.push(AllocationSpan {
            uid: "a".into(),
            gpus: 2,
            from: at(99 * H),
            to: at(100 * H + H / 4),
        });
        st.allocations.push(Allocation {
            uid: "b".into(),
            job: "ns/b".into(),
            gpus: 1,
            since: at(100 * H + H / 2),
        });
        // a span both current and in history counts once; one after the period not at all
        st.allocation_history.push(AllocationSpan {
            uid: "b".into(),
            gpus: 1,
            from: at(100 * H + H / 2),
            to: at(101 * H),
        });
        st.allocation_history.push(AllocationSpan {
            uid: "c".into(),
            gpus: 2,
            from: at(101 * H),
            to: at(102 * H),
        });
        let idle = node("idle", "h100", 2, 0, true, 0);
        let rn = reward_nodes(&cfg, &[busy, idle], &[], HOUR);
        // busy: 2×15 + 1×30 = 60 GPU-minutes of 120
        assert_eq!((rn[0].node.as_str(), rn[0].idle_ppm), ("busy", 500_000));
        assert_eq!((rn[1].node.as_str(), rn[1].idle_ppm), ("idle", 1_000_000));
        assert!(rn[0].weight() < rn[1].weight());
    }

    fn stake(ns: &str, name: &str, node: &str, phase: StakePhase, locked: u64) -> StakePosition {
        let mut p = StakePosition::new(
            name,
            StakePositionSpec {
                node_name: node.into(),
                amount: locked.max(1),
                owner_secret_ref: WalletSecretRef { name: "s".into() },
                unbond: false,
            },
        );
        p.metadata.namespace = Some(ns.into());
        p.status = Some(StakePositionStatus {
            phase,
            owner_wallet: Some(format!("w-{name}")),
            locked,
            ..Default::default()
        });
        p
    }

    #[test]
    fn nodes_weights_and_stakes() {
        let cfg = StakingConfig::default();
        let nodes = [
            node("b", "NVIDIA H100 80GB HBM3", 2, 1, true, 1_000),
            node("a", "NVIDIA GeForce RTX 4070", 1, 0, true, 0),
            node("c", "NVIDIA H100 80GB HBM3", 1, 0, false, 0),
        ];
        let stakes = [
            stake("ns", "s1", "b", StakePhase::Active, 300),
            stake("ns", "s2", "b", StakePhase::Unbonding, 100),
            stake("ns", "s3", "b", StakePhase::Pending, 100),
            stake("ns", "s4", "b", StakePhase::Slashed, 100),
        ];
        let rn = reward_nodes(&cfg, &nodes, &stakes, HOUR);
        assert_eq!(rn.len(), 2);
        assert_eq!(rn[0].node, "a");
        assert_eq!(
            (rn[1].multiplier_permille, rn[1].gpus, rn[1].idle_ppm),
            (10_000, 2, 500_000)
        );
        assert_eq!(rn[1].stakes.len(), 2);
        assert_eq!(rn[1].stakes[0].position, "ns/s1");
    }

    #[test]
    fn round_conserves_and_chunks() {
        let cfg = StakingConfig::default();
        let schedule = EmissionSchedule::new(9).unwrap();
        let nodes = [node("b", "h100", 1, 0, true, 1_000)];
        let stakes: Vec<StakePosition> = (0..40)
            .map(|i| {
                stake(
                    "ns",
                    &format!("s{i:02}"),
                    "b",
                    StakePhase::Active,
                    1_000 + i,
                )
            })
            .collect();
        let rn = reward_nodes(&cfg, &nodes, &stakes, HOUR);
        // the ledger's own size model and limit
        let ledger = solgrid_ledger::EmbeddedLedger::in_memory(Default::default()).unwrap();
        let fits =
            |i: &Intent| solgrid_market::ledger::Ledger::fits(&ledger, std::slice::from_ref(i));
        let state = RewardState {
            dust: 7,
            ..Default::default()
        };
        let r = plan_round(&cfg, &schedule, &state, 100, &rn, fits).unwrap();
        assert_eq!(r.emission, schedule.hourly(0));
        assert_eq!(r.pool, r.emission + 7);
        assert_eq!(r.distributed + r.dust_after, r.pool);
        assert!(
            r.settlements.len() > 1,
            "40 stakers need several transactions"
        );
        assert_eq!(r.settlements[0].intent.key, "rewards/100");
        assert_eq!(r.settlements[1].intent.key, "rewards/100/1");
        let mut minted = 0u128;
        let mut paid = 0u128;
        for s in &r.settlements {
            assert!(fits(&s.intent));
            for m in &s.intent.movements {
                match &m.op {
                    Op::Mint { amount, .. } => minted += *amount as u128,
                    Op::Transfer { amount, .. } => paid += *amount as u128,
                    Op::Burn { .. } => panic!("no burn"),
                }
            }
        }
        assert_eq!(minted, r.emission as u128);
        assert_eq!(paid, r.distributed as u128);
        let credited: u64 = r.credits.iter().map(|c| c.amount).sum();
        assert_eq!(credited, r.distributed);
        // a missed period is caught up: two periods' emission
        let state2 = RewardState {
            genesis_period: Some(98),
            last_period: Some(98),
            ..Default::default()
        };
        let r2 = plan_round(&cfg, &schedule, &state2, 100, &[], fits).unwrap();
        assert_eq!(r2.emission, schedule.hourly(1) + schedule.hourly(2));
        assert_eq!((r2.distributed, r2.dust_after), (0, r2.emission));
        assert_eq!(r2.settlements.len(), 1);
        assert_eq!(io_decimals(1_000_000_000), 9);
        assert_eq!(io_decimals(1), 0);
    }
}
