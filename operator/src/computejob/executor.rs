//! The job's side of the exactly-once settlement executor: escrow and
//! settlements are planned, sent and confirmed through it, its records kept in the
//! job's status.

use super::status::Run;
use super::{cond, machine};
use crate::error::{Error, Result};
use crate::settle_driver::Work;
use crate::settlement::ApiWriter;
use kube::runtime::events::EventType;
use solgrid_crds::JobSettlement;
use solgrid_market::ledger::Intent;
use solgrid_settlement::PassReport;

/// Runs the exactly-once executor over the job's status (off the runtime: the
/// ledger is blocking), planning `intents` (their details `staged`) first.
pub(super) async fn execute(
    r: &mut Run<'_>,
    staged: Vec<JobSettlement>,
    intents: Vec<Intent>,
    retry: Vec<String>,
) -> Result<PassReport> {
    r.st.observed_generation = r.generation();
    if let Err(msg) = crate::settlement::check_escrow_cap(&r.st, &staged, r.job.spec.payment_token)
    {
        r.condition(cond::SETTLED, false, "SettlementRefused", msg.clone());
        r.write().await?;
        r.event(
            EventType::Warning,
            "SettlementRefused",
            msg.clone(),
            "Settle",
        )
        .await;
        return Err(Error::Invalid(format!("settlement refused: {msg}")));
    }
    let writer = ApiWriter {
        api: r.api.clone(),
        name: r.name.clone(),
        field_manager: r.ctx.config.field_manager.clone(),
        handle: tokio::runtime::Handle::current(),
        resource_version: r.rv.clone(),
    };
    let mut store = crate::settlement::job_store(
        r.uid.clone(),
        r.job.spec.payment_token,
        r.st.clone(),
        r.now,
        writer,
    );
    store.staged = staged;
    let driven = crate::settle_driver::drive(
        r.ctx.ledger.clone(),
        &r.ctx.metrics,
        "settle",
        store,
        Work { retry, intents },
    )
    .await?;
    let store = driven.store;
    let (status, writer) = store.into_book().into_parts();
    r.st = status;
    r.rv = writer.resource_version;
    r.ctx
        .metrics
        .pending_settlements
        .set(machine::settlements(&r.st).in_flight as i64);
    driven.result
}
