//! Usage and settlement plans of a job (pure).
//!
//! Billing starts when the gang forms (`status.startTime`: all N workers running)
//! and ends when the job stops (`status.endTime`); every worker holds
//! `gpus.count` GPUs on its node over that interval. Usage is GPU-milliseconds per
//! node; a period's usage is the overlap of the run with the period.

use crate::settlement::{REFUND, settlement_intent};
use solgrid_crds::{
    ComputeJobSpec, ComputeJobStatus, CostBreakdown, JobSettlement, LedgerRecord, NodeUsage,
    Payout, SettlementState,
};
use solgrid_market::fees::FeeConfig;
use solgrid_market::settlement::{self as mkt, SettlementInput};
use std::collections::HashMap;

/// GPUs the job holds on each node (order of first appearance among the workers).
pub fn gpus_per_node(spec: &ComputeJobSpec, status: &ComputeJobStatus) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for w in &status.workers {
        let node = w.node.clone().unwrap_or_default();
        match out.iter_mut().find(|(n, _)| *n == node) {
            Some((_, g)) => *g += spec.gpus.count as u64,
            None => out.push((node, spec.gpus.count as u64)),
        }
    }
    out
}

/// Usage per node over `[from_ms, to_ms)`, with the nodes' payout wallets
/// (`""` where unknown).
pub fn usage_between(
    spec: &ComputeJobSpec,
    status: &ComputeJobStatus,
    from_ms: u64,
    to_ms: u64,
    wallets: &HashMap<String, String>,
) -> Vec<NodeUsage> {
    let ms = to_ms.saturating_sub(from_ms);
    gpus_per_node(spec, status)
        .into_iter()
        .map(|(node, gpus)| NodeUsage {
            wallet: wallets.get(&node).cloned().unwrap_or_default(),
            gpu_ms: ms.saturating_mul(gpus),
            node,
        })
        .collect()
}

/// Escrow left for the job and compute settled so far, from the records:
/// confirmed escrow minus what confirmed settlements took (paid + refund).
pub fn escrow_left(status: &ComputeJobStatus) -> (u64, u64) {
    let escrow = match (&status.escrow, &status.quote) {
        (Some(r), Some(q)) if r.state == SettlementState::Confirmed => q.max_cost,
        _ => 0,
    };
    let mut taken = 0u64;
    let mut compute = 0u64;
    for s in &status.settlements {
        taken = taken
            .saturating_add(s.cost.paid)
            .saturating_add(s.cost.refunded);
        compute = compute.saturating_add(s.cost.compute);
    }
    (escrow.saturating_sub(taken), compute)
}

/// Totals over confirmed settlements, and the escrow still held.
pub fn totals(status: &ComputeJobStatus) -> (CostBreakdown, u64) {
    let mut c = CostBreakdown::default();
    let mut taken = 0u64;
    for s in status
        .settlements
        .iter()
        .filter(|s| s.state() == SettlementState::Confirmed)
    {
        c.compute += s.cost.compute;
        c.requester_fee += s.cost.requester_fee;
        c.provider_fee += s.cost.provider_fee;
        c.surcharge += s.cost.surcharge;
        c.paid += s.cost.paid;
        c.received += s.cost.received;
        c.burned += s.cost.burned;
        c.to_treasury += s.cost.to_treasury;
        c.refunded += s.cost.refunded;
        taken = taken
            .saturating_add(s.cost.paid)
            .saturating_add(s.cost.refunded);
    }
    let escrow = match (&status.escrow, &status.quote) {
        (Some(r), Some(q)) if r.state == SettlementState::Confirmed => q.max_cost,
        _ => 0,
    };
    (c, escrow.saturating_sub(taken))
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Market(#[from] mkt::SettlementError),
    #[error("no provider wallet known for node(s) {0}")]
    UnknownWallet(String),
    #[error("the job has no locked quote or payer wallet")]
    NotFunded,
    #[error("the recorded plan does not rebuild the same movements (bug)")]
    Mismatch,
}

/// Plans settlement number `index` over `[from_ms, to_ms)` (final: refund the rest).
/// Returns the record to stage and its intent. Requires every earlier settlement
/// to be recorded (their amounts are deducted from the escrow).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    uid: &str,
    spec: &ComputeJobSpec,
    status: &ComputeJobStatus,
    index: u32,
    from_ms: u64,
    to_ms: u64,
    final_period: bool,
    wallets: &HashMap<String, String>,
    fees: &FeeConfig,
) -> Result<(JobSettlement, solgrid_market::Intent), PlanError> {
    let quote = status.quote.as_ref().ok_or(PlanError::NotFunded)?;
    let payer = status.payer_wallet.as_deref().ok_or(PlanError::NotFunded)?;
    let usage: Vec<NodeUsage> = usage_between(spec, status, from_ms, to_ms, wallets)
        .into_iter()
        .filter(|u| u.gpu_ms > 0)
        .collect();
    let unknown: Vec<&str> = usage
        .iter()
        .filter(|u| u.wallet.is_empty())
        .map(|u| u.node.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(PlanError::UnknownWallet(unknown.join(", ")));
    }
    let mkt_usage: Vec<mkt::NodeUsage> = usage
        .iter()
        .map(|u| mkt::NodeUsage {
            node: u.node.clone(),
            provider_wallet: u.wallet.clone(),
            gpu_ms: u.gpu_ms,
        })
        .collect();
    let (escrow_remaining, prior_compute) = escrow_left(status);
    let p = mkt::plan_settlement(
        &SettlementInput {
            job_uid: uid,
            period: index,
            token: spec.payment_token.into(),
            price_per_gpu_hour: quote.price_per_gpu_hour,
            payer_wallet: payer,
            escrow_remaining,
            prior_compute,
            final_period,
            usage: &mkt_usage,
        },
        fees,
    )?;
    // One payout per provider wallet, in order of first appearance (as the plan's transfers).
    let mut payouts: Vec<Payout> = Vec::new();
    for line in &p.lines {
        match payouts.iter_mut().find(|x| x.wallet == line.wallet) {
            Some(x) => {
                x.amount += line.received;
                x.to = format!("{},{}", x.to, line.node);
            }
            None => payouts.push(Payout {
                to: line.node.clone(),
                wallet: line.wallet.clone(),
                amount: line.received,
            }),
        }
    }
    payouts.retain(|x| x.amount > 0);
    if final_period {
        payouts.push(Payout {
            to: REFUND.into(),
            wallet: payer.to_string(),
            amount: p.refund,
        });
    }
    let js = JobSettlement {
        period: index,
        record: LedgerRecord {
            key: p.key.clone(),
            purpose: "settle".into(),
            ..Default::default()
        },
        usage,
        payouts,
        cost: CostBreakdown {
            compute: p.compute,
            requester_fee: p.requester_fee,
            provider_fee: p.provider_fee,
            surcharge: p.surcharge,
            paid: p.paid,
            received: p.received,
            burned: p.burned,
            to_treasury: p.to_treasury,
            refunded: p.refund,
        },
        parts: Vec::new(),
    };
    if settlement_intent(&js, payer, spec.payment_token) != p.intent {
        return Err(PlanError::Mismatch);
    }
    Ok((js, p.intent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_crds::*;

    fn setup(token: PaymentToken) -> (ComputeJobSpec, ComputeJobStatus, HashMap<String, String>) {
        let spec = ComputeJobSpec {
            gpus: GpuRequest {
                count: 2,
                ..Default::default()
            },
            workers: 3,
            max_duration_seconds: 7200,
            payment_token: token,
            ..Default::default()
        };
        let status = ComputeJobStatus {
            quote: Some(Quote {
                price_per_gpu_hour: 1_000_000_000,
                max_cost: 12_030_000_000,
                ..Default::default()
            }),
            payer_wallet: Some("payer".into()),
            escrow: Some(LedgerRecord {
                key: "uid/escrow".into(),
                state: SettlementState::Confirmed,
                ..Default::default()
            }),
            // workers 0, 1 and 2 running on nodes a, b and a
            workers: (0u32..)
                .zip(["a", "b", "a"])
                .map(|(index, node)| WorkerStatus {
                    index,
                    pod: format!("p{index}"),
                    node: Some(node.into()),
                    phase: "Running".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let wallets = HashMap::from([
            ("a".to_string(), "wa".to_string()),
            ("b".to_string(), "wa".to_string()),
        ]);
        (spec, status, wallets)
    }

    #[test]
    fn usage_per_node() {
        let (spec, status, wallets) = setup(PaymentToken::Io);
        let u = usage_between(&spec, &status, 0, 1000, &wallets);
        assert_eq!(u.len(), 2);
        assert_eq!((u[0].node.as_str(), u[0].gpu_ms), ("a", 4000));
        assert_eq!((u[1].node.as_str(), u[1].gpu_ms), ("b", 2000));
    }

    #[test]
    fn periods_then_final_conserve_and_rebuild() {
        for token in [PaymentToken::Io, PaymentToken::Usdc] {
            let (spec, mut status, wallets) = setup(token);
            status.quote.as_mut().unwrap().max_cost = 13_000_000_000;
            let fees = FeeConfig::default();
            let (mut p0, i0) = plan(
                "uid", &spec, &status, 0, 0, 3_600_000, false, &wallets, &fees,
            )
            .unwrap();
            assert_eq!(i0.key, "uid/0");
            // one wallet for both nodes: one transfer
            assert_eq!(p0.payouts.len(), 1);
            assert_eq!(p0.cost.compute, 6_000_000_000);
            p0.record.state = SettlementState::Confirmed;
            status.settlements.push(p0);
            let (mut p1, _) = plan(
                "uid", &spec, &status, 1, 3_600_000, 5_400_000, true, &wallets, &fees,
            )
            .unwrap();
            assert_eq!(p1.payouts.last().unwrap().to, REFUND);
            p1.record.state = SettlementState::Confirmed;
            status.settlements.push(p1);
            let (t, left) = totals(&status);
            assert_eq!(left, 0);
            assert_eq!(t.paid + t.refunded, 13_000_000_000);
            assert_eq!(t.paid, t.received + t.burned + t.to_treasury);
        }
    }

    #[test]
    fn unknown_wallet_is_an_error() {
        let (spec, status, _) = setup(PaymentToken::Io);
        let r = plan(
            "uid",
            &spec,
            &status,
            0,
            0,
            1000,
            true,
            &HashMap::new(),
            &FeeConfig::default(),
        );
        assert!(matches!(r, Err(PlanError::UnknownWallet(_))));
    }
}
