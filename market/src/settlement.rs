//! The settlement plan of one job period: who gets what, computed from recorded
//! usage, before anything is sent (step 1 of the exactly-once protocol).
//!
//! For each node line `i` of the period (gpu-ms `g_i` delivered, locked price `P`):
//!
//! ```text
//! C_i  = floor(g_i * P / 3_600_000)
//! Fp_i = ceil(C_i * provider_fee_bps / 10_000)
//! provider i receives C_i - Fp_i
//! C    = sum C_i                                    (this period)
//! Fr   = ceil((K + C) * rf / 10_000) - ceil(K * rf / 10_000)
//! S    = ceil((K + C) * sf / 10_000) - ceil(K * sf / 10_000)   (stablecoin only)
//! ```
//!
//! where `K` is the job's compute in earlier periods (`prior_compute`). Charging the
//! requester's fees on the *cumulative* compute makes the job's total `Fr` equal to
//! `ceil(C_job * rf / 10_000)` exactly however many periods it has, so the sum over
//! all periods never exceeds the escrow ([`crate::fees::escrow_max_cost`]).
//!
//! Movements, all from [`Account::Escrow`]: one transfer per provider wallet
//! (`C_i - Fp_i` summed over the wallet's lines), the protocol share `Fr + Fp + S`
//! burned (IO) or moved to [`Account::Treasury`] (stablecoin), and on the final
//! period the refund `escrow_remaining - paid` to the payer. Zero amounts are left
//! out. Idempotency key: `"{job_uid}/{period}"`.

use crate::fees::{FeeConfig, FeeError};
use crate::ledger::{Account, Amount, Intent, Movement, Op, Token};
use crate::money::{self, MoneyError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Usage recorded for one node in one period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    /// The node (GpuNode name), for the record.
    pub node: String,
    /// The provider's payout wallet.
    pub provider_wallet: String,
    /// GPU-milliseconds the node delivered to the job in the period.
    pub gpu_ms: u64,
}

/// Everything a settlement plan is computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementInput<'a> {
    pub job_uid: &'a str,
    /// The period index (0-based hour of the job when settled hour by hour).
    pub period: u32,
    pub token: Token,
    /// The locked price per GPU-hour, base units of `token`.
    pub price_per_gpu_hour: Amount,
    /// The payer's wallet (refunds go there).
    pub payer_wallet: &'a str,
    /// What is left in escrow for this job before this period.
    pub escrow_remaining: Amount,
    /// The job's compute cost `K` already settled in earlier periods.
    pub prior_compute: Amount,
    /// The last period of the job: refund what is left.
    pub final_period: bool,
    pub usage: &'a [NodeUsage],
}

/// One node's line of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayoutLine {
    pub node: String,
    pub wallet: String,
    pub gpu_ms: u64,
    /// `C_i`
    pub compute: Amount,
    /// `Fp_i`
    pub provider_fee: Amount,
    /// `C_i - Fp_i`
    pub received: Amount,
}

/// The plan of one period: amounts and the ledger intent that moves them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementPlan {
    pub key: String,
    pub token: Token,
    pub lines: Vec<PayoutLine>,
    /// `C` (this period)
    pub compute: Amount,
    /// `Fr` (this period)
    pub requester_fee: Amount,
    /// `sum Fp_i`
    pub provider_fee: Amount,
    /// `S` (this period)
    pub surcharge: Amount,
    /// `C + Fr + S`: taken from the payer's escrow
    pub paid: Amount,
    /// `sum (C_i - Fp_i)`: paid to providers
    pub received: Amount,
    /// `Fr + Fp + S`
    pub protocol: Amount,
    /// The protocol share burned (IO), else 0.
    pub burned: Amount,
    /// The protocol share sent to the treasury's buyback account (stablecoin), else 0.
    pub to_treasury: Amount,
    /// Refunded to the payer (final period only).
    pub refund: Amount,
    /// Escrow left for the job after this plan.
    pub escrow_after: Amount,
    /// `prior_compute + C`, to pass as `prior_compute` to the next period.
    pub cumulative_compute: Amount,
    pub intent: Intent,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettlementError {
    #[error("job {key}: period costs {paid} but only {escrow} is left in escrow")]
    InsufficientEscrow {
        key: String,
        paid: Amount,
        escrow: Amount,
    },
    #[error(transparent)]
    Fee(#[from] FeeError),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The idempotency key of a job period: `"{job_uid}/{period}"`.
pub fn settlement_key(job_uid: &str, period: u32) -> String {
    format!("{job_uid}/{period}")
}

/// `ceil((k + c) * bps / 10_000) - ceil(k * bps / 10_000)`: the period's share of a
/// fee charged on cumulative compute.
fn cumulative_fee(prior: Amount, compute: Amount, bps: u32) -> Result<Amount, MoneyError> {
    let total = money::add(prior, compute, "cumulative compute")?;
    money::sub(
        money::bps_ceil(total, bps)?,
        money::bps_ceil(prior, bps)?,
        "cumulative fee",
    )
}

/// Computes the settlement plan of one period. Pure; conservation holds exactly:
/// `paid == received + protocol` and `escrow_remaining == paid + refund + escrow_after`.
pub fn plan_settlement(
    input: &SettlementInput<'_>,
    cfg: &FeeConfig,
) -> Result<SettlementPlan, SettlementError> {
    cfg.validate()?;
    let key = settlement_key(input.job_uid, input.period);
    let mut lines = Vec::with_capacity(input.usage.len());
    let (mut compute, mut provider_fee, mut received) = (0u64, 0u64, 0u64);
    for u in input.usage {
        let c = crate::fees::compute_cost(u.gpu_ms, input.price_per_gpu_hour)?;
        let fp = money::bps_ceil(c, cfg.provider_fee_bps)?;
        let r = money::sub(c, fp, "received")?;
        compute = money::add(compute, c, "compute")?;
        provider_fee = money::add(provider_fee, fp, "provider fee")?;
        received = money::add(received, r, "received")?;
        lines.push(PayoutLine {
            node: u.node.clone(),
            wallet: u.provider_wallet.clone(),
            gpu_ms: u.gpu_ms,
            compute: c,
            provider_fee: fp,
            received: r,
        });
    }
    let requester_fee = cumulative_fee(input.prior_compute, compute, cfg.requester_fee_bps)?;
    let surcharge = cumulative_fee(input.prior_compute, compute, cfg.surcharge_bps(input.token))?;
    let paid = money::add(
        money::add(compute, requester_fee, "paid")?,
        surcharge,
        "paid",
    )?;
    let protocol = money::add(
        money::add(requester_fee, provider_fee, "protocol")?,
        surcharge,
        "protocol",
    )?;
    if paid > input.escrow_remaining {
        return Err(SettlementError::InsufficientEscrow {
            key,
            paid,
            escrow: input.escrow_remaining,
        });
    }
    let left = input.escrow_remaining - paid;
    let (refund, escrow_after) = if input.final_period {
        (left, 0)
    } else {
        (0, left)
    };
    let (burned, to_treasury) = if input.token.is_stablecoin() {
        (0, protocol)
    } else {
        (protocol, 0)
    };

    let token = input.token;
    let mut movements: Vec<Movement> = Vec::with_capacity(lines.len() + 2);
    // One transfer per provider wallet, in order of first appearance.
    for (i, line) in lines.iter().enumerate() {
        if lines[..i].iter().any(|l| l.wallet == line.wallet) {
            continue;
        }
        let amount = money::sum(
            lines[i..]
                .iter()
                .filter(|l| l.wallet == line.wallet)
                .map(|l| l.received),
            "payout",
        )?;
        if amount > 0 {
            movements.push(Movement {
                token,
                op: Op::Transfer {
                    from: Account::Escrow,
                    to: Account::Wallet(line.wallet.clone()),
                    amount,
                },
            });
        }
    }
    if burned > 0 {
        movements.push(Movement {
            token,
            op: Op::Burn {
                from: Account::Escrow,
                amount: burned,
            },
        });
    }
    if to_treasury > 0 {
        movements.push(Movement {
            token,
            op: Op::Transfer {
                from: Account::Escrow,
                to: Account::Treasury,
                amount: to_treasury,
            },
        });
    }
    if refund > 0 {
        movements.push(Movement {
            token,
            op: Op::Transfer {
                from: Account::Escrow,
                to: Account::Wallet(input.payer_wallet.to_string()),
                amount: refund,
            },
        });
    }
    Ok(SettlementPlan {
        intent: Intent {
            key: key.clone(),
            movements,
        },
        key,
        token,
        lines,
        compute,
        requester_fee,
        provider_fee,
        surcharge,
        paid,
        received,
        protocol,
        burned,
        to_treasury,
        refund,
        escrow_after,
        cumulative_compute: money::add(input.prior_compute, compute, "cumulative compute")?,
    })
}

/// The intent that moves a job's maximum cost from the payer's wallet into escrow,
/// key `"{job_uid}/escrow"`.
pub fn escrow_intent(job_uid: &str, payer_wallet: &str, token: Token, amount: Amount) -> Intent {
    Intent {
        key: format!("{job_uid}/escrow"),
        movements: vec![Movement {
            token,
            op: Op::Transfer {
                from: Account::Wallet(payer_wallet.to_string()),
                to: Account::Escrow,
                amount,
            },
        }],
    }
}

/// Settlement periods of a job. Hourly by default; configurable so tests and the
/// simulator can shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Periods {
    pub period_ms: u64,
}

impl Default for Periods {
    fn default() -> Self {
        Periods {
            period_ms: 3_600_000,
        }
    }
}

impl Periods {
    /// The period that contains `t_ms` for a job that started at `job_start_ms`
    /// (saturating at `u32::MAX`; 0 before the start).
    pub fn period_of(&self, job_start_ms: u64, t_ms: u64) -> u32 {
        let elapsed = t_ms.saturating_sub(job_start_ms);
        u32::try_from(elapsed / self.period_ms.max(1)).unwrap_or(u32::MAX)
    }

    /// `[start, end)` of period `p`, in ms.
    pub fn bounds(&self, job_start_ms: u64, p: u32) -> (u64, u64) {
        let len = self.period_ms.max(1);
        let start = job_start_ms.saturating_add(len.saturating_mul(p as u64));
        (start, start.saturating_add(len))
    }

    /// GPU-ms delivered in period `p` by `gpus` GPUs that ran over `[run_start, run_end)`.
    pub fn gpu_ms_in(
        &self,
        job_start_ms: u64,
        p: u32,
        gpus: u32,
        run_start: u64,
        run_end: u64,
    ) -> u64 {
        let (s, e) = self.bounds(job_start_ms, p);
        let overlap = run_end.min(e).saturating_sub(run_start.max(s));
        overlap.saturating_mul(gpus as u64)
    }

    /// How many periods a job running `[job_start, end)` spans (at least 1).
    pub fn count(&self, job_start_ms: u64, end_ms: u64) -> u32 {
        let len = self.period_ms.max(1);
        let d = end_ms.saturating_sub(job_start_ms);
        u32::try_from(d.div_ceil(len).max(1)).unwrap_or(u32::MAX)
    }
}

/// Sums the signed effect of movements on one account (for checks): `(in, out)`.
pub fn flows(movements: &[Movement], account: &Account) -> (u128, u128) {
    let (mut inflow, mut outflow) = (0u128, 0u128);
    for m in movements {
        match &m.op {
            Op::Transfer { from, to, amount } => {
                if from == account {
                    outflow += *amount as u128;
                }
                if to == account {
                    inflow += *amount as u128;
                }
            }
            Op::Burn { from, amount } => {
                if from == account {
                    outflow += *amount as u128;
                }
            }
            Op::Mint { to, amount } => {
                if to == account {
                    inflow += *amount as u128;
                }
            }
        }
    }
    (inflow, outflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fees::{FeeConfig, escrow_max_cost};
    use proptest::prelude::*;

    fn usage(n: &str, w: &str, gpu_ms: u64) -> NodeUsage {
        NodeUsage {
            node: n.into(),
            provider_wallet: w.into(),
            gpu_ms,
        }
    }

    #[test]
    fn single_period_io_burns_and_refunds() {
        let cfg = FeeConfig::default();
        let p = 1_000_000_000; // 1 IO / GPU-hour
        let esc = escrow_max_cost(1, 2, 3_600_000, p, Token::Io, &cfg).unwrap();
        let u = [usage("n1", "prov", 2 * 1_800_000)];
        let plan = plan_settlement(
            &SettlementInput {
                job_uid: "uid-1",
                period: 0,
                token: Token::Io,
                price_per_gpu_hour: p,
                payer_wallet: "payer",
                escrow_remaining: esc.total,
                prior_compute: 0,
                final_period: true,
                usage: &u,
            },
            &cfg,
        )
        .unwrap();
        assert_eq!(plan.key, "uid-1/0");
        assert_eq!(plan.compute, 1_000_000_000);
        assert_eq!(plan.requester_fee, 2_500_000);
        assert_eq!(plan.provider_fee, 2_500_000);
        assert_eq!(plan.received, 997_500_000);
        assert_eq!(plan.burned, 5_000_000);
        assert_eq!(plan.refund, esc.total - plan.paid);
        assert_eq!(plan.intent.movements.len(), 3);
        let (i, o) = flows(&plan.intent.movements, &Account::Escrow);
        assert_eq!((i, o), (0, esc.total as u128));
    }

    #[test]
    fn stablecoin_goes_to_treasury_and_wallets_merge() {
        let cfg = FeeConfig::default();
        let u = [
            usage("n1", "a", 3_600_000),
            usage("n2", "b", 3_600_000),
            usage("n3", "a", 3_600_000),
        ];
        let plan = plan_settlement(
            &SettlementInput {
                job_uid: "j",
                period: 3,
                token: Token::Usdc,
                price_per_gpu_hour: 1_000_000,
                payer_wallet: "payer",
                escrow_remaining: 10_000_000,
                prior_compute: 0,
                final_period: false,
                usage: &u,
            },
            &cfg,
        )
        .unwrap();
        assert_eq!(plan.key, "j/3");
        assert_eq!(plan.burned, 0);
        assert_eq!(plan.to_treasury, plan.protocol);
        assert_eq!(plan.surcharge, 60_000);
        assert_eq!(plan.refund, 0);
        assert_eq!(plan.escrow_after, 10_000_000 - plan.paid);
        // a: two lines merged into one transfer
        let to_a = flows(&plan.intent.movements, &Account::Wallet("a".into())).0;
        assert_eq!(to_a, 2 * 997_500);
        assert_eq!(plan.intent.movements.len(), 3);
    }

    #[test]
    fn insufficient_escrow_is_an_error() {
        let u = [usage("n1", "a", 3_600_000)];
        let r = plan_settlement(
            &SettlementInput {
                job_uid: "j",
                period: 0,
                token: Token::Io,
                price_per_gpu_hour: 1_000,
                payer_wallet: "p",
                escrow_remaining: 1_000,
                prior_compute: 0,
                final_period: true,
                usage: &u,
            },
            &FeeConfig::default(),
        );
        assert!(matches!(
            r,
            Err(SettlementError::InsufficientEscrow { paid: 1_003, .. })
        ));
    }

    #[test]
    fn periods_split_usage() {
        let p = Periods::default();
        assert_eq!(p.count(0, 1), 1);
        assert_eq!(p.count(0, 3_600_001), 2);
        assert_eq!(p.period_of(1000, 1000 + 7_200_000), 2);
        assert_eq!(p.gpu_ms_in(0, 1, 4, 1_800_000, 5_400_000), 4 * 1_800_000);
        assert_eq!(p.gpu_ms_in(0, 2, 4, 1_800_000, 5_400_000), 0);
    }

    proptest! {
        /// A job settled hour by hour on several nodes, at most its max duration:
        /// every period conserves, the sum never exceeds escrow, and the escrow is
        /// emptied exactly (paid + refund) by the final period.
        #[test]
        fn hour_by_hour_conservation(
            price in 1u64..5_000_000_000_000u64,
            workers in 1u32..6,
            gpus in 1u32..9,
            hours in 1u32..6,
            stable in any::<bool>(),
            used_permille in 0u64..=1000,
            rf in 0u32..500, pf in 0u32..500, sf in 0u32..1000,
        ) {
            let cfg = FeeConfig { requester_fee_bps: rf, provider_fee_bps: pf, stablecoin_surcharge_bps: sf };
            let token = if stable { Token::Usdc } else { Token::Io };
            let max_ms = hours as u64 * 3_600_000;
            let esc = escrow_max_cost(workers, gpus, max_ms, price, token, &cfg).unwrap();
            let run_ms = max_ms * used_permille / 1000;
            let per = Periods::default();
            let n = per.count(0, run_ms);
            let mut remaining = esc.total;
            let mut prior = 0;
            let (mut paid, mut received, mut protocol, mut refund) = (0u128, 0u128, 0u128, 0u128);
            for p in 0..n {
                let usage: Vec<NodeUsage> = (0..workers)
                    .map(|w| usage(&format!("n{w}"), &format!("w{}", w % 2), per.gpu_ms_in(0, p, gpus, 0, run_ms)))
                    .collect();
                let plan = plan_settlement(&SettlementInput {
                    job_uid: "job", period: p, token, price_per_gpu_hour: price, payer_wallet: "payer",
                    escrow_remaining: remaining, prior_compute: prior, final_period: p + 1 == n, usage: &usage,
                }, &cfg).unwrap();
                prop_assert_eq!(plan.paid as u128, plan.received as u128 + plan.protocol as u128);
                prop_assert_eq!(remaining as u128, plan.paid as u128 + plan.refund as u128 + plan.escrow_after as u128);
                let (i, o) = flows(&plan.intent.movements, &Account::Escrow);
                prop_assert_eq!(i, 0);
                prop_assert_eq!(o, plan.paid as u128 + plan.refund as u128);
                prop_assert_eq!(plan.burned + plan.to_treasury, plan.protocol);
                paid += plan.paid as u128; received += plan.received as u128;
                protocol += plan.protocol as u128; refund += plan.refund as u128;
                remaining = plan.escrow_after;
                prior = plan.cumulative_compute;
            }
            prop_assert_eq!(remaining, 0);
            prop_assert_eq!(paid + refund, esc.total as u128);
            prop_assert_eq!(paid, received + protocol);
        }
    }
}
