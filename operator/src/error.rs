//! The operator's error type and the shared `error_policy` backoff.

use std::time::Duration;

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("ledger: {0}")]
    Ledger(#[source] BoxError),
    #[error("settlement store: {0}")]
    Store(#[source] BoxError),
    #[error("market: {0}")]
    Market(#[source] BoxError),
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    /// The object is malformed: recorded in a condition, not retried hot.
    #[error("invalid object: {0}")]
    Invalid(String),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("background task: {0}")]
    Join(String),
    /// Deleting a job waits for its settlement (retried, not an error of the object).
    #[error("settlement pending: {0}")]
    SettlementPending(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error a [`Error::Ledger`], [`Error::Store`] or [`Error::Market`] wraps (its
/// `source()`); a message alone converts too (`"...".into()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// A ledger call failed with `e` (kept as the source).
    pub fn ledger(e: impl Into<BoxError>) -> Self {
        Error::Ledger(e.into())
    }

    /// The settlement store failed with `e` (kept as the source).
    pub fn store(e: impl Into<BoxError>) -> Self {
        Error::Store(e.into())
    }

    /// A market computation failed with `e` (kept as the source).
    pub fn market(e: impl Into<BoxError>) -> Self {
        Error::Market(e.into())
    }
}

impl Error {
    /// A short label for the `error` label of the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Ledger(_) => "ledger",
            Error::Store(_) => "store",
            Error::Market(_) => "market",
            Error::Serde(_) => "serde",
            Error::Invalid(_) => "invalid",
            Error::MissingField(_) => "missing_field",
            Error::Join(_) => "join",
            Error::SettlementPending(_) => "settlement_pending",
        }
    }

    /// How long to wait before retrying after this error. Transient errors back off
    /// from 5 s; a malformed object waits 5 minutes (an edit re-triggers it anyway).
    pub fn retry_after(&self) -> Duration {
        match self {
            Error::Invalid(_) | Error::MissingField(_) | Error::Serde(_) | Error::Market(_) => {
                Duration::from_secs(300)
            }
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.retry_after(),
                _ => Duration::from_secs(5),
            },
            Error::Ledger(_) => Duration::from_secs(10),
            _ => Duration::from_secs(5),
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}

/// Exponential backoff per object: `base * 2^(failures-1)`, capped at 5 minutes.
pub fn backoff(base: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    base.saturating_mul(1u32 << exp)
        .min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Duration::from_secs(5);
        assert_eq!(backoff(b, 1), Duration::from_secs(5));
        assert_eq!(backoff(b, 3), Duration::from_secs(20));
        assert_eq!(backoff(b, 40), Duration::from_secs(300));
        assert_eq!(
            Error::Invalid("x".into()).retry_after(),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn ledger_store_and_market_errors_keep_their_source() {
        use std::error::Error as _;
        let money = solgrid_market::money::MoneyError::Overflow("fee");
        let e = Error::market(money.clone());
        assert_eq!(e.to_string(), format!("market: {money}"));
        let src = e.source().expect("a source");
        assert_eq!(
            src.downcast_ref::<solgrid_market::money::MoneyError>(),
            Some(&money)
        );
        assert_eq!(e.retry_after(), Duration::from_secs(300));
        let io = std::io::Error::other("disk full");
        let e = Error::store(io);
        assert!(
            e.source()
                .unwrap()
                .downcast_ref::<std::io::Error>()
                .is_some()
        );
        assert_eq!(e.metric_label(), "store");
        let e = Error::ledger("no such account");
        assert_eq!(e.to_string(), "ledger: no such account");
        assert_eq!(e.retry_after(), Duration::from_secs(10));
    }
}
