//! The exactly-once settlement store of the operator's scheduled tasks (idle rewards,
//! buyback): their state is JSON in one ConfigMap in the operator's namespace (key
//! `state.json`), and the settlements of the round in progress live in it, so the
//! `solgrid_settlement` executor records each plan before anything is sent, then
//! its signature, then its confirmation. Every write is guarded by the ConfigMap's
//! `resourceVersion` (a stale replica's write fails with 409 and changes nothing).

use crate::settle_driver::{self, Work};
use crate::{Context, Error, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use solgrid_market::ledger::Intent;
use solgrid_settlement::{Settlement, SettlementState, SettlementStore};
use std::collections::BTreeMap;

/// The key of the state in its ConfigMap.
pub const STATE_KEY: &str = "state.json";

/// A task's durable state: it holds the settlements of the round in progress.
pub trait Rounds: Default + Serialize + DeserializeOwned + Send + 'static {
    /// The round's settlements; `None` when no round is in progress.
    fn settlements(&self) -> Option<&Vec<Settlement>>;
    fn settlements_mut(&mut self) -> Option<&mut Vec<Settlement>>;
}

/// A task's state in its ConfigMap.
pub struct ConfigMapStore<S> {
    api: Api<ConfigMap>,
    name: String,
    handle: tokio::runtime::Handle,
    pub state: S,
    resource_version: Option<String>,
    exists: bool,
}

impl<S: Rounds> ConfigMapStore<S> {
    /// Reads the state of ConfigMap `name` (default when it does not exist).
    pub async fn load(api: Api<ConfigMap>, name: &str) -> Result<Self> {
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
        Ok(ConfigMapStore {
            api,
            name: name.to_string(),
            handle: tokio::runtime::Handle::current(),
            state,
            resource_version: rv,
            exists,
        })
    }

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

    fn round_mut(&mut self) -> Result<&mut Vec<Settlement>> {
        self.state
            .settlements_mut()
            .ok_or_else(|| Error::store("no round in progress"))
    }

    fn set(&mut self, keys: &[String], state: SettlementState) -> Result<()> {
        let round = self.round_mut()?;
        for k in keys {
            let s = round
                .iter_mut()
                .find(|s| &s.intent.key == k)
                .ok_or_else(|| Error::store(format!("unknown settlement key {k:?}")))?;
            s.state = state.clone();
            s.payload = None;
        }
        self.save_blocking()
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

/// Errors of the store, as the executor sees them (the operator's error kept whole).
#[derive(Debug, thiserror::Error)]
pub enum StoreErr {
    #[error("settlement {0:?} already planned")]
    AlreadyPlanned(String),
    #[error(transparent)]
    Write(#[from] Error),
}

impl<S: Rounds> SettlementStore for ConfigMapStore<S> {
    type Error = StoreErr;

    fn record_plan(&mut self, intent: &Intent) -> Result<(), StoreErr> {
        let round = self.round_mut()?;
        if round.iter().any(|s| s.intent.key == intent.key) {
            return Err(StoreErr::AlreadyPlanned(intent.key.clone()));
        }
        round.push(Settlement {
            intent: intent.clone(),
            state: SettlementState::Planned,
            payload: None,
        });
        Ok(self.save_blocking()?)
    }
    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        lvbh: u64,
        _payload: &[u8],
    ) -> Result<(), StoreErr> {
        Ok(self.set(
            keys,
            SettlementState::Sent {
                signature: signature.into(),
                last_valid_block_height: lvbh,
            },
        )?)
    }
    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), StoreErr> {
        Ok(self.set(
            keys,
            SettlementState::Confirmed {
                signature: signature.into(),
            },
        )?)
    }
    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), StoreErr> {
        Ok(self.set(
            keys,
            SettlementState::Failed {
                signature: signature.map(str::to_string),
                reason: reason.into(),
            },
        )?)
    }
    fn record_replan(&mut self, keys: &[String]) -> Result<(), StoreErr> {
        Ok(self.set(keys, SettlementState::Planned)?)
    }
    fn get(&self, key: &str) -> Result<Option<Settlement>, StoreErr> {
        Ok(self
            .state
            .settlements()
            .and_then(|r| r.iter().find(|s| s.intent.key == key).cloned()))
    }
    fn unsettled(&self) -> Result<Vec<Settlement>, StoreErr> {
        Ok(self
            .state
            .settlements()
            .map(|r| {
                r.iter()
                    .filter(|s| s.state.is_unsettled())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}
