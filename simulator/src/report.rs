//! The final report: `report.json` (deterministic: same seed, same bytes) and a short text summary.

use crate::engine::{Outcome, PRICE_CLASSES, Sim, SimError};
use serde::Serialize;
use solgrid_market::ledger::{Ledger, Token};
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub seed: u64,
    pub fleet: Fleet,
    pub jobs: Jobs,
    pub ledger: LedgerReport,
    /// Market price per GPU-hour (micro-USD, normal urgency, 1 GPU) per class.
    pub prices: BTreeMap<String, PriceStat>,
    pub utilization: Utilization,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Fleet {
    pub providers: u64,
    pub nodes: u64,
    pub gpus: u64,
    pub days: u32,
    pub joined: u32,
    pub outages: u32,
    pub cheaters: u64,
    pub slashed: u32,
    pub mean_reputation: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Jobs {
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub expired: u64,
    pub unfunded: u64,
    pub cut_off: u64,
    pub queued_at_end: u64,
    pub paid_in_io: u64,
    pub paid_in_usdc: u64,
    pub gpu_hours_delivered: u64,
    pub below_market_waits: u64,
    pub no_capacity_waits: u64,
}

/// Money in base units. The top-level fields are the IO mint (`unit` base units per
/// IO): `paid_by_requesters == received_by_providers + protocol_fees` and
/// `supply_after == supply_before + emitted - burned`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LedgerReport {
    pub unit: u64,
    pub paid_by_requesters: u128,
    pub received_by_providers: u128,
    pub protocol_fees: u128,
    pub compute: u128,
    pub escrowed: u128,
    pub refunded: u128,
    /// Everything burned: IO fees + buyback + slashing.
    pub burned: u128,
    pub burned_fees: u128,
    pub burned_buyback: u128,
    pub burned_slashing: u128,
    pub emitted: u128,
    pub rewards_distributed: u128,
    pub rewards_paid: u128,
    pub reward_dust: u128,
    pub supply_before: u128,
    pub supply_after: u128,
    pub transactions: u64,
    pub settlements_confirmed: u64,
    pub settlements_failed: u64,
    pub usdc: UsdcReport,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UsdcReport {
    pub unit: u64,
    pub paid_by_requesters: u128,
    pub received_by_providers: u128,
    pub protocol_fees: u128,
    pub bought_back: u128,
    pub supply: u128,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PriceStat {
    pub first_day_avg: u64,
    pub last_day_avg: u64,
    pub min: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Utilization {
    pub mean_ppm: u64,
    pub peak_ppm: u64,
}

impl Report {
    pub fn from_sim<L: Ledger>(sim: &Sim<L>) -> Result<Report, SimError> {
        let count = |o: Outcome| sim.jobs.iter().filter(|j| j.outcome == o).count() as u64;
        let t = &sim.totals;
        let series = &sim.series;
        let mut prices = BTreeMap::new();
        for (k, m) in PRICE_CLASSES.iter().enumerate() {
            let vals: Vec<u64> = series.iter().map(|s| s.prices_micro_usd[k]).collect();
            let avg = |xs: &[u64]| {
                if xs.is_empty() {
                    0
                } else {
                    xs.iter().sum::<u64>() / xs.len() as u64
                }
            };
            let day = vals.len().min(24);
            prices.insert(
                m.name().to_string(),
                PriceStat {
                    first_day_avg: avg(&vals[..day]),
                    last_day_avg: avg(&vals[vals.len() - day..]),
                    min: vals.iter().copied().min().unwrap_or(0),
                    max: vals.iter().copied().max().unwrap_or(0),
                },
            );
        }
        let utils: Vec<u64> = series.iter().map(|s| s.utilization_ppm as u64).collect();
        let nodes = sim.nodes.len() as u64;
        let funded = sim.jobs.iter().filter(|j| {
            !matches!(
                j.outcome,
                Outcome::Expired | Outcome::Queued | Outcome::Unfunded
            )
        });
        let (mut io_jobs, mut usdc_jobs) = (0, 0);
        for j in funded {
            if j.spec.token == Token::Io {
                io_jobs += 1
            } else {
                usdc_jobs += 1
            }
        }
        Ok(Report {
            seed: sim.cfg.seed,
            fleet: Fleet {
                providers: sim
                    .nodes
                    .iter()
                    .map(|n| n.provider)
                    .max()
                    .map_or(0, |p| p as u64 + 1),
                nodes,
                gpus: sim.gpu_count(),
                days: sim.cfg.days,
                joined: sim.joined_nodes,
                outages: sim.outages,
                cheaters: sim.nodes.iter().filter(|n| n.cheater).count() as u64,
                slashed: sim.slashed_nodes,
                mean_reputation: sim
                    .snapshots()
                    .iter()
                    .map(|s| s.reputation as u64)
                    .sum::<u64>()
                    .checked_div(nodes)
                    .unwrap_or(0),
            },
            jobs: Jobs {
                submitted: sim.jobs.len() as u64,
                completed: count(Outcome::Completed),
                failed: count(Outcome::Failed),
                expired: count(Outcome::Expired),
                unfunded: count(Outcome::Unfunded),
                cut_off: count(Outcome::CutOff),
                queued_at_end: count(Outcome::Queued),
                paid_in_io: io_jobs,
                paid_in_usdc: usdc_jobs,
                gpu_hours_delivered: (sim.gpu_ms_delivered / 3_600_000) as u64,
                below_market_waits: sim.below_market_waits,
                no_capacity_waits: sim.no_capacity_waits,
            },
            ledger: LedgerReport {
                unit: sim.bank.ledger().unit(Token::Io),
                paid_by_requesters: t.paid[0],
                received_by_providers: t.received[0],
                protocol_fees: t.protocol[0],
                compute: t.compute[0],
                escrowed: t.escrowed[0],
                refunded: t.refunded[0],
                burned: t.burned_io(),
                burned_fees: t.burned_fees_io,
                burned_buyback: t.buyback_burned_io,
                burned_slashing: t.slash_burned_io,
                emitted: t.emitted_io,
                rewards_distributed: t.rewards_distributed_io,
                rewards_paid: t.rewards_paid_io,
                reward_dust: t.reward_dust_io,
                supply_before: sim.supply_before as u128,
                supply_after: sim.bank.supply(Token::Io)? as u128,
                transactions: sim.bank.txs,
                settlements_confirmed: sim.bank.confirmed,
                settlements_failed: sim.bank.failed.len() as u64,
                usdc: UsdcReport {
                    unit: sim.bank.ledger().unit(Token::Usdc),
                    paid_by_requesters: t.paid[1],
                    received_by_providers: t.received[1],
                    protocol_fees: t.protocol[1],
                    bought_back: t.buyback_usdc,
                    supply: sim.bank.supply(Token::Usdc)? as u128,
                },
            },
            prices,
            utilization: Utilization {
                mean_ppm: if utils.is_empty() {
                    0
                } else {
                    utils.iter().sum::<u64>() / utils.len() as u64
                },
                peak_ppm: utils.iter().copied().max().unwrap_or(0),
            },
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// The text summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let l = &self.ledger;
        let io = |v: u128| whole(v, l.unit as u128, 2);
        let usd = |v: u128| whole(v, l.usdc.unit as u128, 2);
        let pct = |ppm: u64| format!("{}.{} %", ppm / 10_000, ppm % 10_000 / 1_000);
        let mut s = String::new();
        let f = &self.fleet;
        let j = &self.jobs;
        let _ = writeln!(
            s,
            "solgrid market simulation — seed {}, {} days",
            self.seed, f.days
        );
        let _ = writeln!(
            s,
            "fleet     {} providers, {} nodes, {} GPUs; {} joined, {} outages, {} cheaters, {} slashed; mean reputation {}",
            f.providers,
            f.nodes,
            f.gpus,
            f.joined,
            f.outages,
            f.cheaters,
            f.slashed,
            f.mean_reputation
        );
        let _ = writeln!(
            s,
            "jobs      {} submitted: {} completed, {} failed (provider), {} expired, {} unfunded, {} cut off at the end, {} still queued",
            j.submitted, j.completed, j.failed, j.expired, j.unfunded, j.cut_off, j.queued_at_end
        );
        let _ = writeln!(
            s,
            "          {} GPU-hours delivered; {} paid in IO, {} in USDC; waits: {} below market, {} no capacity",
            j.gpu_hours_delivered,
            j.paid_in_io,
            j.paid_in_usdc,
            j.below_market_waits,
            j.no_capacity_waits
        );
        let _ = writeln!(
            s,
            "usage     mean utilization {}, peak {}",
            pct(self.utilization.mean_ppm),
            pct(self.utilization.peak_ppm)
        );
        let _ = writeln!(
            s,
            "IO        paid {} = received {} + fees {}; refunded {}",
            io(l.paid_by_requesters),
            io(l.received_by_providers),
            io(l.protocol_fees),
            io(l.refunded)
        );
        let _ = writeln!(
            s,
            "USDC      paid {} = received {} + fees {}; {} bought back",
            usd(l.usdc.paid_by_requesters),
            usd(l.usdc.received_by_providers),
            usd(l.usdc.protocol_fees),
            usd(l.usdc.bought_back)
        );
        let _ = writeln!(
            s,
            "supply    {} + emitted {} - burned {} (fees {}, buyback {}, slashing {}) = {} IO",
            io(l.supply_before),
            io(l.emitted),
            io(l.burned),
            io(l.burned_fees),
            io(l.burned_buyback),
            io(l.burned_slashing),
            io(l.supply_after)
        );
        let _ = writeln!(
            s,
            "rewards   {} IO distributed to idle staked nodes, {} dust carried",
            io(l.rewards_distributed),
            l.reward_dust
        );
        let _ = writeln!(
            s,
            "ledger    {} transactions, {} settlements confirmed, {} failed",
            l.transactions, l.settlements_confirmed, l.settlements_failed
        );
        let _ = writeln!(
            s,
            "prices    $/GPU-hour (first day avg -> last day avg, range):"
        );
        for (m, p) in &self.prices {
            let d = |v: u64| whole(v as u128, 1_000_000, 3);
            let _ = writeln!(
                s,
                "          {m:<10} {} -> {}  [{} .. {}]",
                d(p.first_day_avg),
                d(p.last_day_avg),
                d(p.min),
                d(p.max)
            );
        }
        s
    }
}

/// `v / unit` with `decimals` digits, thousands separated (integer arithmetic only).
pub fn whole(v: u128, unit: u128, decimals: u32) -> String {
    let unit = unit.max(1);
    let int = v / unit;
    let scale = 10u128.pow(decimals);
    let frac = v % unit * scale / unit;
    let digits = int.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if decimals == 0 {
        grouped
    } else {
        format!("{grouped}.{frac:0width$}", width = decimals as usize)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn whole_formats() {
        assert_eq!(
            super::whole(1_234_567_890_123, 1_000_000_000, 2),
            "1,234.56"
        );
        assert_eq!(super::whole(5, 1, 0), "5");
        assert_eq!(super::whole(999, 1_000_000, 3), "0.000");
    }
}
