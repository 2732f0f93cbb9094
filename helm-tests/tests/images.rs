//! The container images: `docker/build-images.sh` (what `make images` runs, no
//! Docker engine) builds them here from the test build's binaries; each is unpacked
//! and its entrypoint run inside the image's own root filesystem (a mount namespace
//! and chroot, read-only, as the chart's user), and the chart, the operator's
//! defaults and the Dockerfiles name the same images, users, ports and entrypoints.
//!
//! The build-and-run test needs root (chroot, chown to the non-root uid) and umoci,
//! skopeo, jq; without them it says so and skips (`.ci/run` installs them, so CI
//! runs it). The drift checks need only helm.

use serde_json::Value;
use solgrid_helm_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One image of `docker/build-images.sh --list`.
#[derive(Debug)]
struct Image {
    name: String,
    bin: String,
    /// `uid:gid` of the entrypoint.
    user: String,
    /// `8080/tcp`, ...
    ports: Vec<String>,
    /// `ghcr.io/solgrid/<name>:<tag>`
    reference: String,
}

fn script() -> PathBuf {
    workspace_root().join("docker/build-images.sh")
}

/// What `make images` builds (the script's own table; needs no tools).
fn images() -> Vec<Image> {
    let out = run(Command::new("bash")
        .arg(script())
        .arg("--list")
        .env_remove("REGISTRY")
        .env_remove("TAG"));
    assert!(out.success, "build-images.sh --list: {}", out.stderr);
    let list: Vec<Image> = out
        .stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "--list line {l:?}");
            Image {
                name: f[0].into(),
                bin: f[1].into(),
                user: f[2].into(),
                ports: if f[3] == "-" {
                    vec![]
                } else {
                    f[3].split(',').map(String::from).collect()
                },
                reference: f[4].into(),
            }
        })
        .collect();
    assert_eq!(list.len(), 5, "{list:?}");
    list
}

fn image<'a>(list: &'a [Image], name: &str) -> &'a Image {
    list.iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("build-images.sh builds no {name}"))
}

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

fn chart_app_version() -> String {
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&chart).unwrap();
    doc["appVersion"].as_str().unwrap().to_string()
}

fn workspace_version() -> String {
    let text = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|r| r.strip_suffix('"'))
        .unwrap()
        .to_string()
}

#[test]
fn images_are_tagged_with_the_chart_app_version() {
    let app = chart_app_version();
    assert_eq!(
        app,
        workspace_version(),
        "Chart.yaml appVersion is not the workspace version (the images' tag)"
    );
    for i in images() {
        assert_eq!(
            i.reference,
            format!("ghcr.io/solgrid/{}:{app}", i.name),
            "{i:?}"
        );
        assert_eq!(i.user, "65532:65532", "{i:?}");
    }
}

/// The chart's defaults deploy exactly these images, as their user, on their ports;
/// the verification pod's image (chart value and the operator's own default) is the
/// `verifier` image.
#[test]
fn the_chart_deploys_these_images() {
    let list = images();
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let chart_user = &values["containerSecurityContext"];
    let docs = render(&[], &[]);
    let mut deployed = vec![];
    for d in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "DaemonSet")))
    {
        let pod = &d["spec"]["template"]["spec"];
        for c in pod["containers"].as_array().unwrap() {
            let reference = c["image"].as_str().unwrap();
            if !reference.starts_with("ghcr.io/solgrid/") {
                continue;
            }
            let i = list
                .iter()
                .find(|i| i.reference == reference)
                .unwrap_or_else(|| {
                    panic!(
                        "{} deploys {reference}, which `make images` does not build: {list:?}",
                        id(d)
                    )
                });
            deployed.push(i.name.clone());
            // the ports the image declares are the container's
            let mut ports: Vec<String> = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p["containerPort"],
                        p["protocol"].as_str().unwrap_or("TCP").to_lowercase()
                    )
                })
                .collect();
            ports.sort();
            assert_eq!(ports, i.ports, "{}: container {}", id(d), c["name"]);
            // the user: the image's, unless the chart sets one explicitly
            let uid = c["securityContext"]["runAsUser"]
                .as_i64()
                .or(pod["securityContext"]["runAsUser"].as_i64());
            match uid {
                Some(0) => assert_eq!(
                    i.name,
                    "solgrid-device-plugin",
                    "{}: only the device plugin runs as root",
                    id(d)
                ),
                Some(u) => assert_eq!(format!("{u}:{u}"), i.user, "{}", id(d)),
                None => panic!("{}: container {} sets no runAsUser", id(d), c["name"]),
            }
            if c["securityContext"]["runAsNonRoot"] == true
                || pod["securityContext"]["runAsNonRoot"] == true
            {
                // the kubelet checks a numeric image user
                assert!(i.user.split(':').all(|p| p.parse::<u32>().is_ok()));
            }
        }
    }
    deployed.sort();
    deployed.dedup();
    assert_eq!(
        deployed,
        [
            "solgrid-device-plugin",
            "solgrid-operator",
            "solgrid-scheduler"
        ]
    );
    assert_eq!(
        chart_user["runAsUser"].as_i64().map(|u| format!("{u}:{u}")),
        Some(image(&list, "solgrid-operator").user.clone())
    );
    // the verification pod: the chart passes --verifier-image, the operator defaults
    // to the same, and the pod runs it as the image's user with args only
    let verifier = image(&list, "verifier");
    assert_eq!(
        values["operator"]["verifierImage"].as_str(),
        Some(verifier.reference.as_str())
    );
    let op = find(&docs, "Deployment", "-operator");
    let args = op["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert!(
        args.iter()
            .any(|a| a.as_str() == Some(&format!("--verifier-image={}", verifier.reference))),
        "{args:?}"
    );
    let config = std::fs::read_to_string(workspace_root().join("operator/src/config.rs")).unwrap();
    assert!(
        config.contains(&format!("default_value = \"{}\"", verifier.reference)),
        "operator/src/config.rs: --verifier-image's default is not {}",
        verifier.reference
    );
    let verify =
        std::fs::read_to_string(workspace_root().join("operator/src/gpunode/verify.rs")).unwrap();
    assert!(
        verify.contains(r#""runAsUser": 65532"#)
            && verify.contains(r#""args": worker_args("#)
            && verify.contains(r#"vec!["verify-worker".to_string()]"#),
        "operator/src/gpunode/verify.rs: the verification pod's user or args changed"
    );
    assert_eq!(verifier.bin, "solgrid-operator");
}

/// docker/<image>.Dockerfile builds the same image from the same binary with Docker.
#[test]
fn dockerfiles_build_the_same_images() {
    let pkgs = packages();
    let docker = workspace_root().join("docker");
    for i in images() {
        let file = i.name.strip_prefix("solgrid-").unwrap_or(&i.name);
        let path = docker.join(format!("{file}.Dockerfile"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bin = &i.bin;
        // the binary is a workspace package's
        let dir = pkgs
            .get(bin)
            .unwrap_or_else(|| panic!("{file}: no workspace package {bin}"));
        let manifest =
            std::fs::read_to_string(workspace_root().join(dir).join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{bin}\"")), "{file}");
        assert!(
            text.contains(&format!(
                "cargo build --release --locked -p {bin} --bin {bin}"
            )),
            "{file}"
        );
        let from: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(
            from,
            ["FROM gcr.io/distroless/cc-debian12:nonroot"],
            "{file}"
        );
        assert!(
            text.contains(&format!("\nCOPY --chmod=0755 {bin} /usr/local/bin/{bin}\n")),
            "{file}"
        );
        assert!(text.contains(&format!("\nUSER {}\n", i.user)), "{file}");
        let expose: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("EXPOSE "))
            .flat_map(|l| l.split_whitespace().map(|p| format!("{p}/tcp")))
            .collect();
        assert_eq!(expose, i.ports, "{file}");
        assert!(
            text.contains(&format!("\nENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{file}"
        );
        assert!(text.contains(&format!("-t {} target/release", i.reference)));
        let ignore =
            std::fs::read_to_string(docker.join(format!("{file}.Dockerfile.dockerignore")))
                .unwrap_or_else(|e| panic!("{file}.dockerignore: {e}"));
        let rules: Vec<&str> = ignore.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rules, ["*", &format!("!{bin}")], "{file}.dockerignore");
    }
}

// --- build, unpack, run -----------------------------------------------------------

fn tool(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why the images cannot be built and run here, if they cannot.
fn unable() -> Option<String> {
    // root of the machine, not of a user namespace (which would not map uid 65532)
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let maps_all = uid_map.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 3 && f[0] == "0" && f[1] == "0" && f[2].parse::<u64>().unwrap_or(0) > 65532
    });
    if run(Command::new("id").arg("-u")).stdout.trim() != "0" || !maps_all {
        return Some(
            "not root (chroot, unshare -m and files owned by 65532 need it; a user namespace's root cannot)"
                .into(),
        );
    }
    let missing: Vec<&str> = ["umoci", "skopeo", "jq", "unshare", "chroot", "dpkg-deb"]
        .into_iter()
        .filter(|t| tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing {} (apt-get install umoci skopeo jq; .ci/run installs them)",
            missing.join(", ")
        ));
    }
    None
}

fn debug_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug")
}

fn build(bin_dir: &Path, out: &Path, only: &[&Image]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out)
        .env_remove("REGISTRY")
        .env_remove("TAG")
        // the same inputs twice: a fixed time, not HEAD's (the tree may change meanwhile)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for i in only {
        cmd.args(["--only", &i.name]);
    }
    run(&mut cmd)
}

fn json(cmd: &mut Command) -> Value {
    let out = run(cmd);
    assert!(out.success, "{cmd:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `argv` in `rootfs` as `user`: a private mount namespace in which the root
/// is bind-mounted read-only with a tmpfs on /tmp (as the chart's pods:
/// readOnlyRootFilesystem, an emptyDir at /tmp), then chroot. No network (the tests
/// run in a network namespace with only loopback).
fn run_in(rootfs: &Path, user: &str, argv: &[&str]) -> Output {
    let script = r#"set -e
r=$1; u=$2; shift 2
mount --make-rprivate /
mount --bind "$r" "$r"
mount -o remount,bind,ro "$r"
mount -t tmpfs -o mode=1777,size=16m tmpfs "$r/tmp"
exec chroot --userspec="$u" "$r" "$@""#;
    run(Command::new("unshare")
        .args(["-m", "--", "sh", "-c", script, "sh"])
        .arg(rootfs)
        .arg(user)
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"))
}

#[test]
fn images_build_reproducibly_and_their_entrypoints_run_in_their_own_root() {
    if let Some(why) = unable() {
        eprintln!("SKIP images_build_...: {why}");
        return;
    }
    let started = std::time::Instant::now();
    let list = images();
    let bins = debug_dir();
    let (present, absent): (Vec<&Image>, Vec<&Image>) =
        list.iter().partition(|i| bins.join(&i.bin).is_file());
    for i in &absent {
        eprintln!(
            "note: {}/{} not built (cargo test --workspace builds it); image {} not checked",
            bins.display(),
            i.bin,
            i.name
        );
    }
    assert!(!present.is_empty(), "no binaries in {}", bins.display());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let b = build(&bins, &out, &present);
    assert!(b.success, "docker/build-images.sh failed:\n{}", b.stderr);
    eprintln!("{}", b.stderr.trim_end());
    let built = std::fs::read_to_string(out.join("images.txt")).unwrap();
    let digest_of = |listing: &str, name: &str| -> String {
        listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_else(|| panic!("images.txt has no {name}: {listing}"))
            .to_string()
    };

    for i in &present {
        let tag = i.reference.rsplit_once(':').unwrap().1;
        let layout = out.join("oci").join(&i.name);
        let oci = format!("oci:{}:{tag}", layout.display());
        let archive = out.join(format!("{}.tar", i.name));

        // skopeo reads both; the archive is the same image under the chart's name
        let config = json(Command::new("skopeo").args(["inspect", "--config", &oci]));
        let from_archive = json(Command::new("skopeo").args([
            "inspect",
            "--config",
            &format!("docker-archive:{}", archive.display()),
        ]));
        assert_eq!(
            config["rootfs"]["diff_ids"], from_archive["rootfs"]["diff_ids"],
            "{}: the archive's layers are not the layout's",
            i.name
        );
        let manifest = run(Command::new("tar")
            .arg("-xOf")
            .arg(&archive)
            .arg("manifest.json"));
        assert!(manifest.success, "{}", manifest.stderr);
        let manifest: Value = serde_json::from_str(&manifest.stdout).unwrap();
        assert_eq!(
            manifest[0]["RepoTags"],
            serde_json::json!([i.reference]),
            "{}",
            i.name
        );
        let raw = json(Command::new("skopeo").args(["inspect", "--raw", &oci]));
        assert_eq!(
            raw["layers"].as_array().map(Vec::len),
            Some(2),
            "{}: runtime + binary",
            i.name
        );

        // the config: the chart's user, the entrypoint, the ports, no shell needed
        let c = &config["config"];
        assert_eq!(c["User"], i.user.as_str(), "{}", i.name);
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!([format!("/usr/local/bin/{}", i.bin)]),
            "{}",
            i.name
        );
        assert!(
            c["Cmd"].is_null(),
            "{}: Cmd would be appended to the chart's args",
            i.name
        );
        let mut ports: Vec<String> = c["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        ports.sort();
        assert_eq!(ports, i.ports, "{}", i.name);
        assert_eq!(
            config["created"], "2023-11-14T22:13:20Z",
            "{}: created is SOURCE_DATE_EPOCH",
            i.name
        );

        // unpack it (umoci checks every digest) and look at its files
        let bundle = tmp.path().join(format!("bundle-{}", i.name));
        let u = run(Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:{tag}", layout.display())])
            .arg(&bundle));
        assert!(u.success, "umoci unpack {}: {}", i.name, u.stderr);
        let root = bundle.join("rootfs");
        check_files(&root, i);

        // its entrypoint runs there, as the chart's user
        let uid = &i.user;
        let entry = format!("/usr/local/bin/{}", i.bin);
        let v = run_in(&root, uid, &[&entry, "--version"]);
        assert!(v.success, "{} --version in its image: {}", i.name, v.stderr);
        assert_eq!(v.stdout.trim(), format!("{} {tag}", i.bin), "{}", i.name);
        let h = run_in(&root, uid, &[&entry, "--help"]);
        assert!(h.success, "{} --help in its image: {}", i.name, h.stderr);
        assert!(h.stdout.contains("Usage:"), "{}: {}", i.name, h.stdout);
        // who it runs as, and that the root is read-only but /tmp is not
        if i.name == "verifier" {
            // the verification pod's command: args only, appended to the entrypoint
            let w = run_in(
                &root,
                uid,
                &[&entry, "verify-worker", "--seed", "7", "--size", "16"],
            );
            assert!(w.success, "verify-worker in its image: {}", w.stderr);
            let report: Value = serde_json::from_str(w.stdout.trim())
                .unwrap_or_else(|e| panic!("verify-worker's report {:?}: {e}", w.stdout));
            assert_eq!(report["seed"], "7");
            assert_eq!(report["n"], 16);
        }
        eprintln!(
            "image {}: {} ran as {uid} in its own root ({:?} so far)",
            i.name,
            i.bin,
            started.elapsed()
        );
    }

    // reproducible: the smallest image again, into another directory
    let again = present
        .iter()
        .min_by_key(|i| bins.join(&i.bin).metadata().map(|m| m.len()).unwrap_or(0))
        .unwrap();
    let out2 = tmp.path().join("out2");
    let b2 = build(&bins, &out2, &[again]);
    assert!(b2.success, "second build: {}", b2.stderr);
    let second = std::fs::read_to_string(out2.join("images.txt")).unwrap();
    assert_eq!(
        digest_of(&second, &again.name),
        digest_of(&built, &again.name),
        "{}: the same inputs gave another image",
        again.name
    );
    let a1 = std::fs::read(out.join(format!("{}.tar", again.name))).unwrap();
    let a2 = std::fs::read(out2.join(format!("{}.tar", again.name))).unwrap();
    assert!(a1 == a2, "{}: the archives differ", again.name);
    eprintln!("images: built, run and rebuilt in {:?}", started.elapsed());
}

/// The files the chart and the binaries rely on, as a distroless image has them.
fn check_files(root: &Path, i: &Image) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = |p: &str| {
        std::fs::symlink_metadata(root.join(p.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{}: {p}: {e}", i.name))
    };
    let uid: u32 = i.user.split(':').next().unwrap().parse().unwrap();
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("nonroot:x:{uid}:{uid}:"))),
        "{}: /etc/passwd has no user {uid}: {passwd}",
        i.name
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.contains(&format!("nonroot:x:{uid}:")), "{}", i.name);
    let home = meta("/home/nonroot");
    assert_eq!((home.uid(), home.gid()), (uid, uid), "{}", i.name);
    let tmp = meta("/tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777, "{}", i.name);
    // the entrypoint: root's, not writable by the user it runs as
    let bin = meta(&format!("/usr/local/bin/{}", i.bin));
    assert_eq!(bin.uid(), 0, "{}", i.name);
    assert_eq!(bin.permissions().mode() & 0o777, 0o755, "{}", i.name);
    // TLS to Solana RPC endpoints
    assert!(
        meta("/etc/ssl/certs/ca-certificates.crt").len() > 100_000,
        "{}",
        i.name
    );
    // glibc + libgcc, and nothing to log in with
    for lib in [
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
        "lib/x86_64-linux-gnu/libdl.so.2",
    ] {
        if cfg!(target_arch = "x86_64") {
            assert!(root.join(lib).exists(), "{}: no {lib}", i.name);
        }
    }
    for absent in ["bin/sh", "usr/bin/env", "usr/bin/apt-get", "sbin/ldconfig"] {
        assert!(
            std::fs::symlink_metadata(root.join(absent)).is_err(),
            "{}: {absent} in a distroless image",
            i.name
        );
    }
    // licences and the package records scanners read
    for pkg in ["libc6", "libgcc-s1", "ca-certificates"] {
        assert!(
            root.join("var/lib/dpkg/status.d").join(pkg).is_file(),
            "{}: no status.d/{pkg}",
            i.name
        );
    }
    assert!(root.join("usr/share/doc/libc6/copyright").is_file());
}
