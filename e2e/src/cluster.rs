//! A real Kubernetes control plane for tests, in the manner of controller-runtime's
//! envtest: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
//! (v1.36) on loopback, with certificates generated for the run.
//!
//! [`shared`] returns the cluster of this test binary:
//! - `KUBECONFIG` set: that cluster (no process is started);
//! - otherwise, when the binaries are found, a local control plane, started once
//!   per process and torn down when the process exits (also on failure or panic);
//! - neither: `None`, after saying on stderr how to get one (the test then skips),
//!   or a panic when `SOLGRID_E2E_REQUIRE_CLUSTER=1` (CI).
//!
//! Binaries: `SOLGRID_KUBE_BIN_DIR` (kube-apiserver, kube-controller-manager,
//! kube-scheduler), else `<repo>/.tools/bin`, else the `.xz` files in
//! `$SOLGRID_SHARED_DIR/bin` or `<repo>/../shared/bin` (checked against `SHA256SUMS`,
//! decompressed once into `<repo>/.tools/bin`); `scripts/install-kube.sh` (run by
//! `make tools`) does the same and downloads the release binaries where there is no
//! shared folder. etcd: `SOLGRID_ETCD`, else `etcd` on `PATH` (Debian's
//! `etcd-server`).
//!
//! Two kube-schedulers run, as in a cluster with the chart installed: the cluster's
//! own (profile `default-scheduler`, no extender) and the chart's
//! (`helm/solgrid/files/kube-scheduler-config.yaml`: profile `solgrid-scheduler` with
//! the solgrid HTTP extender), whose extender URL is [`TestCluster::extender_addr`]
//! — a free loopback port where a test starts the real `solgrid-scheduler`. (Within
//! one KubeSchedulerConfiguration extenders apply to every profile, so one process
//! with both profiles would also send the default profile's GPU pods — the
//! verification pods — to the extender, which production never does.)
//!
//! Each `#[tokio::test]` has its own runtime: build a client per test
//! ([`TestCluster::client`]), never share one across tests.

use crate::process::{Proc, remove_at_exit};
use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest as _, Sha256};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Kubernetes version of the control-plane binaries.
pub const KUBE_VERSION: &str = "v1.36.2";
/// The control-plane components taken from `shared/bin`.
pub const COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// A cluster for the tests: the local control plane or the one in `KUBECONFIG`.
#[derive(Debug)]
pub struct TestCluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    ca_file: Option<PathBuf>,
    extender: SocketAddr,
    local: bool,
    started_in: Duration,
}

static SHARED: OnceLock<Result<Option<TestCluster>, String>> = OnceLock::new();
/// See [`TestCluster::exclusive`].
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn require() -> bool {
    std::env::var("SOLGRID_E2E_REQUIRE_CLUSTER").is_ok_and(|v| v == "1")
}

/// The cluster of this test binary (see the module docs); `None`: skip the test.
///
/// Panics when a local control plane was found but failed to start, or when
/// `SOLGRID_E2E_REQUIRE_CLUSTER=1` and there is none.
pub fn shared() -> Option<&'static TestCluster> {
    let r = SHARED.get_or_init(|| {
        if let Some(kc) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            return TestCluster::external(&kc)
                .map(Some)
                .map_err(|e| format!("KUBECONFIG is set but unusable: {e:#}"));
        }
        match find_binaries() {
            Ok(bins) => TestCluster::start_local(bins)
                .map(Some)
                .map_err(|e| format!("the local control plane did not start: {e:#}")),
            Err(why) => {
                let msg = format!(
                    "no cluster: KUBECONFIG is unset and no local control plane was found ({why}). \
                     Either set KUBECONFIG, or put kube-apiserver, kube-controller-manager and \
                     kube-scheduler {KUBE_VERSION} in $SOLGRID_KUBE_BIN_DIR or .tools/bin (or the \
                     .xz files in ../shared/bin) and install etcd (apt-get install etcd-server)"
                );
                if require() {
                    Err(msg)
                } else {
                    eprintln!("SKIP: {msg}");
                    Ok(None)
                }
            }
        }
    });
    match r {
        Ok(c) => c.as_ref(),
        Err(e) => panic!("{e}"),
    }
}

impl TestCluster {
    fn external(kc: &std::ffi::OsStr) -> Result<TestCluster> {
        let first = std::env::split_paths(kc)
            .next()
            .ok_or_else(|| anyhow!("empty KUBECONFIG"))?;
        let cfg = Kubeconfig::read_from(&first)?;
        let server = current_cluster(&cfg)
            .and_then(|c| c.server.clone())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("solgrid-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        remove_at_exit(&dir);
        Ok(TestCluster {
            dir,
            kubeconfig: first,
            server,
            ca_file: None,
            extender: free_addr("127.0.0.1")?,
            local: false,
            started_in: Duration::ZERO,
        })
    }

    /// Starts etcd and the control plane from a thread that lives as long as the
    /// process (the children's parent-death signal is tied to it).
    fn start_local(bins: Binaries) -> Result<TestCluster> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("solgrid-e2e-control-plane".into())
            .spawn(move || {
                match start(&bins) {
                    Ok((cluster, procs)) => {
                        let _ = tx.send(Ok(cluster));
                        // keep the children (and this thread) alive until the process exits
                        let _procs = procs;
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        rx.recv()
            .map_err(|_| anyhow!("the control-plane thread died"))?
    }

    /// A client for this cluster (admin). Build one per test: a client is tied to
    /// the runtime it was made in.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The cluster CA's PEM file (local cluster only).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// A directory for the tests' files (logs, journals), removed at exit.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this is the local control plane (else the cluster in `KUBECONFIG`).
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// How long the local control plane took to become ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Serialises the scenarios that run cluster-wide singletons: an operator (it
    /// reconciles every GpuNode and verification pod) or the extender at
    /// [`Self::extender_addr`]. Hold the guard for the whole scenario; the tests of
    /// one binary otherwise run in parallel.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'static, ()> {
        EXCLUSIVE.lock().await
    }

    /// [`Self::exclusive`] for a plain `#[test]` (not from within a runtime).
    pub fn exclusive_blocking(&self) -> tokio::sync::MutexGuard<'static, ()> {
        EXCLUSIVE.blocking_lock()
    }

    /// Where the chart's kube-scheduler expects the solgrid extender.
    pub fn extender_addr(&self) -> SocketAddr {
        self.extender
    }

    /// A kubeconfig that authenticates with a bearer `token` (a ServiceAccount's),
    /// written as `<dir>/<name>.kubeconfig`.
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> Result<PathBuf> {
        let cfg = Kubeconfig::read_from(&self.kubeconfig)?;
        let cluster = current_cluster(&cfg).ok_or_else(|| anyhow!("no current cluster"))?;
        let mut v = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {"server": cluster.server}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "e2e", "user": name}}],
            "current-context": name,
        });
        if let Some(ca) = &cluster.certificate_authority {
            v["clusters"][0]["cluster"]["certificate-authority"] = ca.clone().into();
        }
        if let Some(ca) = &cluster.certificate_authority_data {
            v["clusters"][0]["cluster"]["certificate-authority-data"] = ca.clone().into();
        }
        if let Some(skip) = cluster.insecure_skip_tls_verify {
            v["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = skip.into();
        }
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, serde_yaml_ng::to_string(&v)?)?;
        Ok(path)
    }

    /// A client that authenticates with a bearer `token`.
    pub async fn client_for_token(&self, token: &str) -> Result<kube::Client> {
        let name = format!(
            "token-{:x}",
            Sha256::digest(token.as_bytes())[..6]
                .iter()
                .fold(0u64, |a, b| a << 8 | *b as u64)
        );
        let path = self.kubeconfig_for_token(&name, token)?;
        client_from_kubeconfig(&path).await
    }
}

fn current_cluster(cfg: &Kubeconfig) -> Option<kube::config::Cluster> {
    let ctx_name = cfg.current_context.clone()?;
    let ctx = cfg
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)?
        .context
        .clone()?;
    cfg.clusters
        .iter()
        .find(|c| c.name == ctx.cluster)?
        .cluster
        .clone()
}

/// A client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// A ServiceAccount's token (TokenRequest, like `kubectl create token`), valid for
/// an hour, optionally bound to a pod (`(name, uid)`).
pub async fn service_account_token(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    bound_pod: Option<(&str, &str)>,
) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut req = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 3600},
    });
    if let Some((name, uid)) = bound_pod {
        req["spec"]["boundObjectRef"] =
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid});
    }
    let tr: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("TokenRequest for {ns}/{sa}"))?;
    tr.status
        .and_then(|s| s.token)
        .ok_or_else(|| anyhow!("TokenRequest for {ns}/{sa} returned no token"))
}

// ---------------------------------------------------------------------------
// binaries

/// Where the control plane's executables are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
    pub scheduler: PathBuf,
    pub etcd: PathBuf,
}

fn repo_root() -> PathBuf {
    crate::root()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Finds (and if need be unpacks) the control-plane binaries; `Err(why)` when they
/// are not available.
pub fn find_binaries() -> std::result::Result<Binaries, String> {
    let etcd = std::env::var_os("SOLGRID_ETCD")
        .map(PathBuf::from)
        .or_else(|| on_path("etcd"))
        .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()))
        .ok_or("etcd not found (set SOLGRID_ETCD or apt-get install etcd-server)")?;
    let in_dir = |d: &Path| COMPONENTS.iter().all(|c| d.join(c).is_file());
    let dir = if let Some(d) = std::env::var_os("SOLGRID_KUBE_BIN_DIR").map(PathBuf::from) {
        if !in_dir(&d) {
            return Err(format!(
                "SOLGRID_KUBE_BIN_DIR={} lacks one of {COMPONENTS:?}",
                d.display()
            ));
        }
        d
    } else {
        let tools = repo_root().join(".tools/bin");
        if !in_dir(&tools) {
            let shared = std::env::var_os("SOLGRID_SHARED_DIR")
                .map(|d| PathBuf::from(d).join("bin"))
                .into_iter()
                .chain([
                    repo_root().join("../shared/bin"),
                    repo_root().join("shared/bin"),
                ])
                .find(|d| d.join("SHA256SUMS").is_file())
                .ok_or_else(|| {
                    format!(
                        "{COMPONENTS:?} are not in {} and there is no ../shared/bin",
                        tools.display()
                    )
                })?;
            unpack(&shared, &tools).map_err(|e| format!("{e:#}"))?;
        }
        tools
    };
    Ok(Binaries {
        apiserver: dir.join("kube-apiserver"),
        controller_manager: dir.join("kube-controller-manager"),
        scheduler: dir.join("kube-scheduler"),
        etcd,
    })
}

/// Checks each component's `.xz` against `SHA256SUMS` and decompresses it into `to`.
fn unpack(shared: &Path, to: &Path) -> Result<()> {
    let sums = std::fs::read_to_string(shared.join("SHA256SUMS"))?;
    std::fs::create_dir_all(to)?;
    for c in COMPONENTS {
        let target = to.join(c);
        if target.is_file() {
            continue;
        }
        let file = format!("{c}-{KUBE_VERSION}-linux-amd64.xz");
        let src = shared.join(&file);
        let want = sums
            .lines()
            .find(|l| l.trim_end().ends_with(&file))
            .and_then(|l| l.split_whitespace().next())
            .ok_or_else(|| anyhow!("{file} is not in SHA256SUMS"))?;
        let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        let got = format!("{:x}", Sha256::digest(&bytes));
        if got != want {
            bail!("{}: sha256 {got}, SHA256SUMS says {want}", src.display());
        }
        // unique temp name, then rename: concurrent test binaries may race here
        let tmp = to.join(format!(".{c}.{}", std::process::id()));
        let out = std::fs::File::create(&tmp)?;
        let st = Command::new("xz")
            .args(["-dc"])
            .arg(&src)
            .stdout(out)
            .status()
            .context("running xz (apt-get install xz-utils)")?;
        if !st.success() {
            let _ = std::fs::remove_file(&tmp);
            bail!("xz -dc {} failed: {st}", src.display());
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &target)?;
        tracing::info!(component = c, to = %target.display(), "unpacked");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// certificates

struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    dir: PathBuf,
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    if let Some(o) = org {
        d.push(DnType::OrganizationName, o);
    }
    d
}

impl Pki {
    fn new(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = dn("solgrid-e2e-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key)?;
        std::fs::write(dir.join("ca.crt"), ca.pem())?;
        std::fs::write(dir.join("ca.key"), ca_key.serialize_pem())?;
        Ok(Pki {
            ca_params,
            ca_key,
            dir: dir.to_path_buf(),
        })
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues `<name>.crt` / `<name>.key`; returns their paths.
    fn issue(
        &self,
        name: &str,
        cn: &str,
        org: Option<&str>,
        sans: &[&str],
        server: bool,
    ) -> Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name = dn(cn, org);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = if server {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        p.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = p.signed_by(&key, &issuer)?;
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        Ok((c, k))
    }
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<()> {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "e2e", "user": {"client-certificate": cert, "client-key": key}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
        "current-context": "e2e",
    });
    std::fs::write(path, serde_yaml_ng::to_string(&v)?)?;
    Ok(())
}

/// A free TCP port on `ip` (bound and released: another process could take it
/// before us, which a failed start then reports).
pub fn free_addr(ip: &str) -> Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0))?;
    Ok(l.local_addr()?)
}

// ---------------------------------------------------------------------------
// start-up

fn wait_until(
    what: &str,
    timeout: Duration,
    procs: &mut [&mut Proc],
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        for p in procs.iter_mut() {
            if let Some(st) = p.exited() {
                bail!(
                    "{} exited ({st}) while waiting for {what}; log {}:\n{}",
                    p.name(),
                    p.log_path().display(),
                    p.log_tail(6000)
                );
            }
        }
        if Instant::now() >= deadline {
            let tails: Vec<String> = procs
                .iter()
                .map(|p| {
                    format!(
                        "--- {} ({}):\n{}",
                        p.name(),
                        p.log_path().display(),
                        p.log_tail(3000)
                    )
                })
                .collect();
            bail!("{what} not ready in {timeout:?}\n{}", tails.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain-HTTP GET on loopback: `Some(body)` on a 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn start(bins: &Binaries) -> Result<(TestCluster, Vec<Proc>)> {
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(format!("solgrid-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    remove_at_exit(&dir);
    // etcd's fsyncs are the slowest part: keep its data in memory where possible
    let shm = Path::new("/dev/shm");
    remove_dead_etcd_dirs(shm);
    let etcd_data = if shm.is_dir() {
        let d = shm.join(format!("solgrid-e2e-etcd-{}", std::process::id()));
        remove_at_exit(&d);
        d
    } else {
        dir.join("etcd")
    };
    let _ = std::fs::remove_dir_all(&etcd_data);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let pki = Pki::new(&dir.join("pki"))?;

    let etcd_client = free_addr("127.0.0.1")?;
    let etcd_peer = free_addr("127.0.0.1")?;
    let api = free_addr("127.0.0.1")?;
    let extender = free_addr("127.0.0.1")?;
    let server = format!("https://{api}");

    let (api_crt, api_key) = pki.issue(
        "apiserver",
        "kube-apiserver",
        None,
        &[
            "127.0.0.1",
            "localhost",
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        true,
    )?;
    let (kl_crt, kl_key) = pki.issue(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
        &[],
        false,
    )?;
    let sa_key_pair = KeyPair::generate()?;
    let sa_key = pki.dir.join("sa.key");
    let sa_pub = pki.dir.join("sa.pub");
    std::fs::write(&sa_key, sa_key_pair.serialize_pem())?;
    std::fs::write(&sa_pub, sa_key_pair.public_key_pem())?;
    let mut kubeconfigs = std::collections::BTreeMap::new();
    for (name, cn, org) in [
        ("admin", "solgrid-e2e-admin", Some("system:masters")),
        (
            "kube-controller-manager",
            "system:kube-controller-manager",
            None,
        ),
        ("kube-scheduler", "system:kube-scheduler", None),
    ] {
        let (c, k) = pki.issue(name, cn, org, &[], false)?;
        let path = dir.join(format!("{name}.kubeconfig"));
        write_kubeconfig(&path, &server, &pki.ca(), &c, &k)?;
        kubeconfigs.insert(name, path);
    }

    // etcd
    let mut cmd = Command::new(&bins.etcd);
    cmd.arg("--name=e2e")
        .arg(format!("--data-dir={}", etcd_data.display()))
        .arg(format!("--listen-client-urls=http://{etcd_client}"))
        .arg(format!("--advertise-client-urls=http://{etcd_client}"))
        .arg(format!("--listen-peer-urls=http://{etcd_peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{etcd_peer}"))
        .arg(format!("--initial-cluster=e2e=http://{etcd_peer}"))
        .arg("--log-level=warn");
    let mut etcd = Proc::spawn("etcd", cmd, &logs.join("etcd.log"))?;
    wait_until(
        "etcd /health",
        Duration::from_secs(30),
        &mut [&mut etcd],
        || http_get(etcd_client, "/health").is_some_and(|b| b.contains("true")),
    )?;

    // kube-apiserver
    let mut cmd = Command::new(&bins.apiserver);
    cmd.arg(format!("--etcd-servers=http://{etcd_client}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={}", api.port()))
        .arg(format!(
            "--cert-dir={}",
            dir.join("apiserver-certs").display()
        ))
        .arg(format!("--tls-cert-file={}", api_crt.display()))
        .arg(format!("--tls-private-key-file={}", api_key.display()))
        .arg(format!("--client-ca-file={}", pki.ca().display()))
        .arg(format!("--service-account-key-file={}", sa_pub.display()))
        .arg(format!(
            "--service-account-signing-key-file={}",
            sa_key.display()
        ))
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg("--authorization-mode=Node,RBAC")
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        .arg("--endpoint-reconciler-type=none")
        .arg("--allow-privileged=true")
        .arg(format!("--kubelet-client-certificate={}", kl_crt.display()))
        .arg(format!("--kubelet-client-key={}", kl_key.display()))
        .arg("--kubelet-preferred-address-types=InternalIP")
        .arg("--v=1");
    let mut apiserver = Proc::spawn("kube-apiserver", cmd, &logs.join("kube-apiserver.log"))?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = kubeconfigs["admin"].clone();
    let client = rt.block_on(client_from_kubeconfig(&admin))?;
    wait_until(
        "kube-apiserver /readyz",
        Duration::from_secs(60),
        &mut [&mut etcd, &mut apiserver],
        || {
            rt.block_on(async {
                let req = http::Request::get("/readyz").body(Vec::new());
                match req {
                    Ok(req) => {
                        tokio::time::timeout(Duration::from_secs(2), client.request_text(req))
                            .await
                            .is_ok_and(|r| r.is_ok_and(|b| b.trim() == "ok"))
                    }
                    Err(_) => false,
                }
            })
        },
    )?;
    let api_ready = t0.elapsed();

    // kube-controller-manager
    let mut cmd = Command::new(&bins.controller_manager);
    cmd.arg(format!(
        "--kubeconfig={}",
        kubeconfigs["kube-controller-manager"].display()
    ))
    .arg("--controllers=*,-node-lifecycle-controller")
    .arg(format!(
        "--service-account-private-key-file={}",
        sa_key.display()
    ))
    .arg(format!("--root-ca-file={}", pki.ca().display()))
    .arg("--use-service-account-credentials=true")
    .arg("--leader-elect=false")
    .arg("--bind-address=127.0.0.1")
    .arg(format!("--secure-port={}", free_addr("127.0.0.1")?.port()))
    .arg("--v=1");
    let mut kcm = Proc::spawn(
        "kube-controller-manager",
        cmd,
        &logs.join("kube-controller-manager.log"),
    )?;

    // the cluster's kube-scheduler (default profile) and the chart's (solgrid-scheduler + extender)
    let plain = serde_json::json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "leaderElection": {"leaderElect": false},
        "clientConnection": {"kubeconfig": kubeconfigs["kube-scheduler"]},
        "profiles": [{"schedulerName": "default-scheduler"}],
    });
    let plain_path = dir.join("kube-scheduler-config.yaml");
    std::fs::write(&plain_path, serde_yaml_ng::to_string(&plain)?)?;
    let chart_path = dir.join("solgrid-kube-scheduler-config.yaml");
    std::fs::write(
        &chart_path,
        serde_yaml_ng::to_string(&solgrid_scheduler_config(
            &kubeconfigs["kube-scheduler"],
            extender,
        )?)?,
    )?;
    let mut schedulers = Vec::new();
    for (name, cfg) in [
        ("kube-scheduler", &plain_path),
        ("solgrid-kube-scheduler", &chart_path),
    ] {
        let mut cmd = Command::new(&bins.scheduler);
        cmd.arg(format!("--config={}", cfg.display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_addr("127.0.0.1")?.port()))
            .arg("--v=2");
        schedulers.push(Proc::spawn(name, cmd, &logs.join(format!("{name}.log")))?);
    }

    // the controller-manager works once it has made the `default` ServiceAccount
    // (pods cannot be created in a namespace before that)
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    {
        let mut all: Vec<&mut Proc> = vec![&mut etcd, &mut apiserver, &mut kcm];
        all.extend(schedulers.iter_mut());
        wait_until(
            "the default ServiceAccount (kube-controller-manager)",
            Duration::from_secs(60),
            &mut all,
            || rt.block_on(sas.get_opt("default")).ok().flatten().is_some(),
        )?;
    }
    drop(client);
    drop(rt);
    let started_in = t0.elapsed();
    eprintln!(
        "solgrid-e2e: local control plane {KUBE_VERSION} at {server} (API ready in {:.1} s, all in {:.1} s), files in {}",
        api_ready.as_secs_f64(),
        started_in.as_secs_f64(),
        dir.display()
    );
    let mut procs = vec![etcd, apiserver, kcm];
    procs.extend(schedulers);
    Ok((
        TestCluster {
            kubeconfig: admin,
            server,
            ca_file: Some(pki.ca()),
            extender,
            local: true,
            started_in,
            dir,
        },
        procs,
    ))
}

/// Removes the in-memory etcd data of earlier runs whose test process is gone (a
/// SIGKILLed test binary runs no exit hook; its children die with it, its data
/// would stay in RAM).
fn remove_dead_etcd_dirs(shm: &Path) {
    let Ok(entries) = std::fs::read_dir(shm) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("solgrid-e2e-etcd-")
            .and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The chart's KubeSchedulerConfiguration, made to run here: no leader election,
/// this cluster's kubeconfig, the extender at `extender`.
pub fn solgrid_scheduler_config(
    kubeconfig: &Path,
    extender: SocketAddr,
) -> Result<serde_json::Value> {
    let path = repo_root().join("helm/solgrid/files/kube-scheduler-config.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut v: serde_json::Value = serde_yaml_ng::from_str(&text)?;
    v["leaderElection"] = serde_json::json!({"leaderElect": false});
    v["clientConnection"] = serde_json::json!({"kubeconfig": kubeconfig});
    let exts = v["extenders"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("{} has no extenders", path.display()))?;
    for e in exts {
        e["urlPrefix"] = format!("http://{extender}").into();
    }
    Ok(v)
}
