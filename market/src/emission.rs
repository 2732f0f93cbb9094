//! The emission schedule: 300,000,000 IO over 240 months, falling 1.02 % a month,
//! paid hourly (730 hours a month), exact to the base unit.
//!
//! Month `m` emits `E_m = E_0 * q^m`, `q = 1 - 0.0102 = 4949/5000`, with `E_0` such
//! that the 240 months sum to the pool `T`:
//! `E_0 = T * (1 - q) / (1 - q^240)` (3,345,674.56 IO, "about 3,345,675").
//!
//! Amounts come from cumulative targets, never from summing rounded parts:
//!
//! ```text
//! M(m)    = floor(T * (1 - q^m) / (1 - q^240))         emitted by the start of month m
//!         = floor(T * (5000^240 - 4949^m * 5000^(240-m)) / (5000^240 - 4949^240))
//! cum(H)  = M(m) + floor((M(m+1) - M(m)) * h / 730)    H = 730*m + h, 0 <= h < 730
//! hourly(H) = cum(H+1) - cum(H)
//! ```
//!
//! `M(0) = 0` and `M(240) = T` exactly, so the hourly amounts over all 175,200
//! hours sum to `T` exactly, for any number of decimals. `M` is computed once with
//! exact big-integer arithmetic (a small unsigned bignum below: no floats).

use crate::ledger::Amount;
use crate::money::{self, MoneyError};
use serde::{Deserialize, Serialize};

/// Months in the schedule.
pub const MONTHS: u32 = 240;
/// Hours in a month.
pub const HOURS_PER_MONTH: u64 = 730;
/// Hours in the schedule (175,200).
pub const TOTAL_HOURS: u64 = MONTHS as u64 * HOURS_PER_MONTH;
/// The emission pool, whole IO.
pub const POOL_IO: u64 = 300_000_000;
/// Genesis supply, whole IO.
pub const GENESIS_IO: u64 = 500_000_000;
/// Maximum supply, whole IO.
pub const MAX_SUPPLY_IO: u64 = 800_000_000;
/// `q = Q_NUM / Q_DEN = 1 - 0.0102`.
pub const Q_NUM: u32 = 4_949;
pub const Q_DEN: u32 = 5_000;

/// The schedule for one mint: monthly cumulative targets in base units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmissionSchedule {
    /// Base units per IO.
    pub unit: Amount,
    /// The pool in base units.
    pub pool: Amount,
    /// `M(0..=240)`.
    month_start: Vec<Amount>,
}

impl EmissionSchedule {
    /// The schedule of the 300,000,000 IO pool for a mint with `decimals` (0..=9 fits a u64 comfortably; up to 10).
    pub fn new(decimals: u8) -> Result<EmissionSchedule, MoneyError> {
        let unit = money::unit_for_decimals(decimals)?;
        let pool = POOL_IO
            .checked_mul(unit)
            .ok_or(MoneyError::Overflow("emission pool"))?;
        Self::with_pool(pool, unit)
    }

    /// A schedule for an arbitrary pool (base units), same shape.
    pub fn with_pool(pool: Amount, unit: Amount) -> Result<EmissionSchedule, MoneyError> {
        let q_den_240 = Big::pow(Q_DEN, MONTHS);
        let q_num_240 = Big::pow(Q_NUM, MONTHS);
        let den = q_den_240.sub(&q_num_240);
        let pool_big = Big::from_u128(pool as u128);
        let mut month_start = Vec::with_capacity(MONTHS as usize + 1);
        for m in 0..=MONTHS {
            // T * (5000^240 - 4949^m * 5000^(240-m))
            let sub = Big::pow(Q_NUM, m).mul(&Big::pow(Q_DEN, MONTHS - m));
            let num = pool_big.mul(&q_den_240.sub(&sub));
            let v = num
                .div_to_u128(&den)
                .ok_or(MoneyError::Overflow("emission target"))?;
            month_start.push(money::to_amount(v, "emission target")?);
        }
        Ok(EmissionSchedule {
            unit,
            pool,
            month_start,
        })
    }

    /// `M(m)`: emitted by the start of month `m` (clamped to 240).
    pub fn emitted_by_month(&self, m: u32) -> Amount {
        self.month_start[m.min(MONTHS) as usize]
    }

    /// `E_m = M(m+1) - M(m)`: what month `m` emits (0 past the schedule).
    pub fn month(&self, m: u32) -> Amount {
        if m >= MONTHS {
            return 0;
        }
        self.month_start[m as usize + 1] - self.month_start[m as usize]
    }

    /// `cum(H)`: emitted by the start of hour `H` (the pool from hour 175,200 on).
    pub fn emitted_by_hour(&self, hour: u64) -> Amount {
        if hour >= TOTAL_HOURS {
            return self.pool;
        }
        let m = (hour / HOURS_PER_MONTH) as u32;
        let h = hour % HOURS_PER_MONTH;
        let start = self.month_start[m as usize];
        // month(m) <= pool < 2^64 and h < 730: the product fits in u128.
        start + (self.month(m) as u128 * h as u128 / HOURS_PER_MONTH as u128) as Amount
    }

    /// What hour `H` emits: `cum(H+1) - cum(H)`.
    pub fn hourly(&self, hour: u64) -> Amount {
        self.emitted_by_hour(hour.saturating_add(1)) - self.emitted_by_hour(hour)
    }
}

/// A minimal unsigned big integer (little-endian base-2^32 limbs), enough for the
/// exact schedule: multiply, subtract, compare, and a division whose quotient
/// fits in a u128.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn from_u128(mut v: u128) -> Big {
        let mut limbs = Vec::new();
        while v > 0 {
            limbs.push(v as u32);
            v >>= 32;
        }
        Big(limbs)
    }

    fn trim(mut self) -> Big {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
        self
    }

    fn pow(base: u32, exp: u32) -> Big {
        let mut r = Big::from_u128(1);
        for _ in 0..exp {
            r = r.mul_small(base);
        }
        r
    }

    fn mul_small(&self, k: u32) -> Big {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut carry = 0u64;
        for &l in &self.0 {
            let p = l as u64 * k as u64 + carry;
            out.push(p as u32);
            carry = p >> 32;
        }
        if carry > 0 {
            out.push(carry as u32);
        }
        Big(out).trim()
    }

    fn mul(&self, o: &Big) -> Big {
        let mut out = vec![0u32; self.0.len() + o.0.len()];
        for (i, &a) in self.0.iter().enumerate() {
            let mut carry = 0u64;
            for (j, &b) in o.0.iter().enumerate() {
                let t = out[i + j] as u64 + a as u64 * b as u64 + carry;
                out[i + j] = t as u32;
                carry = t >> 32;
            }
            let mut k = i + o.0.len();
            while carry > 0 {
                let t = out[k] as u64 + carry;
                out[k] = t as u32;
                carry = t >> 32;
                k += 1;
            }
        }
        Big(out).trim()
    }

    /// `self - o`, for `self >= o`.
    fn sub(&self, o: &Big) -> Big {
        let mut out = self.0.clone();
        let mut borrow = 0i64;
        for (i, limb) in out.iter_mut().enumerate() {
            let b = *o.0.get(i).unwrap_or(&0) as i64;
            let mut t = *limb as i64 - b - borrow;
            borrow = if t < 0 {
                t += 1 << 32;
                1
            } else {
                0
            };
            *limb = t as u32;
        }
        debug_assert_eq!(borrow, 0, "Big::sub underflow");
        Big(out).trim()
    }

    fn cmp(&self, o: &Big) -> std::cmp::Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    fn shl(&self, bits: u32) -> Big {
        let (words, bits) = ((bits / 32) as usize, bits % 32);
        let mut out = vec![0u32; words];
        let mut carry = 0u32;
        for &l in &self.0 {
            if bits == 0 {
                out.push(l);
            } else {
                out.push((l << bits) | carry);
                carry = l >> (32 - bits);
            }
        }
        if carry > 0 {
            out.push(carry);
        }
        Big(out).trim()
    }

    /// `floor(self / d)` when it fits in a u128 (shift-and-subtract); `None` otherwise or for `d = 0`.
    fn div_to_u128(&self, d: &Big) -> Option<u128> {
        if d.0.is_empty() {
            return None;
        }
        if self.cmp(&d.shl(128)) != std::cmp::Ordering::Less {
            return None;
        }
        let mut rem = self.clone();
        let mut q = 0u128;
        for i in (0..128).rev() {
            let s = d.shl(i);
            if rem.cmp(&s) != std::cmp::Ordering::Less {
                rem = rem.sub(&s);
                q |= 1u128 << i;
            }
        }
        Some(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_month_is_about_3_345_675_io() {
        // E_0 = 300e6 * 0.0102 / (1 - 0.9898^240) = 3,345,674.5606... IO
        let s = EmissionSchedule::new(0).unwrap();
        assert_eq!(s.month(0), 3_345_674);
        let s9 = EmissionSchedule::new(9).unwrap();
        let e0 = s9.month(0);
        assert_eq!(e0, 3_345_674_560_671_373);
        // first year ~ 8 % of genesis (37.97M / 500M = 7.6 %)
        let year: u64 = (0..12).map(|m| s9.month(m)).sum();
        assert!(year / 1_000_000_000 == 37_970_635, "{year}");
        // q = 0.9898 month over month (to 1 ppm)
        let r = s9.month(1) as u128 * 1_000_000 / e0 as u128;
        assert!((989_799..=989_801).contains(&r), "{r}");
    }

    #[test]
    fn sums_exactly_for_decimals_0_6_9() {
        for d in [0u8, 6, 9] {
            let s = EmissionSchedule::new(d).unwrap();
            let unit = 10u64.pow(d as u32);
            let mut total: u128 = 0;
            let mut prev_month_total = u64::MAX;
            for m in 0..MONTHS {
                let mut month_total = 0u64;
                for h in 0..HOURS_PER_MONTH {
                    month_total += s.hourly(m as u64 * HOURS_PER_MONTH + h);
                }
                assert_eq!(month_total, s.month(m), "decimals {d} month {m}");
                assert!(month_total <= prev_month_total, "emission never rises");
                prev_month_total = month_total;
                total += month_total as u128;
            }
            assert_eq!(total, 300_000_000u128 * unit as u128, "decimals {d}");
            assert_eq!(s.emitted_by_hour(TOTAL_HOURS), s.pool);
            assert_eq!(s.hourly(TOTAL_HOURS), 0);
            assert_eq!(s.hourly(u64::MAX), 0);
        }
    }

    #[test]
    fn hourly_values() {
        let s = EmissionSchedule::new(9).unwrap();
        // 3,345,675.x IO / 730 ~ 4,583 IO per hour in month 0
        assert_eq!(s.hourly(0) / 1_000_000_000, 4_583);
        assert!(s.hourly(TOTAL_HOURS - 1) < s.hourly(0) / 10);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        /// Any pool, any decimals: the hourly amounts sum to the pool exactly; and for
        /// pools where a month's fall (1.02 %) exceeds a base unit, months never rise.
        #[test]
        fn any_pool_sums_exactly(pool in 0u64..=u64::MAX, decimals in 0u8..=10) {
            let unit = 10u64.pow(decimals as u32);
            let s = EmissionSchedule::with_pool(pool, unit).unwrap();
            let mut total: u128 = 0;
            for h in 0..TOTAL_HOURS {
                total += s.hourly(h) as u128;
            }
            proptest::prop_assert_eq!(total, pool as u128);
            if pool >= 1_000_000 {
                for m in 1..MONTHS {
                    proptest::prop_assert!(s.month(m) <= s.month(m - 1));
                }
            }
        }
    }

    #[test]
    fn emission_new_rejects_absurd_decimals() {
        assert!(EmissionSchedule::new(11).is_err()); // 300M * 10^11 > u64::MAX
        assert!(EmissionSchedule::new(10).is_ok());
    }

    #[test]
    fn bignum_basics() {
        let a = Big::from_u128(u128::MAX);
        let b = a.mul(&a);
        assert_eq!(b.div_to_u128(&a), Some(u128::MAX));
        assert_eq!(Big::from_u128(10).div_to_u128(&Big::from_u128(3)), Some(3));
        assert_eq!(Big::from_u128(1).div_to_u128(&Big(vec![])), None);
        assert_eq!(Big::pow(2, 100).sub(&Big::pow(2, 99)), Big::pow(2, 99));
    }
}
