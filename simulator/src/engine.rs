//! The simulation loop: one tick per simulated hour.
//!
//! Each tick at `now` (the start of hour `h`):
//! 1. fleet events: nodes join (verified after an hour), drop offline, come back;
//! 2. the hour that just ended is accounted: GPU busy time per node, and every job
//!    period that ended is settled through the market's settlement plan (hourly
//!    periods; the final one refunds the unused escrow);
//! 3. that hour's emission is minted and split among eligible nodes (weight = model
//!    multiplier × GPUs × idle fraction; commission; stakers pro rata; dust carried);
//! 4. proof-of-work verification: cheaters are caught with some probability and slashed;
//! 5. new jobs arrive; queued jobs are quoted (dynamic price), matched (filter + score
//!    over a sample of the fleet, all workers or none) and funded (escrow);
//! 6. the bank flushes every intent through the exactly-once executor;
//! 7. once a day, accrued rewards are paid out and stablecoin fees are bought back and burned.

use crate::bank::{Bank, BankError};
use crate::config::SimConfig;
use crate::fleet::{self, REGIONS};
use crate::jobs::{self, JobSpec};
use crate::rng::Rng;
use solgrid_market::MarketConfig;
use solgrid_market::buyback;
use solgrid_market::emission::{EmissionSchedule, HOURS_PER_MONTH};
use solgrid_market::fees::escrow_max_cost;
use solgrid_market::gpu::GpuModel;
use solgrid_market::idle::IdleWindow;
use solgrid_market::ledger::{Account, Amount, Intent, Ledger, Movement, Op, Token};
use solgrid_market::matching::{self, GpuGroup, JobRequirements, NodePhase, NodeSnapshot};
use solgrid_market::money::{self, MoneyError};
use solgrid_market::pricing::{QuoteRequest, Urgency};
use solgrid_market::reputation::{EvidenceAge, ReputationInputs, UptimeTrack};
use solgrid_market::settlement::{self, NodeUsage, SettlementInput};
use solgrid_market::staking::{self, EligibilityInput, Recipient, RewardNode, StakeShare};
use solgrid_market::supply::{SupplyIndex, SupplyNode};

pub const HOUR: u64 = 3_600_000;
/// Simulated time starts 60 days after the epoch so that the fleet can have a past.
pub const T0: u64 = 60 * 24 * HOUR;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Bank(#[from] BankError),
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error("market: {0}")]
    Market(String),
    #[error("invariant broken: {0}")]
    Invariant(String),
}

fn market<E: std::fmt::Display>(e: E) -> SimError {
    SimError::Market(e.to_string())
}

pub(crate) struct Node {
    pub provider: u32,
    pub model: GpuModel,
    pub gpus: u32,
    pub region: usize,
    pub cheater: bool,
    pub join_hour: u64,
    pub present: bool,
    pub online: bool,
    pub offline_until: u64,
    pub online_since_ms: Option<u64>,
    pub verified: bool,
    pub slashed: bool,
    /// (wallet index, amount) per stake position.
    pub stakes: Vec<(u32, Amount)>,
    pub jobs_ok: u32,
    pub jobs_failed: u32,
    /// When a job outcome was last counted (the evidence age reputation decays by).
    pub last_outcome_ms: Option<u64>,
    pub ver_ok: u32,
    pub ver_failed: u32,
    /// The uptime track, observed every hour as the operator observes the heartbeat.
    pub uptime: Option<UptimeTrack>,
    /// GPU-ms busy in the current hour.
    pub busy_ms: u64,
    pub earned_compute_io: u128,
    pub earned_rewards_io: u128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Queued,
    Running,
    Completed,
    /// A node it ran on failed (outage or slashed): settled for what was delivered.
    Failed,
    /// Waited past its patience: never funded, nothing moved.
    Expired,
    /// Escrow could not be funded.
    Unfunded,
    /// Still running when the simulation ended: settled for what was delivered.
    CutOff,
}

struct Run {
    start_ms: u64,
    end_ms: u64,
    failed_at: Option<u64>,
    placements: Vec<(u32, u32)>,
    price: Amount,
    escrow_remaining: Amount,
    prior_compute: Amount,
    next_period: u32,
}

pub(crate) struct Job {
    pub spec: JobSpec,
    pub outcome: Outcome,
    waited: u32,
    run: Option<Run>,
}

/// Money totals, base units (the report's `ledger` section).
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub paid: [u128; 2],
    pub received: [u128; 2],
    pub protocol: [u128; 2],
    pub compute: [u128; 2],
    pub escrowed: [u128; 2],
    pub refunded: [u128; 2],
    pub burned_fees_io: u128,
    pub to_treasury_usdc: u128,
    pub buyback_usdc: u128,
    pub buyback_burned_io: u128,
    pub slash_burned_io: u128,
    pub emitted_io: u128,
    pub rewards_distributed_io: u128,
    pub rewards_paid_io: u128,
    pub reward_dust_io: u128,
    pub settlements: u64,
}

impl Totals {
    pub fn burned_io(&self) -> u128 {
        self.burned_fees_io + self.buyback_burned_io + self.slash_burned_io
    }
}

/// One point of the hourly time series (for plots).
#[derive(Clone, Debug, Default)]
pub struct HourStat {
    pub hour: u64,
    /// Market price per GPU-hour (micro-USD), normal urgency, 1 GPU, for [`PRICE_CLASSES`].
    pub prices_micro_usd: Vec<u64>,
    /// Busy GPU-ms / online GPU-ms over the hour, ppm.
    pub utilization_ppm: u32,
    pub supply_io: u128,
    /// Supply less what is locked: stake vault, treasury reserve, escrow, undistributed emission.
    pub circulating_io: u128,
    pub burned_io: u128,
    pub provider_earnings_io: u128,
    pub running_jobs: u32,
    pub queued_jobs: u32,
}

/// The GPU classes whose price is tracked hour by hour.
pub const PRICE_CLASSES: &[GpuModel] = &[
    GpuModel::Rtx3090,
    GpuModel::Rtx4090,
    GpuModel::Rtx5090,
    GpuModel::L40s,
    GpuModel::A100_80,
    GpuModel::H100,
    GpuModel::H200,
    GpuModel::AppleM2,
];

/// The simulation state.
pub struct Sim<L: Ledger + 'static> {
    pub cfg: SimConfig,
    rng: Rng,
    pub bank: Bank<L>,
    schedule: EmissionSchedule,
    pub(crate) wallets: Vec<String>,
    pub buyer_region: Vec<usize>,
    buyers_start: u32,
    pub(crate) nodes: Vec<Node>,
    snaps: Vec<NodeSnapshot>,
    by_model: Vec<Vec<u32>>,
    reward_nodes: Vec<RewardNode>,
    accrued: Vec<Amount>,
    reward_dust: Amount,
    pub(crate) jobs: Vec<Job>,
    queue: Vec<u32>,
    running: Vec<u32>,
    pub totals: Totals,
    pub supply_before: Amount,
    pub usdc_supply_before: Amount,
    pub series: Vec<HourStat>,
    pub hours: u64,
    arrivals: Vec<u64>,
    /// What each buyer holds (IO, USDC), as the market sees it: genesis - escrows + refunds.
    buyer_funds: Vec<[Amount; 2]>,
    treasury_reserve: Amount,

    usdc_fees_pending: Amount,
    pub slashed_nodes: u32,
    pub joined_nodes: u32,
    pub outages: u32,
    pub below_market_waits: u64,
    pub no_capacity_waits: u64,
    pub gpu_ms_delivered: u128,
}

fn tidx(t: Token) -> usize {
    match t {
        Token::Io => 0,
        Token::Usdc => 1,
    }
}

impl<L: Ledger + 'static> Sim<L> {
    /// Builds the fleet, the buyers and the genesis state on `ledger`.
    pub fn new(cfg: SimConfig, ledger: L) -> Result<Self, SimError> {
        let mut rng = Rng::new(cfg.seed);
        let mut fleet_rng = rng.fork(1);
        let io_unit = ledger.unit(Token::Io);
        let schedule = EmissionSchedule::with_pool(
            money::to_amount(300_000_000u128 * io_unit as u128, "pool")?,
            io_unit,
        )?;
        let staking_cfg = solgrid_market::staking::StakingConfig {
            unit: io_unit,
            ..cfg.market.staking.clone()
        };

        // Providers and their nodes.
        let mut wallets: Vec<String> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let providers = match cfg.nodes {
            Some(n) => (n as u64 * 10 / 13).max(1) as u32,
            None => cfg.providers.max(1),
        };
        for p in 0..providers {
            wallets.push(format!("prov{p:06}"));
        }
        let target_nodes = cfg.nodes.map(|n| n as u64);
        let hours = cfg.days as u64 * 24;
        let mut p = 0u32;
        loop {
            let per_provider = if target_nodes.is_some() {
                1
            } else {
                [1, 2, 3][fleet_rng.weighted(&[75, 18, 7])]
            };
            for _ in 0..per_provider {
                let model = fleet::draw_model(&mut fleet_rng);
                let gpus = fleet::draw_gpus(&mut fleet_rng, model);
                let joins = fleet_rng.below(1000) < cfg.joining_permille as u64 && hours > 2;
                let join_hour = if joins {
                    fleet_rng.range(1, hours - 1)
                } else {
                    0
                };
                nodes.push(Node {
                    provider: p,
                    model,
                    gpus,
                    region: fleet::draw_region(&mut fleet_rng),
                    cheater: fleet_rng.below(1000) < cfg.cheater_permille as u64,
                    join_hour,
                    present: false,
                    online: false,
                    offline_until: 0,
                    online_since_ms: None,
                    verified: false,
                    slashed: false,
                    stakes: Vec::new(),
                    jobs_ok: 0,
                    jobs_failed: 0,
                    last_outcome_ms: None,
                    ver_ok: 0,
                    ver_failed: 0,
                    uptime: None,
                    busy_ms: 0,
                    earned_compute_io: 0,
                    earned_rewards_io: 0,
                });
            }
            p = (p + 1) % providers;
            match target_nodes {
                Some(n) if nodes.len() as u64 >= n => break,
                None if p == 0 => break,
                _ => {}
            }
        }

        // Stakers: the provider itself plus 0-3 others per node.
        let stakers_start = wallets.len() as u32;
        let n_stakers = (nodes.len() / 2).max(1) as u32;
        for s in 0..n_stakers {
            wallets.push(format!("stkr{s:06}"));
        }
        let mut io_genesis: Vec<(u32, Amount)> = Vec::new();
        let mut stake_intents = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            let min = staking_cfg.min_stake(n.model, n.gpus)?;
            // 85 % of nodes are fully staked; the rest fall short and earn no idle rewards.
            let target = if fleet_rng.below(100) < 85 {
                min + min / 10
            } else {
                min * fleet_rng.range(40, 95) / 100
            };
            let own = target * fleet_rng.range(30, 100) / 100;
            n.stakes.push((n.provider, own));
            let others = fleet_rng.range(0, 3) as usize;
            let rest = target - own;
            for k in 0..others {
                let amount = if k + 1 == others {
                    rest - rest / others as u64 * k as u64
                } else {
                    rest / others as u64
                };
                n.stakes.push((
                    stakers_start + fleet_rng.below(n_stakers as u64) as u32,
                    amount,
                ));
            }
            if others == 0 && rest > 0 {
                n.stakes[0].1 += rest;
            }
            // One stake lock per node, all its positions (each StakePosition would be
            // its own in the operator; one intent keeps the genesis quick).
            let mut locks = Vec::new();
            for (w, amount) in &n.stakes {
                io_genesis.push((*w, *amount));
                if *amount > 0 {
                    locks.push(Movement {
                        token: Token::Io,
                        op: Op::Transfer {
                            from: Account::Wallet(wallets[*w as usize].clone()),
                            to: Account::StakeVault,
                            amount: *amount,
                        },
                    });
                }
            }
            stake_intents.push((format!("stake/node{i:06}"), locks));
        }

        // Buyers, funded in IO and USDC.
        let buyers_start = wallets.len() as u32;
        let n_buyers = (nodes.len() / 4).max(10) as u32;
        let mut buyer_region = Vec::new();
        for b in 0..n_buyers {
            wallets.push(format!("buyer{b:06}"));
            buyer_region.push(fleet::draw_region(&mut fleet_rng));
        }
        let usdc_unit = ledger.unit(Token::Usdc);
        let buyer_io = 60_000_000 * io_unit / n_buyers as u64;
        let buyer_usdc = 20_000_000 * usdc_unit / n_buyers as u64;
        for b in 0..n_buyers {
            io_genesis.push((buyers_start + b, buyer_io));
        }
        let holders = wallets.len() as u32;
        wallets.push("genesis-holders".into());
        wallets.push("buyback-desk".into());

        // Genesis: exactly 500,000,000 IO (treasury reserve 50M, stakes, buyers, the rest to holders).
        let genesis = money::to_amount(500_000_000u128 * io_unit as u128, "genesis")?;
        let treasury_reserve = 50_000_000 * io_unit;
        let mut per_wallet: Vec<Amount> = vec![0; wallets.len()];
        for (w, a) in &io_genesis {
            per_wallet[*w as usize] = money::add(per_wallet[*w as usize], *a, "genesis")?;
        }
        let allocated = money::add(
            money::sum(per_wallet.iter().copied(), "genesis")?,
            treasury_reserve,
            "genesis",
        )?;
        per_wallet[holders as usize] =
            money::sub(genesis, allocated, "genesis: fleet stake too large")?;
        let mut mints: Vec<(Account, Amount)> = vec![(Account::Treasury, treasury_reserve)];
        mints.extend(
            per_wallet
                .iter()
                .enumerate()
                .filter(|(_, a)| **a > 0)
                .map(|(w, a)| (Account::Wallet(wallets[w].clone()), *a)),
        );
        let mut bank = Bank::new(ledger);
        for i in bank.chunked_mints("genesis/io", Token::Io, &mints) {
            bank.submit(i);
        }
        let usdc_mints: Vec<(Account, Amount)> = (0..n_buyers)
            .map(|b| {
                (
                    Account::Wallet(wallets[(buyers_start + b) as usize].clone()),
                    buyer_usdc,
                )
            })
            .collect();
        for i in bank.chunked_mints("genesis/usdc", Token::Usdc, &usdc_mints) {
            bank.submit(i);
        }
        bank.sync()?;
        for (key, locks) in stake_intents {
            for i in bank.chunked(&key, locks) {
                bank.submit(i);
            }
        }
        bank.sync()?;
        let supply_before = bank.supply(Token::Io)?;
        let usdc_supply_before = bank.supply(Token::Usdc)?;

        // Snapshots, model index, reward nodes.
        let mut by_model = vec![Vec::new(); GpuModel::COUNT];
        let mut snaps = Vec::with_capacity(nodes.len());
        let mut reward_nodes = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            by_model[n.model.index()].push(i as u32);
            let r = &REGIONS[n.region];
            let reference = cfg.market.pricing.reference(n.model);
            let floor = if fleet_rng.below(100) < 60 {
                reference * fleet_rng.range(0, 60) / 100
            } else {
                0
            };
            snaps.push(NodeSnapshot {
                name: format!("node{i:06}"),
                gpus: vec![GpuGroup {
                    model: n.model,
                    vram_mib: n.model.typical_vram_mib(),
                    total: n.gpus,
                    healthy: n.gpus,
                    healthy_free: n.gpus,
                }],
                phase: NodePhase::Pending,
                draining: false,
                stake: n.stakes.iter().map(|s| s.1).sum(),
                min_stake: staking_cfg.min_stake(n.model, n.gpus)?,
                reputation: cfg.market.reputation.prior,
                floor_micro_usd: floor,
                region: r.name.to_string(),
                country: r.country.to_string(),
                coords: Some(r.at),
                first_seen_ms: if n.join_hour == 0 {
                    T0 - fleet_rng.range(1, 59 * 24) * HOUR
                } else {
                    T0 + n.join_hour * HOUR
                },
            });
            reward_nodes.push(RewardNode {
                node: format!("node{i:06}"),
                provider_wallet: wallets[n.provider as usize].clone(),
                multiplier_permille: staking_cfg.multiplier(n.model),
                gpus: n.gpus,
                idle_ppm: 0,
                commission_bps: fleet_rng.range(500, 2_500) as u32,
                stakes: n
                    .stakes
                    .iter()
                    .enumerate()
                    .map(|(j, (w, a))| StakeShare {
                        position: format!("node{i:06}/{j}"),
                        wallet: wallets[*w as usize].clone(),
                        amount: *a,
                    })
                    .collect(),
            });
        }

        // Arrivals per hour: exact total via cumulative targets over a daily cycle.
        let diurnal: [u64; 24] = [
            6, 5, 5, 4, 4, 5, 6, 8, 10, 12, 13, 13, 13, 13, 12, 12, 12, 11, 10, 9, 8, 8, 7, 6,
        ];
        let weight_sum: u64 = (0..hours)
            .map(|h| diurnal[(h % 24) as usize])
            .sum::<u64>()
            .max(1);
        let total_jobs = match (cfg.jobs, cfg.jobs_per_hour) {
            (Some(j), _) => j,
            (None, Some(r)) => r * hours,
            (None, None) => {
                // Derive from capacity: load% of fleet GPU-hours over the mean job size.
                let mut probe = Rng::new(cfg.seed ^ 0xA11CE);
                let reference = |m: GpuModel| cfg.market.pricing.reference(m);
                let samples = 2_000u64;
                let milli: u64 = (0..samples)
                    .map(|_| {
                        jobs::draw_job(&mut probe, 0, 0, 0, &reference).expected_milli_gpu_hours()
                    })
                    .sum();
                let mean_milli = (milli / samples).max(1);
                let gpus: u64 = nodes.iter().map(|n| n.gpus as u64).sum();
                gpus * hours * 1000 * cfg.load_pct as u64 / 100 / mean_milli
            }
        };
        let mut arrivals = Vec::with_capacity(hours as usize);
        let mut cum_w = 0u64;
        let mut prev = 0u64;
        for h in 0..hours {
            cum_w += diurnal[(h % 24) as usize];
            let target = (total_jobs as u128 * cum_w as u128 / weight_sum as u128) as u64;
            arrivals.push(target - prev);
            prev = target;
        }

        let n_wallets = wallets.len();
        Ok(Sim {
            rng: rng.fork(2),
            bank,
            schedule,
            wallets,
            buyer_region,
            buyers_start,
            snaps,
            by_model,
            reward_nodes,
            accrued: vec![0; n_wallets],
            reward_dust: 0,
            jobs: Vec::with_capacity(total_jobs as usize),
            queue: Vec::new(),
            running: Vec::new(),
            totals: Totals::default(),
            supply_before,
            usdc_supply_before,
            series: Vec::with_capacity(hours as usize),
            hours,
            arrivals,
            buyer_funds: vec![[buyer_io, buyer_usdc]; n_buyers as usize],
            treasury_reserve,

            usdc_fees_pending: 0,
            slashed_nodes: 0,
            joined_nodes: 0,
            outages: 0,
            below_market_waits: 0,
            no_capacity_waits: 0,
            gpu_ms_delivered: 0,
            nodes,
            cfg: SimConfig {
                market: MarketConfig {
                    staking: staking_cfg,
                    ..cfg.market
                },
                ..cfg
            },
        })
    }

    /// The nodes as the scheduler extender would see them.
    pub fn snapshots(&self) -> &[NodeSnapshot] {
        &self.snaps
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn gpu_count(&self) -> u64 {
        self.nodes.iter().map(|n| n.gpus as u64).sum()
    }

    /// Runs every hour, then closes the books. `progress` is called after each hour.
    pub fn run(&mut self, mut progress: impl FnMut(u64)) -> Result<(), SimError> {
        for h in 0..=self.hours {
            self.tick(h)?;
            progress(h);
        }
        Ok(())
    }

    fn tick(&mut self, h: u64) -> Result<(), SimError> {
        let now = T0 + h * HOUR;
        let last = h == self.hours;
        if !last {
            self.fleet_events(h, now);
        }
        if h > 0 {
            let util = self.account_hour(now, last)?;
            self.rewards(h - 1, now)?;
            if !last {
                self.verify(now)?;
            }
            self.record(h - 1, util)?;
        }
        if !last {
            self.arrive(h, now);
            self.place(now)?;
        }
        if (h > 0 && h.is_multiple_of(24)) || last {
            self.daily(h)?;
        }
        // Settles this hour's intents on the worker while the next hour is computed.
        self.bank.flush()?;
        Ok(())
    }

    fn set_phase(&mut self, i: usize) {
        let n = &self.nodes[i];
        self.snaps[i].phase = if !n.present {
            NodePhase::Pending
        } else if n.slashed {
            NodePhase::Slashed
        } else if !n.online {
            NodePhase::Offline
        } else if !n.verified {
            NodePhase::Verifying
        } else {
            NodePhase::Active
        };
    }

    fn fleet_events(&mut self, h: u64, now: u64) {
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if !n.present {
                if n.join_hour == h {
                    n.present = true;
                    n.online = true;
                    n.online_since_ms = Some(now);
                    // Nodes of the initial fleet were verified before the run; new ones verify during their first hour.
                    n.verified = h == 0;
                    if h > 0 {
                        self.joined_nodes += 1;
                    }
                } else {
                    continue;
                }
            } else if n.slashed {
                continue;
            } else if !n.online {
                if n.offline_until <= h {
                    n.online = true;
                    n.online_since_ms = Some(now);
                }
            } else if self.rng.chance_ppm(self.cfg.outage_ppm) {
                n.online = false;
                n.online_since_ms = None;
                n.offline_until = h + self.rng.range(1, 8);
                self.outages += 1;
                // Jobs on it fail now: provider-caused failures, on its record.
                for &j in &self.running {
                    if let Some(run) = self.jobs[j as usize].run.as_mut()
                        && run.failed_at.is_none()
                        && run.placements.iter().any(|(p, _)| *p as usize == i)
                    {
                        run.failed_at = Some(now);
                        n.jobs_failed += 1;
                        n.last_outcome_ms = Some(now);
                    }
                }
            }
            self.set_phase(i);
        }
    }

    /// Accounts the hour that ended at `now`: busy time and settlement of ended periods.
    /// Returns the hour's utilization (ppm).
    fn account_hour(&mut self, now: u64, last: bool) -> Result<u32, SimError> {
        let hour_start = now - HOUR;
        let periods = self.cfg.periods;
        let mut still = Vec::with_capacity(self.running.len());
        let running = std::mem::take(&mut self.running);
        let mut usage: Vec<NodeUsage> = Vec::new();
        for j in running {
            let job = &mut self.jobs[j as usize];
            let Some(run) = job.run.as_mut() else {
                continue;
            };
            let natural_end = run.end_ms;
            let mut eff_end = natural_end.min(run.failed_at.unwrap_or(u64::MAX));
            let cut_off = last && eff_end > now;
            if cut_off {
                eff_end = now;
            }
            for &(n, g) in &run.placements {
                let overlap = eff_end
                    .min(now)
                    .saturating_sub(run.start_ms.max(hour_start));
                self.nodes[n as usize].busy_ms += overlap * g as u64;
            }
            let done = eff_end <= now;
            let n_total = if done {
                periods.count(run.start_ms, eff_end)
            } else {
                u32::MAX
            };
            loop {
                let p = run.next_period;
                let (_, pend) = periods.bounds(run.start_ms, p);
                let final_period = done && p + 1 >= n_total;
                if done {
                    if p >= n_total {
                        break;
                    }
                } else if pend > now {
                    break;
                }
                usage.clear();
                for &(n, g) in &run.placements {
                    usage.push(NodeUsage {
                        node: self.snaps[n as usize].name.clone(),
                        provider_wallet: self.wallets[self.nodes[n as usize].provider as usize]
                            .clone(),
                        gpu_ms: periods.gpu_ms_in(run.start_ms, p, g, run.start_ms, eff_end),
                    });
                }
                let uid = format!("job{j:07}");
                let plan = settlement::plan_settlement(
                    &SettlementInput {
                        job_uid: &uid,
                        period: p,
                        token: job.spec.token,
                        price_per_gpu_hour: run.price,
                        payer_wallet: &self.wallets[(self.buyers_start + job.spec.buyer) as usize],
                        escrow_remaining: run.escrow_remaining,
                        prior_compute: run.prior_compute,
                        final_period,
                        usage: &usage,
                    },
                    &self.cfg.market.fees,
                )
                .map_err(market)?;
                let t = tidx(job.spec.token);
                let tot = &mut self.totals;
                tot.paid[t] += plan.paid as u128;
                tot.received[t] += plan.received as u128;
                tot.protocol[t] += plan.protocol as u128;
                tot.compute[t] += plan.compute as u128;
                tot.refunded[t] += plan.refund as u128;
                tot.burned_fees_io += plan.burned as u128;
                tot.to_treasury_usdc += plan.to_treasury as u128;
                tot.settlements += 1;
                self.usdc_fees_pending =
                    money::add(self.usdc_fees_pending, plan.to_treasury, "usdc fees")?;
                for (line, &(n, _)) in plan.lines.iter().zip(&run.placements) {
                    self.gpu_ms_delivered += line.gpu_ms as u128;
                    if job.spec.token == Token::Io {
                        self.nodes[n as usize].earned_compute_io += line.received as u128;
                    }
                }
                let funds = &mut self.buyer_funds[job.spec.buyer as usize][t];
                *funds = money::add(*funds, plan.refund, "buyer refund")?;
                run.escrow_remaining = plan.escrow_after;
                run.prior_compute = plan.cumulative_compute;
                run.next_period = p + 1;
                self.bank.submit(plan.intent);
                if final_period {
                    break;
                }
            }
            if done {
                let failed = run.failed_at.is_some_and(|f| f < natural_end) && !cut_off;
                for &(n, g) in &run.placements {
                    let snap = &mut self.snaps[n as usize];
                    snap.gpus[0].healthy_free =
                        (snap.gpus[0].healthy_free + g).min(snap.gpus[0].total);
                    if !failed {
                        self.nodes[n as usize].jobs_ok += 1;
                        self.nodes[n as usize].last_outcome_ms = Some(now);
                    }
                }
                job.outcome = if cut_off {
                    Outcome::CutOff
                } else if failed {
                    Outcome::Failed
                } else {
                    Outcome::Completed
                };
            } else {
                still.push(j);
            }
        }
        self.running = still;
        // utilization over online GPUs
        let (mut busy, mut cap) = (0u128, 0u128);
        for n in &self.nodes {
            if n.present && n.online && !n.slashed {
                cap += n.gpus as u128 * HOUR as u128;
            }
            busy += n.busy_ms as u128;
        }
        Ok((busy * 1_000_000)
            .checked_div(cap)
            .map_or(0, |u| u.min(1_000_000) as u32))
    }

    /// Emission of schedule hour `h` (relative to the run), split among eligible nodes.
    fn rewards(&mut self, h: u64, now: u64) -> Result<(), SimError> {
        let schedule_hour = self.cfg.start_month as u64 * HOURS_PER_MONTH + h;
        let emission = self.schedule.hourly(schedule_hour);
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let snap = &self.snaps[i];
            let input = EligibilityInput {
                phase: snap.phase,
                verified: n.verified,
                online_since_ms: n.online_since_ms,
                first_seen_ms: snap.first_seen_ms,
                stake: snap.stake,
                min_stake: snap.min_stake,
                slashed: n.slashed,
            };
            let eligible = n.present
                && self
                    .cfg
                    .market
                    .staking
                    .reward_eligibility(&input, now)
                    .is_ok();
            let window = IdleWindow {
                gpus: n.gpus,
                from_ms: now.saturating_sub(HOUR),
                to_ms: now,
            };
            self.reward_nodes[i].idle_ppm = if eligible {
                window.idle_ppm_of_busy(n.busy_ms as u128)
            } else {
                0
            };
            n.busy_ms = 0;
        }
        let pool = money::add(emission, self.reward_dust, "reward pool")?;
        let split = staking::split_rewards(
            pool,
            &self.reward_nodes,
            self.cfg.market.staking.max_commission_bps,
        )?;
        for p in &split.payouts {
            let n = &mut self.nodes[p.node];
            let w = match p.to {
                Recipient::Provider => n.provider,
                Recipient::Staker(j) => n.stakes[j].0,
            };
            if p.to == Recipient::Provider {
                n.earned_rewards_io += p.amount as u128;
            }
            self.accrued[w as usize] = money::add(self.accrued[w as usize], p.amount, "accrued")?;
        }
        self.reward_dust = split.dust;
        self.totals.emitted_io += emission as u128;
        self.totals.rewards_distributed_io += split.distributed as u128;
        self.totals.reward_dust_io = split.dust as u128;
        self.bank.submit(Intent {
            key: format!("emission/{schedule_hour}"),
            movements: vec![Movement {
                token: Token::Io,
                op: Op::Mint {
                    to: Account::EmissionPool,
                    amount: emission,
                },
            }],
        });
        Ok(())
    }

    fn verify(&mut self, now: u64) -> Result<(), SimError> {
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if n.present {
                // the heartbeat: a slashed node that is up still renews its lease
                let half_life = self.cfg.market.reputation.uptime_half_life_ms;
                n.uptime = Some(UptimeTrack::observe(n.uptime, n.online, now, half_life));
            }
            if n.present && !n.slashed && n.online {
                if n.cheater && self.rng.chance_ppm(self.cfg.detection_ppm) {
                    n.ver_failed += 1;
                    n.slashed = true;
                    self.slashed_nodes += 1;
                    let amounts: Vec<Amount> = n.stakes.iter().map(|s| s.1).collect();
                    let out = self.cfg.market.staking.slash(&amounts)?;
                    for (k, rem) in out.remaining.iter().enumerate() {
                        n.stakes[k].1 = *rem;
                        self.reward_nodes[i].stakes[k].amount = *rem;
                    }
                    self.snaps[i].stake = out.remaining.iter().sum();
                    self.totals.slash_burned_io += out.burned as u128;
                    self.bank.submit(out.intent(format!("slash/node{i:06}")));
                    for &j in &self.running {
                        if let Some(run) = self.jobs[j as usize].run.as_mut()
                            && run.failed_at.is_none()
                            && run.placements.iter().any(|(p, _)| *p as usize == i)
                        {
                            run.failed_at = Some(now);
                        }
                    }
                } else {
                    n.ver_ok += 1;
                    n.verified = true;
                }
            }
            let n = &self.nodes[i];
            let rcfg = &self.cfg.market.reputation;
            let age_ms = now.saturating_sub(self.snaps[i].first_seen_ms);
            let rep = rcfg.score_decayed(
                &ReputationInputs {
                    uptime_ppm: n.uptime.and_then(|t| rcfg.uptime_ppm(&t, age_ms, now)),
                    jobs_succeeded: n.jobs_ok,
                    jobs_failed_provider: n.jobs_failed,
                    verifications_passed: n.ver_ok,
                    verifications_failed: n.ver_failed,
                    age_ms,
                    slashed: n.slashed,
                },
                EvidenceAge {
                    jobs_ms: n.last_outcome_ms.map(|t| now.saturating_sub(t)),
                    // verification runs every hour here
                    verification_ms: Some(0),
                },
            );
            self.snaps[i].reputation = rep.score;
            self.set_phase(i);
        }
        Ok(())
    }

    fn arrive(&mut self, h: u64, now: u64) {
        let n = self.arrivals[h as usize];
        let n_buyers = self.buyer_region.len() as u64;
        let pricing = &self.cfg.market.pricing;
        let reference = |m: GpuModel| pricing.reference(m);
        for _ in 0..n {
            let buyer = self.rng.below(n_buyers) as u32;
            let at = now + self.rng.below(HOUR);
            let spec = jobs::draw_job(
                &mut self.rng,
                buyer,
                at,
                self.cfg.usdc_share_pct,
                &reference,
            );
            self.queue.push(self.jobs.len() as u32);
            self.jobs.push(Job {
                spec,
                outcome: Outcome::Queued,
                waited: 0,
                run: None,
            });
        }
    }

    /// The supply of every GPU class right now, as the operator's quotes read it.
    fn supply(&self) -> SupplyIndex {
        SupplyIndex::build(self.nodes.iter().zip(&self.snaps).map(|(n, s)| SupplyNode {
            model: n.model,
            phase: s.phase,
            gpus: n.gpus,
            allocated: n.gpus - s.gpus[0].healthy_free.min(n.gpus),
            floor_micro_usd: s.floor_micro_usd,
        }))
    }

    fn place(&mut self, now: u64) -> Result<(), SimError> {
        let mut supply = self.supply();
        // Most urgent first, then oldest.
        let mut queue = std::mem::take(&mut self.queue);
        queue.sort_by_key(|j| (std::cmp::Reverse(self.jobs[*j as usize].spec.urgency), *j));
        let mut keep = Vec::with_capacity(queue.len());
        let mut chosen: Vec<(u32, u32)> = Vec::new();
        for j in queue {
            let spec = self.jobs[j as usize].spec;
            if self.jobs[j as usize].waited > spec.patience_hours {
                self.jobs[j as usize].outcome = Outcome::Expired;
                continue;
            }
            let rate = self.cfg.market.pricing.rate(spec.token);
            // every accepted class with its own supply; priced at the dearest, as
            // the operator quotes (solgrid_crds::market::quote_spec)
            let mut classes: Vec<_> = spec.models.iter().map(|m| supply.model_supply(m)).collect();
            if classes.is_empty() {
                classes.push(supply.model_supply(spec.quote_model));
            }
            let quote = self
                .cfg
                .market
                .pricing
                .quote_models(
                    &QuoteRequest {
                        model: spec.quote_model,
                        token: spec.token,
                        urgency: spec.urgency,
                        gpus_per_worker: spec.gpus_per_worker,
                        workers: spec.workers,
                        min_vram_mib: spec.min_vram_mib,
                        max_duration_ms: spec.max_duration_ms,
                        utilization_ppm: 0,
                        floor_micro_usd: 0,
                        budget_cap_per_gpu_hour: Some(rate.from_micro_usd(spec.budget_micro_usd)?),
                    },
                    &classes,
                )
                .map_err(market)?;
            if quote.below_market {
                self.below_market_waits += 1;
                self.jobs[j as usize].waited += 1;
                keep.push(j);
                continue;
            }
            let buyer_region = &REGIONS[self.buyer_region[spec.buyer as usize]];
            let req = JobRequirements {
                vendor: spec.vendor,
                models: spec.models,
                min_vram_mib: spec.min_vram_mib,
                gpus_per_worker: spec.gpus_per_worker,
                price_micro_usd: quote.price_micro_usd,
                min_reputation: spec.min_reputation,
                preferred_regions: vec![buyer_region.name.to_string()],
                strict_regions: false,
                location: Some(buyer_region.at),
                preference: spec.preference,
            };
            chosen.clear();
            for _ in 0..spec.workers {
                match self.best_node(&req, now) {
                    Some(n) => {
                        self.snaps[n as usize].gpus[0].healthy_free -= spec.gpus_per_worker;
                        chosen.push((n, spec.gpus_per_worker));
                    }
                    None => break,
                }
            }
            if chosen.len() < spec.workers as usize {
                for &(n, g) in &chosen {
                    self.snaps[n as usize].gpus[0].healthy_free += g;
                }
                self.no_capacity_waits += 1;
                self.jobs[j as usize].waited += 1;
                keep.push(j);
                continue;
            }
            // Funded and started: lock the quote, move the maximum cost into escrow.
            let escrow = escrow_max_cost(
                spec.workers,
                spec.gpus_per_worker,
                spec.max_duration_ms,
                quote.price_per_gpu_hour,
                spec.token,
                &self.cfg.market.fees,
            )
            .map_err(market)?;
            let t = tidx(spec.token);
            let funds = &mut self.buyer_funds[spec.buyer as usize][t];
            if *funds < escrow.total {
                // The buyer cannot pay the maximum cost: the job is refused, GPUs released.
                for &(n, g) in &chosen {
                    self.snaps[n as usize].gpus[0].healthy_free += g;
                }
                self.jobs[j as usize].outcome = Outcome::Unfunded;
                continue;
            }
            *funds -= escrow.total;
            for &(n, g) in &chosen {
                supply.allocate(self.nodes[n as usize].model, g as i64);
            }
            let uid = format!("job{j:07}");
            let payer = &self.wallets[(self.buyers_start + spec.buyer) as usize];
            let intent = settlement::escrow_intent(&uid, payer, spec.token, escrow.total);
            self.bank.submit(intent);
            let start_ms = spec.arrival_ms.max(now);
            let run = Run {
                start_ms,
                end_ms: start_ms + spec.run_ms.min(spec.max_duration_ms),
                failed_at: None,
                placements: chosen.clone(),
                price: quote.price_per_gpu_hour,
                escrow_remaining: escrow.total,
                prior_compute: 0,
                next_period: 0,
            };
            self.totals.escrowed[t] += escrow.total as u128;
            let job = &mut self.jobs[j as usize];
            job.run = Some(run);
            job.outcome = Outcome::Running;
            self.running.push(j);
        }
        self.queue = keep;
        Ok(())
    }

    /// Filter + score over a sample of the nodes of the job's models; the best, if any.
    fn best_node(&mut self, req: &JobRequirements, now: u64) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        let mut feasible = 0usize;
        let mut evaluated = 0usize;
        let n_models = req.models.iter().count().max(1);
        let per_model = self.cfg.scan_limit.div_ceil(n_models);
        for m in req.models.iter() {
            let list = &self.by_model[m.index()];
            if list.is_empty() {
                continue;
            }
            let start = self.rng.below(list.len() as u64) as usize;
            for k in 0..list.len().min(per_model) {
                let i = list[(start + k) % list.len()];
                evaluated += 1;
                if let Ok(s) =
                    matching::evaluate(&self.snaps[i as usize], req, &self.cfg.market.matching, now)
                {
                    feasible += 1;
                    if best.is_none_or(|(b, bi)| s > b || (s == b && i < bi)) {
                        best = Some((s, i));
                    }
                    if feasible >= self.cfg.feasible_target {
                        break;
                    }
                }
            }
            if feasible >= self.cfg.feasible_target || evaluated >= self.cfg.scan_limit {
                break;
            }
        }
        best.map(|(_, i)| i)
    }

    /// Daily: pay accrued rewards out of the emission pool; buy back and burn IO with
    /// the stablecoin fees.
    fn daily(&mut self, h: u64) -> Result<(), SimError> {
        let day = h / 24;
        let payouts: Vec<(String, Amount)> = self
            .accrued
            .iter()
            .enumerate()
            .filter(|(_, a)| **a > 0)
            .map(|(w, a)| (self.wallets[w].clone(), *a))
            .collect();
        let paid: u128 = payouts.iter().map(|(_, a)| *a as u128).sum();
        for i in self.bank.chunked_transfers(
            &format!("rewards/day{day}"),
            Token::Io,
            &Account::EmissionPool,
            &payouts,
        ) {
            self.bank.submit(i);
        }
        self.accrued.iter_mut().for_each(|a| *a = 0);
        self.totals.rewards_paid_io += paid;
        if self.usdc_fees_pending > 0 {
            // production's buyback math (solgrid_market::buyback, as the operator's
            // scheduled buyback): IO rounded down, USDC rounded up, at most the
            // treasury's reserve; what is left waits for the next day
            let pricing = &self.cfg.market.pricing;
            let reserve = money::to_amount(
                (self.treasury_reserve as u128).saturating_sub(self.totals.buyback_burned_io),
                "buyback reserve",
            )?;
            let plan = buyback::plan(
                self.usdc_fees_pending,
                pricing.usdc_rate,
                pricing.io_rate,
                reserve,
            )?;
            if !plan.is_empty() {
                let desk = self.wallets[self.wallets.len() - 1].clone();
                self.bank
                    .submit(plan.intent(format!("buyback/day{day}"), &desk));
            }
            self.totals.buyback_usdc += plan.stable_in as u128;
            self.totals.buyback_burned_io += plan.io_burned as u128;
            self.usdc_fees_pending = plan.stable_carried;
        }
        Ok(())
    }

    fn record(&mut self, hour: u64, utilization_ppm: u32) -> Result<(), SimError> {
        let supply = self.supply();
        let mut prices = Vec::with_capacity(PRICE_CLASSES.len());
        for m in PRICE_CLASSES {
            let q = self
                .cfg
                .market
                .pricing
                .quote(&QuoteRequest {
                    model: *m,
                    token: Token::Usdc,
                    urgency: Urgency::Normal,
                    gpus_per_worker: 1,
                    workers: 1,
                    min_vram_mib: 0,
                    max_duration_ms: HOUR,
                    utilization_ppm: supply.get(*m).0,
                    floor_micro_usd: supply.get(*m).1,
                    budget_cap_per_gpu_hour: None,
                })
                .map_err(market)?;
            prices.push(q.price_micro_usd);
        }
        let earnings: u128 = self
            .nodes
            .iter()
            .map(|n| n.earned_compute_io + n.earned_rewards_io)
            .sum();
        let supply_io =
            self.supply_before as u128 + self.totals.emitted_io - self.totals.burned_io();
        let staked: u128 = self
            .nodes
            .iter()
            .flat_map(|n| n.stakes.iter().map(|s| s.1 as u128))
            .sum();
        let treasury = self.treasury_reserve as u128 - self.totals.buyback_burned_io;
        let escrow: u128 = self
            .running
            .iter()
            .filter_map(|j| {
                let job = &self.jobs[*j as usize];
                job.run
                    .as_ref()
                    .filter(|_| job.spec.token == Token::Io)
                    .map(|r| r.escrow_remaining as u128)
            })
            .sum();
        let pool = self.reward_dust as u128 + self.accrued.iter().map(|a| *a as u128).sum::<u128>();
        self.series.push(HourStat {
            hour,
            prices_micro_usd: prices,
            utilization_ppm,
            // The supply as the books say; checked against the ledger at the end.
            supply_io,
            circulating_io: supply_io.saturating_sub(staked + treasury + escrow + pool),
            burned_io: self.totals.burned_io(),
            provider_earnings_io: earnings,
            running_jobs: self.running.len() as u32,
            queued_jobs: self.queue.len() as u32,
        });
        Ok(())
    }

    /// Checks the books against the ledger: conservation and supply.
    pub fn check_books(&mut self) -> Result<(), SimError> {
        self.bank.sync()?;
        for (b, funds) in self.buyer_funds.iter().enumerate() {
            let wallet = Account::Wallet(self.wallets[self.buyers_start as usize + b].clone());
            for token in Token::ALL {
                let on_ledger = self.bank.balance(&wallet, token)?;
                if on_ledger != funds[tidx(token)] {
                    return Err(SimError::Invariant(format!(
                        "{wallet} holds {on_ledger} {token}, books say {}",
                        funds[tidx(token)]
                    )));
                }
            }
        }
        let t = &self.totals;
        for k in 0..2 {
            if t.paid[k] != t.received[k] + t.protocol[k] {
                return Err(SimError::Invariant(format!(
                    "token {k}: paid != received + protocol"
                )));
            }
        }
        let supply_after = self.bank.supply(Token::Io)? as u128;
        if supply_after + t.burned_io() != self.supply_before as u128 + t.emitted_io {
            return Err(SimError::Invariant(format!(
                "supply {} != before {} + emitted {} - burned {}",
                supply_after,
                self.supply_before,
                t.emitted_io,
                t.burned_io()
            )));
        }
        let escrow_io = self.bank.balance(&Account::Escrow, Token::Io)?;
        let escrow_usdc = self.bank.balance(&Account::Escrow, Token::Usdc)?;
        if escrow_io != 0 || escrow_usdc != 0 {
            return Err(SimError::Invariant(format!(
                "escrow not empty at the end: {escrow_io} IO, {escrow_usdc} USDC"
            )));
        }
        let pool = self.bank.balance(&Account::EmissionPool, Token::Io)? as u128;
        if pool != self.reward_dust as u128 {
            return Err(SimError::Invariant(format!(
                "emission pool {pool} != carried dust {}",
                self.reward_dust
            )));
        }
        Ok(())
    }
}
