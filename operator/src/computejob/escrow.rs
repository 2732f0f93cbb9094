//! The Fund step: reads the payer's wallet from its Secret, moves the quote's
//! maximum cost into escrow through the exactly-once executor, and reports it.

use super::executor::execute;
use super::status::Run;
use super::{IN_FLIGHT_POLL, cond};
use crate::error::{Error, Result};
use crate::settlement::escrow_intent;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use solgrid_crds::{ComputeJobPhase, SECRET_ADDRESS_KEY, SECRET_KEYPAIR_KEY, SettlementState};
use std::time::Duration;
use tracing::debug;

/// Why the payer's wallet cannot be used: a reason and a message.
type Refusal = (&'static str, String);

/// Reads the payer's wallet from the Secret in the job's own namespace. The
/// keypair is handed to the ledger and dropped; neither is logged.
async fn payer_wallet(r: &mut Run<'_>) -> Result<std::result::Result<String, Refusal>> {
    let secret_name = r.job.spec.payer_secret_ref.name.clone();
    let api: Api<Secret> = Api::namespaced(r.ctx.client.clone(), &r.ns);
    let Some(secret) = api.get_opt(&secret_name).await? else {
        return Ok(Err((
            "PayerSecretMissing",
            format!("Secret {secret_name} not found in namespace {}", r.ns),
        )));
    };
    let data = secret.data.unwrap_or_default();
    let address = data
        .get(SECRET_ADDRESS_KEY)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .map(|s| s.trim().to_string());
    let Some(address) = address.filter(|a| crate::wallet::valid_wallet(a)) else {
        return Ok(Err((
            "PayerSecretInvalid",
            format!("Secret {secret_name} has no valid base58 `{SECRET_ADDRESS_KEY}`"),
        )));
    };
    // the escrow moves out of this wallet only with its owner's keypair (every ledger)
    let kp = data.get(SECRET_KEYPAIR_KEY).map(|b| b.0.clone());
    if let Err(msg) = crate::wallet::authorize_debits(r.ctx, &secret_name, &address, kp).await? {
        return Ok(Err(("PayerSecretInvalid", msg)));
    }
    Ok(Ok(address))
}

/// Reads the payer's wallet (every time: the owner's keypair signs the escrow,
/// again after a restart) and records it before the escrow is planned; once it
/// is, the Secret must keep naming the same wallet. `Some(action)`: it cannot be
/// used (said once by a condition and an Event).
async fn check_payer(r: &mut Run<'_>) -> Result<Option<Action>> {
    let escrow_recorded = r.st.escrow.is_some();
    let read = match payer_wallet(r).await? {
        Ok(addr) if escrow_recorded && r.st.payer_wallet.as_deref() != Some(addr.as_str()) => {
            Err((
                "PayerSecretChanged",
                format!(
                    "Secret {} now names wallet {addr}, not the wallet this escrow was planned from",
                    r.job.spec.payer_secret_ref.name
                ),
            ))
        }
        other => other,
    };
    match read {
        Ok(addr) => {
            if !escrow_recorded {
                r.st.payer_wallet = Some(addr);
            }
            Ok(None)
        }
        Err((reason, msg)) => {
            r.problem(cond::FUNDED, reason, msg, "Fund").await?;
            Ok(Some(Action::requeue(Duration::from_secs(60))))
        }
    }
}

/// Moves the maximum cost into escrow (once: the executor resumes a recorded
/// escrow, retries a failed one). `None`: funded, on to the next step.
pub(super) async fn fund(r: &mut Run<'_>) -> Result<Option<Action>> {
    if let Some(action) = check_payer(r).await? {
        return Ok(Some(action));
    }
    let intent = escrow_intent(&r.uid, &r.st, r.job.spec.payment_token)
        .ok_or(Error::MissingField("status.quote"))?;
    let retry: Vec<String> =
        r.st.escrow
            .iter()
            .filter(|e| e.state == SettlementState::Failed)
            .map(|e| e.key.clone())
            .collect();
    let report = execute(r, Vec::new(), vec![intent], retry).await?;
    let escrow = r.st.escrow.clone().unwrap_or_default();
    match escrow.state {
        SettlementState::Confirmed => {
            let max = r.st.quote.as_ref().map(|q| q.max_cost).unwrap_or(0);
            r.st.escrowed = max;
            r.ctx
                .metrics
                .escrowed
                .with_label_values(&[&r.job.spec.payment_token.to_string()])
                .inc_by(max);
            let msg = format!(
                "{max} {} in escrow (signature {})",
                r.job.spec.payment_token,
                escrow.signature.clone().unwrap_or_default()
            );
            r.phase(ComputeJobPhase::Funded, msg.clone());
            r.condition(cond::FUNDED, true, "EscrowConfirmed", msg.clone());
            r.write().await?;
            r.event(EventType::Normal, "Funded", msg, "Fund").await;
            Ok(None)
        }
        SettlementState::Failed => {
            let msg = format!(
                "escrow transaction failed: {}",
                escrow.error.clone().unwrap_or_default()
            );
            r.condition(cond::FUNDED, false, "EscrowFailed", msg.clone());
            r.write().await?;
            r.event(EventType::Warning, "EscrowFailed", msg, "Fund")
                .await;
            Ok(Some(Action::requeue(Duration::from_secs(60))))
        }
        _ => {
            debug!(job = %r.name, ?report, "escrow in flight");
            Ok(Some(Action::requeue(IN_FLIGHT_POLL)))
        }
    }
}
