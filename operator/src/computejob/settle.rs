//! Settlement: each completed period while the job runs, then the final one (pay
//! the providers, burn, treasury, refund the rest of the escrow), each planned
//! once, split into parts that each fit one transaction, and confirmed through
//! the exactly-once executor.

use super::executor::execute;
use super::machine::{self, SettlementSummary};
use super::status::Run;
use super::{IN_FLIGHT_POLL, billing, cond, nodebook, observe};
use crate::conditions;
use crate::error::{Error, Result};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use solgrid_crds::{ComputeJobPhase, JobSettlement, SettlementState};
use solgrid_ledger::PassReport;
use solgrid_market::ledger::Intent;
use std::collections::HashMap;
use std::time::Duration;
use tracing::{debug, info};

/// Plans settlement `index` (the final one when `final_period`), split into parts
/// that each fit one transaction by the ledger's own size model. `Err(action)`: a
/// provider's wallet is unknown (a condition and an Event say so; try again later).
async fn plan_next(
    r: &mut Run<'_>,
    index: u32,
    final_period: bool,
) -> Result<std::result::Result<(JobSettlement, Vec<Intent>), Action>> {
    let start_ms =
        r.st.start_time
            .as_ref()
            .map(|t| conditions::from_time(t).timestamp_millis().max(0) as u64);
    let (from, to) = match start_ms {
        Some(s) => {
            let (a, b) = r.ctx.config.periods.bounds(s, index);
            if final_period {
                let end =
                    r.st.end_time
                        .as_ref()
                        .map(|t| conditions::from_time(t).timestamp_millis().max(0) as u64)
                        .unwrap_or(a);
                (a.min(end), end)
            } else {
                (a, b)
            }
        }
        None => (0, 0),
    };
    let wallets = observe::provider_wallets(r.ctx, &r.st).await?;
    let js = match billing::plan(
        &r.uid,
        &r.job.spec,
        &r.st,
        index,
        from,
        to,
        final_period,
        &wallets,
        &r.ctx.config.market.fees,
    ) {
        Ok((js, _)) => js,
        Err(billing::PlanError::UnknownWallet(nodes)) => {
            let msg = format!("no GpuNode payout wallet for node(s) {nodes}");
            r.condition(cond::SETTLED, false, "UnknownProviderWallet", msg.clone());
            r.write().await?;
            r.event(EventType::Warning, "UnknownProviderWallet", msg, "Settle")
                .await;
            return Ok(Err(Action::requeue(Duration::from_secs(60))));
        }
        Err(e) => return Err(Error::market(e)),
    };
    // the ledger's size model may ask the chain (which token accounts exist)
    use solgrid_market::ledger::Ledger as _;
    let ledger = r.ctx.ledger.clone();
    let payer = r.st.payer_wallet.clone().unwrap_or_default();
    let token = r.job.spec.payment_token;
    let (js, intents) = tokio::task::spawn_blocking(move || {
        crate::settlement::split(js, &payer, token, |i| ledger.fits(std::slice::from_ref(i)))
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?
    .map_err(Error::market)?;
    if intents.len() > 1 {
        info!(
            job = %r.name,
            key = %js.record.key,
            parts = intents.len(),
            "settlement split into several transactions"
        );
    }
    Ok(Ok((js, intents)))
}

/// The signatures of a settlement's parts, for messages.
fn signatures(s: &JobSettlement) -> String {
    s.records()
        .map(|r| r.signature.as_deref().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Settles: resumes what is in flight, then (when `plan_next_one`) plans the next
/// settlement (the final one when `final_period`). A settlement split into parts
/// counts as confirmed (and the job as Settled) only once every part is.
pub(super) async fn settle(
    r: &mut Run<'_>,
    plan_next_one: bool,
    final_period: bool,
) -> Result<Option<Action>> {
    let summary = machine::settlements(&r.st);
    if final_period && !machine::escrow_confirmed(&r.st) && r.st.settlements.is_empty() {
        return nothing_to_settle(r).await;
    }
    let retry = failed_keys(r);
    let may_plan = plan_next_one
        && summary.in_flight == 0
        && summary.failed == 0
        && !(final_period && summary.final_recorded);
    let (staged, intents) = if may_plan {
        match plan_next(r, summary.recorded, final_period).await? {
            Ok((js, parts)) => (vec![js], parts),
            Err(action) => return Ok(Some(action)),
        }
    } else {
        (Vec::new(), Vec::new())
    };
    let before: HashMap<String, SettlementState> =
        r.st.settlements
            .iter()
            .map(|s| (s.record.key.clone(), s.state()))
            .collect();
    let report = execute(r, staged, intents, retry).await?;
    let newly: Vec<JobSettlement> =
        r.st.settlements
            .iter()
            .filter(|s| {
                s.state() == SettlementState::Confirmed
                    && before.get(&s.record.key) != Some(&SettlementState::Confirmed)
            })
            .cloned()
            .collect();
    count_confirmed(r, &newly);
    let (totals, left) = billing::totals(&r.st);
    r.st.cost = totals;
    r.st.escrowed = left;
    // the nodes' earnings, before the status that says they are recorded
    let booked = nodebook::sync(r, false).await?;
    announce_confirmed(r, &newly).await;
    let changed = !newly.is_empty() || booked;
    conclude(r, final_period, changed, &report).await
}

/// A job that never escrowed anything is settled at once.
async fn nothing_to_settle(r: &mut Run<'_>) -> Result<Option<Action>> {
    let msg = "nothing was escrowed: nothing to settle".to_string();
    r.phase(ComputeJobPhase::Settled, msg.clone());
    r.condition(cond::SETTLED, true, "NothingToSettle", msg.clone());
    r.write().await?;
    r.event(EventType::Normal, "Settled", msg, "Settle").await;
    Ok(None)
}

/// The keys of the failed settlement records (parts included), to retry.
fn failed_keys(r: &Run<'_>) -> Vec<String> {
    r.st.settlements
        .iter()
        .flat_map(|s| s.records())
        .filter(|r| r.state == SettlementState::Failed)
        .map(|r| r.key.clone())
        .collect()
}

/// Counts what the newly confirmed settlements moved (metrics).
fn count_confirmed(r: &Run<'_>, newly: &[JobSettlement]) {
    let token = r.job.spec.payment_token.to_string();
    let m = &r.ctx.metrics;
    for s in newly {
        m.settled
            .with_label_values(&[&token])
            .inc_by(s.cost.received);
        m.burned.with_label_values(&[&token]).inc_by(s.cost.burned);
        m.to_treasury
            .with_label_values(&[&token])
            .inc_by(s.cost.to_treasury);
        m.refunded
            .with_label_values(&[&token])
            .inc_by(s.cost.refunded);
    }
}

/// An Event per newly confirmed settlement.
async fn announce_confirmed(r: &Run<'_>, newly: &[JobSettlement]) {
    for s in newly {
        let msg = format!(
            "settlement {} confirmed: paid {}, providers {}, burned {}, treasury {}, refunded {} (signature {})",
            s.record.key,
            s.cost.paid,
            s.cost.received,
            s.cost.burned,
            s.cost.to_treasury,
            s.cost.refunded,
            signatures(s)
        );
        r.event(EventType::Normal, "PeriodSettled", msg, "Settle")
            .await;
    }
}

/// Says where the settlements stand after a pass: failed (a condition, retried
/// in a minute), all settled (the job is Settled), or still in flight (looked up
/// again soon). The status is written when it `changed`.
async fn conclude(
    r: &mut Run<'_>,
    final_period: bool,
    changed: bool,
    report: &PassReport,
) -> Result<Option<Action>> {
    let after: SettlementSummary = machine::settlements(&r.st);
    if after.failed > 0 {
        let reasons: Vec<String> =
            r.st.settlements
                .iter()
                .flat_map(|s| s.records())
                .filter(|r| r.state == SettlementState::Failed)
                .map(|r| format!("{}: {}", r.key, r.error.clone().unwrap_or_default()))
                .collect();
        let msg = format!("settlement failed: {}", reasons.join("; "));
        r.condition(cond::SETTLED, false, "SettlementFailed", msg.clone());
        r.write().await?;
        r.event(EventType::Warning, "SettlementFailed", msg, "Settle")
            .await;
        return Ok(Some(Action::requeue(Duration::from_secs(60))));
    }
    if final_period && after.final_confirmed {
        let c = &r.st.cost;
        let msg = format!(
            "settled: paid {}, providers {}, burned {}, treasury {}, refunded {}",
            c.paid, c.received, c.burned, c.to_treasury, c.refunded
        );
        r.phase(ComputeJobPhase::Settled, msg.clone());
        r.condition(cond::SETTLED, true, "Settled", msg.clone());
        r.write().await?;
        r.event(EventType::Normal, "Settled", msg, "Settle").await;
        return Ok(None);
    }
    if changed {
        r.write().await?;
    }
    if after.in_flight > 0 {
        debug!(job = %r.name, ?report, "settlement in flight");
        return Ok(Some(Action::requeue(IN_FLIGHT_POLL)));
    }
    Ok(None)
}
