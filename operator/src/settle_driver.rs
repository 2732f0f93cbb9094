//! The operator's one settlement driver: every store (a ComputeJob's status, a
//! StakePosition's, the rewards and buyback ConfigMaps) is settled the same way —
//! [`Executor::reconcile`] off the async runtime (the ledger is blocking), with the
//! embedded ledger's crash-recovery tick, ledger errors counted in
//! `solgrid_operator_ledger_errors_total{ledger,op}`, and errors mapped to
//! [`Error`] keeping their source (a store's error as [`Error::Store`], anything
//! else as [`Error::Ledger`]).

use crate::metrics::Metrics;
use crate::{Error, LedgerHandle, Result};
use solgrid_settlement::{Executor, ExecutorConfig, PassReport, SettleError, SettlementStore};
use std::sync::Arc;

pub use solgrid_settlement::Work;

/// A driven store and what its pass did. The store comes back even when the pass
/// failed: its records up to the error are what it holds (a ComputeJob's status,
/// its `resourceVersion`).
pub struct Driven<S> {
    pub store: S,
    pub result: Result<PassReport>,
}

/// Runs `work` over `store` (see [`Executor::reconcile`]) on a blocking thread.
/// `op` labels the ledger-error metric (`settle`, `stake`, `rewards`, `buyback`).
/// `Err` only when the blocking task itself failed (panicked, or was cancelled).
pub async fn drive<S>(
    ledger: Arc<LedgerHandle>,
    metrics: &Metrics,
    op: &'static str,
    store: S,
    work: Work,
) -> Result<Driven<S>>
where
    S: SettlementStore + Send + 'static,
{
    let kind = ledger.kind();
    let (store, result) = tokio::task::spawn_blocking(move || {
        let mut store = store;
        let result = Executor::new(&*ledger, &mut store, ExecutorConfig::default())
            .reconcile(&work, || recovery_tick(&ledger));
        (store, result)
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?;
    let result = result.map_err(|e| {
        metrics.ledger_errors.with_label_values(&[kind, op]).inc();
        settle_error(e)
    });
    Ok(Driven { store, result })
}

/// On the embedded ledger, a recorded transaction still unseen after a pass can
/// only be one this process never sent (it died in between): let its validity
/// window pass so that the next pass rebuilds it. On Solana nothing: the
/// transaction expires on its own.
fn recovery_tick(ledger: &LedgerHandle) -> bool {
    ledger.embedded().is_some_and(|e| {
        e.tick(e.config().validity_window + 1)
            .inspect_err(|err| tracing::warn!(error = %err, "settlement recovery tick failed"))
            .is_ok()
    })
}

/// The executor's error as the operator's, keeping its source.
pub fn settle_error<LE, SE>(e: SettleError<LE, SE>) -> Error
where
    LE: std::error::Error + Send + Sync + 'static,
    SE: std::error::Error + Send + Sync + 'static,
{
    match e {
        SettleError::Store(s) => Error::store(s),
        other => Error::ledger(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger};
    use solgrid_market::ledger::{Account, Intent, Ledger, Movement, Op, Token};
    use solgrid_settlement::{MemoryStore, SettlementState, StoreError};
    use std::error::Error as _;

    fn mint(key: &str, amount: u64) -> Intent {
        Intent {
            key: key.into(),
            movements: vec![Movement {
                token: Token::Io,
                op: Op::Mint {
                    to: Account::Escrow,
                    amount,
                },
            }],
        }
    }

    /// Drives `store` planning `intent`; returns the result and the ledger errors
    /// counted under `op`.
    async fn drive_one(
        ledger: &Arc<LedgerHandle>,
        op: &'static str,
        store: MemoryStore,
        intent: Intent,
    ) -> (Driven<MemoryStore>, u64) {
        let metrics = Metrics::default();
        let work = Work::plan(vec![intent]);
        let d = drive(ledger.clone(), &metrics, op, store, work)
            .await
            .unwrap();
        let counted = metrics.ledger_errors.with_label_values(&["embedded", op]);
        (d, counted.get())
    }

    fn handle() -> Arc<LedgerHandle> {
        let l = EmbeddedLedger::in_memory(EmbeddedConfig::default()).unwrap();
        Arc::new(LedgerHandle::Embedded(l))
    }

    #[tokio::test]
    async fn drives_a_store_off_the_runtime_and_recovers_an_unsent_tx() {
        let ledger = handle();
        // a transaction recorded as sent that the ledger never saw (the process
        // died between recording and sending), the payload dropped
        let mut store = MemoryStore::new().keep_payloads(false);
        let stale = mint("stale", 7);
        let prepared = ledger.prepare(std::slice::from_ref(&stale)).unwrap();
        store.record_plan(&stale).unwrap();
        store
            .record_sent(
                &["stale".into()],
                &prepared.signature,
                prepared.last_valid_block_height,
                &prepared.payload,
            )
            .unwrap();
        let (d, errors) = drive_one(&ledger, "settle", store, mint("new", 5)).await;
        let report = d.result.unwrap();
        assert_eq!(
            (report.confirmed, report.rebuilt, report.remaining),
            (2, 1, 0)
        );
        for key in ["stale", "new"] {
            let s = d.store.get(key).unwrap().unwrap();
            assert!(
                matches!(s.state, SettlementState::Confirmed { .. }),
                "{key}"
            );
        }
        let escrow = ledger.balance(&Account::Escrow, Token::Io).unwrap();
        assert_eq!(escrow, 12, "each paid once");
        assert_eq!(errors, 0);
    }

    #[tokio::test]
    async fn a_conflicting_plan_is_a_counted_ledger_error_with_its_source() {
        let ledger = handle();
        let mut store = MemoryStore::new();
        store.record_plan(&mint("k", 1)).unwrap();
        let (d, errors) = drive_one(&ledger, "rewards", store, mint("k", 2)).await;
        let err = d.result.unwrap_err();
        assert!(matches!(err, Error::Ledger(_)), "{err}");
        let src = err.source().expect("a source");
        assert!(src.to_string().contains("already planned"), "{src}");
        assert_eq!(errors, 1);
    }

    #[test]
    fn a_store_error_stays_a_store_error_with_its_source() {
        let e: SettleError<std::io::Error, StoreError> =
            SettleError::Store(StoreError::UnknownKey("k".into()));
        let err = settle_error(e);
        assert!(matches!(err, Error::Store(_)), "{err}");
        assert!(err.source().unwrap().to_string().contains('k'));
    }
}
