//! The flags the chart passes are flags the binaries have: each solgrid container's
//! rendered `args` are given to the real binary followed by `--help`; clap refuses
//! an unknown flag (exit 2) before it reaches `--help` (exit 0). The binaries come
//! from the workspace's test build; a missing one is skipped with a note.

use serde_json::Value;
use solgrid_helm_tests::*;
use std::path::PathBuf;
use std::process::Command;

fn binary(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = dir.join("debug").join(name);
    p.exists().then_some(p)
}

fn args_of(docs: &[Value], kind: &str, suffix: &str, container: &str) -> Vec<String> {
    let w = find(docs, kind, suffix);
    let c = w["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("{} has no container {container}", id(w)));
    c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rendered_args_are_accepted_by_the_binaries() {
    let cases = [
        ("Deployment", "-operator", "operator", "solgrid-operator"),
        ("Deployment", "-scheduler", "extender", "solgrid-scheduler"),
        (
            "DaemonSet",
            "-device-plugin",
            "device-plugin",
            "solgrid-device-plugin",
        ),
    ];
    let mut checked = 0;
    for values in [vec![], vec![values_path("solana-enabled.yaml")]] {
        let docs = render(&values, &[]);
        for (kind, suffix, container, bin) in cases {
            let Some(path) = binary(bin) else {
                eprintln!("note: target/debug/{bin} not built; its flags are not checked");
                continue;
            };
            let args = args_of(&docs, kind, suffix, container);
            let out = run(Command::new(&path).args(&args).arg("--help"));
            assert!(
                out.success,
                "{bin} refuses the chart's args {args:?} ({values:?}):\n{}",
                out.stderr
            );
            checked += 1;
        }
    }
    eprintln!("checked the args of {checked} container renderings");
}

#[test]
fn buyback_args_are_rendered_only_with_a_wallet_and_accepted() {
    let off = args_of(&render(&[], &[]), "Deployment", "-operator", "operator");
    assert!(!off.iter().any(|a| a.starts_with("--buyback")), "{off:?}");
    let docs = render(
        &[],
        &[
            "operator.buyback.wallet=DgmxzQX61DxkAMkAubrgHVJb637fYYTdh7ouVqZGnJrp",
            "operator.buyback.ioPriceMicroUsd=2500000",
        ],
    );
    let args = args_of(&docs, "Deployment", "-operator", "operator");
    for want in [
        "--buyback-wallet=DgmxzQX61DxkAMkAubrgHVJb637fYYTdh7ouVqZGnJrp",
        "--buyback-interval-seconds=86400",
        "--buyback-io-price-micro-usd=2500000",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    let Some(path) = binary("solgrid-operator") else {
        eprintln!("note: target/debug/solgrid-operator not built; its flags are not checked");
        return;
    };
    let out = run(Command::new(&path).args(&args).arg("--help"));
    assert!(
        out.success,
        "the operator refuses {args:?}:\n{}",
        out.stderr
    );
}
