//! The StakePosition controller: lock the stake through the ledger, track it, unbond
//! with the cooldown, withdraw, and slash it when its node is caught cheating (the
//! incident the GpuNode controller records on the GpuNode's own status, see
//! [`slash`]). See [`machine`] for the state machine and [`store`] for the
//! exactly-once records in the status.
//!
//! Each pass ([`reconcile`], behind kube's `finalizer()`): read (the position, its
//! node's incident, the owner's Secret), validate (the lock's signer, the node),
//! plan (the slash, the next step's intents or status), apply (the executor) and
//! update the status, a step at a time.
//!
//! Entry point: [`run`]`(ctx)` — `main` spawns it next to the other controllers
//! (under the leader lease). It watches StakePositions (all namespaces, or
//! `--watch-namespace`) and GpuNodes with a slash incident (mapped to the positions
//! on them by `spec.nodeName`); the Secrets named by positions are read on demand.
//!
//! A finalizer (`solgrid.dev/stake-protection`) keeps a position from disappearing
//! while tokens are locked: deleting it means unbond (the period still runs), then
//! withdraw to the owner, then release.
//!
//! The owner's wallet comes from the Secret `spec.ownerSecretRef.name` in the
//! position's own namespace (`address`, and `keypair`: every ledger needs the
//! owner's signature to lock the stake, see [`crate::wallet`]). Neither is ever
//! logged; the address is copied to `status.ownerWallet`.

pub mod machine;
pub mod slash;
pub mod store;

use crate::toolkit::{event, ms_time, now_ms, publish, set_condition, time_ms};
use crate::{Context, Error, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use machine::{Step, View};
use solgrid_crds::{GpuNode, GpuNodePhase, StakePhase, StakePosition, StakePositionStatus};
use solgrid_market::ledger::Intent;
use std::sync::Arc;
use std::time::Duration;

pub use solgrid_crds::labels::FINALIZER_STAKE as FINALIZER;
/// The controller's name (metrics label).
pub const CONTROLLER: &str = "stakeposition";

/// Runs the StakePosition controller until the stream ends (shutdown).
pub async fn run(ctx: Arc<Context>) {
    let api: Api<StakePosition> = match &ctx.config.watch_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    if let Err(e) = api.list(&ListParams::default().limit(1)).await {
        tracing::error!(error = %e, "StakePosition CRD is not queryable; is it installed?");
    }
    let concurrency = ctx.config.concurrency;
    let controller = Controller::new(api, watcher::Config::default().any_semantic());
    let positions = controller.store();
    let seen = slash::Seen::default();
    let results = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        // a node's slash incident wakes the positions on it (see [`slash`])
        .watches(
            Api::<GpuNode>::all(ctx.client.clone()),
            watcher::Config::default().any_semantic(),
            move |gn: GpuNode| slash::positions_of(&gn, &positions.state(), &seen),
        )
        // shutdown: main drops this future when the leader lease is lost or on SIGTERM
        .run(reconcile, error_policy, ctx);
    crate::toolkit::drive(CONTROLLER, results).await;
}

/// Backoff per object; a malformed object waits long (an edit re-triggers it).
pub fn error_policy(obj: Arc<StakePosition>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    tracing::warn!(stakeposition = %key, error = %err, "reconcile failed");
    crate::toolkit::requeue_failed(&ctx, CONTROLLER, &format!("sp:{key}"), err)
}

/// The owner's address (and keypair bytes) from the Secret, or why not.
async fn read_wallet(
    ctx: &Context,
    ns: &str,
    sp: &StakePosition,
) -> Result<std::result::Result<(String, Option<Vec<u8>>), String>> {
    let name = &sp.spec.owner_secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = match secrets.get_opt(name).await? {
        Some(s) => s,
        None => return Ok(Err(format!("owner Secret {name:?} not found"))),
    };
    let field = |k: &str| solgrid_crds::secret_value(&secret, k);
    let Some(addr) = field(solgrid_crds::SECRET_ADDRESS_KEY) else {
        return Ok(Err(format!("owner Secret {name:?} has no `address` key")));
    };
    let addr = String::from_utf8(addr)
        .unwrap_or_default()
        .trim()
        .to_string();
    if !crate::wallet::valid_wallet(&addr) {
        return Ok(Err(format!(
            "owner Secret {name:?}: `address` is not a base58 Solana address"
        )));
    }
    Ok(Ok((addr, field(solgrid_crds::SECRET_KEYPAIR_KEY))))
}

/// Applies a status (guarded by the object's resourceVersion) and returns the new object.
async fn apply_status(
    ctx: &Context,
    api: &Api<StakePosition>,
    sp: &StakePosition,
    mut status: StakePositionStatus,
) -> Result<StakePosition> {
    status.observed_generation = sp.metadata.generation;
    let body = store::status_apply(sp, &status, true);
    let pp = PatchParams::apply(&ctx.config.field_manager).force();
    Ok(api
        .patch_status(&sp.name_any(), &pp, &Patch::Apply(body))
        .await?)
}

/// Runs the executor on a blocking thread: plans `new` intents and makes one pass.
async fn execute(
    ctx: &Context,
    api: Api<StakePosition>,
    sp: StakePosition,
    new: Vec<Intent>,
) -> Result<StakePosition> {
    let st = sp.status.clone().unwrap_or_default();
    let uid = sp.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let known = machine::intents_of(
        &uid,
        st.owner_wallet.as_deref(),
        sp.spec.amount,
        st.locked,
        &ctx.config.market.staking,
        &st.operations,
    )
    .map_err(Error::market)?;
    let store = store::stake_store(
        api,
        tokio::runtime::Handle::current(),
        ctx.config.field_manager.clone(),
        now_ms(ctx),
        sp,
        known,
    );
    let driven = crate::settle_driver::drive(
        ctx.ledger.clone(),
        &ctx.metrics,
        "stake",
        store,
        crate::settle_driver::Work::plan(new),
    )
    .await?;
    let report = driven.result?;
    tracing::debug!(
        confirmed = report.confirmed,
        waiting = report.waiting,
        "stake settle pass"
    );
    Ok(driven.store.into_book().obj)
}

/// Events for what changed between two statuses.
async fn transition_events(ctx: &Context, before: &StakePositionStatus, after: &StakePosition) {
    let Some(st) = after.status.as_ref() else {
        return;
    };
    if before.phase != st.phase {
        let (warning, reason) = match st.phase {
            StakePhase::Active => (false, "StakeLocked"),
            StakePhase::Unbonding => (false, "UnbondingStarted"),
            StakePhase::Withdrawn => (false, "StakeWithdrawn"),
            StakePhase::Slashed => (true, "StakeSlashed"),
            StakePhase::Pending => (false, "Pending"),
        };
        let note = format!(
            "{:?} -> {:?}: {}",
            before.phase,
            st.phase,
            st.message.clone().unwrap_or_default()
        );
        publish(ctx, after, event(warning, reason, "Reconcile", note)).await;
    } else if st.slashed_amount > before.slashed_amount {
        let note = format!(
            "{} base units burned",
            st.slashed_amount - before.slashed_amount
        );
        publish(ctx, after, event(true, "StakeSlashed", "Slash", note)).await;
    }
    for r in &st.operations {
        let was = before
            .operations
            .iter()
            .find(|b| b.key == r.key)
            .map(|b| b.state);
        if r.state == solgrid_crds::SettlementState::Failed
            && was != Some(solgrid_crds::SettlementState::Failed)
        {
            let note = format!(
                "{} failed: {}",
                r.purpose,
                r.error.clone().unwrap_or_default()
            );
            publish(
                ctx,
                after,
                event(true, "LedgerOperationFailed", "Settle", note),
            )
            .await;
        }
    }
}

/// Reconciles one StakePosition (module docs), behind kube's [`finalizer`]: it is
/// added first; on deletion the position unbonds and withdraws, and the finalizer
/// goes once nothing is locked (until then the cleanup reports
/// [`Error::SettlementPending`] and is retried).
pub async fn reconcile(obj: Arc<StakePosition>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = obj
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let key = format!("sp:{ns}/{}", obj.name_any());
    let api: Api<StakePosition> = Api::namespaced(ctx.client.clone(), &ns);
    let (c, a) = (ctx.clone(), api.clone());
    let action = finalizer(&api, FINALIZER, obj, |ev| async move {
        match ev {
            Finalizer::Apply(sp) => Ok(match step(&c, &a, &ns, (*sp).clone(), false).await? {
                Done::Requeue(action) => action,
                Done::Release => Action::await_change(),
            }),
            Finalizer::Cleanup(sp) => match step(&c, &a, &ns, (*sp).clone(), true).await? {
                Done::Release => {
                    let note = "nothing locked any more: the StakePosition can go";
                    publish(&c, &*sp, event(false, "FinalizerRemoved", "Delete", note)).await;
                    Ok(Action::await_change())
                }
                Done::Requeue(_) => Err(Error::SettlementPending(format!(
                    "{} still holds tokens: unbonding, then withdrawing",
                    sp.name_any()
                ))),
            },
        }
    })
    .await
    .map_err(Error::from)?;
    ctx.reset_failures(&key);
    Ok(action)
}

/// How a pass ended.
enum Done {
    Requeue(Action),
    /// Nothing is locked any more: the finalizer can go.
    Release,
}

/// One pass: plans a slash of the node's incident, then up to a few steps of the
/// state machine ([`machine::decide`]); each step writes, so a crash in between
/// resumes.
async fn step(
    ctx: &Context,
    api: &Api<StakePosition>,
    ns: &str,
    sp: StakePosition,
    deleting: bool,
) -> Result<Done> {
    let now = now_ms(ctx);
    let mut sp = plan_slash(ctx, api, sp, now).await?;
    for _ in 0..4 {
        let before = sp.status.clone().unwrap_or_default();
        let view = View {
            phase: before.phase,
            amount: sp.spec.amount,
            locked: before.locked,
            unbond: sp.spec.unbond,
            deleting,
            owner_wallet: before.owner_wallet.as_deref(),
            unbonding_ends_ms: before.unbonding_ends_at.as_ref().map(time_ms),
            operations: &before.operations,
        };
        let decided = machine::decide(&view, now);
        tracing::debug!(stakeposition = %sp.name_any(), step = ?decided, "stake step");
        let next = match decided {
            Step::Execute | Step::PlanLock | Step::PlanWithdraw => {
                if let Some(why) = refusal(ctx, ns, &sp, &before, &decided).await? {
                    return wait_with(ctx, api, sp, &why, now).await.map(Done::Requeue);
                }
                let uid = sp.uid().ok_or(Error::MissingField("metadata.uid"))?;
                let new = new_intents(&decided, &uid, &before, sp.spec.amount);
                let after = execute(ctx, api.clone(), sp, new).await?;
                transition_events(ctx, &before, &after).await;
                if after
                    .status
                    .as_ref()
                    .is_some_and(|s| s.operations.iter().any(machine::unsettled))
                {
                    return Ok(Done::Requeue(Action::requeue(Duration::from_secs(5))));
                }
                after
            }
            Step::ReadWallet => match read_wallet(ctx, ns, &sp).await? {
                Ok((addr, _)) => {
                    let st = wallet_found(&before, addr, sp.metadata.generation, now);
                    apply_status(ctx, api, &sp, st).await?
                }
                Err(why) => return wait_with(ctx, api, sp, &why, now).await.map(Done::Requeue),
            },
            Step::StartUnbonding | Step::MarkWithdrawn => {
                let unbonding_ms = ctx.config.market.staking.unbonding_ms;
                let st = if decided == Step::MarkWithdrawn {
                    withdrawn(&before)
                } else {
                    unbonding(&before, deleting, unbonding_ms, sp.metadata.generation, now)
                };
                let after = apply_status(ctx, api, &sp, st).await?;
                transition_events(ctx, &before, &after).await;
                after
            }
            Step::LockFailed => return Ok(Done::Requeue(Action::await_change())),
            Step::WaitUntil(t) => {
                let d = Duration::from_millis(t.saturating_sub(now)).min(Duration::from_secs(3600));
                return Ok(Done::Requeue(Action::requeue(
                    d.max(Duration::from_secs(1)),
                )));
            }
            Step::Release => return Ok(Done::Release),
            Step::Idle => {
                return Ok(Done::Requeue(match before.phase {
                    StakePhase::Active | StakePhase::Slashed => {
                        Action::requeue(Duration::from_secs(3600))
                    }
                    _ => Action::await_change(),
                }));
            }
        };
        sp = next;
    }
    Ok(Done::Requeue(Action::requeue(Duration::from_secs(1))))
}

/// Plan: records the slash of the node's incident in the position's status
/// (exactly once per incident, see [`slash`]); the executor then burns it.
async fn plan_slash(
    ctx: &Context,
    api: &Api<StakePosition>,
    sp: StakePosition,
    now: u64,
) -> Result<StakePosition> {
    let Some(st) = sp.status.as_ref().filter(|s| slash::exposed(s)) else {
        return Ok(sp);
    };
    let Some(incident) = slash::incident_of(ctx, &sp).await? else {
        return Ok(sp);
    };
    let uid = sp.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let Some(new) = slash::plan(&uid, st, &incident, sp.metadata.generation, now) else {
        return Ok(sp);
    };
    tracing::warn!(stakeposition = %sp.name_any(), node = %sp.spec.node_name, incident = %incident.id, "slash planned");
    apply_status(ctx, api, &sp, new).await
}

/// Validate: why the lock cannot go ahead now (the owner's Secret, the node), if
/// anything stops it.
async fn refusal(
    ctx: &Context,
    ns: &str,
    sp: &StakePosition,
    before: &StakePositionStatus,
    decided: &Step,
) -> Result<Option<String>> {
    let lock_in_play = *decided == Step::PlanLock
        || before
            .operations
            .iter()
            .any(|r| r.purpose == machine::LOCK && machine::unsettled(r));
    if lock_in_play {
        // the owner signs the transfer into the vault (every ledger): the Secret's
        // keypair must be that of the wallet the lock was planned from
        let why = match read_wallet(ctx, ns, sp).await? {
            Ok((addr, _)) if before.owner_wallet.as_deref() != Some(addr.as_str()) => {
                Some(format!(
                    "owner Secret {:?} now names wallet {addr}, not the wallet this stake was planned from",
                    sp.spec.owner_secret_ref.name
                ))
            }
            Ok((addr, kp)) => {
                crate::wallet::authorize_debits(ctx, &sp.spec.owner_secret_ref.name, &addr, kp)
                    .await?
                    .err()
            }
            Err(why) => Some(why),
        };
        if why.is_some() {
            return Ok(why);
        }
    }
    if *decided == Step::PlanLock {
        return Ok(node_refuses(ctx, &sp.spec.node_name));
    }
    Ok(None)
}

/// Plan: the new ledger intents of a step (the lock, or the withdrawal of what is
/// still locked); none when the executor only drives what is recorded.
fn new_intents(
    decided: &Step,
    uid: &str,
    before: &StakePositionStatus,
    amount: u64,
) -> Vec<Intent> {
    let owner = before.owner_wallet.clone().unwrap_or_default();
    match decided {
        Step::PlanLock => vec![machine::lock_intent(uid, &owner, amount)],
        Step::PlanWithdraw => vec![machine::withdraw_intent(uid, &owner, before.locked)],
        _ => Vec::new(),
    }
}

/// Status: the owner's wallet read from its Secret.
fn wallet_found(
    before: &StakePositionStatus,
    addr: String,
    generation: Option<i64>,
    now: u64,
) -> StakePositionStatus {
    let mut st = before.clone();
    st.owner_wallet = Some(addr);
    st.message = Some("owner wallet found; locking the stake".into());
    set_condition(
        &mut st.conditions,
        "WalletReady",
        true,
        "SecretRead",
        "owner wallet read from its Secret",
        generation,
        now,
    );
    st
}

/// Status: unbonding started (on `spec.unbond` or deletion).
fn unbonding(
    before: &StakePositionStatus,
    deleting: bool,
    unbonding_ms: u64,
    generation: Option<i64>,
    now: u64,
) -> StakePositionStatus {
    let mut st = before.clone();
    let ends = st
        .unbonding_ends_at
        .as_ref()
        .map(time_ms)
        .unwrap_or_else(|| now.saturating_add(unbonding_ms));
    st.phase = StakePhase::Unbonding;
    st.unbonding_ends_at = Some(ms_time(ends));
    st.message = Some(if deleting {
        "deleting: unbonding, then withdrawing to the owner".into()
    } else {
        "unbonding: still backs the node and can be slashed until it ends".into()
    });
    let reason = if deleting {
        "Deleting"
    } else {
        "UnbondRequested"
    };
    set_condition(
        &mut st.conditions,
        "Unbonding",
        true,
        reason,
        "unbonding period running",
        generation,
        now,
    );
    st
}

/// Status: nothing left to withdraw after unbonding (slashed to zero).
fn withdrawn(before: &StakePositionStatus) -> StakePositionStatus {
    let mut st = before.clone();
    st.phase = StakePhase::Withdrawn;
    st.message = Some("nothing left to withdraw".into());
    st
}

/// Why the node does not take new stake (missing from the cache, or slashed).
fn node_refuses(ctx: &Context, node: &str) -> Option<String> {
    let store = ctx.caches.gpunodes.as_ref()?;
    let key = kube::runtime::reflector::ObjectRef::new(node);
    match store.get(&key) {
        None if store.is_empty() => None,
        None => Some(format!("GpuNode {node:?} not found")),
        Some(n)
            if n.status
                .as_ref()
                .is_some_and(|s| s.phase == GpuNodePhase::Slashed) =>
        {
            Some(format!(
                "GpuNode {node:?} is slashed: it takes no new stake"
            ))
        }
        Some(_) => None,
    }
}

/// Records why the position waits (status message + condition) and requeues.
async fn wait_with(
    ctx: &Context,
    api: &Api<StakePosition>,
    sp: StakePosition,
    why: &str,
    now: u64,
) -> Result<Action> {
    let mut st = sp.status.clone().unwrap_or_default();
    if st.message.as_deref() != Some(why) {
        st.message = Some(why.to_string());
        set_condition(
            &mut st.conditions,
            "WalletReady",
            false,
            "Waiting",
            why,
            sp.metadata.generation,
            now,
        );
        let after = apply_status(ctx, api, &sp, st).await?;
        publish(ctx, &after, event(true, "Waiting", "Reconcile", why)).await;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}
