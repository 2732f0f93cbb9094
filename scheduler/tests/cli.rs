//! The binaries as a person runs them: `--gen-snapshot`, `--snapshot` serving,
//! SIGTERM, and the load generator against it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_solgrid-scheduler");
const LOAD: &str = env!("CARGO_BIN_EXE_solgrid-scheduler-load");

#[test]
fn gen_snapshot_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["json", "yaml"] {
        let p = dir.path().join(format!("s.{ext}"));
        let st = Command::new(BIN)
            .args(["--gen-snapshot", "50", "--out"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        let s = solgrid_scheduler::snapshot::Snapshot::load(&p).unwrap();
        assert_eq!(s.gpunodes.len(), 50, "{ext}");
        assert_eq!(s.jobs.len(), 2, "{ext}");
        let again = solgrid_scheduler::snapshot::generate(50, 1);
        // deterministic, and what matters survives the file (floats may differ in
        // the last bit through text)
        for (a, b) in s.gpunodes.iter().zip(&again.gpunodes) {
            assert_eq!(a.metadata.name, b.metadata.name, "{ext}");
            assert_eq!(
                a.spec.floor_micro_usd_per_gpu_hour,
                b.spec.floor_micro_usd_per_gpu_hour
            );
            let (sa, sb) = (a.status.as_ref().unwrap(), b.status.as_ref().unwrap());
            assert_eq!(
                (sa.phase, sa.gpus.len(), sa.allocated_gpus),
                (sb.phase, sb.gpus.len(), sb.allocated_gpus)
            );
            assert_eq!(sa.reputation.score, sb.reputation.score);
        }
    }
}

/// The addresses the server logs: the extender's (`listen=`) and the metrics
/// listener's (`metrics=`).
fn wait_listening(child: &mut std::process::Child) -> (String, String) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for key in [" listen=", " metrics="] {
                if let Some(i) = line.find(key) {
                    let addr: String = line[i + key.len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send((key, addr));
                }
            }
        }
    });
    let (mut listen, mut metrics) = (None, None);
    while listen.is_none() || metrics.is_none() {
        let (key, addr) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server logs its addresses");
        if key == " listen=" {
            listen = Some(addr);
        } else {
            metrics = Some(addr);
        }
    }
    (listen.unwrap(), metrics.unwrap())
}

#[test]
fn serves_a_snapshot_then_stops_on_sigterm() {
    let snap = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/snapshot.yaml");
    let mut child = Command::new(BIN)
        .args([
            "--snapshot",
            snap,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--threads",
            "1",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (addr, metrics_addr) = wait_listening(&mut child);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ready = rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(&metrics_addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    });
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // the load generator against this snapshot (which has neither the generated
    // nodes nor their job: every node fails, transiently) runs and reports
    let out = Command::new(LOAD)
        .args([
            "--url",
            &format!("http://{addr}"),
            "--duration",
            "0.5",
            "--nodes",
            "20",
            "--concurrency",
            "2",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("calls/s:"), "{text}");
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st:?}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_snapshot_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "apiVersion: solgrid.dev/v1alpha1\nkind: GpuNode\nmetadata: {name: x}\nspec: {nodeName: 3}\n").unwrap();
    let out = Command::new(BIN)
        .arg("--snapshot")
        .arg(&p)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GpuNode x"), "{err}");
}
