//! A small deterministic PRNG (xoshiro256**, seeded through SplitMix64): the same
//! seed gives the same simulation on every machine.

/// xoshiro256** — fast, good statistical quality, and fully specified.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// An independent stream derived from this seed and a label.
    pub fn fork(&mut self, label: u64) -> Rng {
        Rng::new(self.next_u64() ^ label.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (0 when `n == 0`), without modulo bias worth caring about (128-bit multiply).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below(hi - lo + 1)
        }
    }

    /// True with probability `ppm / 1,000,000`.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        self.below(1_000_000) < ppm as u64
    }

    /// An index drawn with the given integer weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| *w as u64).sum();
        let mut x = self.below(total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if x < *w as u64 {
                return i;
            }
            x -= *w as u64;
        }
        weights.len().saturating_sub(1)
    }

    /// A Poisson-distributed count with mean `mean_milli / 1000` (Knuth for small
    /// means, a normal approximation with integer arithmetic for large ones).
    pub fn poisson_milli(&mut self, mean_milli: u64) -> u64 {
        if mean_milli == 0 {
            return 0;
        }
        if mean_milli > 30_000 {
            // mean ± sqrt(mean) * (sum of 12 uniforms - 6)
            let mean = mean_milli as i128;
            let sd_milli = isqrt(mean_milli as u128 * 1000) as i128;
            let z: i128 = (0..12).map(|_| self.below(1_000_000) as i128).sum::<i128>() - 6_000_000;
            let v = mean + sd_milli * z / 1_000_000;
            return (v.max(0) / 1000) as u64;
        }
        // Knuth: multiply uniforms until below e^-mean, in 2^-32 fixed point via f64-free exp table.
        let limit = exp_neg_milli(mean_milli);
        let mut k = 0;
        let mut p: u128 = 1 << 64;
        loop {
            p = (p * (self.next_u64() as u128 >> 32)) >> 32;
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

/// `e^(-m/1000)` in 2^64 fixed point, by repeated squaring of `e^(-1/1000)`.
fn exp_neg_milli(m: u64) -> u128 {
    // e^(-1/1000) * 2^64
    const E_NEG_MILLI: u128 = 18_428_306_549_934_190_034;
    let one: u128 = 1 << 64;
    let mul = |a: u128, b: u128| -> u128 { ((a >> 32) * (b >> 32)).min(one) };
    let (mut result, mut base, mut e) = (one, E_NEG_MILLI, m);
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.range(3, 9);
            b.range(3, 9);
            assert!((3..=9).contains(&x));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn poisson_mean() {
        let mut r = Rng::new(1);
        for mean in [500u64, 4_000, 100_000] {
            let n = 4000;
            let total: u64 = (0..n).map(|_| r.poisson_milli(mean)).sum();
            let got = total * 1000 / n;
            assert!(
                got * 100 > mean * 93 && got * 100 < mean * 107,
                "mean {mean}: {got}"
            );
        }
    }

    #[test]
    fn weighted_respects_zero() {
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            assert_ne!(r.weighted(&[5, 0, 5]), 1);
        }
    }
}
