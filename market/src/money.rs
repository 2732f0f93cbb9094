//! Checked integer money arithmetic: every amount is a `u64` of base units, widened
//! to `u128` inside a computation, and every operation that could overflow returns
//! [`MoneyError`] instead of panicking.

use crate::ledger::Amount;
use thiserror::Error;

/// Basis points in one whole (100 %).
pub const BPS: u128 = 10_000;
/// Parts per million in one whole.
pub const PPM: u128 = 1_000_000;
/// Milliseconds in an hour: prices are per GPU-hour, usage is in GPU-milliseconds.
pub const MS_PER_HOUR: u128 = 3_600_000;

/// Why a money computation could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    /// A result does not fit in a `u64` (or an intermediate in a `u128`).
    #[error("amount overflow in {0}")]
    Overflow(&'static str),
    /// A subtraction would go below zero.
    #[error("amount underflow in {0}")]
    Underflow(&'static str),
    /// Division by zero (a zero rate or unit in the configuration).
    #[error("division by zero in {0}")]
    DivisionByZero(&'static str),
}

/// `floor(a * b / d)`, exact, in `u128`.
pub fn mul_div_floor(a: u128, b: u128, d: u128, what: &'static str) -> Result<u128, MoneyError> {
    if d == 0 {
        return Err(MoneyError::DivisionByZero(what));
    }
    let p = a.checked_mul(b).ok_or(MoneyError::Overflow(what))?;
    Ok(p / d)
}

/// `ceil(a * b / d)`, exact, in `u128`.
pub fn mul_div_ceil(a: u128, b: u128, d: u128, what: &'static str) -> Result<u128, MoneyError> {
    if d == 0 {
        return Err(MoneyError::DivisionByZero(what));
    }
    let p = a.checked_mul(b).ok_or(MoneyError::Overflow(what))?;
    Ok(p.div_ceil(d))
}

/// `ceil(amount * bps / 10_000)`: a fee at a basis-point rate, rounded up.
pub fn bps_ceil(amount: Amount, bps: u32) -> Result<Amount, MoneyError> {
    to_amount(
        mul_div_ceil(amount as u128, bps as u128, BPS, "bps_ceil")?,
        "bps_ceil",
    )
}

/// `floor(amount * bps / 10_000)`: a share at a basis-point rate, rounded down.
pub fn bps_floor(amount: Amount, bps: u32) -> Result<Amount, MoneyError> {
    to_amount(
        mul_div_floor(amount as u128, bps as u128, BPS, "bps_floor")?,
        "bps_floor",
    )
}

/// Narrows a `u128` to an [`Amount`], or fails.
pub fn to_amount(v: u128, what: &'static str) -> Result<Amount, MoneyError> {
    Amount::try_from(v).map_err(|_| MoneyError::Overflow(what))
}

/// `a + b`, checked.
pub fn add(a: Amount, b: Amount, what: &'static str) -> Result<Amount, MoneyError> {
    a.checked_add(b).ok_or(MoneyError::Overflow(what))
}

/// `a - b`, checked.
pub fn sub(a: Amount, b: Amount, what: &'static str) -> Result<Amount, MoneyError> {
    a.checked_sub(b).ok_or(MoneyError::Underflow(what))
}

/// Sums amounts, checked.
pub fn sum<I: IntoIterator<Item = Amount>>(
    it: I,
    what: &'static str,
) -> Result<Amount, MoneyError> {
    it.into_iter().try_fold(0u64, |acc, x| add(acc, x, what))
}

/// `10^decimals` base units per whole token, or an overflow for absurd decimals (> 19).
pub fn unit_for_decimals(decimals: u8) -> Result<Amount, MoneyError> {
    10u64
        .checked_pow(decimals as u32)
        .ok_or(MoneyError::Overflow("unit_for_decimals"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_directions() {
        assert_eq!(bps_ceil(1, 25).unwrap(), 1);
        assert_eq!(bps_ceil(0, 25).unwrap(), 0);
        assert_eq!(bps_ceil(400, 25).unwrap(), 1);
        assert_eq!(bps_ceil(401, 25).unwrap(), 2);
        assert_eq!(bps_floor(399, 25).unwrap(), 0);
        assert_eq!(mul_div_floor(7, 3, 2, "t").unwrap(), 10);
        assert_eq!(mul_div_ceil(7, 3, 2, "t").unwrap(), 11);
    }

    #[test]
    fn errors_not_panics() {
        assert_eq!(
            mul_div_floor(1, 1, 0, "t"),
            Err(MoneyError::DivisionByZero("t"))
        );
        assert!(mul_div_floor(u128::MAX, 2, 1, "t").is_err());
        assert!(to_amount(u64::MAX as u128 + 1, "t").is_err());
        assert!(sub(1, 2, "t").is_err());
        assert!(add(u64::MAX, 1, "t").is_err());
        assert_eq!(unit_for_decimals(9).unwrap(), 1_000_000_000);
        assert!(unit_for_decimals(20).is_err());
    }
}
