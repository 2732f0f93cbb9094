//! `promtool check metrics` on a live scrape of the scheduler extender serving a
//! snapshot file (`--snapshot scheduler/testdata/snapshot.yaml`), which runs without
//! a cluster. Its binary is built by the workspace's test build (the scheduler's
//! integration tests need it); when it is missing (this crate's tests run alone)
//! the check is skipped with a note. The operator needs an API server and the device
//! plugin a kubelet, so their own tests scrape them (scripts/check-metrics.sh does
//! it by hand against a running component).

use solgrid_helm_tests::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The debug binary of a workspace package, if built.
fn binary(name: &str) -> Option<PathBuf> {
    let p = target_dir().join("debug").join(name);
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` on 127.0.0.1:`port` (HTTP/1.0, so the server closes), retrying until
/// the server is up or 20 s pass.
fn get(port: u16, path: &str, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the server exited with {status} before answering:\n{err}");
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            let mut resp = String::new();
            if s.read_to_string(&mut resp).is_ok() && resp.starts_with("HTTP/1.") {
                let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
                assert!(head.contains(" 200 "), "GET {path}: {head}");
                return body.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no answer on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scheduler_extender_metrics_pass_promtool() {
    let Some(bin) = binary("solgrid-scheduler") else {
        eprintln!(
            "note: target/debug/solgrid-scheduler not built; skipped (cargo build -p solgrid-scheduler)"
        );
        return;
    };
    let port = free_port();
    let api_port = free_port();
    let snapshot = workspace_root().join("scheduler/testdata/snapshot.yaml");
    let child = Command::new(bin)
        .arg("--snapshot")
        .arg(&snapshot)
        .arg("--listen")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    assert_eq!(get(port, "/healthz", &mut child.0).trim(), "ok");
    promtool_check_metrics("solgrid-scheduler", &get(port, "/metrics", &mut child.0));
}
