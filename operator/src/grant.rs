//! The LedgerGrant controller: an admin's funding of a wallet on the embedded
//! ledger, executed exactly once.
//!
//! A `LedgerGrant` (cluster-scoped; only cluster administrators may create one: the
//! chart gives no tenant role any verb on it, and the operator only reads it and
//! writes its status) asks to mint `spec.amount` base units of `spec.token` into
//! `spec.wallet`. The operator calls the embedded ledger's `grant` with the key
//! `grant/<metadata.uid>`: the ledger mints at most once per key, whatever crashes
//! or replays happen (a reconcile after the mint and before the status write finds
//! the key in the ledger's audit log and records that transaction). The status
//! records the key, the ledger transaction (signature and journal position) and
//! when; an Event says it too. The spec is immutable (CEL), so what the status
//! records is what was asked.
//!
//! On Solana the operator has no admin mint for wallets: the status says
//! `Unsupported` (fund the wallet on chain instead).

use crate::toolkit::{event, ms_time, now_ms, publish, set_condition};
use crate::{Context, Error, Result};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use solgrid_crds::{LedgerGrant, LedgerGrantPhase, LedgerGrantStatus};
use std::sync::Arc;

/// The controller's name (metrics label).
pub const CONTROLLER: &str = "ledgergrant";
/// The condition saying whether the grant was executed.
pub const COND_EXECUTED: &str = "Executed";

/// The ledger's idempotency key of a grant.
pub fn grant_key(uid: &str) -> String {
    format!("grant/{uid}")
}

/// Runs the LedgerGrant controller until the stream ends (shutdown).
pub async fn run(ctx: Arc<Context>) {
    let api: Api<LedgerGrant> = Api::all(ctx.client.clone());
    if let Err(e) = api.list(&ListParams::default().limit(1)).await {
        tracing::error!(error = %e, "LedgerGrant CRD is not queryable; is it installed?");
    }
    crate::toolkit::drive(
        CONTROLLER,
        Controller::new(api, watcher::Config::default().any_semantic()).run(
            reconcile,
            error_policy,
            ctx,
        ),
    )
    .await;
}

/// Backoff per object.
pub fn error_policy(obj: Arc<LedgerGrant>, err: &Error, ctx: Arc<Context>) -> Action {
    let name = obj.name_any();
    tracing::warn!(ledgergrant = %name, error = %err, "reconcile failed");
    crate::toolkit::requeue_failed(&ctx, CONTROLLER, &format!("lg:{name}"), err)
}

/// Executes a grant once; a grant already decided (executed, failed, unsupported)
/// is left alone.
pub async fn reconcile(grant: Arc<LedgerGrant>, ctx: Arc<Context>) -> Result<Action> {
    let name = grant.name_any();
    let before = grant.status.clone().unwrap_or_default();
    if before.phase != LedgerGrantPhase::Pending {
        return Ok(Action::await_change());
    }
    let uid = grant.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let key = grant_key(&uid);
    let spec = grant.spec.clone();
    let now = now_ms(&ctx);
    let mut st = before.clone();
    st.key = Some(key.clone());
    st.observed_generation = grant.metadata.generation;
    let k = key.clone();
    let outcome = ctx
        .with_ledger(move |l| {
            l.grant(&k, &spec.wallet, spec.token.into(), spec.amount)
                .map(|r| r.map_err(|e| e.to_string()))
        })
        .await?;
    let (warning, reason, msg) = match outcome {
        None => {
            st.phase = LedgerGrantPhase::Unsupported;
            let msg = "the operator settles on Solana, which has no admin mint for wallets: \
                       transfer the tokens to the wallet on chain"
                .to_string();
            (true, "Unsupported", msg)
        }
        Some(Ok(receipt)) => {
            st.phase = LedgerGrantPhase::Executed;
            st.signature = Some(receipt.signature.clone());
            st.ledger_seq = Some(receipt.seq);
            st.executed_at = Some(ms_time(now));
            let msg = format!(
                "minted {} {} base units into wallet {} (ledger transaction {}, journal #{}{})",
                grant.spec.amount,
                grant.spec.token,
                grant.spec.wallet,
                receipt.signature,
                receipt.seq,
                if receipt.replayed {
                    "; found already granted"
                } else {
                    ""
                }
            );
            (false, "Granted", msg)
        }
        Some(Err(e)) => {
            // a wallet no key can sign for, or a mint that cannot land (supply
            // overflow): nothing moved, and retrying the same spec cannot help
            st.phase = LedgerGrantPhase::Failed;
            (true, "GrantFailed", format!("nothing moved: {e}"))
        }
    };
    st.message = Some(msg.clone());
    set_condition(
        &mut st.conditions,
        COND_EXECUTED,
        st.phase == LedgerGrantPhase::Executed,
        reason,
        &msg,
        grant.metadata.generation,
        now,
    );
    write_status(&ctx, &grant, &st).await?;
    if warning {
        tracing::warn!(ledgergrant = %name, %reason, "{msg}");
    } else {
        tracing::info!(ledgergrant = %name, wallet = %grant.spec.wallet, amount = grant.spec.amount, token = %grant.spec.token, "ledger grant executed");
    }
    publish(&ctx, grant.as_ref(), event(warning, reason, "Grant", msg)).await;
    ctx.reset_failures(&format!("lg:{name}"));
    Ok(Action::await_change())
}

/// Server-side apply of the status, guarded by the object's resourceVersion.
async fn write_status(ctx: &Context, grant: &LedgerGrant, st: &LedgerGrantStatus) -> Result<()> {
    let api: Api<LedgerGrant> = Api::all(ctx.client.clone());
    let body = json!({
        "apiVersion": solgrid_crds::API_VERSION,
        "kind": "LedgerGrant",
        "metadata": {
            "name": grant.name_any(),
            "resourceVersion": grant.meta().resource_version,
        },
        "status": st,
    });
    let pp = PatchParams::apply(&ctx.config.field_manager).force();
    api.patch_status(&grant.name_any(), &pp, &Patch::Apply(body))
        .await?;
    Ok(())
}
