//! solgrid's market simulator: the whole market in one process (`make demo`).
//!
//! A simulated fleet of providers (a realistic GPU mix across regions), buyers
//! submitting jobs over simulated days, hourly emission and idle rewards, cheaters
//! caught by proof of work and slashed — every number from `solgrid-market`, every
//! payment through the `solgrid-ledger` settlement executor on the embedded ledger.
#![forbid(unsafe_code)]

pub mod bank;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod jobs;
pub mod plots;
pub mod report;
pub mod rng;

pub use config::SimConfig;
pub use engine::{Sim, SimError};

use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger, FsyncPolicy};

/// Runs a whole simulation on an in-memory embedded ledger and returns the report.
pub fn run(
    cfg: SimConfig,
    progress: impl FnMut(u64),
) -> Result<(Sim<EmbeddedLedger>, report::Report), SimError> {
    let ledger = EmbeddedLedger::in_memory(EmbeddedConfig {
        fsync: FsyncPolicy::Never,
        // the simulated wallets are names, not keypairs; the operator always
        // requires the owners' signatures
        require_wallet_signatures: false,
        ..EmbeddedConfig::default()
    })
    .map_err(|e| SimError::Invariant(format!("embedded ledger: {e}")))?;
    let mut sim = Sim::new(cfg, ledger)?;
    sim.run(progress)?;
    sim.check_books()?;
    let report = report::Report::from_sim(&sim)?;
    Ok((sim, report))
}
