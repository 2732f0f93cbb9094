//! Dynamic pricing: the quote per GPU-hour of a job.
//!
//! ```text
//! price_uusd = floor(ref(model) * U * X * Y / 10_000^3)    U, X, Y in bps
//! price_uusd = max(price_uusd, floor_uusd)                  provider floor
//! price      = ceil(price_uusd * unit / token_price_uusd)   base units of the token
//! below_market = budget_cap < price                         the job waits
//! ```
//!
//! - `ref(model)`: the reference price table, micro-USD per GPU-hour ([`default_reference_prices`]).
//! - `U` urgency: `low < normal < high < critical` (defaults 8,500 / 10,000 / 13,000 / 18,000 bps).
//! - `X` complexity, `10_000 + g + w + v + d`, each term capped:
//!   `g = min((gpus_per_worker-1)*150, 1_500)`, `w = min((workers-1)*100, 2_000)`,
//!   `v = min(max(0, min_vram_gib-16)*15, 1_500)`, `d = min(ceil_hours(max_duration)*25, 1_000)`;
//!   so `10_000 <= X <= 16_000`.
//! - `Y` supply, from the utilization `u` (ppm) of the GPU class:
//!   `Y = idle + linear*u/1e6 + cubic*u^3/1e18` (defaults 7,000 + 5,000 u + 18,000 u^3 bps):
//!   0.70× when idle, 1.0× near 40 %, 2.0× at 80 %, 3.0× when full.
//!
//! Each factor is monotone non-decreasing in its input and bounded, and so is the price.
//!
//! **A job accepting several GPU models** ([`PricingConfig::quote_models`]) is priced
//! at the dearest of them: each accepted class is quoted with its own utilization and
//! provider floor, and the highest price is locked. One locked price is what the job
//! pays on every node it runs on (ECONOMICS.md), so it must be enough for any class it
//! may land on: a job listing `rtx-3060` and `h100` pays the H100 price, never the
//! RTX 3060 one while running on an H100. The locked price is therefore at least every
//! accepted class's own quote, and at least each class's floor; a node whose own floor
//! is above the locked price is filtered out when the pods are placed.

use crate::gpu::{GpuModel, ModelTable};
use crate::ledger::{Amount, Token};
use crate::money::{self, MoneyError};
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// How soon the developer needs the GPUs; dearer when sooner.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Urgency {
    pub const ALL: [Urgency; 4] = [
        Urgency::Low,
        Urgency::Normal,
        Urgency::High,
        Urgency::Critical,
    ];
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
            Urgency::Critical => "critical",
        })
    }
}

/// Reference prices, micro-USD per GPU-hour (market rates of late 2025 for
/// decentralized GPU clouds).
pub fn default_reference_prices() -> ModelTable<u64> {
    use GpuModel::*;
    ModelTable::from_fn(|m| match m {
        Rtx3060 => 100_000,
        Rtx3070 => 130_000,
        Rtx3080 => 180_000,
        Rtx3090 => 250_000,
        Rtx4060 => 120_000,
        Rtx4070 => 180_000,
        Rtx4080 => 300_000,
        Rtx4090 => 450_000,
        Rtx5070 => 250_000,
        Rtx5080 => 450_000,
        Rtx5090 => 750_000,
        A100_40 => 1_100_000,
        A100_80 => 1_500_000,
        H100 => 2_200_000,
        H200 => 3_000_000,
        L40s => 900_000,
        AppleM1 => 50_000,
        AppleM2 => 80_000,
        AppleM3 => 110_000,
        AppleM4 => 150_000,
    })
}

fn de_reference<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModelTable<u64>, D::Error> {
    crate::gpu::deserialize_overlay(d, default_reference_prices())
}

/// Urgency factors, bps. Must be non-decreasing from `low` to `critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UrgencyFactors {
    pub low_bps: u32,
    pub normal_bps: u32,
    pub high_bps: u32,
    pub critical_bps: u32,
}

impl Default for UrgencyFactors {
    fn default() -> Self {
        UrgencyFactors {
            low_bps: 8_500,
            normal_bps: 10_000,
            high_bps: 13_000,
            critical_bps: 18_000,
        }
    }
}

impl UrgencyFactors {
    /// `U(urgency)`, bps.
    pub fn factor_bps(&self, u: Urgency) -> u32 {
        match u {
            Urgency::Low => self.low_bps,
            Urgency::Normal => self.normal_bps,
            Urgency::High => self.high_bps,
            Urgency::Critical => self.critical_bps,
        }
    }
}

/// Complexity factor parameters (bps per step and caps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ComplexityConfig {
    pub per_extra_gpu_bps: u32,
    pub max_gpus_bps: u32,
    pub per_extra_worker_bps: u32,
    pub max_workers_bps: u32,
    /// VRAM above this many GiB costs extra.
    pub vram_free_gib: u32,
    pub per_vram_gib_bps: u32,
    pub max_vram_bps: u32,
    pub per_hour_bps: u32,
    pub max_duration_bps: u32,
}

impl Default for ComplexityConfig {
    fn default() -> Self {
        ComplexityConfig {
            per_extra_gpu_bps: 150,
            max_gpus_bps: 1_500,
            per_extra_worker_bps: 100,
            max_workers_bps: 2_000,
            vram_free_gib: 16,
            per_vram_gib_bps: 15,
            max_vram_bps: 1_500,
            per_hour_bps: 25,
            max_duration_bps: 1_000,
        }
    }
}

impl ComplexityConfig {
    /// `X = 10_000 + g + w + v + d` (see the module docs); bounded by [`Self::max_bps`].
    pub fn factor_bps(
        &self,
        gpus_per_worker: u32,
        workers: u32,
        min_vram_mib: u64,
        max_duration_ms: u64,
    ) -> u32 {
        let step = |n: u64, per: u32, cap: u32| -> u32 {
            n.saturating_mul(per as u64).min(cap as u64) as u32
        };
        let g = step(
            gpus_per_worker.saturating_sub(1) as u64,
            self.per_extra_gpu_bps,
            self.max_gpus_bps,
        );
        let w = step(
            workers.saturating_sub(1) as u64,
            self.per_extra_worker_bps,
            self.max_workers_bps,
        );
        let gib = min_vram_mib.div_ceil(1024);
        let v = step(
            gib.saturating_sub(self.vram_free_gib as u64),
            self.per_vram_gib_bps,
            self.max_vram_bps,
        );
        let d = step(
            max_duration_ms.div_ceil(3_600_000),
            self.per_hour_bps,
            self.max_duration_bps,
        );
        10_000u32
            .saturating_add(g)
            .saturating_add(w)
            .saturating_add(v)
            .saturating_add(d)
    }
    /// The largest `X`.
    pub fn max_bps(&self) -> u32 {
        10_000u32
            .saturating_add(self.max_gpus_bps)
            .saturating_add(self.max_workers_bps)
            .saturating_add(self.max_vram_bps)
            .saturating_add(self.max_duration_bps)
    }
}

/// Supply factor parameters: `Y(u) = idle + linear*u + cubic*u^3` (u in 0..1), bps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SupplyConfig {
    pub idle_bps: u32,
    pub linear_bps: u32,
    pub cubic_bps: u32,
}

impl Default for SupplyConfig {
    fn default() -> Self {
        SupplyConfig {
            idle_bps: 7_000,
            linear_bps: 5_000,
            cubic_bps: 18_000,
        }
    }
}

impl SupplyConfig {
    /// `Y(u)` in bps for utilization `u` in ppm (clamped to 0..=1,000,000).
    pub fn factor_bps(&self, utilization_ppm: u32) -> u32 {
        let u = utilization_ppm.min(1_000_000) as u128;
        let lin = self.linear_bps as u128 * u / 1_000_000;
        let cub = self.cubic_bps as u128 * u * u * u / 1_000_000_000_000_000_000;
        (self.idle_bps as u128 + lin + cub).min(u32::MAX as u128) as u32
    }
    /// `Y(1)`, the largest.
    pub fn max_bps(&self) -> u32 {
        self.factor_bps(1_000_000)
    }
}

/// What one whole token is worth, and its decimals: converts micro-USD to base units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRate {
    /// Micro-USD per whole token (e.g. 1,000,000 for USDC).
    pub micro_usd_per_token: u64,
    /// Base units per whole token (10^decimals).
    pub unit: Amount,
}

impl TokenRate {
    /// `ceil(micro_usd * unit / micro_usd_per_token)`: never below the USD amount.
    pub fn from_micro_usd(&self, micro_usd: u64) -> Result<Amount, MoneyError> {
        money::to_amount(
            money::mul_div_ceil(
                micro_usd as u128,
                self.unit as u128,
                self.micro_usd_per_token as u128,
                "to token",
            )?,
            "to token",
        )
    }
    /// `floor(amount * micro_usd_per_token / unit)`.
    pub fn to_micro_usd(&self, amount: Amount) -> Result<u64, MoneyError> {
        money::to_amount(
            money::mul_div_floor(
                amount as u128,
                self.micro_usd_per_token as u128,
                self.unit as u128,
                "to micro-usd",
            )?,
            "to micro-usd",
        )
    }
}

/// The pricing configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PricingConfig {
    /// Micro-USD per GPU-hour, per model (a partial map overrides the defaults).
    #[serde(deserialize_with = "de_reference")]
    pub reference_micro_usd: ModelTable<u64>,
    pub urgency: UrgencyFactors,
    pub complexity: ComplexityConfig,
    pub supply: SupplyConfig,
    /// IO: default $0.50 per IO, 9 decimals.
    pub io_rate: TokenRate,
    /// USDC: $1, 6 decimals.
    pub usdc_rate: TokenRate,
}

impl Default for PricingConfig {
    fn default() -> Self {
        PricingConfig {
            reference_micro_usd: default_reference_prices(),
            urgency: UrgencyFactors::default(),
            complexity: ComplexityConfig::default(),
            supply: SupplyConfig::default(),
            io_rate: TokenRate {
                micro_usd_per_token: 500_000,
                unit: 1_000_000_000,
            },
            usdc_rate: TokenRate {
                micro_usd_per_token: 1_000_000,
                unit: 1_000_000,
            },
        }
    }
}

/// Why a quote cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PricingError {
    #[error("invalid pricing configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("no GPU model to quote")]
    NoModel,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// One GPU class a job accepts, with its market state (for [`PricingConfig::quote_models`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSupply {
    pub model: GpuModel,
    /// Utilization of the class, ppm.
    pub utilization_ppm: u32,
    /// The provider floor of the class (the lowest among its nodes), micro-USD; 0 = none.
    pub floor_micro_usd: u64,
}

impl PricingConfig {
    pub fn rate(&self, token: Token) -> TokenRate {
        match token {
            Token::Io => self.io_rate,
            Token::Usdc => self.usdc_rate,
        }
    }

    /// Urgency non-decreasing, rates non-zero.
    pub fn validate(&self) -> Result<(), PricingError> {
        let u = &self.urgency;
        if !(u.low_bps <= u.normal_bps
            && u.normal_bps <= u.high_bps
            && u.high_bps <= u.critical_bps)
        {
            return Err(PricingError::InvalidConfig(
                "urgency factors must be non-decreasing low..critical",
            ));
        }
        for r in [self.io_rate, self.usdc_rate] {
            if r.micro_usd_per_token == 0 || r.unit == 0 {
                return Err(PricingError::InvalidConfig(
                    "token rates and units must be non-zero",
                ));
            }
        }
        Ok(())
    }

    /// The reference price of a model, micro-USD per GPU-hour.
    pub fn reference(&self, model: GpuModel) -> u64 {
        self.reference_micro_usd.get(model)
    }

    /// Computes a quote. See the module docs for the formula.
    pub fn quote(&self, req: &QuoteRequest) -> Result<Quote, PricingError> {
        self.validate()?;
        let reference = self.reference(req.model);
        let urgency_bps = self.urgency.factor_bps(req.urgency);
        let complexity_bps = self.complexity.factor_bps(
            req.gpus_per_worker,
            req.workers,
            req.min_vram_mib,
            req.max_duration_ms,
        );
        let supply_bps = self.supply.factor_bps(req.utilization_ppm);
        let market = (reference as u128)
            .checked_mul(urgency_bps as u128)
            .and_then(|x| x.checked_mul(complexity_bps as u128))
            .and_then(|x| x.checked_mul(supply_bps as u128))
            .ok_or(MoneyError::Overflow("quote"))?
            / 1_000_000_000_000;
        let market_micro_usd = money::to_amount(market, "quote")?;
        let floor_applied = req.floor_micro_usd > market_micro_usd;
        let price_micro_usd = market_micro_usd.max(req.floor_micro_usd);
        let price_per_gpu_hour = self.rate(req.token).from_micro_usd(price_micro_usd)?;
        let below_market = req
            .budget_cap_per_gpu_hour
            .is_some_and(|cap| cap < price_per_gpu_hour);
        Ok(Quote {
            model: req.model,
            token: req.token,
            reference_micro_usd: reference,
            urgency_bps,
            complexity_bps,
            supply_bps,
            market_micro_usd,
            floor_applied,
            price_micro_usd,
            price_per_gpu_hour,
            budget_cap_per_gpu_hour: req.budget_cap_per_gpu_hour,
            below_market,
        })
    }
}

impl PricingConfig {
    /// Quotes a job that accepts each of `models`: every class is quoted with `req`'s
    /// job terms and its own utilization and floor (`req.model`, `utilization_ppm` and
    /// `floor_micro_usd` are ignored), and the dearest quote is returned (on a tie, the
    /// first listed). Its price is `>=` the quote of every accepted class, so the job
    /// pays at least the market price of whichever class it runs on (module docs).
    pub fn quote_models(
        &self,
        req: &QuoteRequest,
        models: &[ModelSupply],
    ) -> Result<Quote, PricingError> {
        let mut best: Option<Quote> = None;
        for m in models {
            let q = self.quote(&QuoteRequest {
                model: m.model,
                utilization_ppm: m.utilization_ppm,
                floor_micro_usd: m.floor_micro_usd,
                ..*req
            })?;
            let dearer = best.as_ref().is_none_or(|b| {
                (q.price_per_gpu_hour, q.price_micro_usd)
                    > (b.price_per_gpu_hour, b.price_micro_usd)
            });
            if dearer {
                best = Some(q);
            }
        }
        best.ok_or(PricingError::NoModel)
    }
}

/// What a quote is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuoteRequest {
    /// The GPU class priced (for a job allowing several, the caller quotes the one it targets).
    pub model: GpuModel,
    pub token: Token,
    pub urgency: Urgency,
    pub gpus_per_worker: u32,
    pub workers: u32,
    pub min_vram_mib: u64,
    pub max_duration_ms: u64,
    /// Utilization of the GPU class, ppm (busy GPUs / healthy GPUs).
    pub utilization_ppm: u32,
    /// The provider floor to respect (e.g. the lowest floor among fitting nodes), micro-USD; 0 = none.
    pub floor_micro_usd: u64,
    /// The job's budget cap per GPU-hour, base units of `token`.
    pub budget_cap_per_gpu_hour: Option<Amount>,
}

/// A quote, with its factors (for the job's status and the logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    pub model: GpuModel,
    pub token: Token,
    pub reference_micro_usd: u64,
    pub urgency_bps: u32,
    pub complexity_bps: u32,
    pub supply_bps: u32,
    /// `floor(ref * U * X * Y / 1e12)`, before the provider floor.
    pub market_micro_usd: u64,
    /// The provider floor raised the price.
    pub floor_applied: bool,
    /// The price per GPU-hour in micro-USD (lock this with the token price: matching compares floors in micro-USD).
    pub price_micro_usd: u64,
    /// The price per GPU-hour in base units of `token`: the `P` of the fees.
    pub price_per_gpu_hour: Amount,
    pub budget_cap_per_gpu_hour: Option<Amount>,
    /// The budget cap is below the market price: the job waits.
    pub below_market: bool,
}

impl Quote {
    /// A human-readable condition message when the cap is below the market.
    pub fn below_market_message(&self) -> Option<String> {
        self.budget_cap_per_gpu_hour.filter(|_| self.below_market).map(|cap| {
            format!(
                "budget cap {cap} is below the market price {} {} base units per GPU-hour for {}",
                self.price_per_gpu_hour, self.token, self.model
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req() -> QuoteRequest {
        QuoteRequest {
            model: GpuModel::H100,
            token: Token::Usdc,
            urgency: Urgency::Normal,
            gpus_per_worker: 1,
            workers: 1,
            min_vram_mib: 0,
            max_duration_ms: 0,
            utilization_ppm: 0,
            floor_micro_usd: 0,
            budget_cap_per_gpu_hour: None,
        }
    }

    #[test]
    fn exact_numbers() {
        let cfg = PricingConfig::default();
        let q = cfg.quote(&req()).unwrap();
        // 2.20 $ * 1.0 * 1.0 * 0.70
        assert_eq!(q.supply_bps, 7_000);
        assert_eq!(q.price_micro_usd, 1_540_000);
        assert_eq!(q.price_per_gpu_hour, 1_540_000);
        let io = cfg
            .quote(&QuoteRequest {
                token: Token::Io,
                ..req()
            })
            .unwrap();
        assert_eq!(io.price_per_gpu_hour, 3_080_000_000); // 1.54 $ / 0.50 $ = 3.08 IO
        assert_eq!(cfg.supply.factor_bps(500_000), 7_000 + 2_500 + 2_250);
        assert_eq!(cfg.supply.max_bps(), 30_000);
        assert_eq!(
            cfg.complexity.factor_bps(8, 4, 80 * 1024, 10 * 3_600_000),
            10_000 + 1_050 + 300 + 960 + 250
        );
        assert_eq!(cfg.complexity.max_bps(), 16_000);
    }

    #[test]
    fn floor_and_cap() {
        let cfg = PricingConfig::default();
        let q = cfg
            .quote(&QuoteRequest {
                floor_micro_usd: 2_000_000,
                budget_cap_per_gpu_hour: Some(1_999_999),
                ..req()
            })
            .unwrap();
        assert!(q.floor_applied);
        assert_eq!(q.price_per_gpu_hour, 2_000_000);
        assert!(q.below_market);
        assert!(
            q.below_market_message()
                .unwrap()
                .contains("below the market")
        );
        let ok = cfg
            .quote(&QuoteRequest {
                budget_cap_per_gpu_hour: Some(1_540_000),
                ..req()
            })
            .unwrap();
        assert!(!ok.below_market);
    }

    #[test]
    fn bad_config() {
        let mut cfg = PricingConfig::default();
        cfg.urgency.low_bps = 20_000;
        assert!(cfg.quote(&req()).is_err());
        let mut cfg = PricingConfig::default();
        cfg.io_rate.micro_usd_per_token = 0;
        assert!(cfg.quote(&req()).is_err());
    }

    fn any_model() -> impl Strategy<Value = GpuModel> {
        (0..GpuModel::COUNT).prop_map(|i| GpuModel::ALL[i])
    }
    fn any_urgency() -> impl Strategy<Value = Urgency> {
        (0..4usize).prop_map(|i| Urgency::ALL[i])
    }

    #[test]
    fn several_models_pay_the_dearest() {
        let cfg = PricingConfig::default();
        let cheap = ModelSupply {
            model: GpuModel::Rtx3060,
            utilization_ppm: 0,
            floor_micro_usd: 0,
        };
        let h100 = ModelSupply {
            model: GpuModel::H100,
            ..cheap
        };
        // listed cheap first: still the H100 price (2.20 $ * 0.70)
        let q = cfg.quote_models(&req(), &[cheap, h100]).unwrap();
        assert_eq!((q.model, q.price_micro_usd), (GpuModel::H100, 1_540_000));
        // a busy RTX 3060 class with a high floor can be the dearer one
        let floored = ModelSupply {
            floor_micro_usd: 2_000_000,
            ..cheap
        };
        let q = cfg.quote_models(&req(), &[h100, floored]).unwrap();
        assert_eq!((q.model, q.price_micro_usd), (GpuModel::Rtx3060, 2_000_000));
        assert!(q.floor_applied);
        assert_eq!(
            cfg.quote_models(&req(), &[]),
            Err(PricingError::NoModel),
            "no model, no quote"
        );
    }

    fn any_supply() -> impl Strategy<Value = ModelSupply> {
        (
            any_model(),
            0u32..=1_000_000,
            prop_oneof![Just(0u64), 0u64..10_000_000],
        )
            .prop_map(|(model, utilization_ppm, floor_micro_usd)| ModelSupply {
                model,
                utilization_ppm,
                floor_micro_usd,
            })
    }

    proptest! {
        #[test]
        fn a_multi_model_quote_covers_every_accepted_model(
            models in proptest::collection::vec(any_supply(), 1..6),
            urgency in any_urgency(), gpus in 1u32..16, workers in 1u32..64,
            io in any::<bool>(), cap in prop_oneof![Just(None), (0u64..20_000_000_000).prop_map(Some)],
        ) {
            let cfg = PricingConfig::default();
            let token = if io { Token::Io } else { Token::Usdc };
            let base = QuoteRequest { token, urgency, gpus_per_worker: gpus, workers,
                                      budget_cap_per_gpu_hour: cap, ..req() };
            let q = cfg.quote_models(&base, &models).unwrap();
            for m in &models {
                let one = cfg.quote(&QuoteRequest { model: m.model, utilization_ppm: m.utilization_ppm,
                                                    floor_micro_usd: m.floor_micro_usd, ..base }).unwrap();
                prop_assert!(q.price_per_gpu_hour >= one.price_per_gpu_hour);
                prop_assert!(q.price_micro_usd >= one.price_micro_usd);
                prop_assert!(q.price_micro_usd >= m.floor_micro_usd, "never below a floor");
                // the floor in the token: a node whose floor equals a class's floor still fits
                let floor_in_token = cfg.rate(token).from_micro_usd(m.floor_micro_usd).unwrap();
                prop_assert!(q.price_per_gpu_hour >= floor_in_token);
            }
            // the locked quote is one of the classes' own quotes, whatever the order
            prop_assert!(models.iter().any(|m| m.model == q.model));
            let mut rev = models.clone();
            rev.reverse();
            let r = cfg.quote_models(&base, &rev).unwrap();
            prop_assert_eq!(r.price_per_gpu_hour, q.price_per_gpu_hour);
            prop_assert_eq!(q.below_market, cap.is_some_and(|c| c < q.price_per_gpu_hour));
            // escrow covers the price actually charged on any accepted class
            let fees = crate::fees::FeeConfig::default();
            let hour = 3_600_000u64;
            let esc = crate::fees::escrow_max_cost(workers, gpus, hour, q.price_per_gpu_hour, token, &fees).unwrap();
            for m in &models {
                let one = cfg.quote(&QuoteRequest { model: m.model, utilization_ppm: m.utilization_ppm,
                                                    floor_micro_usd: m.floor_micro_usd, ..base }).unwrap();
                let e1 = crate::fees::escrow_max_cost(workers, gpus, hour, one.price_per_gpu_hour, token, &fees).unwrap();
                prop_assert!(esc.total >= e1.total);
            }
        }

        #[test]
        fn factors_monotone_and_bounded(a in 0u32..=1_200_000, b in 0u32..=1_200_000,
                                       g1 in 0u32..64, g2 in 0u32..64, w1 in 0u32..1000, w2 in 0u32..1000,
                                       v1 in 0u64..1_000_000, v2 in 0u64..1_000_000,
                                       d1 in 0u64..1_000_000_000, d2 in 0u64..1_000_000_000) {
            let cfg = PricingConfig::default();
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(cfg.supply.factor_bps(lo) <= cfg.supply.factor_bps(hi));
            prop_assert!(cfg.supply.factor_bps(hi) <= cfg.supply.max_bps());
            prop_assert!(cfg.supply.factor_bps(lo) >= cfg.supply.idle_bps);
            let x1 = cfg.complexity.factor_bps(g1.min(g2), w1.min(w2), v1.min(v2), d1.min(d2));
            let x2 = cfg.complexity.factor_bps(g1.max(g2), w1.max(w2), v1.max(v2), d1.max(d2));
            prop_assert!(10_000 <= x1 && x1 <= x2 && x2 <= cfg.complexity.max_bps());
        }

        #[test]
        fn price_monotone_and_bounded(model in any_model(), u1 in any_urgency(), u2 in any_urgency(),
                                      a in 0u32..=1_000_000, b in 0u32..=1_000_000,
                                      gpus in 1u32..16, workers in 1u32..64, floor in 0u64..10_000_000,
                                      io in any::<bool>()) {
            let cfg = PricingConfig::default();
            let token = if io { Token::Io } else { Token::Usdc };
            let base = QuoteRequest { model, token, gpus_per_worker: gpus, workers, floor_micro_usd: floor, ..req() };
            let lo = cfg.quote(&QuoteRequest { urgency: u1.min(u2), utilization_ppm: a.min(b), ..base }).unwrap();
            let hi = cfg.quote(&QuoteRequest { urgency: u1.max(u2), utilization_ppm: a.max(b), ..base }).unwrap();
            prop_assert!(lo.price_per_gpu_hour <= hi.price_per_gpu_hour);
            prop_assert!(lo.price_micro_usd >= floor);
            let r = cfg.reference(model) as u128;
            let max = r * 18_000 * cfg.complexity.max_bps() as u128 * 30_000 / 1_000_000_000_000;
            let min = r * 8_500 * 10_000 * 7_000 / 1_000_000_000_000;
            prop_assert!((hi.market_micro_usd as u128) <= max);
            prop_assert!((lo.market_micro_usd as u128) >= min);
        }
    }
}
