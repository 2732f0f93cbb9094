//! The exactly-once settlement store over a StakePosition's status (the
//! operator's one store, [`crate::records`], over a [`StakeBook`]): each protocol
//! step is one server-side apply of the status, guarded by the
//! object's `resourceVersion` (a concurrent writer makes it fail with 409 instead of
//! being overwritten), and it has happened when the method returns.
//!
//! The records (`status.operations`) keep key, purpose, state, signature and last
//! valid block height; the intents are rebuilt from the position
//! ([`super::machine::intents_of`]). A confirmation applies its effect in the same
//! write: lock ⇒ `Active`, `locked = amount`; withdraw ⇒ `Withdrawn`, `locked = 0`;
//! slash ⇒ `Slashed`, `locked -= burned`, `slashedAmount += burned`.
//!
//! The executor is synchronous: run it on a blocking thread (`spawn_blocking`); the
//! store blocks on the API calls through the runtime's handle.

use super::machine::{LOCK, SLASH, WITHDRAW};
use crate::records::{self, Book, RecordStore, StoreError};
use crate::toolkit::ms_time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use solgrid_crds::{StakePhase, StakePosition, StakePositionStatus};
use solgrid_market::ledger::{Intent, Op};
use solgrid_settlement::{Settlement, SettlementState};

/// The records of one StakePosition.
pub struct StakeBook {
    api: Api<StakePosition>,
    handle: tokio::runtime::Handle,
    field_manager: String,
    now_ms: u64,
    /// The latest object (after every write).
    pub obj: StakePosition,
    /// The status being written (the object's, plus this step's changes).
    status: StakePositionStatus,
    intents: Vec<Intent>,
}

/// The settlement store of one StakePosition.
pub type StakeStore = RecordStore<StakeBook>;

/// The purpose of a key (`<uid>/lock`, `<uid>/withdraw`, `<uid>/slash/<incident>`).
pub fn purpose_of(key: &str) -> &'static str {
    if key.ends_with("/lock") {
        LOCK
    } else if key.ends_with("/withdraw") {
        WITHDRAW
    } else if key.contains("/slash/") {
        SLASH
    } else {
        "other"
    }
}

/// The status apply of a StakePosition (everything the StakePosition controller
/// owns: not `rewardsAccrued`, which the rewards loop writes), guarded by the
/// object's `resourceVersion` when given.
pub fn status_apply(
    obj: &StakePosition,
    status: &StakePositionStatus,
    guard: bool,
) -> serde_json::Value {
    let mut st = serde_json::to_value(crate::kstatus::stake(status)).unwrap_or_default();
    if let Some(m) = st.as_object_mut() {
        m.remove("rewardsAccrued");
    }
    let mut meta = serde_json::json!({ "name": obj.name_any() });
    if let Some(ns) = obj.namespace() {
        meta["namespace"] = ns.into();
    }
    if guard && let Some(rv) = obj.resource_version() {
        meta["resourceVersion"] = rv.into();
    }
    serde_json::json!({
        "apiVersion": StakePosition::api_version(&()),
        "kind": StakePosition::kind(&()),
        "metadata": meta,
        "status": st,
    })
}

/// The settlement store of the position `obj` (its known `intents` rebuilt from
/// it), writing through `api` as `field_manager`.
pub fn stake_store(
    api: Api<StakePosition>,
    handle: tokio::runtime::Handle,
    field_manager: String,
    now_ms: u64,
    obj: StakePosition,
    intents: Vec<Intent>,
) -> StakeStore {
    RecordStore::from_book(StakeBook {
        api,
        handle,
        field_manager,
        now_ms,
        status: obj.status.clone().unwrap_or_default(),
        obj,
        intents,
    })
}

impl StakeBook {
    fn intent(&self, key: &str) -> Option<&Intent> {
        self.intents.iter().find(|i| i.key == key)
    }

    /// What a confirmed operation means for the position.
    fn confirmed(&mut self, key: &str) {
        let amount = amount_of(self.intent(key));
        let now = ms_time(self.now_ms);
        let st = &mut self.status;
        match purpose_of(key) {
            LOCK => {
                st.phase = StakePhase::Active;
                st.locked = amount;
                st.active_since = Some(now);
                st.message = Some("stake locked in the stake vault".into());
            }
            WITHDRAW => {
                st.phase = StakePhase::Withdrawn;
                st.locked = st.locked.saturating_sub(amount);
                st.message = Some("stake withdrawn to the owner".into());
            }
            SLASH => {
                st.phase = StakePhase::Slashed;
                st.locked = st.locked.saturating_sub(amount);
                st.slashed_amount = st.slashed_amount.saturating_add(amount);
                st.message = Some(format!(
                    "{amount} base units burned: the node was caught cheating"
                ));
            }
            _ => {}
        }
    }
}

fn amount_of(intent: Option<&Intent>) -> u64 {
    intent
        .and_then(|i| i.movements.first())
        .map(|m| match &m.op {
            Op::Transfer { amount, .. } | Op::Burn { amount, .. } | Op::Mint { amount, .. } => {
                *amount
            }
        })
        .unwrap_or(0)
}

impl Book for StakeBook {
    type Error = StoreError;

    fn settlements(&self) -> Result<Vec<Settlement>, StoreError> {
        Ok(self
            .status
            .operations
            .iter()
            .filter_map(|r| {
                Some(Settlement {
                    intent: self.intent(&r.key)?.clone(),
                    state: records::state_of(r),
                    payload: None,
                })
            })
            .collect())
    }

    fn plan(&mut self, intent: &Intent) -> Result<(), StoreError> {
        self.status
            .operations
            .push(records::planned(&intent.key, purpose_of(&intent.key)));
        self.intents.retain(|i| i.key != intent.key);
        self.intents.push(intent.clone());
        Ok(())
    }

    fn has(&self, key: &str) -> bool {
        self.status.operations.iter().any(|r| r.key == key)
    }

    fn set(&mut self, key: &str, state: &SettlementState, _payload: Option<&[u8]>) {
        let now = ms_time(self.now_ms);
        if let Some(r) = self.status.operations.iter_mut().find(|r| r.key == key) {
            records::apply(r, state, &now);
        }
    }

    fn effects(&mut self, keys: &[String], state: &SettlementState) {
        match state {
            SettlementState::Confirmed { .. } => {
                for k in keys {
                    self.confirmed(k);
                }
            }
            SettlementState::Failed { reason, .. }
                if keys.iter().any(|k| purpose_of(k) == LOCK) =>
            {
                self.status.message = Some(format!(
                    "locking the stake failed (nothing moved): {reason}; delete and recreate the StakePosition to try again"
                ));
            }
            _ => {}
        }
    }

    /// One guarded server-side apply; on failure the step's changes are dropped
    /// (the status stays what the API server holds).
    fn write(&mut self) -> Result<(), StoreError> {
        self.status.observed_generation = self.obj.metadata.generation;
        let body = status_apply(&self.obj, &self.status, true);
        let pp = PatchParams::apply(&self.field_manager).force();
        let name = self.obj.name_any();
        let api = self.api.clone();
        match self
            .handle
            .block_on(async move { api.patch_status(&name, &pp, &Patch::Apply(body)).await })
        {
            Ok(new) => {
                self.status = new.status.clone().unwrap_or_default();
                self.obj = new;
                Ok(())
            }
            Err(e) => {
                self.status = self.obj.status.clone().unwrap_or_default();
                Err(e.into())
            }
        }
    }
}
