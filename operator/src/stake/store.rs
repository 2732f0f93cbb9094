//! The exactly-once settlement store over a StakePosition's status: each protocol
//! step ([`SettlementStore`]) is one server-side apply of the status, guarded by the
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
use crate::toolkit::ms_time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use solgrid_crds::{
    LedgerRecord, SettlementState as RecState, StakePhase, StakePosition, StakePositionStatus,
};
use solgrid_ledger::{Settlement, SettlementState, SettlementStore};
use solgrid_market::ledger::{Intent, Op};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StakeStoreError {
    #[error("writing StakePosition status: {0}")]
    Kube(#[from] kube::Error),
    #[error("unknown settlement key {0:?}")]
    UnknownKey(String),
    #[error("serializing status: {0}")]
    Serde(#[from] serde_json::Error),
}

/// The store.
pub struct StakeStore {
    api: Api<StakePosition>,
    handle: tokio::runtime::Handle,
    field_manager: String,
    now_ms: u64,
    /// The latest object (after every write).
    pub obj: StakePosition,
    intents: Vec<Intent>,
}

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

impl StakeStore {
    pub fn new(
        api: Api<StakePosition>,
        handle: tokio::runtime::Handle,
        field_manager: String,
        now_ms: u64,
        obj: StakePosition,
        intents: Vec<Intent>,
    ) -> Self {
        StakeStore {
            api,
            handle,
            field_manager,
            now_ms,
            obj,
            intents,
        }
    }

    fn status(&self) -> StakePositionStatus {
        self.obj.status.clone().unwrap_or_default()
    }

    fn write(&mut self, mut status: StakePositionStatus) -> Result<(), StakeStoreError> {
        status.observed_generation = self.obj.metadata.generation;
        let body = status_apply(&self.obj, &status, true);
        let pp = PatchParams::apply(&self.field_manager).force();
        let name = self.obj.name_any();
        let api = self.api.clone();
        let new = self
            .handle
            .block_on(async move { api.patch_status(&name, &pp, &Patch::Apply(body)).await })?;
        self.obj = new;
        Ok(())
    }

    fn update(
        &mut self,
        keys: &[String],
        f: impl Fn(&mut LedgerRecord),
    ) -> Result<StakePositionStatus, StakeStoreError> {
        let mut st = self.status();
        for k in keys {
            let r = st
                .operations
                .iter_mut()
                .find(|r| &r.key == k)
                .ok_or_else(|| StakeStoreError::UnknownKey(k.clone()))?;
            f(r);
        }
        Ok(st)
    }

    fn intent(&self, key: &str) -> Option<&Intent> {
        self.intents.iter().find(|i| i.key == key)
    }

    fn settlement(&self, r: &LedgerRecord) -> Option<Settlement> {
        let intent = self.intent(&r.key)?.clone();
        let state = match r.state {
            RecState::Planned => SettlementState::Planned,
            RecState::Sent => SettlementState::Sent {
                signature: r.signature.clone().unwrap_or_default(),
                last_valid_block_height: r.last_valid_block_height.unwrap_or(0),
            },
            RecState::Confirmed => SettlementState::Confirmed {
                signature: r.signature.clone().unwrap_or_default(),
            },
            RecState::Failed => SettlementState::Failed {
                signature: r.signature.clone(),
                reason: r.error.clone().unwrap_or_default(),
            },
        };
        Some(Settlement {
            intent,
            state,
            payload: None,
        })
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

impl SettlementStore for StakeStore {
    type Error = StakeStoreError;

    fn record_plan(&mut self, intent: &Intent) -> Result<(), Self::Error> {
        let mut st = self.status();
        st.operations.push(LedgerRecord {
            key: intent.key.clone(),
            purpose: purpose_of(&intent.key).to_string(),
            state: RecState::Planned,
            ..Default::default()
        });
        self.intents.retain(|i| i.key != intent.key);
        self.intents.push(intent.clone());
        self.write(st)
    }

    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        last_valid_block_height: u64,
        _payload: &[u8],
    ) -> Result<(), Self::Error> {
        let st = self.update(keys, |r| {
            r.state = RecState::Sent;
            r.signature = Some(signature.to_string());
            r.last_valid_block_height = Some(last_valid_block_height);
            r.error = None;
        })?;
        self.write(st)
    }

    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), Self::Error> {
        let now = ms_time(self.now_ms);
        let mut st = self.update(keys, |r| {
            r.state = RecState::Confirmed;
            r.signature = Some(signature.to_string());
            r.confirmed_at = Some(now.clone());
            r.error = None;
        })?;
        for k in keys {
            let amount = amount_of(self.intent(k));
            match purpose_of(k) {
                LOCK => {
                    st.phase = StakePhase::Active;
                    st.locked = amount;
                    st.active_since = Some(now.clone());
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
        self.write(st)
    }

    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), Self::Error> {
        let mut st = self.update(keys, |r| {
            r.state = RecState::Failed;
            r.signature = signature.map(str::to_string);
            r.error = Some(reason.to_string());
        })?;
        if keys.iter().any(|k| purpose_of(k) == LOCK) {
            st.message = Some(format!(
                "locking the stake failed (nothing moved): {reason}; delete and recreate the StakePosition to try again"
            ));
        }
        self.write(st)
    }

    fn record_replan(&mut self, keys: &[String]) -> Result<(), Self::Error> {
        let st = self.update(keys, |r| {
            r.state = RecState::Planned;
            r.signature = None;
            r.last_valid_block_height = None;
            r.error = None;
        })?;
        self.write(st)
    }

    fn get(&self, key: &str) -> Result<Option<Settlement>, Self::Error> {
        Ok(self
            .status()
            .operations
            .iter()
            .find(|r| r.key == key)
            .and_then(|r| self.settlement(r)))
    }

    fn unsettled(&self) -> Result<Vec<Settlement>, Self::Error> {
        Ok(self
            .status()
            .operations
            .iter()
            .filter(|r| super::machine::unsettled(r))
            .filter_map(|r| self.settlement(r))
            .collect())
    }
}
