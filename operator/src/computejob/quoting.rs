//! The Quote step: prices the job from the supply of the models it accepts and
//! locks the quote (or says the budget is below market).

use super::status::Run;
use super::{cond, quote};
use crate::error::{Error, Result};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use solgrid_crds::ComputeJobPhase;
use std::time::Duration;

/// Locks a quote (`None`: on to the next step) or waits a minute for the market
/// (or the cap) to move.
pub(super) async fn lock_quote(r: &mut Run<'_>) -> Result<Option<Action>> {
    let cfg = &r.ctx.config;
    let spec = &r.job.spec;
    // a job accepting several models is priced at the dearest (quote.rs)
    let models = quote::accepted_models(spec, cfg.default_nvidia_model, cfg.default_apple_model)
        .map_err(Error::Invalid)?;
    let supply = r.ctx.supply();
    let classes = quote::classes(&models, |m| supply.get(m));
    let (outcome, model) =
        quote::quote_models(spec, &classes, &cfg.market.pricing, &cfg.market.fees, r.now)
            .map_err(Error::market)?;
    match outcome {
        quote::QuoteOutcome::Locked(q) => {
            let of = if models.len() > 1 {
                let all: Vec<String> = models.iter().map(|m| m.to_string()).collect();
                format!(" (the dearest of {})", all.join(", "))
            } else {
                String::new()
            };
            let msg = format!(
                "{} {} per GPU-hour for {model}{of}; escrow {}",
                q.price_per_gpu_hour, q.token, q.max_cost
            );
            r.st.quote = Some(q);
            r.phase(ComputeJobPhase::Quoted, msg.clone());
            r.condition(cond::QUOTED, true, "PriceLocked", msg.clone());
            r.write().await?;
            r.event(EventType::Normal, "Quoted", msg, "Quote").await;
            Ok(None)
        }
        quote::QuoteOutcome::BelowMarket(msg) => {
            if !r.already_says(cond::QUOTED, "BudgetBelowMarket", &msg) {
                r.st.message = Some(msg.clone());
                r.problem(cond::QUOTED, "BudgetBelowMarket", msg, "Quote")
                    .await?;
            }
            Ok(Some(Action::requeue(Duration::from_secs(60))))
        }
    }
}
