//! The Dockerfiles (docker/<component>.Dockerfile) cannot be built here (no Docker
//! engine), so check what can be checked without one: each builds a binary that a
//! workspace package really has, runs it as a non-root user on a distroless
//! runtime, and is the image the chart deploys.

use solgrid_helm_tests::*;
use std::collections::BTreeMap;

/// (Dockerfile, package, binary, the chart's image repository).
const IMAGES: &[(&str, &str, &str, &str)] = &[
    (
        "operator.Dockerfile",
        "solgrid-operator",
        "solgrid-operator",
        "solgrid-operator",
    ),
    (
        "scheduler.Dockerfile",
        "solgrid-scheduler",
        "solgrid-scheduler",
        "solgrid-scheduler",
    ),
    (
        "device-plugin.Dockerfile",
        "solgrid-device-plugin",
        "solgrid-device-plugin",
        "solgrid-device-plugin",
    ),
    (
        "kubectl-solgrid.Dockerfile",
        "kubectl-solgrid",
        "kubectl-solgrid",
        "",
    ),
];

/// Package name → directory, from the workspace members' Cargo.toml files.
fn packages() -> BTreeMap<String, String> {
    let root = workspace_root();
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        let manifest = e.path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest)
            && let Some(name) = text.lines().find_map(|l| {
                l.strip_prefix("name = \"")
                    .and_then(|r| r.strip_suffix('"'))
            })
        {
            out.insert(
                name.to_string(),
                e.file_name().to_string_lossy().into_owned(),
            );
        }
    }
    out
}

#[test]
fn dockerfiles_build_real_binaries_as_non_root() {
    let pkgs = packages();
    let docker = workspace_root().join("docker");
    for (file, pkg, bin, _) in IMAGES {
        let path = docker.join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dir = pkgs
            .get(*pkg)
            .unwrap_or_else(|| panic!("{file}: no workspace package {pkg}"));
        // The binary is the package's (its name, or a [[bin]] of that name).
        let manifest =
            std::fs::read_to_string(workspace_root().join(dir).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!("name = \"{bin}\"")),
            "{file}: package {pkg} has no binary {bin}"
        );
        assert!(
            text.contains(&format!(
                "cargo build --release --locked -p {pkg} --bin {bin}"
            )),
            "{file}"
        );
        // Multi-stage: the last stage is the distroless runtime, non-root.
        let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert!(stages.len() >= 2, "{file}: not multi-stage");
        let last = text.rsplit("\nFROM ").next().unwrap();
        assert!(
            last.starts_with("gcr.io/distroless/cc-debian12:nonroot"),
            "{file}: {last}"
        );
        assert!(last.contains("USER 65532:65532"), "{file}: runtime user");
        assert!(
            last.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{file}"
        );
        assert!(
            docker.join(format!("{file}.dockerignore")).exists(),
            "{file}: no .dockerignore (the context would include target/)"
        );
    }
}

#[test]
fn the_chart_deploys_these_images() {
    let docs = render(&[], &[]);
    let images: Vec<String> = docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "DaemonSet")))
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["image"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for (_, _, _, repo) in IMAGES.iter().filter(|i| !i.3.is_empty()) {
        assert!(
            images
                .iter()
                .any(|i| i.starts_with(&format!("ghcr.io/solgrid/{repo}:0.1.0"))),
            "the chart does not deploy {repo}: {images:?}"
        );
    }
}
