//! The `kubectl-solgrid` binary on fixtures: `validate` and `quote` work offline;
//! the cluster commands fail with a clear message when there is no cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kubectl-solgrid"));
    // Never reach a real cluster from the tests.
    c.env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", "/nonexistent");
    c
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn validate_accepts_every_example() {
    let files = yaml_files(&root().join("examples"));
    assert!(!files.is_empty());
    let mut cmd = bin();
    cmd.arg("validate");
    for f in &files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ComputeJob/llama-7b-finetune: valid"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("Secret/alice-wallet: skipped"),
        "{}",
        text(&out)
    );
}

#[test]
fn validate_refuses_every_invalid_example_naming_the_field() {
    let files = yaml_files(&root().join("examples/invalid"));
    assert!(!files.is_empty());
    for f in files {
        let out = bin().arg("validate").arg("-f").arg(&f).output().unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {t}", f.display());
        assert!(t.contains(": invalid"), "{}: {t}", f.display());
        // Each error line names a field (`spec.x: ...` or `metadata.x: ...`).
        assert!(
            t.lines()
                .filter(|l| l.starts_with("  "))
                .all(|l| l.trim_start().starts_with("spec")
                    || l.trim_start().starts_with("metadata")),
            "{}: {t}",
            f.display()
        );
    }
}

#[test]
fn validate_reads_stdin() {
    // `kubectl solgrid validate -f - < file`
    let file =
        std::fs::File::open(root().join("examples/invalid/computejob-zero-workers.yaml")).unwrap();
    let out = bin()
        .args(["validate", "-f", "-"])
        .stdin(file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("spec.workers"), "{}", text(&out));
}

#[test]
fn quote_offline_against_fixture_nodes() {
    let out = bin()
        .args(["quote", "-f"])
        .arg(fixture("h100-job.yaml"))
        .arg("--nodes")
        .arg(fixture("gpunodes.yaml"))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Two Active H100 nodes, 16 GPUs, 8 allocated: utilization 50 % (the lowest floor is 0).
    assert!(
        t.contains("2 Active node(s), 16 GPU(s), 8 allocated: utilization 50.0 %\n"),
        "{t}"
    );
    // ref 2_200_000 * 10_000 * 10_200 * 11_750 / 1e12 = 2_636_700 micro-USD.
    assert!(t.contains("complexity 1.02x"), "{t}");
    assert!(t.contains("supply 1.175x"), "{t}");
    assert!(t.contains("$2.636700 per GPU-hour = 2.636700 USDC"), "{t}");
    // Escrow: 2 GPUs x 2 h x P, + 0.25 % + 2 %.
    let c = 2_636_700u64 * 4;
    let fr = (c * 25).div_ceil(10_000);
    let s = (c * 200).div_ceil(10_000);
    let total = c + fr + s;
    let want = format!("{}.{:06} USDC", total / 1_000_000, total % 1_000_000);
    assert!(
        t.contains(&format!("Escrow (max):   {want}")),
        "{t}\nwant {want}"
    );
}

#[test]
fn quote_below_the_budget_cap_says_the_job_would_wait() {
    let dir = tempfile::tempdir().unwrap();
    let job = std::fs::read_to_string(fixture("h100-job.yaml"))
        .unwrap()
        .replace("maxPricePerGpuHour: 5000000", "maxPricePerGpuHour: 1000");
    let p = dir.path().join("cheap.yaml");
    std::fs::write(&p, job).unwrap();
    let out = bin()
        .args(["quote", "-f"])
        .arg(&p)
        .arg("--nodes")
        .arg(fixture("gpunodes.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("BELOW THE MARKET"), "{}", text(&out));
    assert!(!text(&out).contains("Escrow"), "{}", text(&out));
}

#[test]
fn quote_uses_the_market_config_file() {
    // The chart's market.json: a 50 bps requester fee and a dearer H100.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("market.json");
    std::fs::write(
        &cfg,
        r#"{"fees": {"requesterFeeBps": 50}, "pricing": {"referenceMicroUsd": {"h100": 3000000}}, "matching": {}}"#,
    )
    .unwrap();
    let out = bin()
        .args(["quote", "-f"])
        .arg(fixture("h100-job.yaml"))
        .arg("--nodes")
        .arg(fixture("gpunodes.yaml"))
        .arg("--market-config")
        .arg(&cfg)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // 3_000_000 * 1.02 * 1.175 = 3_595_500.
    assert!(t.contains("$3.595500 per GPU-hour"), "{t}");
}

#[test]
fn quote_refuses_an_invalid_job() {
    let out = bin()
        .args(["quote", "-f"])
        .arg(root().join("examples/invalid/computejob-zero-gpus.yaml"))
        .arg("--nodes")
        .arg(fixture("gpunodes.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("spec.gpus.count"), "{}", text(&out));
}

#[test]
fn cluster_commands_without_a_cluster_say_so() {
    for args in [
        vec!["jobs"],
        vec!["nodes"],
        vec!["earnings", "--by-wallet"],
        vec!["stake", "-A"],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("cannot reach a Kubernetes cluster"),
            "{args:?}: {}",
            text(&out)
        );
    }
    // quote without --nodes needs the cluster too.
    let out = bin()
        .args(["quote", "-f"])
        .arg(fixture("h100-job.yaml"))
        .output()
        .unwrap();
    assert!(
        text(&out).contains("cannot reach a Kubernetes cluster"),
        "{}",
        text(&out)
    );
}

#[test]
fn help_lists_the_commands() {
    let out = bin().arg("--help").output().unwrap();
    let t = text(&out);
    for c in ["quote", "jobs", "nodes", "earnings", "stake", "validate"] {
        assert!(t.contains(c), "{t}");
    }
}
