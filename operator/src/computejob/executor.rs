//! The job's side of the exactly-once settlement executor: escrow and
//! settlements are planned, sent and confirmed through it, its records kept in the
//! job's status.

use super::status::Run;
use super::{cond, machine};
use crate::error::{Error, Result};
use crate::settlement::{ApiWriter, JobStore};
use kube::runtime::events::EventType;
use solgrid_crds::JobSettlement;
use solgrid_ledger::{Executor, ExecutorConfig, PassReport};
use solgrid_market::ledger::Intent;

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
    let mut store = JobStore::new(
        r.uid.clone(),
        r.job.spec.payment_token,
        r.st.clone(),
        r.now,
        writer,
    );
    store.staged = staged;
    let ledger = r.ctx.ledger.clone();
    let (store, result) = tokio::task::spawn_blocking(move || {
        let result = (|| {
            let mut exec = Executor::new(&*ledger, &mut store, ExecutorConfig::default());
            for k in &retry {
                exec.retry_failed(k)?;
            }
            exec.plan(&intents)?;
            let mut report = exec.settle_pass()?;
            if report.remaining > 0
                && let Some(e) = ledger.embedded()
            {
                // On the embedded ledger a recorded transaction that was never seen
                // can only be one this process never sent (it died in between):
                // let its validity window pass, then rebuild it.
                let _ = e.tick(e.config().validity_window + 1);
                report = exec.settle_pass()?;
            }
            Ok::<_, solgrid_ledger::SettleError<_, _>>(report)
        })();
        (store, result)
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?;
    let (status, writer) = store.into_parts();
    r.st = status;
    r.rv = writer.resource_version;
    r.ctx
        .metrics
        .pending_settlements
        .set(machine::settlements(&r.st).in_flight as i64);
    result.map_err(|e| {
        r.ctx
            .metrics
            .ledger_errors
            .with_label_values(&[r.ctx.ledger.kind(), "settle"])
            .inc();
        match e {
            solgrid_ledger::SettleError::Store(s) => Error::store(s),
            other => Error::ledger(other),
        }
    })
}
