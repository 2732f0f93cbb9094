//! The API's enums as the market library's: one mapping, used by the operator,
//! the scheduler extender and the kubectl plugin alike.

use crate::{GpuVendor, PaymentToken, Urgency};
use solgrid_market::{ledger::Token, pricing};

impl From<PaymentToken> for Token {
    fn from(t: PaymentToken) -> Self {
        match t {
            PaymentToken::Io => Token::Io,
            PaymentToken::Usdc => Token::Usdc,
        }
    }
}

impl From<Urgency> for pricing::Urgency {
    fn from(u: Urgency) -> Self {
        match u {
            Urgency::Low => pricing::Urgency::Low,
            Urgency::Normal => pricing::Urgency::Normal,
            Urgency::High => pricing::Urgency::High,
            Urgency::Critical => pricing::Urgency::Critical,
        }
    }
}

impl From<GpuVendor> for solgrid_market::GpuVendor {
    fn from(v: GpuVendor) -> Self {
        match v {
            GpuVendor::Nvidia => solgrid_market::GpuVendor::Nvidia,
            GpuVendor::Apple => solgrid_market::GpuVendor::Apple,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_market() {
        for (t, name) in [(PaymentToken::Io, "IO"), (PaymentToken::Usdc, "USDC")] {
            assert_eq!(Token::from(t).to_string(), name);
        }
        assert!(pricing::Urgency::from(Urgency::Low) < pricing::Urgency::from(Urgency::Critical));
        assert_eq!(
            solgrid_market::GpuVendor::from(GpuVendor::Apple),
            solgrid_market::GpuVendor::Apple
        );
    }
}
