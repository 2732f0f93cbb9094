//! solgrid's Kubernetes operator.
//!
//! - [`computejob`]: the ComputeJob controller (quote, escrow, gang scheduling,
//!   usage, settlement) and its pure state machine.
//! - [`settlement`]: the exactly-once settlement store over a ComputeJob's status.
//! - [`gpunode`], [`stake`], [`rewards`], [`verification`]: the GpuNode and
//!   StakePosition controllers, idle rewards, proof-of-work verification.
//! - [`buyback`]: the scheduled buyback and burn of IO with the treasury's stablecoin.
//! - [`cmstore`]: the ConfigMap settlement store of the scheduled tasks (rewards, buyback).
//! - [`settle_driver`]: the one settlement driver every store is settled through.
//! - [`grant`], [`wallet`]: admin funding on the embedded ledger (`LedgerGrant`),
//!   and the wallet owner's keypair that every debit of a wallet needs.
//! - [`context`]: what every reconcile shares ([`context::Context`]), the ledger
//!   handle (embedded or Solana) and the injectable clock.
//! - [`config`], [`metrics`], [`error`], [`leader`], [`http`]: operations.
//!
//! See `docs/operator.md`.

pub mod buyback;
pub mod cmstore;
pub mod computejob;
pub mod config;
pub mod context;
pub mod error;
pub mod gpunode;
pub mod grant;
pub mod http;
pub mod kstatus;
pub mod leader;
pub mod market_gauges;
pub mod metrics;
pub mod records;
pub mod rewards;
pub mod settle_driver;
pub mod settlement;
pub mod stake;
pub mod toolkit;
pub mod verification;
pub mod wallet;

/// The toolkit's conditions and time helpers under their former name (tests, e2e
/// and controllers use `conditions::time` and friends).
pub use toolkit as conditions;

pub use context::{Clock, Context, FakeClock, LedgerHandle, SystemClock};
pub use error::{Error, Result};

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs every controller until `token` is cancelled (the lease was lost, or the
/// process shuts down): the controllers' futures are then dropped, which stops
/// them. Each controller is `async fn run(Arc<Context>)`.
pub async fn run_controllers(ctx: Arc<Context>, token: CancellationToken) {
    let all = async {
        tokio::join!(
            computejob::run(ctx.clone()),
            gpunode::run(ctx.clone()),
            stake::run(ctx.clone()),
            grant::run(ctx.clone()),
            rewards::run(ctx.clone()),
            buyback::run(ctx.clone()),
            market_gauges::run(ctx.clone()),
        );
    };
    tokio::select! {
        _ = all => {}
        _ = token.cancelled() => {}
    }
}
