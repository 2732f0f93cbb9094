//! Proof-of-work verification: per GPU, a seeded chain of matrix products whose
//! result is checked far more cheaply than it is computed (Freivalds' test), sized
//! from the claimed model's speed and VRAM, and timed by the operator. Pure: no I/O,
//! no clock (time is passed in).
//!
//! # The workload (one per device)
//!
//! A device's [`Challenge`] is a 64-bit `seed` (drawn by the operator, fresh for
//! every run and device), a size `n`, a number of `rounds` `R` and of `matrices`
//! `L`. [`generate`] builds, with a splitmix64 stream seeded with `seed`, two
//! `n x n` matrices `A_0` then `B` (entries in `0..16`, row-major); `A_i` for
//! `1 <= i < L` is the first matrix of the stream seeded with
//! `seed + i * 0xD1B54A32D192ED03` (wrapping). The worker computes
//!
//! ```text
//! X_0 = B,   X_{j+1} = A_{j mod L} * X_j  mod P   (j = 0 .. R-1)
//! ```
//!
//! and reports `X_R` with `P = 65,521` (the largest 16-bit prime). With `R = L = 1`
//! this is the single product `A_0 * B` of version 1. Every step is an `n^3`
//! product; the reduction mod `P` between steps keeps entries below `2^16`, so a GPU
//! computes each step exactly with integer GEMM (int8 inputs, int32 accumulation:
//! split `X_j` into 8-bit limbs, `15 * 255 * n < 2^31`) or with fp32 GEMM on 8-bit
//! limbs (`15 * 255 * n < 2^24` for `n <= 4,386`) and recombines the limbs mod `P`.
//!
//! # Sizing
//!
//! - **Speed** ([`SpeedConfig::rounds_for`]): `R` is chosen so that the *claimed*
//!   model needs `target_ms` (30 s by default) for the chain:
//!   one product of size `n` on a model of speed `s` (per mille of an RTX 4090, the
//!   market's table) takes `reference_us * 1000 / s * (n / reference_n)^3` µs. A
//!   CPU or a slower GPU needs `R` times its own, longer, product time.
//! - **Memory** ([`SpeedConfig::matrices_for`]): `L` distinct `A_i` are cycled so
//!   that the working set `L * n^2 * 4` bytes (fp32, as a GEMM consumes it) is
//!   `vram_permille` of the device's claimed VRAM, capped by `max_matrices` (the
//!   verifier regenerates them) and by `R`. An implementation keeps them resident
//!   on the device; a device with less memory must page them over the bus or
//!   regenerate them from the seed on every use. Regeneration costs `O(n^2)` per
//!   use against the product's `O(n^3)`, so this is a cost, not a proof of memory:
//!   the check that catches a smaller GPU claiming a larger one is the *speed* one
//!   (every model with less memory in the table is also slower). Two cards of the
//!   same speed and different memory (A100 40 GB / 80 GB) are not told apart.
//!
//! # Per device
//!
//! The operator challenges every device of the node's inventory (by UUID) in one
//! pod that requests all of the node's GPUs. The worker gets one
//! `--device <uuid>:<seed>:<rounds>:<matrices>` per device and prints one report
//! line per device; a GPU image maps each UUID to its CUDA device (`nvidia-smi -L`)
//! and runs the chains in parallel. A device of the inventory without a report,
//! or with two, is a wrong result (cheating).
//!
//! # The report (the worker's stdout, one JSON line per device; [`WorkerReport`])
//!
//! ```json
//! {"v":2,"uuid":"GPU-...","seed":"12345","n":256,"rounds":40,"matrices":4,"computeMs":840,"product":"<base64>"}
//! ```
//!
//! `product` is standard base64 (with padding) of the `n * n` entries of `X_R`,
//! row-major, each a little-endian `u16`. The seed is a decimal string (JSON
//! numbers lose precision above 2^53). `rounds` and `matrices` default to 1 and
//! `uuid` is absent in version 1 (a single product). The operator reads every
//! line of the container's log that starts with `{` (pod `log` subresource) once
//! the pod has terminated. The worker also writes a short summary without the
//! products to `/dev/termination-log` for `kubectl describe`.
//!
//! **Replacing the worker with a GPU image**: any image whose entrypoint accepts
//! `verify-worker --size <n> --device <uuid>:<seed>:<rounds>:<matrices> ...`,
//! computes the chain above on the device with that UUID and prints these lines
//! can be set as `--verifier-image`; the reference worker
//! (`solgrid-operator verify-worker`, [`worker_main`]) is the CPU path and the
//! specification (same fields and values, `computeMs` aside). The
//! image must be present on the node before the challenge (pre-pulled): pull time
//! counts against the node (below). Calibrate `reference_us` with the image in use
//! (one `reference_n` product on an RTX 4090), since it sets every model's rounds.
//!
//! # The check (operator side, [`check_devices`], [`check_report`])
//!
//! 1. Each report must be for its device's challenge (same seed, size, rounds,
//!    matrices) and decode to exactly `n * n` entries below `P`: otherwise it is a
//!    wrong result.
//! 2. Freivalds' test, [`freivalds_chain`]: for `rounds` vectors `r` drawn uniformly
//!    from `GF(P)^n` *after* the report is in (the worker cannot know them), check
//!    `X_R r == A_{R-1} (... (A_0 (B r)))` in `GF(P)`: `R + 2` matrix-vector products,
//!    `O(R n^2)` instead of the worker's `O(R n^3)`. A correct result always
//!    passes; a wrong one (`D = X - X_R != 0`) passes one vector with probability at
//!    most `1/P`, so 3 vectors accept it with probability `<= 65,521^-3 < 4e-15`.
//! 3. Speed, [`SpeedConfig::check`]: "far too slow" is more than
//!    `expected * tolerance_pct / 100 + slack_ms`, where `expected` is the claimed
//!    model's time for the chain (about `target_ms`): the tolerance is proportional
//!    to the model's expected time, and the fixed slack (container start, the
//!    watch's latency) is at most a quarter of the target ([`SpeedConfig::validate`]).
//!
//! # Who times it
//!
//! The operator: from the moment it created the pod (its own clock, in the pod's
//! `solgrid.dev/verify-created-ms` annotation, which the node cannot change) to the
//! moment it has read the reports. The challenge is in the pod's spec from its
//! creation on, so a node can start computing as soon as it sees the pod: the
//! only defensible start is the creation (when the node reports the container
//! `Running` is the node's word). The node's own figures (the container's
//! `startedAt..finishedAt`, the worker's `computeMs`) only ever make the duration
//! longer (the maximum is taken), never shorter.
//!
//! Time the node spends before its container starts (pulling the image,
//! admission) counts. So that an honest node pulling the image is not slashed, a
//! run that is too slow *and* whose container the node says started more than
//! `slack_ms` after creation is inconclusive, not cheating: lying about the start
//! only buys a node "inconclusive", never "passed".
//!
//! # Verdicts
//!
//! A wrong result or a far-too-slow run is cheating (the node is slashed). A pod
//! that never ran, failed without a report, started late or could not be scheduled
//! is *inconclusive*: the next period tries again, and after `expire_after`
//! inconclusive periods in a row a verified node loses `verified` (condition
//! `Verified` reason `Expired`): no idle rewards until it passes again.

use serde::{Deserialize, Serialize};
use solgrid_market::gpu::{GpuModel, ModelTable, default_speed_permille};
use std::collections::BTreeMap;

/// The modulus of the reported product: the largest prime below 2^16.
pub const P: u64 = 65_521;
/// Matrix entries are drawn from `0..ENTRY_BOUND`.
pub const ENTRY_BOUND: u64 = 16;
/// The largest size whose exact single product fits in an fp32 mantissa (`225 n < 2^24`).
pub const MAX_N: usize = 74_564;
/// The most rounds a challenge may ask for.
pub const MAX_ROUNDS: u32 = 100_000_000;
/// The most distinct matrices a challenge may cycle through.
pub const MAX_MATRICES: u32 = 4_096;
/// The most matrix entries the verifier (or the reference worker) holds at once.
pub const MAX_HELD_ENTRIES: u64 = 1 << 28;
/// Report format version.
pub const REPORT_VERSION: u32 = 2;
const MATRIX_STRIDE: u64 = 0xD1B5_4A32_D192_ED03;

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

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

/// What a worker is asked to compute for one device (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub seed: u64,
    pub n: usize,
    /// `R`: products in the chain (1: the single product `A_0 * B`).
    #[serde(default = "one")]
    pub rounds: u32,
    /// `L`: distinct matrices cycled through.
    #[serde(default = "one")]
    pub matrices: u32,
}

impl Challenge {
    /// The single product `A * B` (`R = L = 1`).
    pub fn single(seed: u64, n: usize) -> Self {
        Challenge {
            seed,
            n,
            rounds: 1,
            matrices: 1,
        }
    }
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
    #[error("challenge shape out of range: {0}")]
    BadShape(String),
    #[error("report is malformed: {0}")]
    Malformed(String),
}

fn check_shape(c: &Challenge) -> Result<(), VerifyError> {
    if c.n == 0 || c.n > MAX_N {
        return Err(VerifyError::BadSize(c.n));
    }
    if c.rounds == 0 || c.rounds > MAX_ROUNDS {
        return Err(VerifyError::BadShape(format!("{} rounds", c.rounds)));
    }
    if c.matrices == 0 || c.matrices > MAX_MATRICES || c.matrices > c.rounds {
        return Err(VerifyError::BadShape(format!(
            "{} matrices for {} rounds",
            c.matrices, c.rounds
        )));
    }
    let held = (c.n as u64 * c.n as u64).saturating_mul(c.matrices as u64 + 2);
    if held > MAX_HELD_ENTRIES {
        return Err(VerifyError::BadShape(format!(
            "{held} entries held at once"
        )));
    }
    Ok(())
}

fn seeded_matrix(rng: &mut SplitMix64, n: usize) -> Matrix {
    Matrix {
        n,
        data: (0..n * n).map(|_| rng.below(ENTRY_BOUND) as u16).collect(),
    }
}

/// The challenge's `A_0` and `B` (entries in `0..16`).
pub fn generate(c: &Challenge) -> Result<(Matrix, Matrix), VerifyError> {
    check_shape(c)?;
    let mut rng = SplitMix64::new(c.seed);
    let a = seeded_matrix(&mut rng, c.n);
    let b = seeded_matrix(&mut rng, c.n);
    Ok((a, b))
}

/// `A_0 .. A_{L-1}` and `B`.
pub fn generate_chain(c: &Challenge) -> Result<(Vec<Matrix>, Matrix), VerifyError> {
    let (a0, b) = generate(c)?;
    let mut mats = vec![a0];
    for i in 1..c.matrices as u64 {
        let mut rng = SplitMix64::new(c.seed.wrapping_add(i.wrapping_mul(MATRIX_STRIDE)));
        mats.push(seeded_matrix(&mut rng, c.n));
    }
    Ok((mats, b))
}

/// `C = A * B mod P` for `A` entries below 16 and `B` entries below `P`
/// (`O(n^3)`, cache-friendly i-k-j order).
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

/// The chain's result `X_R` (the worker's job, module docs).
pub fn compute(c: &Challenge) -> Result<Matrix, VerifyError> {
    let (mats, b) = generate_chain(c)?;
    let mut x = b;
    for j in 0..c.rounds as usize {
        x = multiply(&mats[j % mats.len()], &x);
    }
    Ok(x)
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

/// Freivalds' test of a single product: `rounds` random vectors `r` from a stream
/// seeded with `verifier_seed` (which the worker must not know); `true` when
/// `A (B r) == C r` (mod `P`) for all of them.
pub fn freivalds(a: &Matrix, b: &Matrix, c: &Matrix, rounds: u32, verifier_seed: u64) -> bool {
    freivalds_matrices(std::slice::from_ref(a), b, 1, c, rounds, verifier_seed)
}

fn freivalds_matrices(
    mats: &[Matrix],
    b: &Matrix,
    steps: u32,
    x: &Matrix,
    rounds: u32,
    verifier_seed: u64,
) -> bool {
    let n = b.n;
    if mats.is_empty()
        || mats.iter().any(|m| m.n != n)
        || x.n != n
        || x.data.len() != n * n
        || b.data.len() != n * n
    {
        return false;
    }
    let mut rng = SplitMix64::new(verifier_seed);
    for _ in 0..rounds.max(1) {
        let r: Vec<u64> = (0..n).map(|_| rng.below(P)).collect();
        let mut w = mat_vec(b, &r);
        for j in 0..steps as usize {
            w = mat_vec(&mats[j % mats.len()], &w);
        }
        if w != mat_vec(x, &r) {
            return false;
        }
    }
    true
}

/// Freivalds' test of a chain's claimed result `x` (module docs): `O(R n^2)`.
pub fn freivalds_chain(c: &Challenge, x: &Matrix, rounds: u32, verifier_seed: u64) -> bool {
    match generate_chain(c) {
        Ok((mats, b)) => freivalds_matrices(&mats, &b, c.rounds, x, rounds, verifier_seed),
        Err(_) => false,
    }
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

/// What the worker prints (one JSON line per device on stdout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReport {
    pub v: u32,
    /// The device's UUID (absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The challenge's seed, decimal.
    pub seed: String,
    pub n: usize,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub rounds: u32,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub matrices: u32,
    /// The worker's own measure of the computation, milliseconds.
    pub compute_ms: u64,
    /// base64 of `X_R`, row-major little-endian u16.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub product: String,
}

impl WorkerReport {
    /// The report of a computed result.
    pub fn new(c: &Challenge, product: &Matrix, compute_ms: u64) -> Self {
        let bytes: Vec<u8> = product.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        WorkerReport {
            v: REPORT_VERSION,
            uuid: None,
            seed: c.seed.to_string(),
            n: c.n,
            rounds: c.rounds,
            matrices: c.matrices,
            compute_ms,
            product: base64_encode(&bytes),
        }
    }

    /// The result, checked against the challenge (shape, entries below `P`).
    pub fn decode_product(&self, c: &Challenge) -> Result<Matrix, VerifyError> {
        if self.v == 0 || self.v > REPORT_VERSION {
            return Err(VerifyError::Malformed(format!("version {}", self.v)));
        }
        if self.seed != c.seed.to_string()
            || self.n != c.n
            || self.rounds != c.rounds
            || self.matrices != c.matrices
        {
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
        Self::all_from_log(log).pop()
    }

    /// Every line of a log that parses as a report, in order.
    pub fn all_from_log(log: &str) -> Vec<WorkerReport> {
        log.lines()
            .map(str::trim)
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Runs the reference worker for one device: generate, compute, report. `now_ms` is
/// a monotonic clock in milliseconds (injected for tests). Returns the stdout line
/// and the termination-log summary.
pub fn run_worker(
    c: &Challenge,
    now_ms: impl FnMut() -> u64,
) -> Result<(String, String), VerifyError> {
    run_device_worker(None, c, now_ms)
}

/// [`run_worker`] for the device `uuid` (its report carries the UUID).
pub fn run_device_worker(
    uuid: Option<&str>,
    c: &Challenge,
    mut now_ms: impl FnMut() -> u64,
) -> Result<(String, String), VerifyError> {
    let t0 = now_ms();
    let product = compute(c)?;
    let ms = now_ms().saturating_sub(t0);
    let mut report = WorkerReport::new(c, &product, ms);
    report.uuid = uuid.map(str::to_string);
    let line = serde_json::to_string(&report).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let summary = serde_json::json!({
        "v": REPORT_VERSION, "uuid": report.uuid, "seed": report.seed, "n": c.n,
        "rounds": c.rounds, "matrices": c.matrices, "computeMs": ms,
    })
    .to_string();
    Ok((line, summary))
}

// ---------------------------------------------------------------- speed

/// The sizing and speed check's parameters (module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SpeedConfig {
    /// The time of one size-`reference_n` product on a model of speed 1,000 (an
    /// RTX 4090) with the worker image in use, microseconds.
    pub reference_us: u64,
    pub reference_n: usize,
    /// The time the chain should take on the claimed model, milliseconds.
    pub target_ms: u64,
    /// "Far too slow" = more than this % of the expected time (plus `slack_ms`).
    pub tolerance_pct: u64,
    /// Fixed allowance (container start, the watch's latency), milliseconds; at
    /// most a quarter of `target_ms`.
    pub slack_ms: u64,
    /// The working set's share of the claimed VRAM, per mille.
    pub vram_permille: u64,
    /// The most distinct matrices a chain cycles through.
    pub max_matrices: u32,
    /// Relative speed per model, per-mille of an RTX 4090 (the market's table by default).
    #[serde(skip)]
    pub speed_permille: ModelTable<u32>,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        SpeedConfig {
            reference_us: 2_000_000,
            reference_n: 1024,
            target_ms: 30_000,
            tolerance_pct: 150,
            slack_ms: 5_000,
            vram_permille: 900,
            max_matrices: 8,
            speed_permille: default_speed_permille(),
        }
    }
}

impl SpeedConfig {
    /// A small configuration for tests: one size-`n` product takes an RTX 4090 1 ms,
    /// a chain takes the claimed model 200 ms, tolerance 200 %, slack 50 ms.
    pub fn quick(n: usize) -> SpeedConfig {
        SpeedConfig {
            reference_us: 1_000,
            reference_n: n,
            target_ms: 200,
            slack_ms: 50,
            tolerance_pct: 200,
            ..SpeedConfig::default()
        }
    }

    /// A configuration that cannot tell models apart is refused: the tolerance
    /// must be at least 100 % and the slack at most a quarter of the target.
    pub fn validate(&self) -> Result<(), String> {
        if self.reference_us == 0 || self.reference_n == 0 || self.target_ms == 0 {
            return Err("reference time, reference size and target must be positive".into());
        }
        if self.tolerance_pct < 100 {
            return Err(format!(
                "tolerance {} % is below the expected time itself",
                self.tolerance_pct
            ));
        }
        if self.slack_ms.saturating_mul(4) > self.target_ms {
            return Err(format!(
                "slack {} ms is more than a quarter of the {} ms target: it would hide a slow device",
                self.slack_ms, self.target_ms
            ));
        }
        Ok(())
    }

    fn speed(&self, model: GpuModel) -> u128 {
        self.speed_permille.get(model).max(1) as u128
    }

    /// Microseconds of `rounds` size-`n` products on `model` (exact ratio, saturating).
    pub fn expected_us(&self, model: GpuModel, n: usize, rounds: u32) -> u64 {
        let rn = self.reference_n.max(1) as u128;
        let n = n as u128;
        let v = (self.reference_us as u128)
            .saturating_mul(1000)
            .saturating_mul(n * n * n)
            .saturating_mul(rounds as u128)
            / (self.speed(model) * rn * rn * rn);
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// Milliseconds of `rounds` size-`n` products on `model`.
    pub fn expected_ms(&self, model: GpuModel, n: usize, rounds: u32) -> u64 {
        self.expected_us(model, n, rounds) / 1000
    }

    /// The rounds that take `model` at least `target_ms` (at least 1).
    pub fn rounds_for(&self, model: GpuModel, n: usize) -> u32 {
        let rn = self.reference_n.max(1) as u128;
        let n = (n.max(1)) as u128;
        let num = (self.target_ms as u128)
            .saturating_mul(1000)
            .saturating_mul(self.speed(model))
            .saturating_mul(rn * rn * rn);
        let den = (self.reference_us.max(1) as u128)
            .saturating_mul(1000)
            .saturating_mul(n * n * n);
        let r = num.div_ceil(den.max(1));
        u32::try_from(r).unwrap_or(MAX_ROUNDS).clamp(1, MAX_ROUNDS)
    }

    /// The distinct matrices of a device's chain: `vram_permille` of its VRAM in
    /// fp32 `n x n` matrices, at least 1, at most `max_matrices` and `rounds`.
    pub fn matrices_for(&self, vram_mib: u64, n: usize, rounds: u32) -> u32 {
        let bytes = (vram_mib as u128) << 20;
        let share = bytes * self.vram_permille as u128 / 1000;
        let per = (n.max(1) as u128).pow(2) * 4;
        let held_cap = (MAX_HELD_ENTRIES as u128 / (n.max(1) as u128).pow(2)).saturating_sub(2);
        let l = (share / per)
            .min(self.max_matrices.clamp(1, MAX_MATRICES) as u128)
            .min(rounds.max(1) as u128)
            .min(held_cap);
        (l as u32).max(1)
    }

    /// The longest acceptable duration: proportional to the expected time, plus
    /// the fixed slack.
    pub fn limit_ms(&self, model: GpuModel, n: usize, rounds: u32) -> u64 {
        let e = self.expected_us(model, n, rounds) as u128;
        u64::try_from(e * self.tolerance_pct as u128 / 100_000 + self.slack_ms as u128)
            .unwrap_or(u64::MAX)
    }

    /// `Ok` when `duration_ms` is within the limit; the limit otherwise.
    pub fn check(&self, model: GpuModel, c: &Challenge, duration_ms: u64) -> Result<(), u64> {
        let limit = self.limit_ms(model, c.n, c.rounds);
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
    /// Cheating: a result is wrong, a device is missing or a report malformed.
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

/// Checks one device's report for its challenge (module docs). `model` is the
/// claimed model (`None`: speed not checked); `duration_ms` the operator's measure
/// (`None` if unknown); the report's own `computeMs` can only make it longer.
pub fn check_report(
    c: &Challenge,
    report: &WorkerReport,
    model: Option<GpuModel>,
    duration_ms: Option<u64>,
    speed: &SpeedConfig,
    rounds: u32,
    verifier_seed: u64,
) -> Verdict {
    if let Err(e) = check_shape(c) {
        return Verdict::Inconclusive {
            reason: e.to_string(),
        };
    }
    let product = match report.decode_product(c) {
        Ok(p) => p,
        Err(e) => {
            return Verdict::WrongResult {
                reason: e.to_string(),
            };
        }
    };
    if !freivalds_chain(c, &product, rounds, verifier_seed) {
        return Verdict::WrongResult {
            reason: "Freivalds' test rejected the product".into(),
        };
    }
    let duration = duration_ms.unwrap_or(0).max(report.compute_ms);
    if let Some(m) = model
        && let Err(limit) = speed.check(m, c, duration)
    {
        return Verdict::TooSlow {
            duration_ms: duration,
            limit_ms: limit,
        };
    }
    Verdict::Passed
}

/// One device of a node's challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceChallenge {
    /// The device's UUID (the inventory's `uuid`, else its `id`).
    pub uuid: String,
    /// The claimed model (canonical name; `None`: speed not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Seed, decimal (JSON numbers lose precision above 2^53).
    pub seed: String,
    pub rounds: u32,
    pub matrices: u32,
}

impl DeviceChallenge {
    pub fn challenge(&self, n: usize) -> Option<Challenge> {
        Some(Challenge {
            seed: self.seed.parse().ok()?,
            n,
            rounds: self.rounds,
            matrices: self.matrices,
        })
    }

    pub fn gpu_model(&self) -> Option<GpuModel> {
        self.model.as_deref().and_then(GpuModel::parse)
    }

    /// The worker's `--device` argument.
    pub fn arg(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.uuid, self.seed, self.rounds, self.matrices
        )
    }
}

/// Checks a node's log against every device's challenge: each device must have
/// exactly one report, correct, within its model's limit of `duration_ms` (the
/// operator's measure). A too-slow run whose container the node says started late
/// (`started_late`) is inconclusive instead (module docs).
#[allow(clippy::too_many_arguments)]
pub fn check_devices(
    devices: &[DeviceChallenge],
    n: usize,
    log: &str,
    duration_ms: u64,
    started_late: bool,
    speed: &SpeedConfig,
    rounds: u32,
    verifier_seed: u64,
) -> Verdict {
    if devices.is_empty() {
        return Verdict::Inconclusive {
            reason: "no device was challenged".into(),
        };
    }
    let mut by_uuid: BTreeMap<String, Vec<WorkerReport>> = BTreeMap::new();
    for r in WorkerReport::all_from_log(log) {
        by_uuid
            .entry(r.uuid.clone().unwrap_or_default())
            .or_default()
            .push(r);
    }
    let mut slow: Option<Verdict> = None;
    for (i, d) in devices.iter().enumerate() {
        let Some(c) = d.challenge(n) else {
            return Verdict::Inconclusive {
                reason: format!("device {} has a malformed challenge", d.uuid),
            };
        };
        let report = match by_uuid.get(&d.uuid).map(Vec::as_slice) {
            None | Some([]) => {
                return Verdict::WrongResult {
                    reason: format!("device {} did not report", d.uuid),
                };
            }
            Some([r]) => r,
            Some(_) => {
                return Verdict::WrongResult {
                    reason: format!("device {} reported more than once", d.uuid),
                };
            }
        };
        let vseed = verifier_seed.wrapping_add(i as u64);
        match check_report(
            &c,
            report,
            d.gpu_model(),
            Some(duration_ms),
            speed,
            rounds,
            vseed,
        ) {
            Verdict::Passed => {}
            v @ Verdict::TooSlow { .. } => {
                slow.get_or_insert(v);
            }
            Verdict::WrongResult { reason } => {
                return Verdict::WrongResult {
                    reason: format!("device {}: {reason}", d.uuid),
                };
            }
            v @ Verdict::Inconclusive { .. } => return v,
        }
    }
    match slow {
        None => Verdict::Passed,
        Some(Verdict::TooSlow { duration_ms, .. }) if started_late => Verdict::Inconclusive {
            reason: format!(
                "took {duration_ms} ms, but the node started the container late (image pull?)"
            ),
        },
        Some(v) => v,
    }
}

/// A verifier seed the worker cannot predict: the process's random hash keys mixed
/// with the time (tests pass their own seed to [`check_report`]).
pub fn fresh_seed(now_nanos: u128) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_nanos);
    h.finish()
}

/// The worker's arguments: `--size <n>` and either `--device
/// <uuid>:<seed>:<rounds>:<matrices>` (repeated, version 2) or `--seed <u64>`
/// (one device without UUID; `--rounds`, `--matrices` default to 1).
pub fn parse_worker_args(args: &[String]) -> Option<Vec<(Option<String>, Challenge)>> {
    let (mut seed, mut n, mut rounds, mut matrices) = (None, None, 1u32, 1u32);
    let mut devices: Vec<(String, u64, u32, u32)> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => seed = Some(it.next()?.parse::<u64>().ok()?),
            "--size" => n = Some(it.next()?.parse::<usize>().ok()?),
            "--rounds" => rounds = it.next()?.parse().ok()?,
            "--matrices" => matrices = it.next()?.parse().ok()?,
            "--device" => {
                let spec = it.next()?;
                let mut parts = spec.rsplitn(4, ':');
                let l = parts.next()?.parse().ok()?;
                let r = parts.next()?.parse().ok()?;
                let s = parts.next()?.parse().ok()?;
                let uuid = parts.next()?.to_string();
                devices.push((uuid, s, r, l));
            }
            _ => {}
        }
    }
    let n = n?;
    if devices.is_empty() {
        return Some(vec![(
            None,
            Challenge {
                seed: seed?,
                n,
                rounds,
                matrices,
            },
        )]);
    }
    Some(
        devices
            .into_iter()
            .map(|(u, s, r, l)| {
                (
                    Some(u),
                    Challenge {
                        seed: s,
                        n,
                        rounds: r,
                        matrices: l,
                    },
                )
            })
            .collect(),
    )
}

/// The `solgrid-operator verify-worker` subcommand ([`parse_worker_args`]): runs
/// the reference (CPU) worker, one thread per device, prints one report line per
/// device on stdout and writes the summaries to `/dev/termination-log` (when it
/// exists, as in a container). Returns the process exit code.
pub fn worker_main(args: &[String]) -> i32 {
    let Some(devices) = parse_worker_args(args) else {
        eprintln!(
            "usage: solgrid-operator verify-worker --size <n> (--device <uuid>:<seed>:<rounds>:<matrices>)... | --seed <u64> [--rounds R --matrices L]"
        );
        return 2;
    };
    let start = std::time::Instant::now();
    let results: Vec<Result<(String, String), VerifyError>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .map(|(uuid, c)| {
                s.spawn(move || {
                    run_device_worker(uuid.as_deref(), c, || start.elapsed().as_millis() as u64)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(VerifyError::Malformed("worker thread panicked".into()))
                })
            })
            .collect()
    });
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut summaries = Vec::new();
    for r in results {
        match r {
            Ok((line, summary)) => {
                if writeln!(out, "{line}").is_err() {
                    return 1;
                }
                summaries.push(summary);
            }
            Err(e) => {
                eprintln!("verify-worker: {e}");
                return 1;
            }
        }
    }
    if out.flush().is_err() {
        return 1;
    }
    // the kubelet mounts it in a container; elsewhere, write nothing
    let path = std::path::Path::new("/dev/termination-log");
    if path.is_file() {
        let _ = std::fs::write(path, summaries.join("\n"));
    }
    0
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
        let c = Challenge::single(42, 17);
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
        let (a3, _) = generate(&Challenge::single(43, 17)).unwrap();
        assert_ne!(a1, a3);
        assert!(generate(&Challenge::single(1, 0)).is_err());
        assert!(generate(&Challenge::single(1, MAX_N + 1)).is_err());
        // more matrices than rounds, zero rounds, a working set too large: refused
        let c = Challenge {
            seed: 1,
            n: 4,
            rounds: 2,
            matrices: 3,
        };
        assert!(generate(&c).is_err());
        assert!(generate(&Challenge { rounds: 0, ..c }).is_err());
        let big = Challenge {
            seed: 1,
            n: 20_000,
            rounds: 4,
            matrices: 4,
        };
        assert!(generate(&big).is_err());
        // the chain's matrices are distinct, A_0 and B as in version 1
        let c = Challenge {
            seed: 5,
            n: 8,
            rounds: 3,
            matrices: 3,
        };
        let (mats, b) = generate_chain(&c).unwrap();
        let (a0, b0) = generate(&Challenge::single(5, 8)).unwrap();
        assert_eq!((mats[0].clone(), b), (a0, b0));
        assert_ne!(mats[1], mats[2]);
    }

    #[test]
    fn multiply_and_chain_match_naive() {
        let c = Challenge::single(7, 33);
        let (a, b) = generate(&c).unwrap();
        assert_eq!(multiply(&a, &b), naive(&a, &b));
        assert_eq!(compute(&c).unwrap(), naive(&a, &b));
        // R = 5 over L = 2: A_0 A_1 A_0 A_1 A_0 applied to B (the last applied first... in order)
        let c = Challenge {
            seed: 8,
            n: 9,
            rounds: 5,
            matrices: 2,
        };
        let (mats, b) = generate_chain(&c).unwrap();
        let mut x = b;
        for j in 0..5 {
            x = naive(&mats[j % 2], &x);
        }
        assert_eq!(compute(&c).unwrap(), x);
    }

    #[test]
    fn freivalds_accepts_correct_and_rejects_wrong() {
        let c = Challenge::single(99, 64);
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
        let (a2, b2) = generate(&Challenge::single(100, 64)).unwrap();
        assert!(!freivalds(&a, &b, &multiply(&a2, &b2), 3, 1));
        let zeros = Matrix {
            n: 64,
            data: vec![0; 64 * 64],
        };
        assert!(!freivalds(&a, &b, &zeros, 3, 1));
        assert!(!freivalds(&a, &b, &multiply(&b, &a), 3, 1));
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
        // a chain: stopping one round short, or cycling fewer matrices, is caught
        let c = Challenge {
            seed: 3,
            n: 16,
            rounds: 6,
            matrices: 3,
        };
        let x = compute(&c).unwrap();
        assert!(freivalds_chain(&c, &x, 3, 9));
        let short = compute(&Challenge { rounds: 5, ..c }).unwrap();
        assert!(!freivalds_chain(&c, &short, 3, 9));
        let one_matrix = compute(&Challenge { matrices: 1, ..c }).unwrap();
        assert!(!freivalds_chain(&c, &one_matrix, 3, 9));
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
        let c = Challenge::single(u64::MAX - 3, 48);
        let mut t = 0;
        let (line, summary) = run_worker(&c, || {
            t += 5;
            t
        })
        .unwrap();
        assert!(!summary.contains("product"));
        // version 1 fields only: no uuid, rounds and matrices left out
        assert!(!line.contains("uuid") && !line.contains("rounds"), "{line}");
        let log = format!("starting\n{line}\n");
        let r = WorkerReport::from_log(&log).unwrap();
        assert_eq!(r.compute_ms, 5);
        let speed = SpeedConfig::default();
        assert_eq!(
            check_report(&c, &r, Some(GpuModel::H100), Some(1_000), &speed, 3, 5),
            Verdict::Passed
        );
        let other = Challenge { seed: 1, ..c };
        assert!(check_report(&other, &r, None, None, &speed, 3, 5).is_cheating());
        let mut bytes = base64_decode(&r.product).unwrap();
        bytes[10] ^= 1;
        let tampered = WorkerReport {
            product: base64_encode(&bytes),
            ..r.clone()
        };
        let v = check_report(&c, &tampered, None, None, &speed, 3, 5);
        assert!(matches!(v, Verdict::WrongResult { .. }), "{v:?}");
        let short = WorkerReport {
            product: base64_encode(&bytes[..100]),
            ..r.clone()
        };
        assert!(check_report(&c, &short, None, None, &speed, 3, 5).is_cheating());
        let v = check_report(&c, &r, Some(GpuModel::H100), Some(10_000_000), &speed, 3, 5);
        assert!(matches!(v, Verdict::TooSlow { .. }), "{v:?}");
        assert_eq!(v.label(), "Failed");
        assert_eq!(
            check_report(&c, &r, None, Some(10_000_000), &speed, 3, 5),
            Verdict::Passed
        );
        // the report's computeMs only makes it slower
        let lying = WorkerReport {
            compute_ms: 10_000_000,
            ..r.clone()
        };
        let v = check_report(&c, &lying, Some(GpuModel::H100), Some(1), &speed, 3, 5);
        assert!(matches!(v, Verdict::TooSlow { .. }), "{v:?}");
        assert!(WorkerReport::from_log("no json here\n{broken").is_none());
    }

    #[test]
    fn speed_sizing() {
        let s = SpeedConfig::default();
        assert!(s.validate().is_ok());
        // one RTX 4090 product at the reference size: the reference time
        assert_eq!(s.expected_ms(GpuModel::Rtx4090, 1024, 1), 2_000);
        assert_eq!(s.expected_ms(GpuModel::H100, 1024, 1), 833);
        assert_eq!(s.expected_ms(GpuModel::Rtx4090, 2048, 1), 16_000);
        // the chain takes the claimed model at least the target, and not much more
        for &m in GpuModel::ALL {
            let r = s.rounds_for(m, 512);
            let e = s.expected_ms(m, 512, r);
            assert!(e >= s.target_ms - 1, "{m:?}: {e}");
            assert!(
                e <= s.target_ms + s.expected_ms(m, 512, 1) + 1,
                "{m:?}: {e}"
            );
        }
        // 4090: 250 ms per 512-product -> 120 rounds; limit 1.5 x 30 s + 5 s
        assert_eq!(s.rounds_for(GpuModel::Rtx4090, 512), 120);
        assert_eq!(s.limit_ms(GpuModel::Rtx4090, 512, 120), 50_000);
        let c = Challenge {
            seed: 1,
            n: 512,
            rounds: 120,
            matrices: 1,
        };
        assert!(s.check(GpuModel::Rtx4090, &c, 50_000).is_ok());
        assert_eq!(s.check(GpuModel::Rtx4090, &c, 50_001), Err(50_000));
        // no overflow on absurd inputs
        let _ = s.limit_ms(GpuModel::AppleM1, MAX_N, MAX_ROUNDS);
        assert_eq!(s.rounds_for(GpuModel::H200, 1), MAX_ROUNDS);
        // refused configurations
        for bad in [
            SpeedConfig {
                tolerance_pct: 99,
                ..s.clone()
            },
            SpeedConfig {
                slack_ms: 30_000,
                ..s.clone()
            },
            SpeedConfig {
                target_ms: 0,
                ..s.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matrices_follow_the_vram_claim() {
        let s = SpeedConfig {
            max_matrices: 64,
            ..SpeedConfig::default()
        };
        // 1 GiB at 90 %: 921 MiB / 4 MiB per fp32 1024-matrix = 230 -> capped at 64
        assert_eq!(s.matrices_for(1024, 1024, 1000), 64);
        // n = 2048 (16 MiB each in fp32): 512 MiB -> 28, 256 MiB -> 14
        assert_eq!(s.matrices_for(512, 2048, 1000), 28);
        assert_eq!(s.matrices_for(256, 2048, 1000), 14);
        // 80 GB: capped by what the verifier holds (2^28 entries: 64 - 2 at n = 2048)
        assert_eq!(s.matrices_for(81_920, 2048, 1000), 62);
        // never more than the rounds, never 0
        assert_eq!(s.matrices_for(81_920, 1024, 3), 3);
        assert_eq!(s.matrices_for(0, 1024, 10), 1);
        // and never more than the verifier holds
        let l = s.matrices_for(1 << 24, 4096, 1000);
        assert!((l as u64 + 2) * 4096 * 4096 <= MAX_HELD_ENTRIES, "{l}");
    }

    #[test]
    fn worker_args() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let d =
            parse_worker_args(&w("--size 8 --device GPU-a:1:2:1 --device GPU-b:c:3:4:2")).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0.as_deref(), Some("GPU-a"));
        assert_eq!(
            d[1],
            (
                Some("GPU-b:c".into()),
                Challenge {
                    seed: 3,
                    n: 8,
                    rounds: 4,
                    matrices: 2
                }
            )
        );
        assert_eq!(
            parse_worker_args(&w("--seed 5 --size 4")).unwrap(),
            vec![(None, Challenge::single(5, 4))]
        );
        assert!(parse_worker_args(&w("--size 4")).is_none());
        assert!(parse_worker_args(&w("--size 4 --device GPU-a:x:1:1")).is_none());
    }

    #[test]
    fn fresh_seeds_differ() {
        assert_ne!(fresh_seed(1), fresh_seed(1));
    }
}
