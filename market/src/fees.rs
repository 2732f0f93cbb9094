//! Fees on each compute transaction (ECONOMICS.md, "Fees on each compute transaction").
//!
//! With `P` the locked price per GPU-hour (base units of the payment token) and
//! `gpu_ms` the GPU-milliseconds delivered:
//!
//! ```text
//! C  = floor(gpu_ms * P / 3_600_000)            compute cost
//! Fr = ceil(C * requester_fee_bps / 10_000)      requester fee   (default 25 bps)
//! Fp = ceil(C * provider_fee_bps / 10_000)       provider fee    (default 25 bps)
//! S  = ceil(C * stablecoin_surcharge_bps / 10_000) if paid in a stablecoin, else 0 (default 200 bps)
//! paid = C + Fr + S,  received = C - Fp,  protocol = Fr + Fp + S
//! paid == received + protocol                    (exactly, by construction)
//! ```
//!
//! Escrow before scheduling: `Cmax = floor(workers * gpus * max_ms * P / 3_600_000)`,
//! `escrow = Cmax + Fr(Cmax) + S(Cmax)`.

use crate::ledger::{Amount, Token};
use crate::money::{self, MS_PER_HOUR, MoneyError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Fee rates, in basis points. Defaults: 25 / 25 / 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FeeConfig {
    pub requester_fee_bps: u32,
    pub provider_fee_bps: u32,
    pub stablecoin_surcharge_bps: u32,
}

impl Default for FeeConfig {
    fn default() -> Self {
        FeeConfig {
            requester_fee_bps: 25,
            provider_fee_bps: 25,
            stablecoin_surcharge_bps: 200,
        }
    }
}

/// A fee configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FeeError {
    #[error("{field} = {value} bps is above 10000 (100 %)")]
    RateTooHigh { field: &'static str, value: u32 },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl FeeConfig {
    /// Every rate at most 10,000 bps (so that `C - Fp` never goes below zero).
    pub fn validate(&self) -> Result<(), FeeError> {
        for (field, value) in [
            ("requesterFeeBps", self.requester_fee_bps),
            ("providerFeeBps", self.provider_fee_bps),
            ("stablecoinSurchargeBps", self.stablecoin_surcharge_bps),
        ] {
            if value > 10_000 {
                return Err(FeeError::RateTooHigh { field, value });
            }
        }
        Ok(())
    }

    /// The surcharge rate for `token`: `stablecoin_surcharge_bps` for a stablecoin, else 0.
    pub fn surcharge_bps(&self, token: Token) -> u32 {
        if token.is_stablecoin() {
            self.stablecoin_surcharge_bps
        } else {
            0
        }
    }
}

/// `C = floor(gpu_ms * P / 3_600_000)`.
pub fn compute_cost(gpu_ms: u64, price_per_gpu_hour: Amount) -> Result<Amount, MoneyError> {
    money::to_amount(
        money::mul_div_floor(
            gpu_ms as u128,
            price_per_gpu_hour as u128,
            MS_PER_HOUR,
            "compute_cost",
        )?,
        "compute_cost",
    )
}

/// The fees on one compute amount `C`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeeBreakdown {
    /// `C`
    pub compute: Amount,
    /// `Fr`
    pub requester_fee: Amount,
    /// `Fp`
    pub provider_fee: Amount,
    /// `S` (0 when paid in IO)
    pub surcharge: Amount,
}

impl FeeBreakdown {
    /// `C + Fr + S`
    pub fn paid(&self) -> Result<Amount, MoneyError> {
        money::add(
            money::add(self.compute, self.requester_fee, "paid")?,
            self.surcharge,
            "paid",
        )
    }
    /// `C - Fp`
    pub fn received(&self) -> Result<Amount, MoneyError> {
        money::sub(self.compute, self.provider_fee, "received")
    }
    /// `Fr + Fp + S`
    pub fn protocol(&self) -> Result<Amount, MoneyError> {
        money::add(
            money::add(self.requester_fee, self.provider_fee, "protocol")?,
            self.surcharge,
            "protocol",
        )
    }
}

/// The fees on compute `C` paid in `token`.
pub fn fees(compute: Amount, token: Token, cfg: &FeeConfig) -> Result<FeeBreakdown, FeeError> {
    cfg.validate()?;
    Ok(FeeBreakdown {
        compute,
        requester_fee: money::bps_ceil(compute, cfg.requester_fee_bps)?,
        provider_fee: money::bps_ceil(compute, cfg.provider_fee_bps)?,
        surcharge: money::bps_ceil(compute, cfg.surcharge_bps(token))?,
    })
}

/// The fees on `gpu_ms` at price `P`, in `token`.
pub fn fees_for_usage(
    gpu_ms: u64,
    price_per_gpu_hour: Amount,
    token: Token,
    cfg: &FeeConfig,
) -> Result<FeeBreakdown, FeeError> {
    fees(compute_cost(gpu_ms, price_per_gpu_hour)?, token, cfg)
}

/// What a job moves into escrow before it is scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EscrowAmount {
    /// `Cmax = floor(workers * gpus_per_worker * max_duration_ms * P / 3_600_000)`
    pub max_compute: Amount,
    /// `Fr(Cmax)`
    pub requester_fee: Amount,
    /// `S(Cmax)`
    pub surcharge: Amount,
    /// `Cmax + Fr(Cmax) + S(Cmax)`
    pub total: Amount,
}

/// The maximum cost of a job: workers × GPUs × max duration at `P`, plus `Fr` and `S` on it.
///
/// Settlement ([`crate::settlement`]) charges `Fr` and `S` on the job's cumulative
/// compute, so the sum over all periods never exceeds this amount.
pub fn escrow_max_cost(
    workers: u32,
    gpus_per_worker: u32,
    max_duration_ms: u64,
    price_per_gpu_hour: Amount,
    token: Token,
    cfg: &FeeConfig,
) -> Result<EscrowAmount, FeeError> {
    let gpu_ms = (workers as u128)
        .checked_mul(gpus_per_worker as u128)
        .and_then(|g| g.checked_mul(max_duration_ms as u128))
        .ok_or(MoneyError::Overflow("escrow gpu_ms"))?;
    let max_compute = money::to_amount(
        money::mul_div_floor(gpu_ms, price_per_gpu_hour as u128, MS_PER_HOUR, "escrow")?,
        "escrow",
    )?;
    let f = fees(max_compute, token, cfg)?;
    Ok(EscrowAmount {
        max_compute,
        requester_fee: f.requester_fee,
        surcharge: f.surcharge,
        total: f.paid()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worked_example_io() {
        // 1 GPU-hour at 2 IO (9 decimals) per GPU-hour.
        let p = 2_000_000_000;
        let f = fees_for_usage(3_600_000, p, Token::Io, &FeeConfig::default()).unwrap();
        assert_eq!(f.compute, 2_000_000_000);
        assert_eq!(f.requester_fee, 5_000_000);
        assert_eq!(f.provider_fee, 5_000_000);
        assert_eq!(f.surcharge, 0);
        assert_eq!(f.paid().unwrap(), 2_005_000_000);
        assert_eq!(f.received().unwrap(), 1_995_000_000);
        assert_eq!(f.protocol().unwrap(), 10_000_000);
    }

    #[test]
    fn worked_example_usdc_rounding() {
        // 1 GPU-second at 1.00 USDC (6 decimals) per hour: C = floor(1000*1e6/3.6e6) = 277.
        let f = fees_for_usage(1_000, 1_000_000, Token::Usdc, &FeeConfig::default()).unwrap();
        assert_eq!(f.compute, 277);
        assert_eq!(f.requester_fee, 1); // ceil(0.6925)
        assert_eq!(f.provider_fee, 1);
        assert_eq!(f.surcharge, 6); // ceil(5.54)
        assert_eq!(f.paid().unwrap(), 284);
        assert_eq!(f.received().unwrap(), 276);
        assert_eq!(f.protocol().unwrap(), 8);
    }

    #[test]
    fn escrow_example() {
        // 2 workers x 4 GPUs x 2 h at 1 USDC/h = 16 USDC + 0.04 + 0.32.
        let e = escrow_max_cost(
            2,
            4,
            7_200_000,
            1_000_000,
            Token::Usdc,
            &FeeConfig::default(),
        )
        .unwrap();
        assert_eq!(e.max_compute, 16_000_000);
        assert_eq!(e.requester_fee, 40_000);
        assert_eq!(e.surcharge, 320_000);
        assert_eq!(e.total, 16_360_000);
        let io =
            escrow_max_cost(2, 4, 7_200_000, 1_000_000, Token::Io, &FeeConfig::default()).unwrap();
        assert_eq!(io.total, 16_040_000);
    }

    #[test]
    fn bad_config_and_overflow_are_errors() {
        let cfg = FeeConfig {
            provider_fee_bps: 10_001,
            ..Default::default()
        };
        assert!(matches!(
            fees(100, Token::Io, &cfg),
            Err(FeeError::RateTooHigh { .. })
        ));
        assert!(compute_cost(u64::MAX, u64::MAX).is_err());
        assert!(
            escrow_max_cost(
                u32::MAX,
                u32::MAX,
                u64::MAX,
                u64::MAX,
                Token::Io,
                &FeeConfig::default()
            )
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn conservation_every_case(
            gpu_ms in 0u64..=u64::MAX / 4,
            price in 0u64..=10_000_000_000_000u64,
            rf in 0u32..=10_000, pf in 0u32..=10_000, sf in 0u32..=10_000,
            stable in any::<bool>(),
        ) {
            let cfg = FeeConfig { requester_fee_bps: rf, provider_fee_bps: pf, stablecoin_surcharge_bps: sf };
            let token = if stable { Token::Usdc } else { Token::Io };
            match fees_for_usage(gpu_ms, price, token, &cfg) {
                Ok(f) => {
                    if let (Ok(paid), Ok(received), Ok(protocol)) = (f.paid(), f.received(), f.protocol()) {
                        prop_assert_eq!(paid as u128, received as u128 + protocol as u128);
                    }
                    prop_assert!(f.provider_fee <= f.compute);
                    prop_assert_eq!(f.compute as u128, gpu_ms as u128 * price as u128 / 3_600_000);
                    if !stable { prop_assert_eq!(f.surcharge, 0); }
                }
                Err(_) => prop_assert!(gpu_ms as u128 * price as u128 / 3_600_000 > u64::MAX as u128),
            }
        }
    }
}
