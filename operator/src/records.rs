//! The operator's one settlement store: the records of the exactly-once protocol
//! kept on the objects themselves.
//!
//! Every kind that settles keeps its records somewhere of its own — a ComputeJob in
//! `status.escrow` and `status.settlements[]`, a StakePosition in
//! `status.operations[]`, the rewards and buyback tasks in their ConfigMap — and
//! writes them with one API call guarded by the object's `resourceVersion` (a stale
//! writer fails with 409 and changes nothing). What a protocol step *does* is the
//! same for all of them, and lives once in the settlement crate:
//! [`solgrid_settlement::RecordStore`] implements the executor's store over any
//! [`Book`]. This module holds what the operator's books share: their one error
//! ([`StoreError`]), and the one mapping between the executor's states and the
//! API's [`LedgerRecord`] ([`apply`], [`state_of`], [`planned`]).
//!
//! No operator book keeps transaction payloads (a status is no place for them, and
//! a book writes all the keys of a step in one write anyway): a transaction recorded
//! `Sent` that was never seen is rebuilt once its last valid block height has
//! passed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use solgrid_crds::{LedgerRecord, SettlementState as RecState};
use solgrid_settlement::SettlementState;

pub use solgrid_settlement::{Book, RecordStore};

/// The longest failure reason a record keeps (a status is no place for a log).
pub const MAX_REASON: usize = 512;

/// Errors of the settlement store, each keeping its source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The protocol's own: an unknown key, a plan recorded twice.
    #[error(transparent)]
    Protocol(#[from] solgrid_settlement::StoreError),
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

/// A record taking `state` (`now` stamps a confirmation). A failure keeps the
/// signature it had when it names none (the transaction that was sent), and at
/// most [`MAX_REASON`] characters of its reason.
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
            r.error = Some(reason.chars().take(MAX_REASON).collect());
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

    #[test]
    fn states_round_trip_through_a_record() {
        let now = crate::toolkit::ms_time(1_800_000_000_000);
        let mut r = planned("k", "settle");
        let sent = SettlementState::Sent {
            signature: "sig1".into(),
            last_valid_block_height: 77,
        };
        apply(&mut r, &sent, &now);
        assert_eq!(state_of(&r), sent);
        let long = "x".repeat(2 * MAX_REASON);
        let failed = SettlementState::Failed {
            signature: None,
            reason: long,
        };
        apply(&mut r, &failed, &now);
        match state_of(&r) {
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
        apply(&mut r, &SettlementState::Planned, &now);
        assert_eq!(state_of(&r), SettlementState::Planned);
        assert_eq!((r.signature.clone(), r.error.clone()), (None, None));
        let confirmed = SettlementState::Confirmed {
            signature: "sig2".into(),
        };
        apply(&mut r, &confirmed, &now);
        assert_eq!(state_of(&r), confirmed);
        assert_eq!(r.confirmed_at, Some(now));
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
