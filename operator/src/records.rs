//! The operator's one settlement store: the records of the exactly-once protocol
//! kept on the objects themselves.
//!
//! Every kind that settles keeps its records somewhere of its own — a ComputeJob in
//! `status.escrow` and `status.settlements[]`, a StakePosition in
//! `status.operations[]`, the rewards and buyback tasks in their ConfigMap — and
//! writes them with one API call guarded by the object's `resourceVersion` (a stale
//! writer fails with 409 and changes nothing). What a protocol step *does* is the
//! same for all of them, and lives here once: [`RecordStore`] implements
//! [`SettlementStore`] over any [`Book`]:
//!
//! - `record_plan`: the book records the plan ([`Book::plan`]), then one write;
//! - `record_sent` / `record_confirmed` / `record_failed` / `record_replan`: every
//!   key must be known (else nothing changes: [`StoreError::UnknownKey`]), each
//!   record takes the new state ([`Book::set`]; for a [`LedgerRecord`],
//!   [`apply`]), the book applies what that state means for its object
//!   ([`Book::effects`]: a confirmed stake lock makes the position `Active`), then
//!   one write;
//! - `get` / `unsettled`: from the records, with their intents (rebuilt from the
//!   object, or kept with the record).
//!
//! No book keeps transaction payloads (a status is no place for them, and a book
//! writes its keys in one write anyway): a transaction recorded `Sent` that was
//! never seen is rebuilt once its last valid block height has passed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use solgrid_crds::{LedgerRecord, SettlementState as RecState};
use solgrid_market::ledger::Intent;
use solgrid_settlement::{Settlement, SettlementState, SettlementStore};
use std::ops::{Deref, DerefMut};

/// The longest failure reason a record keeps (a status is no place for a log).
pub const MAX_REASON: usize = 512;

/// Errors of the settlement store, each keeping its source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown settlement key {0:?}")]
    UnknownKey(String),
    #[error("settlement {0:?} already planned")]
    AlreadyPlanned(String),
    #[error("no staged plan for key {0:?}")]
    NotStaged(String),
    #[error("no round in progress")]
    NoRound,
    #[error("writing the status: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing the status: {0}")]
    Serde(#[from] serde_json::Error),
    /// The intents could not be rebuilt from the records.
    #[error("{0}")]
    Intents(#[source] crate::error::BoxError),
    #[error(transparent)]
    Operator(#[from] Box<crate::Error>),
    /// A writer other than the API server's failed (tests inject these).
    #[error("writing the status: {0}")]
    Write(String),
}

impl From<crate::Error> for StoreError {
    fn from(e: crate::Error) -> Self {
        StoreError::Operator(Box::new(e))
    }
}

/// Where one object keeps its settlement records, and how it writes them.
pub trait Book: Send {
    /// Every recorded settlement with its intent, in plan order.
    fn settlements(&self) -> Result<Vec<Settlement>, StoreError>;
    /// One recorded settlement (by default: looked up in [`Book::settlements`]).
    fn get(&self, key: &str) -> Result<Option<Settlement>, StoreError> {
        Ok(self
            .settlements()?
            .into_iter()
            .find(|s| s.intent.key == key))
    }
    /// Every `Planned` or `Sent` settlement, in plan order (by default: filtered
    /// from [`Book::settlements`]).
    fn unsettled(&self) -> Result<Vec<Settlement>, StoreError> {
        Ok(self
            .settlements()?
            .into_iter()
            .filter(|s| s.state.is_unsettled())
            .collect())
    }
    /// Records a new plan, `Planned` (in memory: [`Book::write`] follows).
    fn plan(&mut self, intent: &Intent) -> Result<(), StoreError>;
    /// Whether a record is keyed `key`.
    fn has(&self, key: &str) -> bool;
    /// Sets the state of the record keyed `key` (known to exist).
    fn set(&mut self, key: &str, state: &SettlementState);
    /// What records `keys` reaching `state` means for the object, beyond the
    /// records (in memory, written with them).
    fn effects(&mut self, _keys: &[String], _state: &SettlementState) {}
    /// Writes the object: one API call, guarded by its `resourceVersion`.
    fn write(&mut self) -> Result<(), StoreError>;
}

/// A [`Book`] as the executor's [`SettlementStore`]. Derefs to the book.
pub struct RecordStore<B>(B);

impl<B: Book> RecordStore<B> {
    pub fn from_book(book: B) -> Self {
        RecordStore(book)
    }

    pub fn into_book(self) -> B {
        self.0
    }

    fn transition(&mut self, keys: &[String], state: SettlementState) -> Result<(), StoreError> {
        if let Some(k) = keys.iter().find(|k| !self.0.has(k)) {
            return Err(StoreError::UnknownKey(k.clone()));
        }
        for k in keys {
            self.0.set(k, &state);
        }
        self.0.effects(keys, &state);
        self.0.write()
    }
}

impl<B> Deref for RecordStore<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.0
    }
}

impl<B> DerefMut for RecordStore<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.0
    }
}

impl<B: Book> SettlementStore for RecordStore<B> {
    type Error = StoreError;

    fn record_plan(&mut self, intent: &Intent) -> Result<(), StoreError> {
        self.0.plan(intent)?;
        self.0.write()
    }

    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        last_valid_block_height: u64,
        _payload: &[u8],
    ) -> Result<(), StoreError> {
        self.transition(
            keys,
            SettlementState::Sent {
                signature: signature.to_string(),
                last_valid_block_height,
            },
        )
    }

    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), StoreError> {
        self.transition(
            keys,
            SettlementState::Confirmed {
                signature: signature.to_string(),
            },
        )
    }

    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.transition(
            keys,
            SettlementState::Failed {
                signature: signature.map(str::to_string),
                reason: reason.chars().take(MAX_REASON).collect(),
            },
        )
    }

    fn record_replan(&mut self, keys: &[String]) -> Result<(), StoreError> {
        self.transition(keys, SettlementState::Planned)
    }

    fn get(&self, key: &str) -> Result<Option<Settlement>, StoreError> {
        self.0.get(key)
    }

    fn unsettled(&self) -> Result<Vec<Settlement>, StoreError> {
        self.0.unsettled()
    }
}

/// A record taking `state` (`now` stamps a confirmation). A failure keeps the
/// signature it had when it names none (the transaction that was sent).
pub fn apply(r: &mut LedgerRecord, state: &SettlementState, now: &Time) {
    match state {
        SettlementState::Planned => {
            r.state = RecState::Planned;
            r.signature = None;
            r.last_valid_block_height = None;
            r.error = None;
        }
        SettlementState::Sent {
            signature,
            last_valid_block_height,
        } => {
            r.state = RecState::Sent;
            r.signature = Some(signature.clone());
            r.last_valid_block_height = Some(*last_valid_block_height);
            r.error = None;
        }
        SettlementState::Confirmed { signature } => {
            r.state = RecState::Confirmed;
            r.signature = Some(signature.clone());
            r.confirmed_at = Some(now.clone());
            r.error = None;
        }
        SettlementState::Failed { signature, reason } => {
            r.state = RecState::Failed;
            if let Some(s) = signature {
                r.signature = Some(s.clone());
            }
            r.error = Some(reason.clone());
        }
    }
}

/// The executor's state of a record. A record `Sent` without its signature and
/// block height was never sent: `Planned`.
pub fn state_of(r: &LedgerRecord) -> SettlementState {
    match r.state {
        RecState::Planned => SettlementState::Planned,
        RecState::Sent => match (&r.signature, r.last_valid_block_height) {
            (Some(sig), Some(h)) => SettlementState::Sent {
                signature: sig.clone(),
                last_valid_block_height: h,
            },
            _ => SettlementState::Planned,
        },
        RecState::Confirmed => SettlementState::Confirmed {
            signature: r.signature.clone().unwrap_or_default(),
        },
        RecState::Failed => SettlementState::Failed {
            signature: r.signature.clone(),
            reason: r.error.clone().unwrap_or_default(),
        },
    }
}

/// A new record of `key`, `Planned`, for `purpose`.
pub fn planned(key: &str, purpose: &str) -> LedgerRecord {
    LedgerRecord {
        key: key.to_string(),
        purpose: purpose.to_string(),
        state: RecState::Planned,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A book of records in memory, counting its writes; `fail_writes` makes every
    /// write fail.
    #[derive(Default)]
    struct Mem {
        records: Vec<(Intent, LedgerRecord)>,
        writes: usize,
        effects: Vec<(Vec<String>, SettlementState)>,
        fail_writes: bool,
    }

    impl Book for Mem {
        fn settlements(&self) -> Result<Vec<Settlement>, StoreError> {
            Ok(self
                .records
                .iter()
                .map(|(i, r)| Settlement {
                    intent: i.clone(),
                    state: state_of(r),
                    payload: None,
                })
                .collect())
        }
        fn plan(&mut self, intent: &Intent) -> Result<(), StoreError> {
            self.records
                .push((intent.clone(), planned(&intent.key, "test")));
            Ok(())
        }
        fn has(&self, key: &str) -> bool {
            self.records.iter().any(|(i, _)| i.key == key)
        }
        fn set(&mut self, key: &str, state: &SettlementState) {
            let now = crate::toolkit::ms_time(1_800_000_000_000);
            for (_, r) in self.records.iter_mut().filter(|(i, _)| i.key == key) {
                apply(r, state, &now);
            }
        }
        fn effects(&mut self, keys: &[String], state: &SettlementState) {
            self.effects.push((keys.to_vec(), state.clone()));
        }
        fn write(&mut self) -> Result<(), StoreError> {
            if self.fail_writes {
                return Err(StoreError::Write("injected".into()));
            }
            self.writes += 1;
            Ok(())
        }
    }

    /// An intent keyed `key` (the store never looks at its movements).
    fn mint(key: &str) -> Intent {
        Intent {
            key: key.into(),
            movements: Vec::new(),
        }
    }

    #[test]
    fn each_step_is_one_write_and_the_states_round_trip() {
        let mut s = RecordStore::from_book(Mem::default());
        s.record_plan(&mint("a")).unwrap();
        s.record_plan(&mint("b")).unwrap();
        let keys = vec!["a".to_string(), "b".to_string()];
        s.record_sent(&keys, "sig1", 77, b"payload").unwrap();
        let got = s.get("a").unwrap().unwrap();
        assert_eq!(
            got.state,
            SettlementState::Sent {
                signature: "sig1".into(),
                last_valid_block_height: 77
            }
        );
        assert_eq!(got.payload, None, "no payload is kept");
        assert_eq!(s.unsettled().unwrap().len(), 2);
        s.record_confirmed(&keys[..1], "sig1").unwrap();
        assert_eq!(s.unsettled().unwrap().len(), 1);
        let long = "x".repeat(2 * MAX_REASON);
        s.record_failed(&keys[1..], None, &long).unwrap();
        let b = s.get("b").unwrap().unwrap();
        match b.state {
            SettlementState::Failed { signature, reason } => {
                assert_eq!(
                    signature.as_deref(),
                    Some("sig1"),
                    "the sent signature kept"
                );
                assert_eq!(reason.len(), MAX_REASON);
            }
            other => panic!("{other:?}"),
        }
        s.record_replan(&keys[1..]).unwrap();
        assert_eq!(s.get("b").unwrap().unwrap().state, SettlementState::Planned);
        assert_eq!(s.writes, 6, "one write per step");
        assert_eq!(s.effects.len(), 4, "effects after each state change");
        let (_, r) = &s.records[0];
        assert!(r.confirmed_at.is_some());
    }

    #[test]
    fn an_unknown_key_changes_nothing_and_writes_nothing() {
        let mut s = RecordStore::from_book(Mem::default());
        s.record_plan(&mint("a")).unwrap();
        let err = s
            .record_sent(&["a".into(), "zz".into()], "sig", 1, &[])
            .unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownKey(ref k) if k == "zz"),
            "{err}"
        );
        assert_eq!(s.get("a").unwrap().unwrap().state, SettlementState::Planned);
        assert_eq!(s.writes, 1);
        assert!(s.effects.is_empty());
    }

    #[test]
    fn a_failed_write_is_the_steps_error() {
        let mut s = RecordStore::from_book(Mem {
            fail_writes: true,
            ..Default::default()
        });
        let err = s.record_plan(&mint("a")).unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
    }

    #[test]
    fn a_sent_record_without_its_signature_was_never_sent() {
        let mut r = planned("k", "settle");
        r.state = RecState::Sent;
        assert_eq!(state_of(&r), SettlementState::Planned);
        r.signature = Some("s".into());
        r.last_valid_block_height = Some(9);
        assert!(matches!(state_of(&r), SettlementState::Sent { .. }));
    }
}
