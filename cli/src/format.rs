//! Tables, amounts and ages, printed the way kubectl prints them.

use chrono::{DateTime, Utc};
use solgrid_crds::PaymentToken;

/// Base units per whole token, by the market's default decimals (IO 9, USDC 6),
/// or as configured.
pub fn unit(token: PaymentToken, pricing: &solgrid_market::pricing::PricingConfig) -> u64 {
    match token {
        PaymentToken::Io => pricing.io_rate.unit,
        PaymentToken::Usdc => pricing.usdc_rate.unit,
    }
}

/// `amount` base units as a decimal number of whole tokens (`1.500000 USDC`).
pub fn amount(base_units: u64, unit: u64, token: &str) -> String {
    if unit <= 1 {
        return format!("{base_units} {token}");
    }
    let decimals = (unit as f64).log10().round() as usize;
    let whole = base_units / unit;
    let frac = base_units % unit;
    format!("{whole}.{frac:0decimals$} {token}")
}

/// Micro-USD as dollars (`$1.540000`).
pub fn usd(micro_usd: u64) -> String {
    format!("${}.{:06}", micro_usd / 1_000_000, micro_usd % 1_000_000)
}

/// Basis points as a factor (`1.3x`).
pub fn factor(bps: u32) -> String {
    let s = format!("{:.4}", bps as f64 / 10_000.0);
    format!("{}x", s.trim_end_matches('0').trim_end_matches('.'))
}

/// A kubectl-style age: `45s`, `12m`, `5h`, `3d`, `2y`.
pub fn age(since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(since) = since else {
        return "<unknown>".into();
    };
    let s = (now - since).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3_600),
        172_800..=31_535_999 => format!("{}d", s / 86_400),
        _ => format!("{}y", s / 31_536_000),
    }
}

/// A table with a header, columns padded like `kubectl get` (three spaces apart).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                let pad = widths[i] - c.chars().count() + 3;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn amounts() {
        assert_eq!(amount(3_080_000_000, 1_000_000_000, "IO"), "3.080000000 IO");
        assert_eq!(amount(1_540_000, 1_000_000, "USDC"), "1.540000 USDC");
        assert_eq!(amount(5, 1_000_000, "USDC"), "0.000005 USDC");
        assert_eq!(amount(0, 1, "X"), "0 X");
        assert_eq!(usd(1_540_000), "$1.540000");
        assert_eq!(usd(5), "$0.000005");
    }

    #[test]
    fn factors() {
        assert_eq!(factor(13_000), "1.3x");
        assert_eq!(factor(10_000), "1x");
        assert_eq!(factor(7_025), "0.7025x");
    }

    #[test]
    fn ages() {
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        let at = |s: i64| Some(now - chrono::Duration::seconds(s));
        assert_eq!(age(at(5), now), "5s");
        assert_eq!(age(at(600), now), "10m");
        assert_eq!(age(at(3 * 3600), now), "3h");
        assert_eq!(age(at(5 * 86_400), now), "5d");
        assert_eq!(age(at(800 * 86_400), now), "2y");
        assert_eq!(age(None, now), "<unknown>");
        assert_eq!(age(at(-30), now), "0s");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "PHASE"],
            &[
                vec!["a".into(), "Running".into()],
                vec!["longer-name".into(), "Pending".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME          PHASE\na             Running\nlonger-name   Pending\n"
        );
    }
}
