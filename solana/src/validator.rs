//! A real `solana-test-validator` for tests and benchmarks, started by the test
//! process itself and killed when dropped.
//!
//! Convention (see docs/solana.md):
//! - the binary (Agave 4.2.2) is `$SOLGRID_VALIDATOR`, else the workspace's
//!   `.tools/bin/solana-test-validator`, else `solana-test-validator` on `PATH`;
//! - none found, or found but this process is not in a loopback-only network
//!   namespace: tests that need it print `SKIPPED <test>: <why>` and pass — so a plain
//!   `cargo test` works anywhere;
//! - `SOLGRID_REQUIRE_VALIDATOR=1` (set by `scripts/test-solana.sh`) or `CI=true`, or
//!   an explicit `SOLGRID_VALIDATOR`: a missing or unusable validator makes those
//!   tests *fail*.
//! - The validator listens on every interface whatever `--bind-address` says, so it
//!   is only started inside a network namespace that has nothing but loopback
//!   (`unshare -n sh -c 'ip link set lo up; …'`); elsewhere [`TestValidator::start`]
//!   refuses.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const VALIDATOR_ENV: &str = "SOLGRID_VALIDATOR";
pub const REQUIRE_ENV: &str = "SOLGRID_REQUIRE_VALIDATOR";

/// Whether the tests must have a validator: `SOLGRID_REQUIRE_VALIDATOR` set (not
/// `0`), or `CI=true` (CI runs the tests inside `unshare -n` with the validator
/// installed by `scripts/install-validator.sh`).
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Where the validator binary is: `$SOLGRID_VALIDATOR`, else the workspace's
/// `.tools/bin/solana-test-validator` (where `scripts/install-validator.sh` puts it),
/// else `solana-test-validator` on `PATH`.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(VALIDATOR_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".tools/bin/solana-test-validator");
    if is_executable(&tools) {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("solana-test-validator"))
            .find(|p| is_executable(p))
    })
}

/// The validator binary to use, or `None` when the test should be skipped (it
/// prints why). Panics (fails the test) when the validator is required, or named
/// explicitly by `SOLGRID_VALIDATOR`, but cannot be used.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    let explicit = std::env::var_os(VALIDATOR_ENV).is_some_and(|v| !v.is_empty());
    let must = required() || explicit;
    let Some(p) = find_binary() else {
        assert!(
            !must,
            "{test}: no solana-test-validator ({REQUIRE_ENV} or CI is set): run \
             scripts/install-validator.sh, or use scripts/test-solana.sh"
        );
        eprintln!(
            "SKIPPED {test}: needs a real solana-test-validator; set {VALIDATOR_ENV} \
             or run scripts/test-solana.sh"
        );
        return None;
    };
    assert!(
        is_executable(&p),
        "{test}: {} is not an executable file (run scripts/install-validator.sh)",
        p.display()
    );
    if !loopback_only() {
        assert!(
            !must,
            "{test}: refusing to start solana-test-validator: this network namespace has \
             {:?}; it listens on every interface, so run the tests inside `unshare -n` \
             (scripts/test-solana.sh)",
            interfaces()
        );
        eprintln!(
            "SKIPPED {test}: found {} but this process is not in a network namespace with \
             only loopback; run scripts/test-solana.sh",
            p.display()
        );
        return None;
    }
    Some(p)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The network interfaces this process sees (from `/proc/self/net/dev`, which
/// follows the process's network namespace).
pub fn interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether this process runs in a network namespace with only loopback.
pub fn loopback_only() -> bool {
    let ifs = interfaces();
    !ifs.is_empty() && ifs.iter().all(|i| i == "lo")
}

static NEXT_BASE: AtomicU16 = AtomicU16::new(0);
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ports_free(base: u16, n: u16) -> bool {
    (base..base + n).all(|p| {
        TcpListener::bind(("127.0.0.1", p)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok()
    })
}

fn pick_ports() -> Result<u16, String> {
    // 80 consecutive ports: rpc, rpc pubsub (rpc + 1), faucet, gossip, then the
    // dynamic range (the validator's TPU, TVU, repair, ... sockets)
    for _ in 0..200 {
        let step = NEXT_BASE.fetch_add(1, Ordering::Relaxed) as u32;
        let seed = std::process::id()
            .wrapping_mul(7919)
            .wrapping_add(step * 97);
        let base = 20_000 + (seed % 400) as u16 * 100;
        if ports_free(base, 80) {
            return Ok(base);
        }
    }
    Err("no 80 consecutive free ports on 127.0.0.1".into())
}

/// A running `solana-test-validator`, killed (and its ledger removed) on drop.
pub struct TestValidator {
    child: Child,
    /// One validator at a time per test process (they need ~0.5 GB and a core each).
    _turn: std::sync::MutexGuard<'static, ()>,
    dir: PathBuf,
    rpc_url: String,
}

impl TestValidator {
    /// Starts a validator whose genesis gives 500,000,000 SOL to `funded` (the
    /// operator's authority, so it can pay fees and rent), and waits until its RPC
    /// answers and has a confirmed blockhash (about 0.5–2 s).
    pub fn start(binary: &Path, funded: &str) -> Result<Self, String> {
        Self::start_with_args(binary, funded, &[])
    }

    /// [`TestValidator::start`] with extra arguments, e.g. `["--ticks-per-slot", "8"]`
    /// for shorter slots (blockhashes expire sooner: crash tests).
    pub fn start_with_args(binary: &Path, funded: &str, extra: &[&str]) -> Result<Self, String> {
        if !loopback_only() {
            return Err(format!(
                "refusing to start solana-test-validator: this network namespace has {:?}; \
                 it listens on every interface, so run the tests inside `unshare -n` \
                 (scripts/test-solana.sh)",
                interfaces()
            ));
        }
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let base = pick_ports()?;
        let dir =
            std::env::temp_dir().join(format!("solgrid-validator-{}-{}", std::process::id(), base));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log = std::fs::File::create(dir.join("stdout.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let rpc_port = base;
        let child = Command::new(binary)
            .arg("--ledger")
            .arg(dir.join("ledger"))
            .args(["--reset", "--quiet", "--bind-address", "127.0.0.1"])
            .args(["--rpc-port", &rpc_port.to_string()])
            .args(["--faucet-port", &(base + 2).to_string()])
            .args(["--gossip-port", &(base + 3).to_string()])
            .args([
                "--dynamic-port-range",
                &format!("{}-{}", base + 10, base + 79),
            ])
            .args(["--mint", funded])
            // keep the whole history (the default 10,000 shreds purges transactions,
            // and their memos, within minutes at short slots)
            .args(["--limit-ledger-size", "500000000"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut v = TestValidator {
            child,
            _turn: turn,
            dir,
            rpc_url: format!("http://127.0.0.1:{rpc_port}"),
        };
        v.wait_ready(Duration::from_secs(90))?;
        Ok(v)
    }

    /// Starts one when the environment provides a validator; `None` means skip
    /// (only when not required). Panics when required and it cannot start.
    pub fn from_env(test: &str, funded: &str) -> Option<Self> {
        Self::from_env_with_args(test, funded, &[])
    }

    /// [`TestValidator::from_env`] with extra validator arguments.
    pub fn from_env_with_args(test: &str, funded: &str, extra: &[&str]) -> Option<Self> {
        let bin = binary_or_skip(test)?;
        match Self::start_with_args(&bin, funded, extra) {
            Ok(v) => Some(v),
            Err(e) => panic!("{test}: {e}"),
        }
    }

    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        use solana_commitment_config::CommitmentConfig;
        let client = solana_rpc_client::rpc_client::RpcClient::new_with_timeout(
            self.rpc_url.clone(),
            Duration::from_secs(2),
        );
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "solana-test-validator exited ({status}) before it was ready: {}",
                    self.log_tail()
                ));
            }
            // programs loaded at genesis (SPL Token is upgradeable) are usable only
            // a few slots in: "Program is not deployed" before that
            if client.get_health().is_ok()
                && client
                    .get_slot_with_commitment(CommitmentConfig::confirmed())
                    .is_ok_and(|s| s >= 3)
            {
                eprintln!(
                    "solana-test-validator ready at {} after {:.1} s",
                    self.rpc_url,
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "solana-test-validator not healthy after {timeout:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        let start = s.len().saturating_sub(2000);
        s[s.floor_char_boundary(start)..].to_string()
    }
}

impl Drop for TestValidator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
