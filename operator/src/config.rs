//! Operator configuration: command-line flags, each with an environment variable.
//!
//! Market parameters (fees, pricing, staking, reputation) default to the values of
//! `solgrid-market`; the fee rates have their own flags, and `--market-config` reads
//! a JSON file with any subset of the full tables (see [`MarketConfig`]).

use clap::Parser;
use solgrid_market::settlement::Periods;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Every market table, each defaulting to `solgrid-market`'s defaults (the one
/// configuration the operator, extender, CLI and simulator share).
pub use solgrid_market::MarketConfig;

/// The `--verify-*` flags.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct VerifyArgs {
    /// Matrix size `n` of every device's chain (the report is `n^2` u16 per device).
    #[arg(long, env = "SOLGRID_VERIFY_SIZE", default_value_t = 512)]
    pub verify_size: usize,
    /// The time the chain should take on the claimed model, ms (sets the rounds).
    #[arg(long, env = "SOLGRID_VERIFY_TARGET_MS", default_value_t = 30_000)]
    pub verify_target_ms: u64,
    /// Far too slow = more than this % of the claimed model's expected time (+ slack).
    #[arg(long, env = "SOLGRID_VERIFY_TOLERANCE_PCT", default_value_t = 150)]
    pub verify_tolerance_pct: u64,
    /// Fixed allowance (container start, watch latency), ms; at most target / 4.
    #[arg(long, env = "SOLGRID_VERIFY_SLACK_MS", default_value_t = 5_000)]
    pub verify_slack_ms: u64,
    /// One `--verify-reference-size` product on an RTX 4090 with the worker image, µs.
    #[arg(long, env = "SOLGRID_VERIFY_REFERENCE_US", default_value_t = 2_000_000)]
    pub verify_reference_us: u64,
    #[arg(long, env = "SOLGRID_VERIFY_REFERENCE_SIZE", default_value_t = 1024)]
    pub verify_reference_size: usize,
    /// The chain's working set as a share of the claimed VRAM, per mille.
    #[arg(long, env = "SOLGRID_VERIFY_VRAM_PERMILLE", default_value_t = 900)]
    pub verify_vram_permille: u64,
    /// The most distinct matrices per chain (the verifier regenerates them).
    #[arg(long, env = "SOLGRID_VERIFY_MAX_MATRICES", default_value_t = 8)]
    pub verify_max_matrices: u32,
    /// Inconclusive periods in a row after which a node loses `verified`.
    #[arg(long, env = "SOLGRID_VERIFY_EXPIRE_AFTER", default_value_t = 3)]
    pub verify_expire_after: u32,
    /// The pod's `activeDeadlineSeconds` (at most 900).
    #[arg(long, env = "SOLGRID_VERIFY_DEADLINE_SECONDS", default_value_t = 900)]
    pub verify_deadline_seconds: u64,
}

impl VerifyArgs {
    /// The speed check's parameters.
    pub fn speed(&self) -> crate::verification::SpeedConfig {
        crate::verification::SpeedConfig {
            reference_us: self.verify_reference_us,
            reference_n: self.verify_reference_size,
            target_ms: self.verify_target_ms,
            tolerance_pct: self.verify_tolerance_pct,
            slack_ms: self.verify_slack_ms,
            vram_permille: self.verify_vram_permille,
            max_matrices: self.verify_max_matrices,
            ..crate::verification::SpeedConfig::default()
        }
    }

    /// `self`, or why it cannot tell GPUs apart.
    pub fn validated(self) -> Result<Self, String> {
        self.speed()
            .validate()
            .map_err(|e| format!("--verify-*: {e}"))?;
        if self.verify_size == 0 || self.verify_size > crate::verification::MAX_N {
            return Err(format!(
                "--verify-size must be in 1..={}",
                crate::verification::MAX_N
            ));
        }
        if self.verify_expire_after == 0 {
            return Err("--verify-expire-after must be at least 1".into());
        }
        Ok(self)
    }
}

/// The `--buyback-*` flags.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct BuybackArgs {
    /// The buyback counterparty's wallet: receives the treasury's stablecoin for the
    /// IO burned. Unset: no buyback.
    #[arg(long, env = "SOLGRID_BUYBACK_WALLET")]
    pub buyback_wallet: Option<String>,
    /// The buyback period, seconds (once per period).
    #[arg(
        long,
        env = "SOLGRID_BUYBACK_INTERVAL_SECONDS",
        default_value_t = 86_400
    )]
    pub buyback_interval_seconds: u64,
    /// The IO price of the buyback, micro-USD per whole IO. Unset: the market's IO
    /// rate (`pricing.ioRate.microUsdPerToken`, the price quotes convert with).
    #[arg(long, env = "SOLGRID_BUYBACK_IO_PRICE_MICRO_USD")]
    pub buyback_io_price_micro_usd: Option<u64>,
}

impl BuybackArgs {
    /// Checks the flags: a valid wallet address, a period and a price above 0.
    pub fn validated(self) -> std::result::Result<Self, String> {
        if let Some(w) = &self.buyback_wallet
            && !solgrid_crds::valid_wallet(w)
        {
            return Err(format!(
                "--buyback-wallet: {w:?} is not a base58 wallet address"
            ));
        }
        if self.buyback_interval_seconds == 0 {
            return Err("--buyback-interval-seconds must be above 0".into());
        }
        if self.buyback_io_price_micro_usd == Some(0) {
            return Err("--buyback-io-price-micro-usd must be above 0".into());
        }
        Ok(self)
    }
}

/// The operator's flags.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "solgrid-operator",
    version,
    about = "solgrid's Kubernetes operator"
)]
pub struct Cli {
    /// Address of the HTTP server (/metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "SOLGRID_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,

    /// Only watch this namespace for ComputeJobs and StakePositions (all when unset).
    #[arg(long, env = "SOLGRID_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// schedulerName of the worker pods.
    #[arg(
        long,
        env = "SOLGRID_SCHEDULER_NAME",
        default_value = "solgrid-scheduler"
    )]
    pub scheduler_name: String,

    /// Run leader election (disable only for a single replica, or tests).
    #[arg(long, env = "SOLGRID_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, env = "SOLGRID_LEASE_NAME", default_value = "solgrid-operator")]
    pub lease_name: String,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(
        long,
        env = "SOLGRID_LEASE_NAMESPACE",
        default_value = "solgrid-system"
    )]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (its pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration, seconds.
    #[arg(long, env = "SOLGRID_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Grace before the lease expires during which the holder renews it, seconds.
    #[arg(long, env = "SOLGRID_LEASE_GRACE_SECONDS", default_value_t = 5)]
    pub lease_grace_seconds: u64,

    /// The embedded ledger's journal file (used when no Solana endpoint is configured).
    #[arg(
        long,
        env = "SOLGRID_LEDGER_PATH",
        default_value = "/var/lib/solgrid/ledger.jsonl"
    )]
    pub ledger_path: PathBuf,
    /// Solana JSON-RPC endpoint; with the mints and the authority keypair, settle on Solana.
    #[arg(long, env = "SOLGRID_SOLANA_RPC_URL")]
    pub solana_rpc_url: Option<String>,
    /// The IO token's mint address.
    #[arg(long, env = "SOLGRID_IO_MINT")]
    pub io_mint: Option<String>,
    /// The stablecoin's mint address.
    #[arg(long, env = "SOLGRID_USDC_MINT")]
    pub usdc_mint: Option<String>,
    /// Path of the operator's authority keypair (Solana CLI JSON), a mounted Secret file.
    #[arg(long, env = "SOLGRID_AUTHORITY_KEYPAIR")]
    pub authority_keypair: Option<PathBuf>,

    /// Requester fee, basis points.
    #[arg(long, env = "SOLGRID_REQUESTER_FEE_BPS")]
    pub requester_fee_bps: Option<u32>,
    /// Provider fee, basis points.
    #[arg(long, env = "SOLGRID_PROVIDER_FEE_BPS")]
    pub provider_fee_bps: Option<u32>,
    /// Stablecoin surcharge, basis points.
    #[arg(long, env = "SOLGRID_STABLECOIN_SURCHARGE_BPS")]
    pub stablecoin_surcharge_bps: Option<u32>,
    /// JSON file with market tables (fees, pricing, staking, reputation); partial is fine.
    #[arg(long, env = "SOLGRID_MARKET_CONFIG")]
    pub market_config: Option<PathBuf>,

    /// Settlement period of running jobs, seconds (hourly by default).
    #[arg(
        long,
        env = "SOLGRID_SETTLEMENT_PERIOD_SECONDS",
        default_value_t = 3600
    )]
    pub settlement_period_seconds: u64,
    /// Gang placements tried before a job fails.
    #[arg(long, env = "SOLGRID_GANG_MAX_ATTEMPTS", default_value_t = 3)]
    pub gang_max_attempts: u32,
    /// How often a running job is looked at, seconds.
    #[arg(long, env = "SOLGRID_RUNNING_REQUEUE_SECONDS", default_value_t = 30)]
    pub running_requeue_seconds: u64,
    /// GPU model quoted for an NVIDIA job that allows any model.
    #[arg(long, env = "SOLGRID_DEFAULT_NVIDIA_MODEL", default_value = "rtx-4090")]
    pub default_nvidia_model: String,
    /// GPU model quoted for an Apple job that allows any model.
    #[arg(long, env = "SOLGRID_DEFAULT_APPLE_MODEL", default_value = "apple-m2")]
    pub default_apple_model: String,
    /// Reconciles run at once per controller.
    #[arg(long, env = "SOLGRID_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Heartbeat Lease namespace (node leases, for GpuNode online/offline).
    #[arg(
        long,
        env = "SOLGRID_NODE_LEASE_NAMESPACE",
        default_value = "kube-node-lease"
    )]
    pub node_lease_namespace: String,
    /// A GpuNode without a heartbeat for this long is Offline, seconds.
    #[arg(long, env = "SOLGRID_HEARTBEAT_TIMEOUT_SECONDS", default_value_t = 120)]
    pub heartbeat_timeout_seconds: u64,
    /// Proof-of-work verification interval, seconds.
    #[arg(
        long,
        env = "SOLGRID_VERIFICATION_INTERVAL_SECONDS",
        default_value_t = 3600
    )]
    pub verification_interval_seconds: u64,
    /// Idle-reward distribution interval, seconds.
    #[arg(long, env = "SOLGRID_REWARD_INTERVAL_SECONDS", default_value_t = 3600)]
    pub reward_interval_seconds: u64,
    /// Image of the verification workload pod.
    #[arg(
        long,
        env = "SOLGRID_VERIFIER_IMAGE",
        default_value = "ghcr.io/solgrid/verifier:0.2.0"
    )]
    pub verifier_image: String,
    /// Proof-of-work sizing, tolerance and expiry (`--verify-*`).
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// The scheduled buyback of IO with the treasury's stablecoin (`--buyback-*`).
    #[command(flatten)]
    pub buyback: BuybackArgs,

    /// Log format: `text` or `json`.
    #[arg(long, env = "SOLGRID_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Whether and how to reach Solana.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolanaSettings {
    pub rpc_url: String,
    pub io_mint: String,
    pub usdc_mint: String,
    pub authority_keypair: PathBuf,
}

/// The resolved configuration the controllers read (through `Context::config`).
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub http_addr: SocketAddr,
    pub watch_namespace: Option<String>,
    pub scheduler_name: String,
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub lease_grace: Duration,
    pub ledger_path: PathBuf,
    pub solana: Option<SolanaSettings>,
    pub market: MarketConfig,
    pub periods: Periods,
    pub gang_max_attempts: u32,
    pub running_requeue: Duration,
    pub default_nvidia_model: solgrid_market::GpuModel,
    pub default_apple_model: solgrid_market::GpuModel,
    pub concurrency: u16,
    pub node_lease_namespace: String,
    pub heartbeat_timeout: Duration,
    pub verification_interval: Duration,
    pub reward_interval: Duration,
    pub verifier_image: String,
    /// Proof-of-work sizing, tolerance and expiry.
    pub verify: VerifyArgs,
    pub buyback: BuybackArgs,
    /// Field manager of every server-side apply.
    pub field_manager: String,
}

/// A configuration that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Default for OperatorConfig {
    /// Defaults for tests: exactly the flags' defaults, with leader election off.
    fn default() -> Self {
        let mut cfg = Cli::parse_from(["solgrid-operator"])
            .resolve()
            .expect("the default configuration is valid");
        cfg.leader_election = false;
        cfg
    }
}

impl Cli {
    /// Validates and resolves the flags.
    pub fn resolve(self) -> Result<OperatorConfig, ConfigError> {
        let mut market = match &self.market_config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => MarketConfig::default(),
        };
        if let Some(v) = self.requester_fee_bps {
            market.fees.requester_fee_bps = v;
        }
        if let Some(v) = self.provider_fee_bps {
            market.fees.provider_fee_bps = v;
        }
        if let Some(v) = self.stablecoin_surcharge_bps {
            market.fees.stablecoin_surcharge_bps = v;
        }
        market
            .fees
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("fees: {e}")))?;
        market
            .pricing
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("pricing: {e}")))?;
        let solana = match (
            self.solana_rpc_url,
            self.io_mint,
            self.usdc_mint,
            self.authority_keypair,
        ) {
            (None, None, None, None) => None,
            (Some(rpc_url), Some(io_mint), Some(usdc_mint), Some(authority_keypair)) => {
                Some(SolanaSettings {
                    rpc_url,
                    io_mint,
                    usdc_mint,
                    authority_keypair,
                })
            }
            _ => {
                return Err(ConfigError::Invalid(
                    "--solana-rpc-url, --io-mint, --usdc-mint and --authority-keypair go together"
                        .into(),
                ));
            }
        };
        if self.settlement_period_seconds == 0 {
            return Err(ConfigError::Invalid(
                "--settlement-period-seconds must be above 0".into(),
            ));
        }
        if self.lease_grace_seconds >= self.lease_duration_seconds {
            return Err(ConfigError::Invalid(
                "--lease-grace-seconds must be below --lease-duration-seconds".into(),
            ));
        }
        let model = |flag: &str, s: &str| {
            solgrid_market::GpuModel::parse(s)
                .ok_or_else(|| ConfigError::Invalid(format!("{flag}: unknown GPU model {s:?}")))
        };
        let identity = self
            .identity
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("solgrid-operator-{}", std::process::id()));
        Ok(OperatorConfig {
            http_addr: self.http_addr,
            watch_namespace: self.watch_namespace,
            scheduler_name: self.scheduler_name,
            leader_election: self.leader_election,
            lease_name: self.lease_name,
            lease_namespace: self.lease_namespace,
            identity,
            lease_duration: Duration::from_secs(self.lease_duration_seconds),
            lease_grace: Duration::from_secs(self.lease_grace_seconds),
            ledger_path: self.ledger_path,
            solana,
            market,
            periods: Periods {
                period_ms: self.settlement_period_seconds.saturating_mul(1000),
            },
            gang_max_attempts: self.gang_max_attempts.max(1),
            running_requeue: Duration::from_secs(self.running_requeue_seconds.max(1)),
            default_nvidia_model: model("--default-nvidia-model", &self.default_nvidia_model)?,
            default_apple_model: model("--default-apple-model", &self.default_apple_model)?,
            concurrency: self.concurrency.max(1),
            node_lease_namespace: self.node_lease_namespace,
            heartbeat_timeout: Duration::from_secs(self.heartbeat_timeout_seconds),
            verification_interval: Duration::from_secs(self.verification_interval_seconds.max(1)),
            reward_interval: Duration::from_secs(self.reward_interval_seconds.max(1)),
            verifier_image: self.verifier_image,
            verify: self.verify.validated().map_err(ConfigError::Invalid)?,
            buyback: self.buyback.validated().map_err(ConfigError::Invalid)?,
            field_manager: "solgrid-operator".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_market::fees::FeeConfig;

    #[test]
    fn defaults_resolve() {
        let c = OperatorConfig::default();
        assert_eq!(c.scheduler_name, "solgrid-scheduler");
        assert_eq!(c.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.periods.period_ms, 3_600_000);
        assert_eq!(c.market.fees, FeeConfig::default());
        assert!(c.solana.is_none());
        // the models `kubectl solgrid quote` prices an any-model job as
        assert_eq!(
            c.default_nvidia_model,
            solgrid_crds::market::DEFAULT_NVIDIA_MODEL
        );
        assert_eq!(
            c.default_apple_model,
            solgrid_crds::market::DEFAULT_APPLE_MODEL
        );
    }

    #[test]
    fn solana_flags_go_together() {
        let r = Cli::parse_from(["x", "--solana-rpc-url", "http://127.0.0.1:8899"]).resolve();
        assert!(matches!(r, Err(ConfigError::Invalid(_))));
        let c = Cli::parse_from([
            "x",
            "--solana-rpc-url",
            "http://127.0.0.1:8899",
            "--io-mint",
            "a",
            "--usdc-mint",
            "b",
            "--authority-keypair",
            "/k.json",
            "--provider-fee-bps",
            "30",
        ])
        .resolve()
        .unwrap();
        assert!(c.solana.is_some());
        assert_eq!(c.market.fees.provider_fee_bps, 30);
    }
}
