//! Staking: minimum stake, idle-reward eligibility, the hourly idle-reward split,
//! unbonding and slashing (ECONOMICS.md, "Staking and idle rewards").
//!
//! ```text
//! min_stake(node) = sum over GPU groups of ceil(base * unit * max(1000, mult_pm) * gpus / 1000)
//!                   (base = 200 IO; mult_pm = per-mille multiplier: H100 10,000, RTX 4070 250)
//! weight(node)    = mult_pm * gpus * idle_ppm
//! pool(hour)      = emission(hour) + dust carried from the previous hour
//! share(node)     = floor(pool * weight / sum weights)
//! commission      = floor(share * min(commission_bps, max_commission_bps) / 10_000)  -> provider
//! staker i        = floor((share - commission) * stake_i / sum stakes)             -> staker
//! dust            = pool - everything paid                 (carried to the next hour)
//! ```
//!
//! A node with no stake gives its whole share to the provider. Nothing is created
//! or lost: `paid + dust == pool` every hour.
//!
//! Slashing burns `ceil(stake * slash_bps / 10_000)` of every position backing the
//! node (unbonding ones included). Unbonding ends `unbonding_ms` after it starts.

use crate::gpu::{GpuModel, ModelTable};
use crate::ledger::{Account, Amount, Intent, Movement, Op, Token};
use crate::matching::NodePhase;
use crate::money::{self, MoneyError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Default stake multipliers, per-mille (1,000 = 1×).
pub fn default_multipliers_permille() -> ModelTable<u32> {
    use GpuModel::*;
    ModelTable::from_fn(|m| match m {
        Rtx3060 => 150,
        Rtx3070 => 200,
        Rtx3080 => 300,
        Rtx3090 => 400,
        Rtx4060 => 150,
        Rtx4070 => 250,
        Rtx4080 => 500,
        Rtx4090 => 800,
        Rtx5070 => 400,
        Rtx5080 => 800,
        Rtx5090 => 1_300,
        A100_40 => 5_000,
        A100_80 => 7_000,
        H100 => 10_000,
        H200 => 13_000,
        L40s => 4_000,
        AppleM1 => 50,
        AppleM2 => 80,
        AppleM3 => 120,
        AppleM4 => 160,
    })
}

fn de_multipliers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModelTable<u32>, D::Error> {
    crate::gpu::deserialize_overlay(d, default_multipliers_permille())
}

/// Staking parameters. Every duration is configurable so tests and the simulator can shorten them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StakingConfig {
    /// Whole IO per 1× of multiplier per GPU (default 200).
    pub base_stake_io: u64,
    /// IO base units per IO (10^decimals, default 10^9).
    pub unit: Amount,
    #[serde(deserialize_with = "de_multipliers")]
    pub multipliers_permille: ModelTable<u32>,
    /// The market's cap on a provider's commission (default 2,000 bps = 20 %).
    pub max_commission_bps: u32,
    /// Continuous uptime needed for idle rewards (default 5 h).
    pub min_uptime_ms: u64,
    /// A node is not hired (nor rewarded) before this age (default 12 h).
    pub min_age_ms: u64,
    /// Unbonding period (default 14 days).
    pub unbonding_ms: u64,
    /// Share of stake burned when a node is slashed (default 5,000 bps = 50 %).
    pub slash_bps: u32,
}

impl Default for StakingConfig {
    fn default() -> Self {
        StakingConfig {
            base_stake_io: 200,
            unit: 1_000_000_000,
            multipliers_permille: default_multipliers_permille(),
            max_commission_bps: 2_000,
            min_uptime_ms: 5 * 3_600_000,
            min_age_ms: 12 * 3_600_000,
            unbonding_ms: 14 * 24 * 3_600_000,
            slash_bps: 5_000,
        }
    }
}

/// Why a node earns no idle rewards this hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum Ineligible {
    #[error("node is slashed")]
    Slashed,
    #[error("node is {phase}, not Active")]
    NotActive { phase: NodePhase },
    #[error("node has not passed proof-of-work verification")]
    NotVerified,
    #[error("node is offline")]
    Offline,
    #[error("node has been online {online_ms} ms without a break; {need_ms} ms needed")]
    UptimeTooShort { online_ms: u64, need_ms: u64 },
    #[error("node is {age_ms} ms old; {need_ms} ms needed")]
    TooNew { age_ms: u64, need_ms: u64 },
    #[error("node stake {stake} is below its minimum {min_stake}")]
    Understaked { stake: Amount, min_stake: Amount },
}

/// What reward eligibility is decided from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EligibilityInput {
    pub phase: NodePhase,
    pub verified: bool,
    /// Start of the current unbroken online stretch (a restart resets it); `None` if offline.
    pub online_since_ms: Option<u64>,
    pub first_seen_ms: u64,
    pub stake: Amount,
    pub min_stake: Amount,
    pub slashed: bool,
}

impl StakingConfig {
    /// The multiplier of a model, per-mille.
    pub fn multiplier(&self, m: GpuModel) -> u32 {
        self.multipliers_permille.get(m)
    }

    /// The multiplier a node's idle-reward weight uses: its dominant model's
    /// ([`crate::gpu::dominant_model`] of its groups), 1× when it has no known model.
    pub fn node_multiplier(&self, groups: &[(GpuModel, u32)]) -> u32 {
        crate::gpu::dominant_model(groups).map_or(1000, |(m, _)| self.multiplier(m))
    }

    /// `ceil(base * unit * max(1000, mult_pm) * gpus / 1000)`.
    pub fn min_stake(&self, model: GpuModel, gpus: u32) -> Result<Amount, MoneyError> {
        let per_gpu = (self.base_stake_io as u128)
            .checked_mul(self.unit as u128)
            .and_then(|x| x.checked_mul(self.multiplier(model).max(1000) as u128))
            .and_then(|x| x.checked_mul(gpus as u128))
            .ok_or(MoneyError::Overflow("min_stake"))?;
        money::to_amount(per_gpu.div_ceil(1000), "min_stake")
    }

    /// The minimum stake of a node with several GPU groups: the sum over groups.
    pub fn min_stake_node(&self, groups: &[(GpuModel, u32)]) -> Result<Amount, MoneyError> {
        groups.iter().try_fold(0u64, |acc, (m, n)| {
            money::add(acc, self.min_stake(*m, *n)?, "min_stake")
        })
    }

    /// The minimum stake of an inventory: [`Self::min_stake_node`] over the known
    /// model groups plus the base stake (multiplier 1×) per GPU of a model the market
    /// does not know (see [`crate::gpu::model_groups`]).
    pub fn min_stake_inventory(
        &self,
        groups: &[(GpuModel, u32)],
        unknown: u32,
    ) -> Result<Amount, MoneyError> {
        let per_unknown = (self.base_stake_io as u128)
            .checked_mul(self.unit as u128)
            .and_then(|x| x.checked_mul(unknown as u128))
            .ok_or(MoneyError::Overflow("min_stake"))?;
        money::add(
            self.min_stake_node(groups)?,
            money::to_amount(per_unknown, "min_stake")?,
            "min_stake",
        )
    }

    /// Whether a node earns idle rewards at `now_ms`; the first failing reason otherwise.
    pub fn reward_eligibility(&self, e: &EligibilityInput, now_ms: u64) -> Result<(), Ineligible> {
        if e.slashed || e.phase == NodePhase::Slashed {
            return Err(Ineligible::Slashed);
        }
        if e.phase != NodePhase::Active {
            return Err(Ineligible::NotActive { phase: e.phase });
        }
        if !e.verified {
            return Err(Ineligible::NotVerified);
        }
        let Some(since) = e.online_since_ms else {
            return Err(Ineligible::Offline);
        };
        let online_ms = now_ms.saturating_sub(since);
        if online_ms < self.min_uptime_ms {
            return Err(Ineligible::UptimeTooShort {
                online_ms,
                need_ms: self.min_uptime_ms,
            });
        }
        let age_ms = now_ms.saturating_sub(e.first_seen_ms);
        if age_ms < self.min_age_ms {
            return Err(Ineligible::TooNew {
                age_ms,
                need_ms: self.min_age_ms,
            });
        }
        if e.stake < e.min_stake {
            return Err(Ineligible::Understaked {
                stake: e.stake,
                min_stake: e.min_stake,
            });
        }
        Ok(())
    }

    /// Whether a node may be hired at `now_ms` (age only; matching checks the rest).
    pub fn hireable(&self, first_seen_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(first_seen_ms) >= self.min_age_ms
    }

    /// When an unbonding that started at `started_ms` ends.
    pub fn unbonding_ends(&self, started_ms: u64) -> u64 {
        started_ms.saturating_add(self.unbonding_ms)
    }

    /// Whether the stake may be withdrawn at `now_ms`.
    pub fn can_withdraw(&self, unbonding_started_ms: u64, now_ms: u64) -> bool {
        now_ms >= self.unbonding_ends(unbonding_started_ms)
    }

    /// What slashing burns of one position: `ceil(stake * slash_bps / 10_000)`, at
    /// most the stake.
    pub fn slash_amount(&self, stake: Amount) -> Result<Amount, MoneyError> {
        Ok(money::bps_ceil(stake, self.slash_bps.min(10_000))?.min(stake))
    }

    /// Burns [`Self::slash_amount`] of every position.
    pub fn slash(&self, stakes: &[Amount]) -> Result<SlashOutcome, MoneyError> {
        let mut burned_each = Vec::with_capacity(stakes.len());
        let mut remaining = Vec::with_capacity(stakes.len());
        let mut burned = 0u64;
        for s in stakes {
            let b = self.slash_amount(*s)?;
            burned = money::add(burned, b, "slash")?;
            burned_each.push(b);
            remaining.push(*s - b);
        }
        Ok(SlashOutcome {
            burned_each,
            remaining,
            burned,
        })
    }
}

/// The result of a slash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlashOutcome {
    pub burned_each: Vec<Amount>,
    pub remaining: Vec<Amount>,
    pub burned: Amount,
}

impl SlashOutcome {
    /// The intent burning the slashed stake from the stake vault, key `"{node_uid}/slash/{n}"`.
    pub fn intent(&self, key: String) -> Intent {
        let movements = if self.burned > 0 {
            vec![Movement {
                token: Token::Io,
                op: Op::Burn {
                    from: Account::StakeVault,
                    amount: self.burned,
                },
            }]
        } else {
            vec![]
        };
        Intent { key, movements }
    }
}

/// One stake position backing a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StakeShare {
    /// The StakePosition (namespace/name or uid).
    pub position: String,
    pub wallet: String,
    pub amount: Amount,
}

/// An eligible node in an hour's reward split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewardNode {
    pub node: String,
    pub provider_wallet: String,
    /// Stake multiplier of the node's model, per-mille.
    pub multiplier_permille: u32,
    pub gpus: u32,
    /// Fraction of the hour the node's GPUs were idle, ppm (0..=1,000,000).
    pub idle_ppm: u32,
    /// The provider's commission, bps (capped by the market's maximum).
    pub commission_bps: u32,
    pub stakes: Vec<StakeShare>,
}

impl RewardNode {
    /// `mult_pm * gpus * idle_ppm`.
    pub fn weight(&self) -> u128 {
        self.multiplier_permille as u128 * self.gpus as u128 * self.idle_ppm.min(1_000_000) as u128
    }
}

/// Who a reward goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Recipient {
    /// The provider's commission (or the whole share of an unstaked node).
    Provider,
    /// A staker: index into the node's `stakes`.
    Staker(usize),
}

/// One reward payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewardPayout {
    /// Index into the nodes passed to [`split_rewards`].
    pub node: usize,
    pub to: Recipient,
    pub amount: Amount,
}

/// An hour's split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewardSplit {
    /// The pool split: this hour's emission plus the carried dust.
    pub pool: Amount,
    /// Non-zero payouts, in node order (provider first, then stakers).
    pub payouts: Vec<RewardPayout>,
    pub distributed: Amount,
    /// `pool - distributed`: carried to the next hour.
    pub dust: Amount,
}

impl fmt::Display for RewardSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool {} distributed {} dust {}",
            self.pool, self.distributed, self.dust
        )
    }
}

/// Splits `pool` (this hour's emission + carried dust) among eligible `nodes`
/// (module docs give the formula). With no weight at all, everything is dust.
pub fn split_rewards(
    pool: Amount,
    nodes: &[RewardNode],
    max_commission_bps: u32,
) -> Result<RewardSplit, MoneyError> {
    let total_w: u128 = nodes.iter().map(RewardNode::weight).sum();
    let mut payouts = Vec::new();
    let mut distributed = 0u64;
    if total_w > 0 {
        payouts.reserve(nodes.len() * 2);
        for (i, n) in nodes.iter().enumerate() {
            let w = n.weight();
            if w == 0 {
                continue;
            }
            let share = money::to_amount(
                money::mul_div_floor(pool as u128, w, total_w, "reward share")?,
                "reward share",
            )?;
            let total_stake: u128 = n.stakes.iter().map(|s| s.amount as u128).sum();
            let commission = if total_stake == 0 {
                share
            } else {
                money::bps_floor(share, n.commission_bps.min(max_commission_bps).min(10_000))?
            };
            let mut node_paid = commission;
            if commission > 0 {
                payouts.push(RewardPayout {
                    node: i,
                    to: Recipient::Provider,
                    amount: commission,
                });
            }
            if total_stake > 0 {
                let rest = share - commission;
                for (j, s) in n.stakes.iter().enumerate() {
                    let a = money::to_amount(
                        money::mul_div_floor(
                            rest as u128,
                            s.amount as u128,
                            total_stake,
                            "staker share",
                        )?,
                        "staker share",
                    )?;
                    if a > 0 {
                        payouts.push(RewardPayout {
                            node: i,
                            to: Recipient::Staker(j),
                            amount: a,
                        });
                        node_paid += a;
                    }
                }
            }
            distributed = money::add(distributed, node_paid, "distributed")?;
        }
    }
    let dust = money::sub(pool, distributed, "dust")?;
    Ok(RewardSplit {
        pool,
        payouts,
        distributed,
        dust,
    })
}

/// The ledger intent of an hour's rewards, key `"rewards/{hour}"`: mints the hour's
/// emission into the emission pool, then pays every payout from it (the dust stays
/// in the pool for the next hour).
pub fn reward_intent(
    hour: u64,
    emission: Amount,
    split: &RewardSplit,
    nodes: &[RewardNode],
) -> Intent {
    let mut movements = Vec::with_capacity(split.payouts.len() + 1);
    if emission > 0 {
        movements.push(Movement {
            token: Token::Io,
            op: Op::Mint {
                to: Account::EmissionPool,
                amount: emission,
            },
        });
    }
    for p in &split.payouts {
        let n = &nodes[p.node];
        let wallet = match p.to {
            Recipient::Provider => n.provider_wallet.clone(),
            Recipient::Staker(j) => n.stakes[j].wallet.clone(),
        };
        movements.push(Movement {
            token: Token::Io,
            op: Op::Transfer {
                from: Account::EmissionPool,
                to: Account::Wallet(wallet),
                amount: p.amount,
            },
        });
    }
    Intent {
        key: format!("rewards/{hour}"),
        movements,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IO: u64 = 1_000_000_000;

    #[test]
    fn min_stake_examples() {
        let c = StakingConfig::default();
        assert_eq!(c.min_stake(GpuModel::H100, 8).unwrap(), 200 * 10 * 8 * IO);
        assert_eq!(c.min_stake(GpuModel::Rtx4070, 1).unwrap(), 200 * IO);
        assert_eq!(c.min_stake(GpuModel::Rtx5090, 2).unwrap(), 520 * IO);
        assert_eq!(
            c.min_stake_node(&[(GpuModel::H100, 1), (GpuModel::Rtx4090, 2)])
                .unwrap(),
            2_400 * IO
        );
        let huge = StakingConfig {
            unit: u64::MAX,
            ..c
        };
        assert!(huge.min_stake(GpuModel::H100, u32::MAX).is_err());
    }

    fn eligible() -> EligibilityInput {
        EligibilityInput {
            phase: NodePhase::Active,
            verified: true,
            online_since_ms: Some(0),
            first_seen_ms: 0,
            stake: 10,
            min_stake: 10,
            slashed: false,
        }
    }

    #[test]
    fn eligibility_rules() {
        let c = StakingConfig::default();
        let now = 13 * 3_600_000;
        assert_eq!(c.reward_eligibility(&eligible(), now), Ok(()));
        let cases = [
            (
                EligibilityInput {
                    slashed: true,
                    ..eligible()
                },
                Ineligible::Slashed,
            ),
            (
                EligibilityInput {
                    phase: NodePhase::Draining,
                    ..eligible()
                },
                Ineligible::NotActive {
                    phase: NodePhase::Draining,
                },
            ),
            (
                EligibilityInput {
                    verified: false,
                    ..eligible()
                },
                Ineligible::NotVerified,
            ),
            (
                EligibilityInput {
                    online_since_ms: None,
                    ..eligible()
                },
                Ineligible::Offline,
            ),
            (
                EligibilityInput {
                    online_since_ms: Some(now - 3_600_000),
                    ..eligible()
                },
                Ineligible::UptimeTooShort {
                    online_ms: 3_600_000,
                    need_ms: 5 * 3_600_000,
                },
            ),
            (
                EligibilityInput {
                    first_seen_ms: 2 * 3_600_000,
                    ..eligible()
                },
                Ineligible::TooNew {
                    age_ms: 11 * 3_600_000,
                    need_ms: 12 * 3_600_000,
                },
            ),
            (
                EligibilityInput {
                    stake: 9,
                    ..eligible()
                },
                Ineligible::Understaked {
                    stake: 9,
                    min_stake: 10,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(c.reward_eligibility(&input, now), Err(want));
        }
        assert!(!c.hireable(0, 12 * 3_600_000 - 1));
        assert!(c.hireable(0, 12 * 3_600_000));
    }

    #[test]
    fn unbonding_and_slashing() {
        let c = StakingConfig::default();
        assert_eq!(c.unbonding_ends(1), 1 + 14 * 86_400_000);
        assert!(!c.can_withdraw(0, 14 * 86_400_000 - 1));
        assert!(c.can_withdraw(0, 14 * 86_400_000));
        let s = c.slash(&[100, 3, 0]).unwrap();
        assert_eq!(s.burned_each, vec![50, 2, 0]);
        assert_eq!(s.remaining, vec![50, 1, 0]);
        assert_eq!(s.burned, 52);
        assert_eq!(s.intent("n/slash/0".into()).movements.len(), 1);
        assert_eq!(c.slash_amount(3).unwrap(), 2);
        let all = StakingConfig {
            slash_bps: 20_000,
            ..StakingConfig::default()
        };
        assert_eq!(all.slash_amount(3).unwrap(), 3);
    }

    #[test]
    fn inventory_minimum_counts_unknown_models_at_base() {
        let c = StakingConfig::default();
        let (g, unknown) = crate::gpu::model_groups([
            "NVIDIA H100 80GB HBM3",
            "NVIDIA H100 80GB HBM3",
            "NVIDIA GeForce RTX 4070",
            "Radeon",
        ]);
        assert_eq!(g, vec![(GpuModel::H100, 2), (GpuModel::Rtx4070, 1)]);
        assert_eq!(unknown, 1);
        let io = 1_000_000_000u64;
        // 200*10*2 + 200*1 (RTX 4070 at its 1x floor) + 200*1 (unknown at 1x)
        assert_eq!(c.min_stake_inventory(&g, unknown).unwrap(), 4_400 * io);
        assert_eq!(
            c.min_stake_inventory(&g, 0).unwrap(),
            c.min_stake_node(&g).unwrap()
        );
    }

    fn rn(mult: u32, gpus: u32, idle: u32, comm: u32, stakes: &[u64]) -> RewardNode {
        RewardNode {
            node: "n".into(),
            provider_wallet: "prov".into(),
            multiplier_permille: mult,
            gpus,
            idle_ppm: idle,
            commission_bps: comm,
            stakes: stakes
                .iter()
                .enumerate()
                .map(|(i, a)| StakeShare {
                    position: format!("p{i}"),
                    wallet: format!("s{i}"),
                    amount: *a,
                })
                .collect(),
        }
    }

    #[test]
    fn split_example() {
        // Two nodes, weights 10000*1*1e6 and 250*4*1e6 = 10:1.
        let nodes = [
            rn(10_000, 1, 1_000_000, 1_000, &[3, 1]),
            rn(250, 4, 1_000_000, 5_000, &[1]),
        ];
        let s = split_rewards(1_100, &nodes, 2_000).unwrap();
        // node 0: share 1000, commission 100, stakers 675 / 225
        // node 1: share 100, commission capped at 20 %, staker 80
        let amounts: Vec<_> = s.payouts.iter().map(|p| (p.node, p.to, p.amount)).collect();
        assert_eq!(
            amounts,
            vec![
                (0, Recipient::Provider, 100),
                (0, Recipient::Staker(0), 675),
                (0, Recipient::Staker(1), 225),
                (1, Recipient::Provider, 20),
                (1, Recipient::Staker(0), 80),
            ]
        );
        assert_eq!(s.dust, 0);
        let i = reward_intent(7, 1_000, &s, &nodes);
        assert_eq!(i.key, "rewards/7");
        assert_eq!(i.movements.len(), 6);
        // no eligible weight: all dust
        let none = split_rewards(500, &[rn(1000, 1, 0, 0, &[1])], 2_000).unwrap();
        assert_eq!((none.distributed, none.dust), (0, 500));
    }

    proptest! {
        /// A slash burns the rounded-up share of each position, never more than it holds.
        #[test]
        fn slash_burns_the_share_and_nothing_else(stakes in proptest::collection::vec(0u64..u64::MAX / 16, 0..8), bps in 0u32..=20_000) {
            let c = StakingConfig { slash_bps: bps, ..StakingConfig::default() };
            let out = c.slash(&stakes).unwrap();
            for (i, s) in stakes.iter().enumerate() {
                let b = out.burned_each[i];
                prop_assert_eq!(b, c.slash_amount(*s).unwrap());
                prop_assert!(b <= *s);
                prop_assert_eq!(b + out.remaining[i], *s);
                let want = (*s as u128 * bps.min(10_000) as u128).div_ceil(10_000);
                prop_assert_eq!(b as u128, want);
            }
            prop_assert_eq!(out.burned as u128, out.burned_each.iter().map(|b| *b as u128).sum::<u128>());
        }

        /// Across many hours, emission + initial dust == everything paid + final dust.
        #[test]
        fn no_unit_lost_across_hours(
            hours in proptest::collection::vec((0u64..10_000_000_000_000, 0u32..=1_000_000), 1..24),
            specs in proptest::collection::vec((0u32..20_000, 0u32..16, 0u32..=10_000, proptest::collection::vec(0u64..1_000_000_000_000, 0..5)), 0..12),
            max_comm in 0u32..=10_000,
        ) {
            let mut dust = 0u64;
            let mut emitted = 0u128;
            let mut paid = 0u128;
            for (h, (emission, idle)) in hours.iter().enumerate() {
                let nodes: Vec<RewardNode> = specs.iter().enumerate()
                    .map(|(i, (m, g, c, st))| rn(*m, *g, (*idle).saturating_sub(i as u32 * 1000), *c, st))
                    .collect();
                let pool = dust + emission;
                let s = split_rewards(pool, &nodes, max_comm).unwrap();
                prop_assert_eq!(s.distributed as u128 + s.dust as u128, pool as u128);
                let sum: u128 = s.payouts.iter().map(|p| p.amount as u128).sum();
                prop_assert_eq!(sum, s.distributed as u128);
                let intent = reward_intent(h as u64, *emission, &s, &nodes);
                let (inflow, outflow) = crate::settlement::flows(&intent.movements, &Account::EmissionPool);
                prop_assert_eq!(inflow, *emission as u128);
                prop_assert_eq!(outflow, s.distributed as u128);
                // commission never above the cap (unstaked nodes excepted)
                for p in &s.payouts {
                    let n = &nodes[p.node];
                    if p.to == Recipient::Provider && n.stakes.iter().any(|x| x.amount > 0) {
                        let share_upper = pool as u128 * n.weight() / nodes.iter().map(RewardNode::weight).sum::<u128>().max(1);
                        prop_assert!(p.amount as u128 <= share_upper * max_comm.min(n.commission_bps) as u128 / 10_000);
                    }
                }
                emitted += *emission as u128;
                paid += s.distributed as u128;
                dust = s.dust;
            }
            prop_assert_eq!(emitted, paid + dust as u128);
        }
    }
}
