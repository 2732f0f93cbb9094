//! The exactly-once settlement store of the operator's scheduled tasks (idle rewards,
//! buyback): their state is JSON in one ConfigMap in the operator's namespace (key
//! `state.json`), and the settlements of the round in progress live in it, so the
//! `solgrid_settlement` executor records each plan before anything is sent, then
//! its signature, then its confirmation. Every write is guarded by the ConfigMap's
//! `resourceVersion` (a stale replica's write fails with 409 and changes nothing).

use crate::records::{Book, RecordStore, StoreError};
use crate::settle_driver::{self, Work};
use crate::{Context, Error, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use solgrid_market::ledger::Intent;
use solgrid_settlement::StoreError as Protocol;
use solgrid_settlement::{Settlement, SettlementState};
use std::collections::BTreeMap;

/// The key of the state in its ConfigMap.
pub const STATE_KEY: &str = "state.json";

/// A task's durable state: it holds the settlements of the round in progress.
pub trait Rounds: Default + Serialize + DeserializeOwned + Send + 'static {
    /// The round's settlements; `None` when no round is in progress.
    fn settlements(&self) -> Option<&Vec<Settlement>>;
    fn settlements_mut(&mut self) -> Option<&mut Vec<Settlement>>;
}

/// A task's state in its ConfigMap: the records of its round in progress.
pub struct ConfigMapBook<S> {
    api: Api<ConfigMap>,
    name: String,
    handle: tokio::runtime::Handle,
    pub state: S,
    resource_version: Option<String>,
    exists: bool,
}

/// A task's settlement store (the operator's one store, [`crate::records`]).
pub type ConfigMapStore<S> = RecordStore<ConfigMapBook<S>>;

/// Reads the state of ConfigMap `name` (default when it does not exist).
pub async fn load<S: Rounds>(api: Api<ConfigMap>, name: &str) -> Result<ConfigMapStore<S>> {
    let cm = api.get_opt(name).await?;
    let (state, rv, exists) = match cm {
        None => (S::default(), None, false),
        Some(cm) => {
            let text = cm
                .data
                .as_ref()
                .and_then(|d| d.get(STATE_KEY))
                .cloned()
                .unwrap_or_default();
            let state = if text.is_empty() {
                S::default()
            } else {
                serde_json::from_str(&text)
                    .map_err(|e| Error::Invalid(format!("{name}/{STATE_KEY}: {e}")))?
            };
            (state, cm.resource_version(), true)
        }
    };
    Ok(RecordStore::from_book(ConfigMapBook {
        api,
        name: name.to_string(),
        handle: tokio::runtime::Handle::current(),
        state,
        resource_version: rv,
        exists,
    }))
}

impl<S: Rounds> ConfigMapBook<S> {
    fn body(&self) -> Result<ConfigMap, serde_json::Error> {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(self.name.clone());
        cm.metadata.resource_version = self.resource_version.clone();
        cm.metadata.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            "solgrid".to_string(),
        )]));
        cm.data = Some(BTreeMap::from([(
            STATE_KEY.to_string(),
            serde_json::to_string(&self.state)?,
        )]));
        Ok(cm)
    }

    /// Writes the state (create, or replace guarded by `resourceVersion`).
    pub async fn save(&mut self) -> Result<()> {
        let body = self.body()?;
        let cm = if self.exists {
            self.api
                .replace(&self.name, &PostParams::default(), &body)
                .await?
        } else {
            self.api.create(&PostParams::default(), &body).await?
        };
        self.exists = true;
        self.resource_version = cm.resource_version();
        Ok(())
    }

    fn save_blocking(&mut self) -> Result<()> {
        let handle = self.handle.clone();
        handle.block_on(self.save())
    }

    fn round_mut(&mut self) -> Result<&mut Vec<Settlement>, StoreError> {
        self.state.settlements_mut().ok_or(StoreError::NoRound)
    }

    /// Whether every settlement of the round in progress is confirmed (`false`
    /// when there is no round).
    pub fn all_confirmed(&self) -> bool {
        self.state.settlements().is_some_and(|s| {
            s.iter()
                .all(|s| matches!(s.state, SettlementState::Confirmed { .. }))
        })
    }
}

/// Runs one pass of the settlement executor over the store's round (through the
/// [`settle_driver`](crate::settle_driver): off the runtime, with the embedded
/// ledger's recovery tick; `op` labels the ledger-error metric); returns the store
/// and how many settlements were confirmed.
pub async fn settle_pass<S: Rounds>(
    ctx: &Context,
    op: &'static str,
    store: ConfigMapStore<S>,
) -> Result<(ConfigMapStore<S>, usize)> {
    let d =
        settle_driver::drive(ctx.ledger.clone(), &ctx.metrics, op, store, Work::drive()).await?;
    Ok((d.store, d.result?.confirmed))
}

impl<S: Rounds> Book for ConfigMapBook<S> {
    type Error = StoreError;

    fn settlements(&self) -> Result<Vec<Settlement>, StoreError> {
        Ok(self.state.settlements().cloned().unwrap_or_default())
    }

    /// One settlement, cloned alone (the executor asks for each key of a round;
    /// a round has a payout per node).
    fn get(&self, key: &str) -> Result<Option<Settlement>, StoreError> {
        Ok(self
            .state
            .settlements()
            .and_then(|r| r.iter().find(|s| s.intent.key == key).cloned()))
    }

    fn plan(&mut self, intent: &Intent) -> Result<(), StoreError> {
        let round = self.round_mut()?;
        if round.iter().any(|s| s.intent.key == intent.key) {
            return Err(Protocol::AlreadyPlanned(intent.key.clone()).into());
        }
        round.push(Settlement {
            intent: intent.clone(),
            state: SettlementState::Planned,
            payload: None,
        });
        Ok(())
    }

    fn has(&self, key: &str) -> bool {
        self.state
            .settlements()
            .is_some_and(|r| r.iter().any(|s| s.intent.key == key))
    }

    fn set(&mut self, key: &str, state: &SettlementState, _payload: Option<&[u8]>) {
        if let Ok(round) = self.round_mut()
            && let Some(s) = round.iter_mut().find(|s| s.intent.key == key)
        {
            s.state = state.clone();
            s.payload = None;
        }
    }

    fn write(&mut self) -> Result<(), StoreError> {
        Ok(self.save_blocking()?)
    }
}
