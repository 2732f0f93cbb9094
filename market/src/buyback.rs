//! The scheduled buyback: stablecoin fees waiting in the treasury are converted to IO
//! at the configured IO price, and that much IO is burned from the treasury's reserve
//! (ECONOMICS.md, "Fees on each compute transaction").
//!
//! ```text
//! rate       = stable_price_uusd * io_unit / (stable_unit * io_price_uusd)   IO units per stablecoin unit (exact fraction)
//! io_burned  = min(floor(stable * rate), io_reserve)
//! stable_in  = ceil(io_burned / rate)
//! carried    = stable - stable_in                                            stays for the next period
//! ```
//!
//! Rounding: the IO bought is rounded down and the stablecoin spent for it rounded up,
//! so the treasury never burns more IO than its stablecoin is worth at the price, and
//! `stable_in <= stable`. What does not buy one whole base unit of IO (the dust), and
//! everything above what the reserve holds, stays in the treasury and is bought back
//! with the next period's fees: nothing is lost (two periods burn what one would, less
//! at most one base unit of IO). One intent moves both legs together
//! ([`BuybackPlan::intent`]): the stablecoin from the treasury to the buyback
//! counterparty's wallet, and the IO burned from the treasury.

use crate::ledger::{Account, Amount, Intent, Movement, Op, Token};
use crate::money::{self, MoneyError};
use crate::pricing::TokenRate;
use serde::{Deserialize, Serialize};

/// One period's buyback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuybackPlan {
    /// Stablecoin (base units) paid out of the treasury for the IO.
    pub stable_in: Amount,
    /// IO (base units) bought and burned from the treasury's reserve.
    pub io_burned: Amount,
    /// Stablecoin (base units) left in the treasury for the next period.
    pub stable_carried: Amount,
}

/// Plans a buyback of `stable` (base units of the stablecoin in the treasury) at
/// `io_price` (micro-USD per whole IO, and IO's unit), the stablecoin being worth
/// `stable_price`, with `io_reserve` IO (base units) in the treasury to burn from.
/// See the module docs for the formulas. A zero price or unit is an error.
pub fn plan(
    stable: Amount,
    stable_price: TokenRate,
    io_price: TokenRate,
    io_reserve: Amount,
) -> Result<BuybackPlan, MoneyError> {
    if stable_price.micro_usd_per_token == 0
        || stable_price.unit == 0
        || io_price.micro_usd_per_token == 0
        || io_price.unit == 0
    {
        return Err(MoneyError::DivisionByZero("buyback price"));
    }
    let num = (stable_price.micro_usd_per_token as u128)
        .checked_mul(io_price.unit as u128)
        .ok_or(MoneyError::Overflow("buyback rate"))?;
    let den = (stable_price.unit as u128)
        .checked_mul(io_price.micro_usd_per_token as u128)
        .ok_or(MoneyError::Overflow("buyback rate"))?;
    let bought = money::mul_div_floor(stable as u128, num, den, "buyback io")?;
    let io_burned = money::to_amount(bought.min(io_reserve as u128), "buyback io")?;
    let stable_in = money::to_amount(
        money::mul_div_ceil(io_burned as u128, den, num, "buyback stablecoin")?,
        "buyback stablecoin",
    )?;
    Ok(BuybackPlan {
        stable_in,
        io_burned,
        stable_carried: money::sub(stable, stable_in, "buyback carry")?,
    })
}

impl BuybackPlan {
    /// Whether there is nothing to move (then no transaction is sent).
    pub fn is_empty(&self) -> bool {
        self.io_burned == 0 && self.stable_in == 0
    }

    /// The intent of the buyback under `key`: the stablecoin from the treasury to
    /// `counterparty`'s wallet and the IO burned from the treasury, in one transaction.
    pub fn intent(&self, key: String, counterparty: &str) -> Intent {
        Intent {
            key,
            movements: vec![
                Movement {
                    token: Token::Usdc,
                    op: Op::Transfer {
                        from: Account::Treasury,
                        to: Account::Wallet(counterparty.to_string()),
                        amount: self.stable_in,
                    },
                },
                Movement {
                    token: Token::Io,
                    op: Op::Burn {
                        from: Account::Treasury,
                        amount: self.io_burned,
                    },
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const USDC: TokenRate = TokenRate {
        micro_usd_per_token: 1_000_000,
        unit: 1_000_000,
    };
    const IO: TokenRate = TokenRate {
        micro_usd_per_token: 500_000,
        unit: 1_000_000_000,
    };

    #[test]
    fn exact_numbers() {
        // 12.345678 USDC at 0.50 $ per IO: 24.691356 IO, nothing carried
        let p = plan(12_345_678, USDC, IO, u64::MAX).unwrap();
        assert_eq!(p.io_burned, 24_691_356_000);
        assert_eq!((p.stable_in, p.stable_carried), (12_345_678, 0));
        // 0.30 $ per IO does not divide: 1 USDC = 3.333333333 IO, rounded down
        let odd = TokenRate {
            micro_usd_per_token: 300_000,
            unit: 1_000_000_000,
        };
        let p = plan(1_000_000, USDC, odd, u64::MAX).unwrap();
        assert_eq!((p.io_burned, p.stable_in), (3_333_333_333, 1_000_000));
        // a reserve of 1 IO: 0.50 USDC spent, the rest carried
        let p = plan(1_000_000, USDC, IO, 1_000_000_000).unwrap();
        let want = BuybackPlan {
            stable_in: 500_000,
            io_burned: 1_000_000_000,
            stable_carried: 500_000,
        };
        assert_eq!(p, want);
        // an IO unit dearer than the balance: all carried, nothing moves
        let dear = TokenRate {
            micro_usd_per_token: 10_000_000_000_000,
            unit: 1,
        };
        let p = plan(5, USDC, dear, u64::MAX).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.stable_carried, 5);
        let zero = TokenRate {
            micro_usd_per_token: 0,
            unit: 1,
        };
        assert!(plan(1, USDC, zero, 1).is_err());
        let i = plan(2, USDC, IO, u64::MAX)
            .unwrap()
            .intent("buyback/7".into(), "desk");
        assert_eq!(i.key, "buyback/7");
        assert_eq!(
            i.movements[1].op,
            Op::Burn {
                from: Account::Treasury,
                amount: 4_000
            }
        );
    }

    fn rate() -> impl Strategy<Value = TokenRate> {
        (1u64..=100_000_000_000, 0u32..=12).prop_map(|(p, d)| TokenRate {
            micro_usd_per_token: p,
            unit: 10u64.pow(d),
        })
    }

    proptest! {
        #[test]
        fn conserves_rounds_against_the_treasury_and_respects_the_reserve(
            stable in 0u64..=1_000_000_000_000_000, s in rate(), io in rate(),
            reserve in prop_oneof![Just(u64::MAX), 0u64..=1_000_000_000_000_000],
        ) {
            let whole = stable as u128 * s.micro_usd_per_token as u128 * io.unit as u128
                / (s.unit as u128 * io.micro_usd_per_token as u128);
            let p = match plan(stable, s, io, reserve) {
                Ok(p) => p,
                // only an IO amount beyond u64 is refused
                Err(e) => {
                    prop_assert!(whole.min(reserve as u128) > u64::MAX as u128, "{}", e);
                    return Ok(());
                }
            };
            prop_assert_eq!(p.stable_in + p.stable_carried, stable);
            prop_assert!(p.io_burned <= reserve);
            // value (micro-USD × both units) of the IO burned <= of the stablecoin paid
            let io_value = p.io_burned as u128 * io.micro_usd_per_token as u128 * s.unit as u128;
            let st_value = p.stable_in as u128 * s.micro_usd_per_token as u128 * io.unit as u128;
            prop_assert!(io_value <= st_value);
            // and less than one base unit of stablecoin is overpaid
            if p.stable_in > 0 {
                let less = (p.stable_in - 1) as u128 * s.micro_usd_per_token as u128 * io.unit as u128;
                prop_assert!(less < io_value);
            }
            // when the reserve does not bind, what is left cannot buy one more base unit
            if p.io_burned < reserve {
                let left = stable as u128 * s.micro_usd_per_token as u128 * io.unit as u128 - io_value;
                prop_assert!(left < io.micro_usd_per_token as u128 * s.unit as u128);
            }
            // two periods (the first one's carry bought in the second) burn what one
            // period would, less at most one base unit of IO
            if whole < reserve as u128 {
                let first = plan(stable / 2, s, io, reserve).unwrap();
                let second = plan(stable - first.stable_in, s, io, reserve).unwrap();
                let two = first.io_burned as u128 + second.io_burned as u128;
                let one = p.io_burned as u128;
                prop_assert!(two <= one && one - two <= 1, "{} vs {}", two, one);
            }
        }
    }
}
