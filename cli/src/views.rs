//! The rows of `jobs`, `nodes`, `earnings` and `stake`, from the objects.

use crate::format::{age, amount};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use solgrid_crds::{ComputeJob, GpuNode, PaymentToken, StakePosition};
use solgrid_market::pricing::PricingConfig;
use std::collections::BTreeMap;

/// chrono from a Kubernetes `Time` (k8s-openapi keeps a `jiff::Timestamp`).
pub fn chrono_time(t: &Time) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(t.0.as_millisecond()).unwrap_or_default()
}

/// A Kubernetes `Time` from chrono.
pub fn k8s_time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_millisecond(t.timestamp_millis()).unwrap_or_default())
}

fn created<K: kube::Resource>(o: &K) -> Option<DateTime<Utc>> {
    o.meta().creation_timestamp.as_ref().map(chrono_time)
}

fn name<K: kube::Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

fn ns<K: kube::Resource>(o: &K) -> String {
    o.meta().namespace.clone().unwrap_or_default()
}

fn tok(t: PaymentToken, pricing: &PricingConfig, v: u64) -> String {
    amount(v, crate::format::unit(t, pricing), &t.to_string())
}

/// One row per item, sorted.
fn sorted_rows<T>(items: &[T], row: impl FnMut(&T) -> Vec<String>) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = items.iter().map(row).collect();
    rows.sort();
    rows
}

pub const JOBS_HEADER: &[&str] = &[
    "NAMESPACE",
    "NAME",
    "PHASE",
    "GPUS",
    "WORKERS",
    "PRICE/GPU-H",
    "COST",
    "AGE",
];

/// `kubectl solgrid jobs`: phase, GPUs, the locked price and what was paid.
pub fn job_rows(
    jobs: &[ComputeJob],
    pricing: &PricingConfig,
    now: DateTime<Utc>,
) -> Vec<Vec<String>> {
    sorted_rows(jobs, |j| {
        let st = j.status.clone().unwrap_or_default();
        let t = j.spec.payment_token;
        let price = st
            .quote
            .as_ref()
            .map(|q| tok(q.token, pricing, q.price_per_gpu_hour))
            .unwrap_or_else(|| "-".into());
        let cost = if st.cost.paid > 0 || st.phase == solgrid_crds::ComputeJobPhase::Settled {
            tok(t, pricing, st.cost.paid)
        } else {
            "-".into()
        };
        vec![
            ns(j),
            name(j),
            format!("{:?}", st.phase),
            j.spec.gpus.count.to_string(),
            j.spec.workers.to_string(),
            price,
            cost,
            age(created(j), now),
        ]
    })
}

pub const NODES_HEADER: &[&str] = &[
    "NAME",
    "PHASE",
    "GPUS",
    "ALLOCATED",
    "MODEL",
    "REPUTATION",
    "STAKE",
    "MIN STAKE",
    "ELIGIBLE",
    "AGE",
];

/// `kubectl solgrid nodes`: phase, GPUs, model, reputation, stake, reward eligibility.
pub fn node_rows(
    nodes: &[GpuNode],
    pricing: &PricingConfig,
    now: DateTime<Utc>,
) -> Vec<Vec<String>> {
    sorted_rows(nodes, |n| {
        let st = n.status.clone().unwrap_or_default();
        let io = |v| tok(PaymentToken::Io, pricing, v);
        let eligible = if st.reward_eligible {
            "yes".to_string()
        } else {
            match &st.eligibility_reason {
                Some(r) => format!("no: {r}"),
                None => "no".into(),
            }
        };
        vec![
            name(n),
            format!("{:?}", st.phase),
            st.gpu_count.to_string(),
            st.allocated_gpus.to_string(),
            st.model.clone().unwrap_or_else(|| "-".into()),
            st.reputation.score.to_string(),
            io(st.stake_total),
            io(st.minimum_stake),
            eligible,
            age(created(n), now),
        ]
    })
}

pub const EARNINGS_BY_NODE_HEADER: &[&str] = &[
    "NODE",
    "WALLET",
    "COMPUTE (IO)",
    "COMPUTE (USDC)",
    "IDLE REWARDS (IO)",
];
pub const EARNINGS_BY_WALLET_HEADER: &[&str] = &[
    "WALLET",
    "NODES",
    "COMPUTE (IO)",
    "COMPUTE (USDC)",
    "IDLE REWARDS (IO)",
];

/// Earnings per node (`by_wallet == false`) or summed per payout wallet.
pub fn earnings_rows(
    nodes: &[GpuNode],
    pricing: &PricingConfig,
    by_wallet: bool,
) -> Vec<Vec<String>> {
    let io = |v| tok(PaymentToken::Io, pricing, v);
    let usdc = |v| tok(PaymentToken::Usdc, pricing, v);
    if !by_wallet {
        return sorted_rows(nodes, |n| {
            let e = n.status.clone().unwrap_or_default().earnings;
            vec![
                name(n),
                n.spec.payout_wallet.clone(),
                io(e.compute_io),
                usdc(e.compute_usdc),
                io(e.idle_rewards_io),
            ]
        });
    }
    let mut by: BTreeMap<String, (u32, u64, u64, u64)> = BTreeMap::new();
    for n in nodes {
        let e = n.status.clone().unwrap_or_default().earnings;
        let w = by.entry(n.spec.payout_wallet.clone()).or_default();
        w.0 += 1;
        w.1 = w.1.saturating_add(e.compute_io);
        w.2 = w.2.saturating_add(e.compute_usdc);
        w.3 = w.3.saturating_add(e.idle_rewards_io);
    }
    by.into_iter()
        .map(|(w, (n, a, b, c))| vec![w, n.to_string(), io(a), usdc(b), io(c)])
        .collect()
}

pub const STAKE_HEADER: &[&str] = &[
    "NAMESPACE",
    "NAME",
    "NODE",
    "AMOUNT",
    "PHASE",
    "LOCKED",
    "REWARDS",
    "SLASHED",
    "UNBONDING ENDS",
    "AGE",
];

/// `kubectl solgrid stake`: positions, rewards, unbonding.
pub fn stake_rows(
    stakes: &[StakePosition],
    pricing: &PricingConfig,
    now: DateTime<Utc>,
) -> Vec<Vec<String>> {
    let io = |v| tok(PaymentToken::Io, pricing, v);
    sorted_rows(stakes, |s| {
        let st = s.status.clone().unwrap_or_default();
        let unbonding = match st.unbonding_ends_at.as_ref().map(chrono_time) {
            Some(t) if t > now => format!(
                "{} (in {})",
                t.format("%Y-%m-%d %H:%M"),
                age(Some(now - (t - now)), now)
            ),
            Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
            None => "-".into(),
        };
        vec![
            ns(s),
            name(s),
            s.spec.node_name.clone(),
            io(s.spec.amount),
            format!("{:?}", st.phase),
            io(st.locked),
            io(st.rewards_accrued),
            io(st.slashed_amount),
            unbonding,
            age(created(s), now),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use solgrid_crds::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn gpunode(name: &str, wallet: &str, io: u64, usdc: u64, idle: u64) -> GpuNode {
        let mut n = GpuNode::new(
            name,
            GpuNodeSpec {
                node_name: name.into(),
                payout_wallet: wallet.into(),
                ..Default::default()
            },
        );
        n.metadata.creation_timestamp = Some(k8s_time(now() - chrono::Duration::hours(3)));
        n.status = Some(GpuNodeStatus {
            phase: GpuNodePhase::Active,
            gpu_count: 8,
            allocated_gpus: 2,
            model: Some("h100".into()),
            stake_total: 20_000_000_000_000,
            minimum_stake: 16_000_000_000_000,
            reward_eligible: false,
            eligibility_reason: Some("uptime 2h < 5h".into()),
            earnings: Earnings {
                compute_io: io,
                compute_usdc: usdc,
                idle_rewards_io: idle,
            },
            ..Default::default()
        });
        n
    }

    #[test]
    fn nodes_table() {
        let rows = node_rows(
            &[gpunode("gpu-1", "W1", 0, 0, 0)],
            &PricingConfig::default(),
            now(),
        );
        assert_eq!(
            rows[0],
            [
                "gpu-1",
                "Active",
                "8",
                "2",
                "h100",
                "0",
                "20000.000000000 IO",
                "16000.000000000 IO",
                "no: uptime 2h < 5h",
                "3h"
            ]
        );
    }

    #[test]
    fn earnings_per_node_and_wallet() {
        let nodes = [
            gpunode("a", "W1", 1_000_000_000, 2_000_000, 5),
            gpunode("b", "W1", 500_000_000, 0, 5),
            gpunode("c", "W2", 0, 1, 0),
        ];
        let p = PricingConfig::default();
        let per_node = earnings_rows(&nodes, &p, false);
        assert_eq!(per_node.len(), 3);
        assert_eq!(per_node[0][2], "1.000000000 IO");
        assert_eq!(per_node[0][3], "2.000000 USDC");
        let per_wallet = earnings_rows(&nodes, &p, true);
        assert_eq!(
            per_wallet,
            vec![
                vec![
                    "W1".to_string(),
                    "2".into(),
                    "1.500000000 IO".into(),
                    "2.000000 USDC".into(),
                    "0.000000010 IO".into()
                ],
                vec![
                    "W2".to_string(),
                    "1".into(),
                    "0.000000000 IO".into(),
                    "0.000001 USDC".into(),
                    "0.000000000 IO".into()
                ],
            ]
        );
    }

    #[test]
    fn jobs_table() {
        let mut j = ComputeJob::new(
            "train",
            ComputeJobSpec {
                gpus: GpuRequest {
                    count: 2,
                    ..Default::default()
                },
                workers: 3,
                payment_token: PaymentToken::Usdc,
                ..Default::default()
            },
        );
        j.metadata.namespace = Some("ml".into());
        j.metadata.creation_timestamp = Some(k8s_time(now() - chrono::Duration::minutes(10)));
        let p = PricingConfig::default();
        assert_eq!(
            job_rows(&[j.clone()], &p, now())[0],
            ["ml", "train", "Pending", "2", "3", "-", "-", "10m"]
        );
        j.status = Some(ComputeJobStatus {
            phase: ComputeJobPhase::Settled,
            quote: Some(Quote {
                price_per_gpu_hour: 1_540_000,
                token: PaymentToken::Usdc,
                ..Default::default()
            }),
            cost: CostBreakdown {
                paid: 9_475_000,
                ..Default::default()
            },
            ..Default::default()
        });
        let r = &job_rows(&[j], &p, now())[0];
        assert_eq!(r[2], "Settled");
        assert_eq!(r[5], "1.540000 USDC");
        assert_eq!(r[6], "9.475000 USDC");
    }

    #[test]
    fn stake_table() {
        let mut s = StakePosition::new(
            "mine",
            StakePositionSpec {
                node_name: "gpu-1".into(),
                amount: 4_000_000_000_000,
                owner_secret_ref: WalletSecretRef { name: "w".into() },
                unbond: true,
            },
        );
        s.metadata.namespace = Some("stakers".into());
        s.status = Some(StakePositionStatus {
            phase: StakePhase::Unbonding,
            locked: 4_000_000_000_000,
            rewards_accrued: 12_500_000_000,
            unbonding_ends_at: Some(k8s_time(now() + chrono::Duration::days(3))),
            ..Default::default()
        });
        let r = &stake_rows(&[s], &PricingConfig::default(), now())[0];
        assert_eq!(r[4], "Unbonding");
        assert_eq!(r[6], "12.500000000 IO");
        assert_eq!(r[8], "2026-03-04 12:00 (in 3d)");
    }
}
