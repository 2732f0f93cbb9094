//! One implementation of the store protocol, over wherever the records live.
//!
//! Every store keeps its records somewhere of its own — the simulator's
//! [`MemoryStore`](crate::MemoryStore) in memory, the operator's on a ComputeJob's
//! or a StakePosition's status or in a ConfigMap — but what a protocol step *does*
//! is the same for all of them, and lives here once: [`RecordStore`] implements
//! [`SettlementStore`] over any [`Book`]:
//!
//! - `record_plan`: the book records the plan ([`Book::plan`]), then one write;
//! - `record_sent` / `record_confirmed` / `record_failed` / `record_replan`: every
//!   key must be known (else nothing changes: [`StoreError::UnknownKey`]), each record
//!   takes the new state ([`Book::set`]), the book applies what that state means
//!   for its object ([`Book::effects`]), then one write ([`Book::write`]): all the
//!   keys of a transaction in one write, as the protocol asks of a store that keeps
//!   payloads;
//! - `get` / `unsettled`: from the records, with their intents.

use crate::{Settlement, SettlementState, SettlementStore, StoreError};
use solgrid_market::ledger::Intent;
use std::ops::{Deref, DerefMut};

/// Where a store keeps its settlement records, and how it writes them.
pub trait Book {
    /// The book's errors; the protocol's own ([`StoreError`]: an unknown key)
    /// convert into them.
    type Error: std::error::Error + Send + Sync + 'static + From<StoreError>;
    /// Every recorded settlement with its intent, in plan order.
    fn settlements(&self) -> Result<Vec<Settlement>, Self::Error>;
    /// One recorded settlement (by default: looked up in [`Book::settlements`]).
    fn get(&self, key: &str) -> Result<Option<Settlement>, Self::Error> {
        Ok(self
            .settlements()?
            .into_iter()
            .find(|s| s.intent.key == key))
    }
    /// Every `Planned` or `Sent` settlement, in plan order (by default: filtered
    /// from [`Book::settlements`]).
    fn unsettled(&self) -> Result<Vec<Settlement>, Self::Error> {
        Ok(self
            .settlements()?
            .into_iter()
            .filter(|s| s.state.is_unsettled())
            .collect())
    }
    /// Records a new plan, `Planned` (in memory: [`Book::write`] follows).
    fn plan(&mut self, intent: &Intent) -> Result<(), Self::Error>;
    /// Whether a record is keyed `key`.
    fn has(&self, key: &str) -> bool;
    /// Sets the state of the record keyed `key` (known to exist); `payload` is the
    /// sent transaction's, for a book that keeps payloads.
    fn set(&mut self, key: &str, state: &SettlementState, payload: Option<&[u8]>);
    /// What records `keys` reaching `state` means for the object, beyond the
    /// records (in memory, written with them).
    fn effects(&mut self, _keys: &[String], _state: &SettlementState) {}
    /// Makes the changes durable: one write.
    fn write(&mut self) -> Result<(), Self::Error>;
}

/// A [`Book`] as the executor's [`SettlementStore`]. Derefs to the book.
#[derive(Clone, Debug)]
pub struct RecordStore<B>(B);

impl<B: Book> RecordStore<B> {
    pub fn from_book(book: B) -> Self {
        RecordStore(book)
    }

    pub fn into_book(self) -> B {
        self.0
    }

    fn transition(
        &mut self,
        keys: &[String],
        state: SettlementState,
        payload: Option<&[u8]>,
    ) -> Result<(), B::Error> {
        if let Some(k) = keys.iter().find(|k| !self.0.has(k)) {
            return Err(StoreError::UnknownKey(k.clone()).into());
        }
        for k in keys {
            self.0.set(k, &state, payload);
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
    type Error = B::Error;

    fn record_plan(&mut self, intent: &Intent) -> Result<(), B::Error> {
        self.0.plan(intent)?;
        self.0.write()
    }

    fn record_sent(
        &mut self,
        keys: &[String],
        signature: &str,
        last_valid_block_height: u64,
        payload: &[u8],
    ) -> Result<(), B::Error> {
        let state = SettlementState::Sent {
            signature: signature.to_string(),
            last_valid_block_height,
        };
        self.transition(keys, state, Some(payload))
    }

    fn record_confirmed(&mut self, keys: &[String], signature: &str) -> Result<(), B::Error> {
        let state = SettlementState::Confirmed {
            signature: signature.to_string(),
        };
        self.transition(keys, state, None)
    }

    fn record_failed(
        &mut self,
        keys: &[String],
        signature: Option<&str>,
        reason: &str,
    ) -> Result<(), B::Error> {
        let state = SettlementState::Failed {
            signature: signature.map(str::to_string),
            reason: reason.to_string(),
        };
        self.transition(keys, state, None)
    }

    fn record_replan(&mut self, keys: &[String]) -> Result<(), B::Error> {
        self.transition(keys, SettlementState::Planned, None)
    }

    fn get(&self, key: &str) -> Result<Option<Settlement>, B::Error> {
        self.0.get(key)
    }

    fn unsettled(&self) -> Result<Vec<Settlement>, B::Error> {
        self.0.unsettled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    /// An intent keyed `key` (the store never looks at its movements).
    fn keyed(key: &str) -> Intent {
        Intent {
            key: key.into(),
            movements: Vec::new(),
        }
    }

    /// A memory book that counts its writes and the effects it was told of, and
    /// can be made to fail every write.
    #[derive(Default)]
    struct Counting {
        inner: Option<MemoryStore>,
        writes: usize,
        effects: Vec<(Vec<String>, SettlementState)>,
        fail_writes: bool,
    }

    impl Counting {
        fn mem(&self) -> &MemoryStore {
            self.inner.as_ref().expect("inner")
        }
    }

    impl Book for Counting {
        type Error = StoreError;
        fn settlements(&self) -> Result<Vec<Settlement>, StoreError> {
            Ok(self.mem().all().to_vec())
        }
        fn plan(&mut self, intent: &Intent) -> Result<(), StoreError> {
            self.inner.as_mut().expect("inner").plan(intent)
        }
        fn has(&self, key: &str) -> bool {
            self.mem().has(key)
        }
        fn set(&mut self, key: &str, state: &SettlementState, payload: Option<&[u8]>) {
            self.inner.as_mut().expect("inner").set(key, state, payload)
        }
        fn effects(&mut self, keys: &[String], state: &SettlementState) {
            self.effects.push((keys.to_vec(), state.clone()));
        }
        fn write(&mut self) -> Result<(), StoreError> {
            if self.fail_writes {
                return Err(StoreError::UnknownKey("injected write failure".into()));
            }
            self.writes += 1;
            Ok(())
        }
    }

    fn counting() -> RecordStore<Counting> {
        RecordStore::from_book(Counting {
            inner: Some(MemoryStore::new()),
            ..Default::default()
        })
    }

    #[test]
    fn each_step_is_one_write_and_its_effects_follow_the_state() {
        let mut s = counting();
        s.record_plan(&keyed("a")).unwrap();
        s.record_plan(&keyed("b")).unwrap();
        let keys = vec!["a".to_string(), "b".to_string()];
        s.record_sent(&keys, "sig1", 77, b"tx").unwrap();
        let a = s.get("a").unwrap().unwrap();
        assert_eq!(
            a.state,
            SettlementState::Sent {
                signature: "sig1".into(),
                last_valid_block_height: 77
            }
        );
        assert_eq!(a.payload.as_deref(), Some(&b"tx"[..]));
        assert_eq!(s.unsettled().unwrap().len(), 2);
        s.record_confirmed(&keys[..1], "sig1").unwrap();
        assert_eq!(s.unsettled().unwrap().len(), 1);
        s.record_failed(&keys[1..], Some("sig1"), "boom").unwrap();
        assert!(matches!(
            s.get("b").unwrap().unwrap().state,
            SettlementState::Failed { ref reason, .. } if reason == "boom"
        ));
        s.record_replan(&keys[1..]).unwrap();
        assert_eq!(s.get("b").unwrap().unwrap().state, SettlementState::Planned);
        assert_eq!(s.writes, 6, "one write per step");
        let states: Vec<_> = s.effects.iter().map(|(k, _)| k.len()).collect();
        assert_eq!(states, vec![2, 1, 1, 1], "effects once per state change");
    }

    #[test]
    fn an_unknown_key_changes_nothing_and_writes_nothing() {
        let mut s = counting();
        s.record_plan(&keyed("a")).unwrap();
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
        let mut s = counting();
        s.fail_writes = true;
        let err = s.record_plan(&keyed("a")).unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
    }

    #[test]
    fn a_store_that_drops_payloads_keeps_none() {
        let mut s = MemoryStore::new().keep_payloads(false);
        s.record_plan(&keyed("a")).unwrap();
        s.record_sent(&["a".into()], "sig", 5, b"tx").unwrap();
        assert_eq!(s.get("a").unwrap().unwrap().payload, None);
        assert_eq!(s.counts(), (0, 1, 0, 0));
    }
}
