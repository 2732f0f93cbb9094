//! Simulation parameters (every market rule comes from the market library's own
//! configuration types, so the simulator tunes exactly what a live cluster uses).

use serde::Serialize;
use solgrid_market::MarketConfig;
use solgrid_market::settlement::Periods;

/// Everything a run depends on. Same config and seed ⇒ same report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimConfig {
    pub seed: u64,
    /// Provider wallets (each runs one or more nodes) when `nodes` is not set.
    pub providers: u32,
    /// Exact number of nodes (overrides the provider-driven count).
    pub nodes: Option<u32>,
    /// Exact number of jobs submitted over the run (overrides `jobs_per_hour` and `load_pct`).
    pub jobs: Option<u64>,
    /// Mean arrivals per hour (before the daily cycle).
    pub jobs_per_hour: Option<u64>,
    /// Target GPU load (percent of fleet capacity) used to derive the arrival rate.
    pub load_pct: u32,
    pub days: u32,
    /// Month of the emission schedule the run starts in.
    pub start_month: u32,
    /// Percent of jobs paid in USDC (the rest in IO).
    pub usdc_share_pct: u32,
    /// Nodes that cheat on proof of work, per mille.
    pub cheater_permille: u32,
    /// Chance per hour that a cheater's verification catches it, ppm.
    pub detection_ppm: u32,
    /// Chance per hour that an online node drops offline, ppm.
    pub outage_ppm: u32,
    /// Nodes joining during the run, per mille of the fleet.
    pub joining_permille: u32,
    /// Matching: stop scanning after this many feasible nodes / evaluations per worker.
    pub feasible_target: usize,
    pub scan_limit: usize,
    /// The market tables (the one `MarketConfig` the operator, extender and CLI read).
    #[serde(flatten)]
    pub market: MarketConfig,
    pub periods: Periods,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            providers: 300,
            nodes: None,
            jobs: None,
            jobs_per_hour: None,
            load_pct: 65,
            days: 7,
            start_month: 0,
            usdc_share_pct: 30,
            cheater_permille: 20,
            detection_ppm: 250_000,
            outage_ppm: 1_500,
            joining_permille: 100,
            feasible_target: 16,
            scan_limit: 256,
            market: MarketConfig::default(),
            periods: Periods::default(),
        }
    }
}
