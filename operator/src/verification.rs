//! Proof-of-work verification: a seeded matrix product whose result is checked far
//! more cheaply than it is computed (Freivalds' test), and whose speed must match the
//! claimed GPU model. Pure: no I/O, no clock (time is passed in).
//!
//! # The workload
//!
//! From a 64-bit `seed` (chosen by the operator, fresh for every run) and a size `n`,
//! [`generate`] builds two `n x n` matrices `A` and `B` with entries in `0..16` (a
//! splitmix64 stream: `A` row-major first, then `B`). The worker computes
//! `C = A * B` and reports `C mod P` with `P = 65,521` (the largest 16-bit prime).
//! Every entry of the exact product is at most `225 n`, below `2^24` for
//! `n < 74,565`, so a GPU's fp32 GEMM (cuBLAS `sgemm`, `torch.matmul`) computes it
//! exactly: a GPU image can replace the reference worker (`solgrid-operator
//! verify-worker`, [`run_worker`]) as long as it prints the same report. Computing
//! `C mod P` costs as much as computing `C`: the reduction saves no work.
//!
//! # The report (the worker's stdout, one JSON line; [`WorkerReport`])
//!
//! ```json
//! {"v":1,"seed":"12345","n":256,"computeMs":840,"product":"<base64>"}
//! ```
//!
//! `product` is standard base64 (with padding) of the `n * n` entries of `C mod P`,
//! row-major, each a little-endian `u16`. The seed is a decimal string (JSON numbers
//! lose precision above 2^53). The operator reads the last line of the container's
//! log that starts with `{` (pod `log` subresource) once the pod has terminated.
//! The worker also writes a short summary without the product to
//! `/dev/termination-log` for `kubectl describe`.
//!
//! # The check (operator side, [`check_report`])
//!
//! 1. The report must be for the challenge (same seed and size) and decode to
//!    exactly `n * n` entries below `P`: otherwise it is a wrong result.
//! 2. Freivalds' test, [`freivalds`]: for `rounds` vectors `r` drawn uniformly from
//!    `GF(P)^n` *after* the report is in (the worker cannot know them), check
//!    `A (B r) == C r` in `GF(P)`. Cost `O(rounds * n^2)` instead of `O(n^3)`. A correct
//!    product always passes; a wrong one (`D = C - AB != 0`) passes one round with
//!    probability at most `1/P` (a non-zero row `d` of `D` has `d . r = 0` on a
//!    hyperplane), so `rounds = 3` accepts a wrong product with probability
//!    `<= 65,521^-3 < 4e-15`.
//! 3. Speed, [`SpeedConfig::check`]: the expected time of the claimed model for this
//!    size is `reference_ms * 1000 / speed_permille(model) * (n / reference_n)^3`;
//!    the run is "far too slow" when it took more than `tolerance_pct` % of that plus
//!    `slack_ms`. The duration is the container's `startedAt`..`finishedAt` from the
//!    pod status (what the kubelet saw), or the worker's own `computeMs` if larger.
//!
//! A wrong result or a far-too-slow run is cheating (the node is slashed). A pod that
//! never ran, failed without a report, or could not be scheduled is *inconclusive*:
//! nothing is concluded and the next period tries again.

use serde::{Deserialize, Serialize};
use solgrid_market::gpu::{GpuModel, ModelTable, default_speed_permille};

/// The modulus of the reported product: the largest prime below 2^16.
pub const P: u64 = 65_521;
/// Matrix entries are drawn from `0..ENTRY_BOUND`.
pub const ENTRY_BOUND: u64 = 16;
/// The largest size whose exact product fits in an fp32 mantissa (`225 n < 2^24`).
pub const MAX_N: usize = 74_564;
/// Report format version.
pub const REPORT_VERSION: u32 = 1;

/// splitmix64: a tiny, fast, well-mixed deterministic stream (not cryptographic; the
/// soundness of the check does not rest on it, only on the verifier's `r` being
/// unknown to the worker).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (rejection sampling; `bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        let bound = bound.max(1);
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.next();
            if v < zone {
                return v % bound;
            }
        }
    }
}

/// What the worker is asked to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub seed: u64,
    pub n: usize,
}

/// A square matrix over small integers, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    pub n: usize,
    pub data: Vec<u16>,
}

impl Matrix {
    pub fn get(&self, i: usize, j: usize) -> u16 {
        self.data[i * self.n + j]
    }
}

/// Why a challenge or report is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("matrix size {0} out of range 1..={MAX_N}")]
    BadSize(usize),
    #[error("report is malformed: {0}")]
    Malformed(String),
}

fn check_size(n: usize) -> Result<(), VerifyError> {
    if n == 0 || n > MAX_N {
        Err(VerifyError::BadSize(n))
    } else {
        Ok(())
    }
}

/// The challenge's matrices `A` and `B` (entries in `0..16`).
pub fn generate(c: &Challenge) -> Result<(Matrix, Matrix), VerifyError> {
    check_size(c.n)?;
    let len = c.n.checked_mul(c.n).ok_or(VerifyError::BadSize(c.n))?;
    let mut rng = SplitMix64::new(c.seed);
    let mut gen_m = || Matrix {
        n: c.n,
        data: (0..len).map(|_| rng.below(ENTRY_BOUND) as u16).collect(),
    };
    let a = gen_m();
    let b = gen_m();
    Ok((a, b))
}

/// `C = A * B mod P` (the worker's job; `O(n^3)`, cache-friendly i-k-j order).
pub fn multiply(a: &Matrix, b: &Matrix) -> Matrix {
    let n = a.n;
    let mut out = vec![0u16; n * n];
    let mut row = vec![0u64; n];
    for i in 0..n {
        row.iter_mut().for_each(|x| *x = 0);
        for k in 0..n {
            let aik = a.data[i * n + k] as u64;
            if aik == 0 {
                continue;
            }
            let brow = &b.data[k * n..(k + 1) * n];
            for (acc, &bkj) in row.iter_mut().zip(brow) {
                *acc += aik * bkj as u64;
            }
        }
        for (o, v) in out[i * n..(i + 1) * n].iter_mut().zip(&row) {
            *o = (*v % P) as u16;
        }
    }
    Matrix { n, data: out }
}

/// `M v mod P`.
fn mat_vec(m: &Matrix, v: &[u64]) -> Vec<u64> {
    let n = m.n;
    (0..n)
        .map(|i| {
            m.data[i * n..(i + 1) * n]
                .iter()
                .zip(v)
                .fold(0u64, |acc, (&x, &y)| (acc + x as u64 * y) % P)
        })
        .collect()
}

/// Freivalds' test: `rounds` random vectors `r` from a stream seeded with
/// `verifier_seed` (which the worker must not know); `true` when `A (B r) == C r`
/// (mod `P`) for all of them. See the module docs for the error bound.
pub fn freivalds(a: &Matrix, b: &Matrix, c: &Matrix, rounds: u32, verifier_seed: u64) -> bool {
    let n = a.n;
    if b.n != n || c.n != n || c.data.len() != n * n {
        return false;
    }
    let mut rng = SplitMix64::new(verifier_seed);
    for _ in 0..rounds.max(1) {
        let r: Vec<u64> = (0..n).map(|_| rng.below(P)).collect();
        let br = mat_vec(b, &r);
        let abr = mat_vec(a, &br);
        let cr = mat_vec(c, &r);
        if abr != cr {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------- base64

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding required; no whitespace).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, VerifyError> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return Err(VerifyError::Malformed("base64 length".into()));
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let groups = s.len() / 4;
    for (gi, g) in s.chunks(4).enumerate() {
        let pad = g.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && gi + 1 != groups) {
            return Err(VerifyError::Malformed("base64 padding".into()));
        }
        let mut v = 0u32;
        for &c in &g[..4 - pad] {
            v = v << 6 | val(c).ok_or_else(|| VerifyError::Malformed("base64 character".into()))?;
        }
        v <<= 6 * pad as u32;
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

// ---------------------------------------------------------------- report

/// What the worker prints (one JSON line on stdout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReport {
    pub v: u32,
    /// The challenge's seed, decimal.
    pub seed: String,
    pub n: usize,
    /// The worker's own measure of the product's computation, milliseconds.
    pub compute_ms: u64,
    /// base64 of `C mod P`, row-major little-endian u16.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub product: String,
}

impl WorkerReport {
    /// The report of a computed product.
    pub fn new(c: &Challenge, product: &Matrix, compute_ms: u64) -> Self {
        let bytes: Vec<u8> = product.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        WorkerReport {
            v: REPORT_VERSION,
            seed: c.seed.to_string(),
            n: c.n,
            compute_ms,
            product: base64_encode(&bytes),
        }
    }

    /// The product, checked against the challenge (size, entries below `P`).
    pub fn decode_product(&self, c: &Challenge) -> Result<Matrix, VerifyError> {
        if self.v != REPORT_VERSION {
            return Err(VerifyError::Malformed(format!("version {}", self.v)));
        }
        if self.seed != c.seed.to_string() || self.n != c.n {
            return Err(VerifyError::Malformed(
                "report is for another challenge".into(),
            ));
        }
        let bytes = base64_decode(&self.product)?;
        if bytes.len() != c.n * c.n * 2 {
            return Err(VerifyError::Malformed(format!(
                "product has {} bytes, {} expected",
                bytes.len(),
                c.n * c.n * 2
            )));
        }
        let data: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        if data.iter().any(|&x| x as u64 >= P) {
            return Err(VerifyError::Malformed("entry not reduced mod P".into()));
        }
        Ok(Matrix { n: c.n, data })
    }

    /// The last line of a log that parses as a report (`None` if there is none).
    pub fn from_log(log: &str) -> Option<WorkerReport> {
        log.lines()
            .rev()
            .map(str::trim)
            .filter(|l| l.starts_with('{'))
            .find_map(|l| serde_json::from_str(l).ok())
    }
}

/// Runs the reference worker: generate, multiply, report. `now_ms` is a monotonic
/// clock in milliseconds (injected for tests). Returns the stdout line and the
/// termination-log summary.
pub fn run_worker(
    c: &Challenge,
    mut now_ms: impl FnMut() -> u64,
) -> Result<(String, String), VerifyError> {
    let (a, b) = generate(c)?;
    let t0 = now_ms();
    let product = multiply(&a, &b);
    let ms = now_ms().saturating_sub(t0);
    let report = WorkerReport::new(c, &product, ms);
    let line = serde_json::to_string(&report).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let summary =
        serde_json::json!({"v": REPORT_VERSION, "seed": report.seed, "n": c.n, "computeMs": ms})
            .to_string();
    Ok((line, summary))
}

// ---------------------------------------------------------------- speed

/// The speed check's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SpeedConfig {
    /// The expected time of a size-`reference_n` product on a model of speed 1,000
    /// (an RTX 4090) with the worker image in use, milliseconds.
    pub reference_ms: u64,
    pub reference_n: usize,
    /// "Far too slow" = more than this % of the expected time (plus `slack_ms`).
    pub tolerance_pct: u64,
    /// Fixed allowance (container start, page faults), milliseconds.
    pub slack_ms: u64,
    /// Relative speed per model, per-mille of an RTX 4090 (the market's table by default).
    #[serde(skip)]
    pub speed_permille: ModelTable<u32>,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        SpeedConfig {
            reference_ms: 2_000,
            reference_n: 1024,
            tolerance_pct: 400,
            slack_ms: 30_000,
            speed_permille: default_speed_permille(),
        }
    }
}

impl SpeedConfig {
    /// `reference_ms * 1000 / speed * (n / reference_n)^3`, saturating.
    pub fn expected_ms(&self, model: GpuModel, n: usize) -> u64 {
        let speed = self.speed_permille.get(model).max(1) as u128;
        let rn = self.reference_n.max(1) as u128;
        let n = n as u128;
        let v = (self.reference_ms as u128)
            .saturating_mul(1000)
            .saturating_mul(n * n * n)
            / (speed * rn * rn * rn);
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// The longest acceptable duration.
    pub fn limit_ms(&self, model: GpuModel, n: usize) -> u64 {
        let e = self.expected_ms(model, n) as u128;
        u64::try_from(e * self.tolerance_pct as u128 / 100 + self.slack_ms as u128)
            .unwrap_or(u64::MAX)
    }

    /// `Ok` when `duration_ms` is within the limit; the limit otherwise.
    pub fn check(&self, model: GpuModel, n: usize, duration_ms: u64) -> Result<(), u64> {
        let limit = self.limit_ms(model, n);
        if duration_ms > limit {
            Err(limit)
        } else {
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- verdict

/// The outcome of one verification run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Verdict {
    Passed,
    /// Cheating: the product is wrong (or the report malformed).
    WrongResult {
        reason: String,
    },
    /// Cheating: far slower than the claimed model.
    TooSlow {
        duration_ms: u64,
        limit_ms: u64,
    },
    /// Nothing concluded (pod not run, failed without report, ...): retried next period.
    Inconclusive {
        reason: String,
    },
}

impl Verdict {
    /// Whether the node cheated.
    pub fn is_cheating(&self) -> bool {
        matches!(self, Verdict::WrongResult { .. } | Verdict::TooSlow { .. })
    }

    /// `Passed`, `Failed` or `Inconclusive` (the GpuNode's `verification.lastResult`).
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Passed => "Passed",
            Verdict::WrongResult { .. } | Verdict::TooSlow { .. } => "Failed",
            Verdict::Inconclusive { .. } => "Inconclusive",
        }
    }

    /// A short human reason.
    pub fn message(&self) -> String {
        match self {
            Verdict::Passed => "proof of work verified".into(),
            Verdict::WrongResult { reason } => format!("wrong proof-of-work result: {reason}"),
            Verdict::TooSlow {
                duration_ms,
                limit_ms,
            } => format!(
                "proof of work took {duration_ms} ms, more than the {limit_ms} ms allowed for the claimed GPU model"
            ),
            Verdict::Inconclusive { reason } => format!("verification inconclusive: {reason}"),
        }
    }
}

/// Checks a worker's report for a challenge (module docs). `model` is the claimed
/// model (`None`: unknown, speed not checked); `duration_ms` the run's duration seen
/// by the kubelet (`None` if unknown).
pub fn check_report(
    c: &Challenge,
    report: &WorkerReport,
    model: Option<GpuModel>,
    duration_ms: Option<u64>,
    speed: &SpeedConfig,
    rounds: u32,
    verifier_seed: u64,
) -> Verdict {
    let (a, b) = match generate(c) {
        Ok(m) => m,
        Err(e) => {
            return Verdict::Inconclusive {
                reason: e.to_string(),
            };
        }
    };
    let product = match report.decode_product(c) {
        Ok(p) => p,
        Err(e) => {
            return Verdict::WrongResult {
                reason: e.to_string(),
            };
        }
    };
    if !freivalds(&a, &b, &product, rounds, verifier_seed) {
        return Verdict::WrongResult {
            reason: "Freivalds' test rejected the product".into(),
        };
    }
    let duration = duration_ms.unwrap_or(0).max(report.compute_ms);
    if let Some(m) = model
        && let Err(limit) = speed.check(m, c.n, duration)
    {
        return Verdict::TooSlow {
            duration_ms: duration,
            limit_ms: limit,
        };
    }
    Verdict::Passed
}

/// A verifier seed the worker cannot predict: the process's random hash keys mixed
/// with the time (tests pass their own seed to [`check_report`]).
pub fn fresh_seed(now_nanos: u128) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_nanos);
    h.finish()
}

/// The `solgrid-operator verify-worker --seed <u64> --size <n>` subcommand: runs the
/// reference worker, prints the report line on stdout and writes the summary to
/// `/dev/termination-log` (when it exists, as in a container). Returns the process
/// exit code.
pub fn worker_main(args: &[String]) -> i32 {
    let mut seed = None;
    let mut n = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => seed = it.next().and_then(|v| v.parse::<u64>().ok()),
            "--size" => n = it.next().and_then(|v| v.parse::<usize>().ok()),
            _ => {}
        }
    }
    let (Some(seed), Some(n)) = (seed, n) else {
        eprintln!("usage: solgrid-operator verify-worker --seed <u64> --size <n>");
        return 2;
    };
    let start = std::time::Instant::now();
    match run_worker(&Challenge { seed, n }, || {
        start.elapsed().as_millis() as u64
    }) {
        Ok((line, summary)) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                return 1;
            }
            // the kubelet mounts it in a container; elsewhere, write nothing
            let path = std::path::Path::new("/dev/termination-log");
            if path.is_file() {
                let _ = std::fs::write(path, summary);
            }
            0
        }
        Err(e) => {
            eprintln!("verify-worker: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Matrix, b: &Matrix) -> Matrix {
        let n = a.n;
        let mut d = vec![0u16; n * n];
        for i in 0..n {
            for j in 0..n {
                let s: u64 = (0..n)
                    .map(|k| a.get(i, k) as u64 * b.get(k, j) as u64)
                    .sum();
                d[i * n + j] = (s % P) as u16;
            }
        }
        Matrix { n, data: d }
    }

    #[test]
    fn generator_is_deterministic_and_bounded() {
        let c = Challenge { seed: 42, n: 17 };
        let (a1, b1) = generate(&c).unwrap();
        let (a2, b2) = generate(&c).unwrap();
        assert_eq!((a1.clone(), b1.clone()), (a2, b2));
        assert!(
            a1.data
                .iter()
                .chain(&b1.data)
                .all(|&x| (x as u64) < ENTRY_BOUND)
        );
        assert_ne!(a1, b1);
        let (a3, _) = generate(&Challenge { seed: 43, n: 17 }).unwrap();
        assert_ne!(a1, a3);
        assert!(generate(&Challenge { seed: 1, n: 0 }).is_err());
        assert!(
            generate(&Challenge {
                seed: 1,
                n: MAX_N + 1
            })
            .is_err()
        );
    }

    #[test]
    fn multiply_matches_naive() {
        let c = Challenge { seed: 7, n: 33 };
        let (a, b) = generate(&c).unwrap();
        assert_eq!(multiply(&a, &b), naive(&a, &b));
    }

    #[test]
    fn freivalds_accepts_correct_and_rejects_wrong() {
        let c = Challenge { seed: 99, n: 64 };
        let (a, b) = generate(&c).unwrap();
        let good = multiply(&a, &b);
        for s in 0..50 {
            assert!(freivalds(&a, &b, &good, 2, s));
        }
        // one entry off by one: rejected for every verifier seed tried
        let mut bad = good.clone();
        bad.data[5 * 64 + 9] = ((bad.data[5 * 64 + 9] as u64 + 1) % P) as u16;
        let rejected = (0..200).filter(|s| !freivalds(&a, &b, &bad, 1, *s)).count();
        assert_eq!(rejected, 200);
        // a product of other matrices, all zeros, a transposed product
        let (a2, b2) = generate(&Challenge { seed: 100, n: 64 }).unwrap();
        assert!(!freivalds(&a, &b, &multiply(&a2, &b2), 3, 1));
        let zeros = Matrix {
            n: 64,
            data: vec![0; 64 * 64],
        };
        assert!(!freivalds(&a, &b, &zeros, 3, 1));
        assert!(!freivalds(&a, &b, &multiply(&b, &a), 3, 1));
        // wrong shape
        assert!(!freivalds(
            &a,
            &b,
            &Matrix {
                n: 64,
                data: vec![0; 5]
            },
            3,
            1
        ));
    }

    #[test]
    fn base64_roundtrip() {
        for len in 0..20 {
            let v: Vec<u8> = (0..len as u8).map(|x| x.wrapping_mul(37)).collect();
            let e = base64_encode(&v);
            assert_eq!(base64_decode(&e).unwrap(), v);
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert!(base64_decode("TW=u").is_err());
        assert!(base64_decode("TWF").is_err());
        assert!(base64_decode("T*Fu").is_err());
    }

    #[test]
    fn report_roundtrip_and_check() {
        let c = Challenge {
            seed: u64::MAX - 3,
            n: 48,
        };
        let mut t = 0;
        let (line, summary) = run_worker(&c, || {
            t += 5;
            t
        })
        .unwrap();
        assert!(!summary.contains("product"));
        let log = format!("starting\n{line}\n");
        let r = WorkerReport::from_log(&log).unwrap();
        assert_eq!(r.compute_ms, 5);
        let speed = SpeedConfig::default();
        assert_eq!(
            check_report(&c, &r, Some(GpuModel::H100), Some(1_000), &speed, 3, 5),
            Verdict::Passed
        );
        // a report for another seed
        let other = Challenge { seed: 1, ..c };
        assert!(check_report(&other, &r, None, None, &speed, 3, 5).is_cheating());
        // a tampered product
        let mut bytes = base64_decode(&r.product).unwrap();
        bytes[10] ^= 1;
        let tampered = WorkerReport {
            product: base64_encode(&bytes),
            ..r.clone()
        };
        let v = check_report(&c, &tampered, None, None, &speed, 3, 5);
        assert!(matches!(v, Verdict::WrongResult { .. }), "{v:?}");
        // truncated
        let short = WorkerReport {
            product: base64_encode(&bytes[..100]),
            ..r.clone()
        };
        assert!(check_report(&c, &short, None, None, &speed, 3, 5).is_cheating());
        // far too slow for an H100, fine if unknown model
        let v = check_report(&c, &r, Some(GpuModel::H100), Some(10_000_000), &speed, 3, 5);
        assert!(matches!(v, Verdict::TooSlow { .. }), "{v:?}");
        assert_eq!(v.label(), "Failed");
        assert_eq!(
            check_report(&c, &r, None, Some(10_000_000), &speed, 3, 5),
            Verdict::Passed
        );
        assert!(WorkerReport::from_log("no json here\n{broken").is_none());
    }

    #[test]
    fn speed_table() {
        let s = SpeedConfig::default();
        // RTX 4090 at the reference size: the reference time
        assert_eq!(s.expected_ms(GpuModel::Rtx4090, 1024), 2_000);
        // H100 is 2.4x faster, Apple M1 ~16x slower
        assert_eq!(s.expected_ms(GpuModel::H100, 1024), 833);
        assert_eq!(s.expected_ms(GpuModel::AppleM1, 1024), 33_333);
        // doubling n: 8x
        assert_eq!(s.expected_ms(GpuModel::Rtx4090, 2048), 16_000);
        assert_eq!(s.limit_ms(GpuModel::Rtx4090, 1024), 8_000 + 30_000);
        assert!(s.check(GpuModel::Rtx4090, 1024, 38_000).is_ok());
        assert_eq!(s.check(GpuModel::Rtx4090, 1024, 38_001), Err(38_000));
        // an RTX 3060 passing itself off as an H100 is caught at a size where the
        // slack no longer hides it
        let n = 4096;
        let real_3060 = s.expected_ms(GpuModel::Rtx3060, n);
        assert!(s.check(GpuModel::H100, n, real_3060).is_err());
        assert!(s.check(GpuModel::Rtx3060, n, real_3060).is_ok());
        // no overflow on absurd inputs
        let _ = s.limit_ms(GpuModel::AppleM1, MAX_N);
    }

    #[test]
    fn fresh_seeds_differ() {
        assert_ne!(fresh_seed(1), fresh_seed(1));
    }
}
