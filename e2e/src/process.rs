//! Child processes of the tests (etcd, the control plane, the operator, the
//! extender) that never outlive the test binary.
//!
//! Each child gets its own process group and `PR_SET_PDEATHSIG(SIGKILL)`, so it dies
//! when the thread that spawned it ends (the kernel ties the death signal to the
//! spawning *thread*, not the process: spawn long-lived children from a thread that
//! lives as long as the process). Every child is also registered, and an `atexit`
//! hook kills all registered process groups when the test binary exits, whether the
//! tests passed, failed or panicked. [`Proc`] kills its group on drop.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;

/// Process groups to kill at exit.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();
/// Paths to remove at exit (the local cluster's directories).
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn kill_all_at_exit() {
    let pids: Vec<i32> = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in &pids {
        // SAFETY: kill(2) on a process group we created; no memory is touched.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
    }
    // a short grace for etcd and the API server to exit cleanly
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    for pid in &pids {
        loop {
            // SAFETY: waitpid on our own child, non-blocking.
            let r = unsafe { libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) };
            if r != 0 || std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let dirs: Vec<PathBuf> = CLEANUP.lock().map(|v| v.clone()).unwrap_or_default();
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn install_hook() {
    HOOK.call_once(|| {
        // SAFETY: registering a plain `extern "C" fn()`.
        unsafe {
            libc::atexit(kill_all_at_exit);
        }
    });
}

/// Removes `dir` when the test binary exits (unless `SOLGRID_E2E_KEEP=1`).
pub fn remove_at_exit(dir: &Path) {
    if std::env::var("SOLGRID_E2E_KEEP").is_ok_and(|v| v == "1") {
        return;
    }
    install_hook();
    if let Ok(mut v) = CLEANUP.lock() {
        v.push(dir.to_path_buf());
    }
}

/// A child process whose output goes to a log file; killed (with its process group)
/// when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`, in its own process
    /// group, with `SIGKILL` as its parent-death signal.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Proc> {
        install_hook();
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // the parent may have died between fork and prctl
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
        cmd.process_group(0);
        let child = cmd.spawn()?;
        if let Ok(mut v) = LIVE.lock() {
            v.push(child.id() as i32);
        }
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `bytes` of its log.
    pub fn log_tail(&self, bytes: u64) -> String {
        log_tail(&self.log, bytes)
    }

    /// Sends `sig` to its process group.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the process group we created.
        unsafe {
            libc::kill(-(self.child.id() as i32), sig);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for it.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exited() {
            self.forget();
            return Some(st);
        }
        self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(st) = self.exited() {
                self.signal(libc::SIGKILL);
                self.forget();
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(libc::SIGKILL);
        let st = self.child.wait().ok();
        self.forget();
        st
    }

    fn forget(&self) {
        let pid = self.child.id() as i32;
        if let Ok(mut v) = LIVE.lock() {
            v.retain(|p| *p != pid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        } else {
            self.signal(libc::SIGKILL);
        }
        self.forget();
    }
}

/// The last `bytes` of a file (lossy UTF-8; empty if unreadable).
pub fn log_tail(path: &Path, bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
