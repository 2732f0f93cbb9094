//! The state every controller shares: the API client, configuration, ledger,
//! metrics, the Event recorder and an injectable clock.

use crate::config::OperatorConfig;
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use solgrid_crds::{ComputeJob, GpuNode, StakePosition};
use solgrid_ledger::{EmbeddedConfig, EmbeddedLedger};
use solgrid_market::ledger::{Account, Amount, Intent, Ledger, Prepared, Token, TxStatus};
use solgrid_market::supply::SupplyIndex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where "now" comes from; tests inject a [`FakeClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub fn new(t: DateTime<Utc>) -> Self {
        Self(Mutex::new(t))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut g) = self.0.lock() {
            *g = t;
        }
    }
    pub fn advance(&self, d: chrono::Duration) {
        if let Ok(mut g) = self.0.lock() {
            *g += d;
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
            .lock()
            .map(|g| *g)
            .unwrap_or_else(|e| *e.into_inner())
    }
}

/// Errors of the [`LedgerHandle`] (the message of the underlying ledger's error;
/// never key material).
#[derive(Debug, thiserror::Error)]
pub enum LedgerHandleError {
    #[error("embedded ledger: {0}")]
    Embedded(#[from] solgrid_ledger::LedgerError),
    #[cfg(feature = "solana")]
    #[error("solana: {0}")]
    Solana(#[from] solgrid_solana::SolanaError),
    #[error("{0}")]
    Other(String),
}

/// The ledger the operator settles on: the embedded ledger (default) or Solana.
#[allow(clippy::large_enum_variant)] // one per process
pub enum LedgerHandle {
    Embedded(EmbeddedLedger),
    #[cfg(feature = "solana")]
    Solana(solgrid_solana::SolanaLedger),
}

impl std::fmt::Debug for LedgerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LedgerHandle({})", self.kind())
    }
}

impl LedgerHandle {
    /// An in-memory embedded ledger (tests).
    pub fn in_memory() -> Self {
        LedgerHandle::Embedded(
            EmbeddedLedger::in_memory(EmbeddedConfig::default())
                .expect("an in-memory ledger has no I/O to fail"),
        )
    }

    /// Opens the ledger the configuration names. Blocking (call at start-up).
    pub fn from_config(cfg: &OperatorConfig) -> Result<Self, LedgerHandleError> {
        match &cfg.solana {
            #[cfg(feature = "solana")]
            Some(s) => {
                let authority = solgrid_solana::Authority::from_file(&s.authority_keypair)?;
                let config = solgrid_solana::SolanaConfig::new(
                    s.rpc_url.clone(),
                    s.io_mint.clone(),
                    s.usdc_mint.clone(),
                );
                let ledger = solgrid_solana::SolanaLedger::connect(config, authority)?;
                check_units(&cfg.market.pricing, |t| ledger.unit(t))?;
                ledger.ensure_custody_accounts()?;
                Ok(LedgerHandle::Solana(ledger))
            }
            #[cfg(not(feature = "solana"))]
            Some(_) => Err(LedgerHandleError::Other(
                "built without the `solana` feature".into(),
            )),
            None => {
                if let Some(dir) = cfg.ledger_path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        LedgerHandleError::Other(format!("creating {}: {e}", dir.display()))
                    })?;
                }
                // The block height also advances with the wall clock (as a chain's
                // does), so a transaction recorded as sent but never sent expires
                // and is rebuilt even when no other transaction arrives.
                let config = EmbeddedConfig {
                    block_time: Some(std::time::Duration::from_millis(400)),
                    ..EmbeddedConfig::default()
                };
                Ok(LedgerHandle::Embedded(EmbeddedLedger::open(
                    &cfg.ledger_path,
                    config,
                )?))
            }
        }
    }

    /// `embedded` or `solana` (the `ledger` label of metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerHandle::Embedded(_) => "embedded",
            #[cfg(feature = "solana")]
            LedgerHandle::Solana(_) => "solana",
        }
    }

    /// The embedded ledger, if that is what this is (tests, e2e funding).
    pub fn embedded(&self) -> Option<&EmbeddedLedger> {
        match self {
            LedgerHandle::Embedded(l) => Some(l),
            #[cfg(feature = "solana")]
            LedgerHandle::Solana(_) => None,
        }
    }

    /// Registers a wallet owner's keypair so that moving tokens out of its wallet
    /// (escrow funding, stake lock) can be signed: every ledger needs the owner's
    /// signature, the embedded one as Solana (see `solgrid_ledger::wallet`).
    /// Returns the wallet's address. Never logs the key.
    pub fn register_signer(
        &self,
        keypair: solgrid_ledger::WalletKeypair,
    ) -> Result<String, LedgerHandleError> {
        match self {
            LedgerHandle::Embedded(l) => Ok(l.add_signer(keypair)),
            #[cfg(feature = "solana")]
            LedgerHandle::Solana(l) => Ok(l.add_signer_bytes(keypair.to_solana_json().as_bytes())?),
        }
    }

    /// Funds `wallet` with `amount` new base units of `token`, exactly once per
    /// `key` (a `LedgerGrant`): only the embedded ledger has an admin mint for
    /// wallets; on Solana, tokens are transferred on chain instead (`None`).
    pub fn grant(
        &self,
        key: &str,
        wallet: &str,
        token: Token,
        amount: Amount,
    ) -> Option<Result<solgrid_ledger::GrantReceipt, LedgerHandleError>> {
        match self {
            LedgerHandle::Embedded(l) => {
                Some(l.grant(key, wallet, token, amount).map_err(Into::into))
            }
            #[cfg(feature = "solana")]
            LedgerHandle::Solana(_) => None,
        }
    }
}

/// Refuses mints whose decimals are not the ones the market converts prices with
/// (`pricing.ioRate.unit`, `pricing.usdcRate.unit`): every quote, escrow and payout
/// would be off by a power of ten.
pub fn check_units(
    pricing: &solgrid_market::pricing::PricingConfig,
    unit: impl Fn(Token) -> Amount,
) -> Result<(), LedgerHandleError> {
    for (token, rate, field) in [
        (Token::Io, &pricing.io_rate, "ioRate"),
        (Token::Usdc, &pricing.usdc_rate, "usdcRate"),
    ] {
        let on_chain = unit(token);
        if on_chain != rate.unit {
            return Err(LedgerHandleError::Other(format!(
                "the {token} mint has {} decimals ({on_chain} base units per token) but prices \
                 are converted with pricing.{field}.unit = {} (--market-config): use the right \
                 mint or set the unit to match",
                on_chain.checked_ilog10().unwrap_or(0),
                rate.unit
            )));
        }
    }
    Ok(())
}

macro_rules! each {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            LedgerHandle::Embedded($l) => Ok($e?),
            #[cfg(feature = "solana")]
            LedgerHandle::Solana($l) => Ok($e?),
        }
    };
}

impl Ledger for LedgerHandle {
    type Error = LedgerHandleError;

    fn prepare(&self, intents: &[Intent]) -> Result<Prepared, Self::Error> {
        each!(self, l => l.prepare(intents))
    }
    fn send(&self, tx: &Prepared) -> Result<(), Self::Error> {
        each!(self, l => l.send(tx))
    }
    fn status(&self, signature: &str) -> Result<TxStatus, Self::Error> {
        each!(self, l => l.status(signature))
    }
    fn block_height(&self) -> Result<u64, Self::Error> {
        each!(self, l => l.block_height())
    }
    fn fits(&self, intents: &[Intent]) -> bool {
        match self {
            LedgerHandle::Embedded(l) => l.fits(intents),
            #[cfg(feature = "solana")]
            LedgerHandle::Solana(l) => l.fits(intents),
        }
    }
    fn balance(&self, account: &Account, token: Token) -> Result<Amount, Self::Error> {
        each!(self, l => l.balance(account, token))
    }
    fn supply(&self, token: Token) -> Result<Amount, Self::Error> {
        each!(self, l => l.supply(token))
    }
    fn unit(&self, token: Token) -> Amount {
        match self {
            LedgerHandle::Embedded(l) => l.unit(token),
            #[cfg(feature = "solana")]
            LedgerHandle::Solana(l) => l.unit(token),
        }
    }
}

/// Drops what a controller never reads from a cached object: `managedFields` and
/// kubectl's last-applied annotation (often the largest parts of small objects).
pub fn slim<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Caches of the watched objects, filled by the controllers' reflectors (used for
/// pricing: utilization and floors of the GPU classes; and by the other controllers).
#[derive(Clone, Default)]
pub struct Caches {
    pub gpunodes: Option<Store<GpuNode>>,
    pub computejobs: Option<Store<ComputeJob>>,
    pub stakepositions: Option<Store<StakePosition>>,
}

impl Caches {
    /// Starts the process-wide GpuNode reflector (kept warm on a standby replica too,
    /// so a new leader starts with a full cache). Worker pods are not cached here:
    /// the job controller decides from a fresh list of its pods, never from a cache
    /// that may lag the pod event that triggered the reconcile.
    pub fn spawn(client: Client, _config: &OperatorConfig, shutdown: CancellationToken) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let nodes: Api<GpuNode> = Api::all(client.clone());
        let (node_store, node_writer) = reflector::store();
        let node_stream = reflector(
            node_writer,
            watcher(nodes, watcher::Config::default()).modify(slim::<GpuNode>),
        )
        .default_backoff()
        .touched_objects()
        .for_each(|_| futures::future::ready(()));
        tokio::spawn(async move {
            tokio::select! {
                _ = node_stream => {}
                _ = shutdown.cancelled() => {}
            }
        });
        Caches {
            gpunodes: Some(node_store),
            computejobs: None,
            stakepositions: None,
        }
    }
}

/// Everything a reconcile needs. Cheap to clone behind an `Arc`.
pub struct Context {
    pub client: Client,
    pub config: Arc<OperatorConfig>,
    pub ledger: Arc<LedgerHandle>,
    pub metrics: Arc<Metrics>,
    /// Who publishes Events (`solgrid-operator`, this replica).
    pub reporter: Reporter,
    /// Publishes Events (events.k8s.io/v1).
    pub recorder: Recorder,
    pub clock: Arc<dyn Clock>,
    /// Reflector stores, set by `main` once the watches run.
    pub caches: Caches,
    /// Consecutive failures per object key, for `error_policy`'s backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Supply per GPU class, rebuilt from the GpuNode cache at most every 5 s.
    supply: Mutex<Option<(std::time::Instant, Arc<SupplyIndex>)>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Arc<OperatorConfig>,
        ledger: Arc<LedgerHandle>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let reporter = Reporter {
            controller: "solgrid-operator".into(),
            instance: Some(config.identity.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Self {
            client,
            config,
            ledger,
            metrics,
            reporter,
            recorder,
            clock,
            caches: Caches::default(),
            failures: Mutex::new(HashMap::new()),
            supply: Mutex::new(None),
        }
    }

    /// A context over `client` with the defaults tests and embedders want: the
    /// default configuration, an in-memory embedded ledger, fresh metrics, the
    /// system clock, empty caches; each can be replaced ([`ContextBuilder`]).
    pub fn builder(client: Client) -> ContextBuilder {
        ContextBuilder {
            client,
            config: Arc::new(OperatorConfig::default()),
            ledger: None,
            metrics: None,
            clock: Arc::new(SystemClock),
            caches: Caches::default(),
        }
    }

    /// Sets the reflector stores.
    pub fn with_caches(mut self, caches: Caches) -> Self {
        self.caches = caches;
        self
    }

    /// Counts a failure of `key` and returns how long to wait: the error's base
    /// delay, doubled for each consecutive failure, capped at 5 minutes.
    pub fn failure_backoff(&self, key: &str, err: &crate::error::Error) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut m) => {
                let n = m.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        crate::error::backoff(err.retry_after(), n)
    }

    /// Utilization and floors per GPU class from the GpuNode cache (empty without
    /// one), rebuilt at most every 5 seconds.
    pub fn supply(&self) -> Arc<SupplyIndex> {
        let Some(store) = &self.caches.gpunodes else {
            return Arc::new(SupplyIndex::default());
        };
        let mut guard = match self.supply.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        if let Some((at, idx)) = guard.as_ref()
            && at.elapsed() < Duration::from_secs(5)
        {
            return idx.clone();
        }
        let all = store.state();
        let idx = Arc::new(solgrid_crds::market::supply_index(
            all.iter().map(|n| n.as_ref()),
        ));
        *guard = Some((std::time::Instant::now(), idx.clone()));
        idx
    }

    /// Forgets the failures of `key` (after a successful reconcile).
    pub fn reset_failures(&self, key: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(key);
        }
    }

    /// Runs a blocking ledger call off the async runtime.
    pub async fn with_ledger<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LedgerHandle) -> T + Send + 'static,
    ) -> Result<T, crate::error::Error> {
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || f(&ledger))
            .await
            .map_err(|e| crate::error::Error::Join(e.to_string()))
    }
}

/// Builds a [`Context`] (see [`Context::builder`]).
pub struct ContextBuilder {
    client: Client,
    config: Arc<OperatorConfig>,
    ledger: Option<Arc<LedgerHandle>>,
    metrics: Option<Arc<Metrics>>,
    clock: Arc<dyn Clock>,
    caches: Caches,
}

impl ContextBuilder {
    pub fn config(mut self, config: OperatorConfig) -> Self {
        self.config = Arc::new(config);
        self
    }

    pub fn ledger(mut self, ledger: Arc<LedgerHandle>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn caches(mut self, caches: Caches) -> Self {
        self.caches = caches;
        self
    }

    pub fn build(self) -> Context {
        Context::new(
            self.client,
            self.config,
            self.ledger
                .unwrap_or_else(|| Arc::new(LedgerHandle::in_memory())),
            self.metrics.unwrap_or_else(|| Arc::new(Metrics::new())),
            self.clock,
        )
        .with_caches(self.caches)
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn mints_must_have_the_decimals_prices_are_converted_with() {
        let pricing = solgrid_market::pricing::PricingConfig::default();
        let chain =
            |io: Amount, usdc: Amount| move |t: Token| if t == Token::Io { io } else { usdc };
        assert!(check_units(&pricing, chain(1_000_000_000, 1_000_000)).is_ok());
        let e = check_units(&pricing, chain(1_000_000, 1_000_000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IO mint has 6 decimals"), "{e}");
        assert!(e.contains("pricing.ioRate.unit = 1000000000"), "{e}");
        let e = check_units(&pricing, chain(1_000_000_000, 1_000_000_000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("USDC mint has 9 decimals"), "{e}");
    }
}
