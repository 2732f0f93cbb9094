//! Idle time of a node's GPUs over a reward period: the `idle fraction of the
//! hour` in an idle-reward weight, time-weighted (not a snapshot).
//!
//! A node has `gpus` GPUs; jobs hold some of them over spans `[from, to)`. Over the
//! window `[start, end)`:
//!
//! ```text
//! busy(t)   = min(gpus, Σ gpus of the spans covering t)          (never more than the node has)
//! busy_ms   = ∫ busy(t) dt over [start, end)                     (GPU-milliseconds, exact)
//! capacity  = gpus × (end - start)
//! idle_ppm  = floor(1,000,000 × (capacity - busy_ms) / capacity)  (0 when capacity is 0)
//! share(a)  = floor(a × (capacity - busy_ms) / capacity)          (base units, never above a)
//! ```
//!
//! Everything is integer (`u128` inside); flooring only ever rounds an idle share
//! down, so rounding never pays for time a GPU was busy.

use serde::{Deserialize, Serialize};

/// GPUs held by a job over `[from_ms, to_ms)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BusySpan {
    pub gpus: u32,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// A node's GPUs over a window `[from_ms, to_ms)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleWindow {
    pub gpus: u32,
    pub from_ms: u64,
    pub to_ms: u64,
}

impl IdleWindow {
    /// `gpus × (to - from)`, GPU-milliseconds.
    pub fn capacity(&self) -> u128 {
        self.gpus as u128 * self.to_ms.saturating_sub(self.from_ms) as u128
    }

    /// GPU-milliseconds busy within the window: each span clipped to it, at no
    /// instant more than `gpus` (overlapping spans never count a GPU twice).
    pub fn busy_gpu_ms(&self, spans: &[BusySpan]) -> u128 {
        // sweep over the span edges inside the window
        let mut edges: Vec<(u64, i128)> = Vec::with_capacity(spans.len() * 2);
        for s in spans {
            let (a, b) = (s.from_ms.max(self.from_ms), s.to_ms.min(self.to_ms));
            if a < b && s.gpus > 0 {
                edges.push((a, s.gpus as i128));
                edges.push((b, -(s.gpus as i128)));
            }
        }
        edges.sort_unstable();
        let (mut busy, mut level, mut at) = (0u128, 0i128, self.from_ms);
        for (t, d) in edges {
            let held = level.clamp(0, self.gpus as i128) as u128;
            busy += held * (t - at) as u128;
            at = t;
            level += d;
        }
        busy.min(self.capacity())
    }

    /// GPU-milliseconds idle: capacity minus busy.
    pub fn idle_gpu_ms(&self, spans: &[BusySpan]) -> u128 {
        self.capacity() - self.busy_gpu_ms(spans)
    }

    /// The idle fraction, ppm (floor); 0 for a window without capacity.
    pub fn idle_ppm(&self, spans: &[BusySpan]) -> u32 {
        self.idle_ppm_of_busy(self.busy_gpu_ms(spans))
    }

    /// The idle fraction, ppm (floor), of a window with `busy_gpu_ms` GPU-milliseconds
    /// busy (at most its capacity); 0 for a window without capacity.
    pub fn idle_ppm_of_busy(&self, busy_gpu_ms: u128) -> u32 {
        let cap = self.capacity();
        if cap == 0 {
            return 0;
        }
        ((cap - busy_gpu_ms.min(cap)) * 1_000_000 / cap) as u32
    }

    /// The idle share of `amount` base units (floor): what a node that would earn
    /// `amount` for a fully idle window earns for this one.
    pub fn idle_share(&self, amount: u64, spans: &[BusySpan]) -> u64 {
        let cap = self.capacity();
        if cap == 0 {
            return 0;
        }
        // amount ≤ 2^64 and idle ≤ cap < 2^96: the product fits in u128 only when
        // split; do it as floor(amount × idle / cap) without overflow
        mul_div_floor(amount as u128, self.idle_gpu_ms(spans), cap) as u64
    }
}

/// `floor(a × b / c)` for `b ≤ c`, without overflowing `u128`.
fn mul_div_floor(a: u128, b: u128, c: u128) -> u128 {
    debug_assert!(b <= c && c > 0);
    match a.checked_mul(b) {
        Some(p) => p / c,
        None => {
            // a × b = a × (q·c + r)/c ... split a = qa·c + ra
            let (qa, ra) = (a / c, a % c);
            qa * b + mul_div_small(ra, b, c)
        }
    }
}

/// `floor(a × b / c)` for `a, b < c`, by halving (no overflow for `c < 2^127`).
fn mul_div_small(a: u128, b: u128, c: u128) -> u128 {
    // long multiplication modulo c, tracking the quotient
    let (mut q, mut r) = (0u128, 0u128);
    for i in (0..128).rev() {
        // (q, r) = 2·(q, r)
        q <<= 1;
        r <<= 1;
        if r >= c {
            r -= c;
            q += 1;
        }
        if (b >> i) & 1 == 1 {
            r += a;
            if r >= c {
                r -= c;
                q += 1;
            }
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: u64 = 3_600_000;

    fn w(gpus: u32) -> IdleWindow {
        IdleWindow {
            gpus,
            from_ms: 10 * H,
            to_ms: 11 * H,
        }
    }

    fn span(gpus: u32, from: u64, to: u64) -> BusySpan {
        BusySpan {
            gpus,
            from_ms: from,
            to_ms: to,
        }
    }

    #[test]
    fn exact_numbers() {
        let win = w(4);
        assert_eq!(win.capacity(), 4 * H as u128);
        assert_eq!(win.idle_ppm(&[]), 1_000_000);
        // 2 of 4 GPUs for the second half of the hour: 1/4 busy
        let half = [span(2, 10 * H + H / 2, 12 * H)];
        assert_eq!(win.busy_gpu_ms(&half), 2 * (H / 2) as u128);
        assert_eq!(win.idle_ppm(&half), 750_000);
        assert_eq!(win.idle_share(1_000, &half), 750);
        // a span before the window counts nothing; one covering it all, everything
        assert_eq!(win.busy_gpu_ms(&[span(4, 0, 10 * H)]), 0);
        assert_eq!(win.idle_ppm(&[span(4, 0, 20 * H)]), 0);
        assert_eq!(win.idle_share(u64::MAX, &[span(4, 0, 20 * H)]), 0);
        // overlapping spans never hold more GPUs than the node has
        assert_eq!(
            win.busy_gpu_ms(&[span(3, 0, 20 * H), span(3, 0, 20 * H)]),
            win.capacity()
        );
        // no capacity: nothing
        assert_eq!(w(0).idle_ppm(&[]), 0);
        assert_eq!(w(0).idle_share(5, &[]), 0);
        // rounding down: 1 base unit over a third of an hour busy
        let third = [span(1, 10 * H, 10 * H + H / 3)];
        assert_eq!(w(1).idle_share(1, &third), 0);
        assert_eq!(w(1).idle_share(3, &third), 2);
        assert_eq!(w(1).idle_share(u64::MAX, &[]), u64::MAX);
    }

    #[test]
    fn mul_div_is_exact_on_large_values() {
        let (a, b, c) = (u64::MAX as u128, (1u128 << 100) - 3, (1u128 << 100) - 1);
        assert_eq!(mul_div_floor(a, b, c), a - 1); // a × (1 - 2/c), c > 2a
        assert_eq!(mul_div_small(5, 7, 9), 3);
    }

    fn spans() -> impl Strategy<Value = Vec<BusySpan>> {
        prop::collection::vec(
            (0u32..10, 9 * H..12 * H, 0u64..2 * H)
                .prop_map(|(g, from, len)| span(g, from, from + len)),
            0..8,
        )
    }

    proptest! {
        #[test]
        fn idle_share_is_bounded_and_never_creates_money(
            gpus in 0u32..10, s in spans(), amount in any::<u64>()) {
            let win = w(gpus);
            let busy = win.busy_gpu_ms(&s);
            prop_assert!(busy <= win.capacity());
            prop_assert!(win.idle_ppm(&s) <= 1_000_000);
            let share = win.idle_share(amount, &s);
            prop_assert!(share <= amount);
            // floor of the exact share: share × capacity ≤ amount × idle < (share+1) × capacity
            let idle = win.idle_gpu_ms(&s);
            if win.capacity() > 0 {
                let lhs = wide_mul(share as u128, win.capacity());
                let rhs = wide_mul(amount as u128, idle);
                prop_assert!(lhs <= rhs);
                prop_assert!(rhs < wide_mul(share as u128 + 1, win.capacity()));
            }
        }

        #[test]
        fn more_busy_time_never_pays_more(
            gpus in 1u32..10, s in spans(), extra in spans(), amount in 0u64..1u64 << 60) {
            let win = w(gpus);
            let mut more = s.clone();
            more.extend(extra);
            prop_assert!(win.busy_gpu_ms(&more) >= win.busy_gpu_ms(&s));
            prop_assert!(win.idle_ppm(&more) <= win.idle_ppm(&s));
            // a GPU-ms total (the simulator's) gives the same fraction as its spans
            prop_assert_eq!(win.idle_ppm_of_busy(win.busy_gpu_ms(&s)), win.idle_ppm(&s));
            prop_assert_eq!(win.idle_ppm_of_busy(u128::MAX), 0);
            prop_assert!(win.idle_share(amount, &more) <= win.idle_share(amount, &s));
        }

        #[test]
        fn a_fully_busy_window_pays_nothing(gpus in 1u32..10, amount in any::<u64>(), s in spans()) {
            let win = w(gpus);
            let mut all = s;
            all.push(span(gpus, win.from_ms, win.to_ms));
            prop_assert_eq!(win.idle_ppm(&all), 0);
            prop_assert_eq!(win.idle_share(amount, &all), 0);
        }
    }

    /// `a × b` as (high, low) 128-bit halves, for comparisons without overflow.
    fn wide_mul(a: u128, b: u128) -> (u128, u128) {
        let m = u64::MAX as u128;
        let (a1, a0, b1, b0) = (a >> 64, a & m, b >> 64, b & m);
        let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
        let mid = (p00 >> 64) + (p01 & m) + (p10 & m);
        let lo = (p00 & m) | ((mid & m) << 64);
        let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
        (hi, lo)
    }
}
