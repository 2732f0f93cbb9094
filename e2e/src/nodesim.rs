//! A node simulator in the spirit of kwok: Nodes with GPUs and no kubelet, whose
//! pods nonetheless run, finish and log.
//!
//! For each simulated node, [`NodeSim`]:
//! - registers the Node (labels including `kubernetes.io/hostname`, capacity and
//!   allocatable with the GPU extended resource, *only* an `InternalIP` address
//!   `127.0.1.N`, `daemonEndpoints.kubeletEndpoint.Port = 10250`), keeps its
//!   `Ready` condition True and its Lease in `kube-node-lease` renewed (every 5 s),
//!   and removes the `node.kubernetes.io/not-ready` taint the API server puts on new
//!   Nodes (the node-lifecycle controller that would is not running);
//! - plays the kubelet for pods bound to it (a watch on Pods): Pending → Running
//!   (container `startedAt`, pod IP, conditions) → Succeeded/Failed (`terminated`
//!   with `startedAt`/`finishedAt`/`exitCode`) after the pod's run time, kills pods
//!   past `activeDeadlineSeconds` (`DeadlineExceeded`), and finishes deletions
//!   (a graceful delete becomes a delete with grace 0);
//! - runs the real `solgrid-operator verify-worker ...` for the operator's
//!   verification pods, keeping its stdout as the container's log;
//! - serves `/containerLogs/{ns}/{pod}/{container}` over TLS (self-signed; the API
//!   server does not verify kubelets here) on `127.0.1.N:10250`, so `kubectl logs`
//!   and the operator's log reads work.
//!
//! A pod's run time: annotation [`ANN_RUN_SECONDS`], else `sleep N` in the first
//! container's command and args, else until it is deleted. Its exit code:
//! annotation [`ANN_EXIT_CODE`], else 0.
//!
//! Faults, per node ([`Faults`]): a node that corrupts its proof of work, one whose
//! workers exit non-zero, one that stops heartbeating (no Lease renewal, no `Ready`
//! updates), one whose verification pods never start (they stay `Pending`, as on a
//! node that keeps them unschedulable), one that reports its verification
//! container as having run 0 ms with a worker `computeMs` of 0 (a node lying about
//! its speed: the operator times the run itself).
//!
//! What is simulated in the proof of work: the "GPUs" are this machine's CPU
//! running the real reference worker (`solgrid-operator verify-worker`), one thread
//! per device, at CPU speed. A scenario makes an honest node by having it claim a
//! model whose calibrated speed the CPU matches (the operator's
//! `--verify-reference-us` measured on this machine) and a cheating one by having
//! the same CPU claim a much faster model (an H100): the latter then genuinely
//! computes the H100-sized chain at CPU speed. Real GPU throughput is not measured.

use anyhow::{Context as _, Result, anyhow};
use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Pod annotation: how long the (simulated) containers run, seconds (a float).
pub const ANN_RUN_SECONDS: &str = "sim.solgrid.dev/run-seconds";
/// Pod annotation: the containers' exit code.
pub const ANN_EXIT_CODE: &str = "sim.solgrid.dev/exit-code";
/// The kubelet port the API server dials.
pub const KUBELET_PORT: u16 = 10250;
/// The field manager of the simulator's writes.
pub const FIELD_MANAGER: &str = "solgrid-nodesim";
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Faults a node can be told to inject (switchable at any time).
#[derive(Debug, Default)]
pub struct Faults {
    /// Verification pods report a wrong product (a valid report of another seed).
    pub corrupt_proof: AtomicBool,
    /// Every non-verification container exits 1.
    pub fail_workers: AtomicBool,
    /// No more Lease renewals or `Ready` heartbeats.
    pub stop_heartbeat: AtomicBool,
    /// Verification pods are never started (left `Pending`).
    pub hold_verification: AtomicBool,
    /// Verification containers are reported as having run 0 ms (`startedAt ==
    /// finishedAt`) and the worker's `computeMs` as 0, however long they took.
    pub forge_fast_timestamps: AtomicBool,
}

/// A node to simulate.
#[derive(Clone, Debug)]
pub struct SimNodeSpec {
    pub name: String,
    /// GPUs of `resource`.
    pub gpus: u32,
    /// Extended resource name (`solgrid.dev/nvidia-gpu`, `solgrid.dev/apple-gpu`).
    pub resource: String,
    /// Marketing name as the device plugin reports it (`NVIDIA GeForce RTX 4090`).
    pub gpu_model: String,
    pub vram_mib: u64,
    pub cpu: String,
    pub memory: String,
    /// Extra Node labels.
    pub labels: BTreeMap<String, String>,
    /// Node annotations.
    pub annotations: BTreeMap<String, String>,
}

impl SimNodeSpec {
    /// `gpus` NVIDIA RTX 4090s (24 GiB).
    pub fn rtx4090(name: &str, gpus: u32) -> Self {
        SimNodeSpec {
            name: name.to_string(),
            gpus,
            resource: "solgrid.dev/nvidia-gpu".into(),
            gpu_model: "NVIDIA GeForce RTX 4090".into(),
            vram_mib: 24_564,
            cpu: "32".into(),
            memory: "256Gi".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// What the simulator runs as the verification worker.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The `solgrid-operator` binary (its `verify-worker` subcommand).
    pub verify_worker: Option<PathBuf>,
}

struct SimNode {
    spec: SimNodeSpec,
    ip: Ipv4Addr,
    index: u32,
    faults: Arc<Faults>,
}

type LogKey = (String, String, String);

struct Inner {
    client: Client,
    config: SimConfig,
    nodes: Mutex<HashMap<String, Arc<SimNode>>>,
    logs: Mutex<HashMap<LogKey, String>>,
    /// Pods being run (by uid) → their task.
    running: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Pods whose deletion was finished (by uid).
    deleting: Mutex<std::collections::HashSet<String>>,
    pod_ips: AtomicU32,
}

/// The simulator; its tasks stop when it is dropped.
pub struct NodeSim {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for NodeSim {
    fn drop(&mut self) {
        if let Ok(t) = self.tasks.lock() {
            t.iter().for_each(|h| h.abort());
        }
        if let Ok(r) = self.inner.running.lock() {
            r.values().for_each(|h| h.abort());
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl NodeSim {
    /// Starts the pod loop (no nodes yet).
    pub fn start(client: Client, config: SimConfig) -> NodeSim {
        let inner = Arc::new(Inner {
            client,
            config,
            nodes: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            deleting: Mutex::new(Default::default()),
            pod_ips: AtomicU32::new(0),
        });
        let sim = NodeSim {
            inner: inner.clone(),
            tasks: Mutex::new(Vec::new()),
        };
        sim.push_task(tokio::spawn(pod_loop(inner)));
        sim
    }

    fn push_task(&self, h: JoinHandle<()>) {
        if let Ok(mut t) = self.tasks.lock() {
            t.push(h);
        }
    }

    /// Registers a node, serves its kubelet log endpoint and heartbeats it; returns
    /// once the Node is Ready and untainted.
    pub async fn add_node(&self, spec: SimNodeSpec) -> Result<Arc<Faults>> {
        let (listener, ip, index) = bind_kubelet_port().await?;
        let node = Arc::new(SimNode {
            spec,
            ip,
            index,
            faults: Arc::new(Faults::default()),
        });
        let name = node.spec.name.clone();
        self.push_task(tokio::spawn(serve_logs(listener, self.inner.clone())));
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        let obj: Node = serde_json::from_value(node_object(&node))?;
        match nodes.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                nodes
                    .patch(
                        &name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(json!({
                            "apiVersion": "v1", "kind": "Node",
                            "metadata": obj.metadata.clone(),
                        })),
                    )
                    .await
                    .with_context(|| format!("updating Node {name}"))?;
            }
            Err(e) => return Err(e).with_context(|| format!("creating Node {name}")),
        }
        self.inner
            .nodes
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .insert(name.clone(), node.clone());
        heartbeat_once(&self.inner.client, &node, true).await?;
        untaint(&self.inner.client, &name).await?;
        let inner = self.inner.clone();
        let hb_node = node.clone();
        self.push_task(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if hb_node.faults.stop_heartbeat.load(Ordering::Relaxed) {
                    continue;
                }
                if let Err(e) = heartbeat_once(&inner.client, &hb_node, false).await {
                    tracing::warn!(node = %hb_node.spec.name, error = %e, "heartbeat failed");
                }
                // the API server re-adds the taint only on create, but be safe
                let _ = untaint(&inner.client, &hb_node.spec.name).await;
            }
        }));
        tracing::info!(node = %name, ip = %node.ip, "simulated node registered");
        Ok(node.faults.clone())
    }

    /// The node's fault switches.
    pub fn faults(&self, node: &str) -> Option<Arc<Faults>> {
        self.inner
            .nodes
            .lock()
            .ok()?
            .get(node)
            .map(|n| n.faults.clone())
    }

    /// The node's `InternalIP`.
    pub fn node_ip(&self, node: &str) -> Option<Ipv4Addr> {
        self.inner.nodes.lock().ok()?.get(node).map(|n| n.ip)
    }

    /// A container's log as served on the kubelet port.
    pub fn log(&self, ns: &str, pod: &str, container: &str) -> Option<String> {
        self.inner
            .logs
            .lock()
            .ok()?
            .get(&(ns.to_string(), pod.to_string(), container.to_string()))
            .cloned()
    }

    /// Publishes the node's GPUs to its GpuNode status as the device plugin does
    /// (server-side apply of `status.gpus`, `gpuCount`, `model`, `lastHeartbeat`
    /// with field manager `solgrid-device-plugin`). The GpuNode must exist.
    pub async fn publish_inventory(&self, node: &str, gpunode: &str) -> Result<()> {
        let n = self
            .inner
            .nodes
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .get(node)
            .cloned()
            .ok_or_else(|| anyhow!("no simulated node {node}"))?;
        let vendor = if n.spec.resource.contains("apple") {
            solgrid_crds::GpuVendor::Apple
        } else {
            solgrid_crds::GpuVendor::Nvidia
        };
        let gpus: Vec<solgrid_crds::GpuDevice> = (0..n.spec.gpus)
            .map(|i| solgrid_crds::GpuDevice {
                id: format!("gpu-{}-{i}", n.index),
                uuid: Some(format!("GPU-sim-{}-{i}", n.spec.name)),
                vendor,
                model: n.spec.gpu_model.clone(),
                vram_mib: n.spec.vram_mib,
                health: solgrid_crds::GpuHealth::Healthy,
                pci_bus_id: None,
                numa_node: None,
            })
            .collect();
        let api: Api<solgrid_crds::GpuNode> = Api::all(self.inner.client.clone());
        api.patch_status(
            gpunode,
            &PatchParams::apply("solgrid-device-plugin").force(),
            &Patch::Apply(json!({
                "apiVersion": solgrid_crds::API_VERSION,
                "kind": "GpuNode",
                "metadata": {"name": gpunode},
                "status": {
                    "gpus": gpus,
                    "gpuCount": n.spec.gpus,
                    "model": n.spec.gpu_model,
                    "lastHeartbeat": now(),
                },
            })),
        )
        .await
        .with_context(|| format!("publishing the inventory of GpuNode {gpunode}"))?;
        Ok(())
    }

    /// Deletes the simulated Nodes (best effort) and stops.
    pub async fn shutdown(self) {
        let names: Vec<String> = self
            .inner
            .nodes
            .lock()
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default();
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.inner.client.clone(), "kube-node-lease");
        for n in names {
            let _ = nodes.delete(&n, &DeleteParams::default()).await;
            let _ = leases.delete(&n, &DeleteParams::default()).await;
        }
    }
}

/// Binds `127.0.1.N:10250` for the first free N.
async fn bind_kubelet_port() -> Result<(tokio::net::TcpListener, Ipv4Addr, u32)> {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        if i > 254 {
            return Err(anyhow!("no free 127.0.1.N:{KUBELET_PORT} address left"));
        }
        let ip = Ipv4Addr::new(127, 0, 1, i as u8);
        match tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), KUBELET_PORT)).await {
            Ok(l) => return Ok((l, ip, i)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e).with_context(|| format!("binding {ip}:{KUBELET_PORT}")),
        }
    }
}

fn node_object(n: &SimNode) -> serde_json::Value {
    let s = &n.spec;
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("kubernetes.io/hostname".into(), s.name.clone()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), "amd64".into()),
        ("type".into(), "solgrid-nodesim".into()),
    ]);
    labels.extend(s.labels.clone());
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": s.name, "labels": labels, "annotations": s.annotations},
        "spec": {},
    })
}

fn node_status(n: &SimNode, ready_since: Option<&str>) -> serde_json::Value {
    let s = &n.spec;
    let t = now();
    let resources = json!({
        "cpu": s.cpu, "memory": s.memory, "pods": "110", "ephemeral-storage": "1Ti",
        s.resource.clone(): s.gpus.to_string(),
    });
    let cond = |ty: &str, status: &str, reason: &str| {
        let mut c = json!({
            "type": ty, "status": status, "reason": reason,
            "message": format!("simulated by {FIELD_MANAGER}"),
            "lastHeartbeatTime": t,
        });
        if let Some(since) = ready_since {
            c["lastTransitionTime"] = since.into();
        }
        c
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            cond("Ready", "True", "KubeletReady"),
        ],
        "addresses": [{"type": "InternalIP", "address": n.ip.to_string()}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "machineID": format!("sim-{}", n.index), "systemUUID": format!("sim-{}", n.index),
            "bootID": format!("sim-boot-{}", n.index), "kernelVersion": "6.1.0-sim",
            "osImage": "solgrid nodesim", "containerRuntimeVersion": "sim://1",
            "kubeletVersion": crate::cluster::KUBE_VERSION, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// One heartbeat: the Node's conditions and the Lease. `first`: also set the
/// conditions' transition time (the node became Ready now).
async fn heartbeat_once(client: &Client, n: &SimNode, first: bool) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let t = now();
    let status = node_status(n, first.then_some(t.as_str()));
    nodes
        .patch_status(
            &n.spec.name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": status})),
        )
        .await
        .with_context(|| format!("Node {} status", n.spec.name))?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": n.spec.name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": n.spec.name,
            "leaseDurationSeconds": 40,
            "renewTime": now_micro(),
        },
    });
    leases
        .patch(
            &n.spec.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(lease),
        )
        .await
        .with_context(|| format!("Lease {}", n.spec.name))?;
    Ok(())
}

/// Drops the not-ready/unreachable taints (what the node-lifecycle controller does
/// for a Ready node); retried on conflicts with concurrent writers of the Node.
async fn untaint(client: &Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut attempt = 0;
    loop {
        let node = nodes.get(name).await?;
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let keep: Vec<_> = taints
            .iter()
            .filter(|t| {
                t.key != "node.kubernetes.io/not-ready" && t.key != "node.kubernetes.io/unreachable"
            })
            .cloned()
            .collect();
        if keep.len() == taints.len() {
            return Ok(());
        }
        let rv = node.metadata.resource_version.clone();
        let r = nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"resourceVersion": rv},
                    "spec": {"taints": keep},
                })),
            )
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------------------
// pods

async fn pod_loop(inner: Arc<Inner>) {
    let pods: Api<Pod> = Api::all(inner.client.clone());
    let mut stream = watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(pod) => handle_pod(&inner, pod),
            Err(e) => tracing::debug!(error = %e, "pod watch"),
        }
    }
}

fn handle_pod(inner: &Arc<Inner>, pod: Pod) {
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return;
    };
    let Some(node) = inner
        .nodes
        .lock()
        .ok()
        .and_then(|n| n.get(&node_name).cloned())
    else {
        return;
    };
    let uid = pod.uid().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        if let Ok(mut r) = inner.running.lock()
            && let Some(h) = r.remove(&uid)
        {
            h.abort();
        }
        let first = inner
            .deleting
            .lock()
            .map(|mut d| d.insert(uid.clone()))
            .unwrap_or(false);
        if first {
            let inner = inner.clone();
            tokio::spawn(async move {
                let api: Api<Pod> =
                    Api::namespaced(inner.client.clone(), &pod.namespace().unwrap_or_default());
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                if let Err(e) = api.delete(&pod.name_any(), &dp).await {
                    tracing::debug!(pod = %pod.name_any(), error = %e, "finishing deletion");
                    if let Ok(mut d) = inner.deleting.lock() {
                        d.remove(&uid);
                    }
                }
            });
        }
        return;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let mut running = match inner.running.lock() {
        Ok(r) => r,
        Err(_) => return,
    };
    if running.contains_key(&uid) || phase == "Succeeded" || phase == "Failed" {
        return;
    }
    if node.faults.hold_verification.load(Ordering::Relaxed) && verify_args(&pod).is_some() {
        return;
    }
    let h = tokio::spawn(run_pod(inner.clone(), node, pod));
    running.insert(uid, h);
}

fn container_names(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// `sleep N` in the first container's command line.
pub fn sleep_seconds(words: &[String]) -> Option<f64> {
    let line = words.join(" ");
    let mut it = line.split(|c: char| c.is_whitespace() || c == ';' || c == '&');
    while let Some(w) = it.next() {
        if w == "sleep" {
            let n = it.find(|w| !w.is_empty())?;
            return n.trim_end_matches('s').parse().ok();
        }
    }
    None
}

fn run_time(pod: &Pod) -> Option<Duration> {
    let ann = pod.annotations();
    if let Some(v) = ann.get(ANN_RUN_SECONDS).and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(v.max(0.0)));
    }
    let c = pod.spec.as_ref()?.containers.first()?;
    let mut words = c.command.clone().unwrap_or_default();
    words.extend(c.args.clone().unwrap_or_default());
    sleep_seconds(&words).map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// The verification worker's arguments, when this is a verification pod.
fn verify_args(pod: &Pod) -> Option<Vec<String>> {
    let c = pod.spec.as_ref()?.containers.first()?;
    let mut words = c.command.clone().unwrap_or_default();
    words.extend(c.args.clone().unwrap_or_default());
    let i = words.iter().position(|w| w == "verify-worker")?;
    Some(words[i + 1..].to_vec())
}

struct Outcome {
    exit_code: i32,
    reason: Option<&'static str>,
    log: String,
}

async fn run_pod(inner: Arc<Inner>, node: Arc<SimNode>, pod: Pod) {
    let name = pod.name_any();
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(inner.client.clone(), &ns);
    let containers = container_names(&pod);
    let n = inner.pod_ips.fetch_add(1, Ordering::Relaxed);
    let pod_ip = format!("10.244.{}.{}", node.index, 2 + n % 250);
    let started = now();
    let status = running_status(&pod, &node, &pod_ip, &started, &containers);
    if !set_status(&api, &name, status, "Running").await {
        forget(&inner, &pod);
        return;
    }
    if let Ok(mut logs) = inner.logs.lock() {
        for (c, _) in &containers {
            logs.entry((ns.clone(), name.clone(), c.clone()))
                .or_default();
        }
    }
    let t0 = tokio::time::Instant::now();
    let deadline = pod
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64));
    let work = async {
        if let Some(args) = verify_args(&pod) {
            run_verify_worker(&inner, &node, &args).await
        } else {
            match run_time(&pod) {
                Some(d) => tokio::time::sleep(d).await,
                None => futures::future::pending::<()>().await,
            }
            let code = if node.faults.fail_workers.load(Ordering::Relaxed) {
                1
            } else {
                pod.annotations()
                    .get(ANN_EXIT_CODE)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            Outcome {
                exit_code: code,
                reason: None,
                log: format!(
                    "solgrid-nodesim: {ns}/{name} on {} ran {:.1} s, exit code {code}\n",
                    node.spec.name,
                    t0.elapsed().as_secs_f64()
                ),
            }
        }
    };
    let outcome = match deadline {
        Some(d) => match tokio::time::timeout(d, work).await {
            Ok(o) => o,
            Err(_) => Outcome {
                exit_code: 137,
                reason: Some("DeadlineExceeded"),
                log: String::new(),
            },
        },
        None => work.await,
    };
    if let Ok(mut logs) = inner.logs.lock() {
        for (c, _) in &containers {
            logs.insert((ns.clone(), name.clone(), c.clone()), outcome.log.clone());
        }
    }
    let mut finished = now();
    if node.faults.forge_fast_timestamps.load(Ordering::Relaxed) && verify_args(&pod).is_some() {
        finished = started.clone();
    }
    let status = finished_status(&pod, &started, &finished, &containers, &outcome);
    set_status(&api, &name, status, "the final phase").await;
    forget(&inner, &pod);
}

/// Patches a pod's status; `false` (logged) when that failed.
async fn set_status(api: &Api<Pod>, name: &str, status: serde_json::Value, what: &str) -> bool {
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "setting {what}");
            false
        }
    }
}

/// The pod no longer runs here.
fn forget(inner: &Inner, pod: &Pod) {
    if let Ok(mut r) = inner.running.lock() {
        r.remove(&pod.uid().unwrap_or_default());
    }
}

async fn run_verify_worker(inner: &Inner, node: &SimNode, args: &[String]) -> Outcome {
    let Some(bin) = inner.config.verify_worker.clone() else {
        return Outcome {
            exit_code: 127,
            reason: None,
            log: "solgrid-nodesim: no verify-worker binary configured\n".into(),
        };
    };
    let mut args = args.to_vec();
    let corrupt = node.faults.corrupt_proof.load(Ordering::Relaxed);
    // a corrupting node computes other challenges' results and claims they are these
    let mut relabel = Vec::new();
    if corrupt {
        relabel = shift_seeds(&mut args);
    }
    let out = tokio::process::Command::new(&bin)
        .arg("verify-worker")
        .args(&args)
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(o) => {
            let mut log = String::from_utf8_lossy(&o.stdout).into_owned();
            for (computed, claimed) in relabel {
                log = claim_seed(&log, computed, claimed);
            }
            if node.faults.forge_fast_timestamps.load(Ordering::Relaxed) {
                log = zero_compute_ms(&log);
            }
            log.push_str(&String::from_utf8_lossy(&o.stderr));
            Outcome {
                exit_code: o.status.code().unwrap_or(137),
                reason: None,
                log,
            }
        }
        Err(e) => Outcome {
            exit_code: 127,
            reason: None,
            log: format!("solgrid-nodesim: running {}: {e}\n", bin.display()),
        },
    }
}

/// Adds 1 to every challenge seed in the worker's arguments (`--seed S` and
/// `--device uuid:S:R:L`); the (computed, claimed) pairs.
fn shift_seeds(args: &mut [String]) -> Vec<(u64, u64)> {
    let mut pairs = Vec::new();
    let mut i = 0;
    while i + 1 < args.len() {
        match args[i].as_str() {
            "--seed" => {
                if let Ok(s) = args[i + 1].parse::<u64>() {
                    args[i + 1] = s.wrapping_add(1).to_string();
                    pairs.push((s.wrapping_add(1), s));
                }
            }
            "--device" => {
                let parts: Vec<&str> = args[i + 1].rsplitn(4, ':').collect();
                if let [l, r, seed, uuid] = parts.as_slice()
                    && let Ok(s) = seed.parse::<u64>()
                {
                    pairs.push((s.wrapping_add(1), s));
                    args[i + 1] = format!("{uuid}:{}:{r}:{l}", s.wrapping_add(1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    pairs
}

/// The worker's report lines with `computeMs` set to 0 (a lying node).
pub fn zero_compute_ms(log: &str) -> String {
    log.lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(mut v) if v.get("computeMs").is_some() => {
                v["computeMs"] = 0.into();
                v.to_string()
            }
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect()
}

/// A worker report for challenge seed `computed`, relabelled as the answer to `claimed`
/// (what a cheating node sends: a valid-looking product of the wrong matrices).
pub fn claim_seed(report: &str, computed: u64, claimed: u64) -> String {
    report.replace(
        &format!("\"seed\":\"{computed}\""),
        &format!("\"seed\":\"{claimed}\""),
    )
}

fn cond(ty: &str, status: &str, t: &str, reason: Option<&str>) -> serde_json::Value {
    let mut c = json!({"type": ty, "status": status, "lastTransitionTime": t});
    if let Some(r) = reason {
        c["reason"] = r.into();
    }
    c
}

/// The pod's container statuses (`up`: ready and started), each in the state
/// `state(containerID)` gives.
fn container_statuses(
    pod: &Pod,
    containers: &[(String, String)],
    up: bool,
    state: impl Fn(&str) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    let uid = pod.uid().unwrap_or_default();
    containers
        .iter()
        .map(|(c, image)| {
            let id = format!("sim://{uid}-{c}");
            json!({
                "name": c, "image": image, "imageID": format!("sim://{image}"),
                "containerID": id,
                "ready": up, "started": up, "restartCount": 0,
                "state": state(&id),
            })
        })
        .collect()
}

fn running_status(
    pod: &Pod,
    node: &SimNode,
    pod_ip: &str,
    t: &str,
    containers: &[(String, String)],
) -> serde_json::Value {
    let statuses = container_statuses(
        pod,
        containers,
        true,
        |_| json!({"running": {"startedAt": t}}),
    );
    json!({"status": {
        "phase": "Running",
        "hostIP": node.ip.to_string(), "hostIPs": [{"ip": node.ip.to_string()}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": t,
        "conditions": [
            cond("PodReadyToStartContainers", "True", t, None),
            cond("Initialized", "True", t, None),
            cond("Ready", "True", t, None),
            cond("ContainersReady", "True", t, None),
            cond("PodScheduled", "True", t, None),
        ],
        "containerStatuses": statuses,
    }})
}

fn finished_status(
    pod: &Pod,
    started: &str,
    finished: &str,
    containers: &[(String, String)],
    o: &Outcome,
) -> serde_json::Value {
    let ok = o.exit_code == 0 && o.reason.is_none();
    let statuses = container_statuses(pod, containers, false, |id| {
        json!({"terminated": {
            "exitCode": o.exit_code,
            "reason": if ok { "Completed" } else { "Error" },
            "startedAt": started, "finishedAt": finished,
            "containerID": id,
        }})
    });
    let mut st = json!({
        "phase": if ok { "Succeeded" } else { "Failed" },
        "conditions": [
            cond("PodReadyToStartContainers", "False", finished, None),
            cond("Initialized", "True", started, Some("PodCompleted")),
            cond("Ready", "False", finished, Some("PodCompleted")),
            cond("ContainersReady", "False", finished, Some("PodCompleted")),
            cond("PodScheduled", "True", started, None),
        ],
        "containerStatuses": statuses,
    });
    if let Some(r) = o.reason {
        st["reason"] = r.into();
        st["message"] = "Pod was active on the node longer than the specified deadline".into();
    }
    json!({"status": st})
}

// ---------------------------------------------------------------------------
// the kubelet's log endpoint

fn tls_acceptor(ip: Ipv4Addr) -> Result<tokio_rustls::TlsAcceptor> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![ip.to_string()])?;
    let cert = params.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

async fn serve_logs(listener: tokio::net::TcpListener, inner: Arc<Inner>) {
    let ip = match listener.local_addr() {
        Ok(SocketAddr::V4(a)) => *a.ip(),
        _ => Ipv4Addr::LOCALHOST,
    };
    let acceptor = match tls_acceptor(ip) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "kubelet TLS config");
            return;
        }
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let inner = inner.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, std::convert::Infallible>(kubelet_response(&inner, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn kubelet_response<B>(
    inner: &Inner,
    req: &hyper::Request<B>,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    let path = req.uri().path();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (code, body) = match parts.as_slice() {
        ["containerLogs", ns, pod, container] => {
            let log = inner.logs.lock().ok().and_then(|l| {
                l.get(&(ns.to_string(), pod.to_string(), container.to_string()))
                    .cloned()
            });
            match log {
                Some(l) => (200, tail(&l, req.uri().query())),
                None => (404, format!("no log for {ns}/{pod}/{container}\n")),
            }
        }
        ["healthz"] => (200, "ok".into()),
        _ => (404, format!("{path}: not served by the node simulator\n")),
    };
    hyper::Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .unwrap_or_default()
}

/// Applies `tailLines=N` from the query.
fn tail(log: &str, query: Option<&str>) -> String {
    let n = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("tailLines="))
            .and_then(|v| v.parse::<usize>().ok())
    });
    match n {
        Some(n) => {
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(n);
            let mut s = lines[from..].join("\n");
            if !s.is_empty() {
                s.push('\n');
            }
            s
        }
        None => log.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_parsing() {
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(sleep_seconds(&w(&["sh", "-c", "sleep 5"])), Some(5.0));
        assert_eq!(sleep_seconds(&w(&["sleep", "2.5"])), Some(2.5));
        assert_eq!(
            sleep_seconds(&w(&["sh", "-c", "echo hi; sleep 30s"])),
            Some(30.0)
        );
        assert_eq!(sleep_seconds(&w(&["torchrun", "train.py"])), None);
    }

    #[test]
    fn a_corrupted_proof_is_caught_as_cheating() {
        use solgrid_operator::verification::{
            Challenge, SpeedConfig, WorkerReport, check_report, run_worker,
        };
        let c = Challenge::single(42, 16);
        let (honest, _) = run_worker(&c, || 0).unwrap();
        let (other, _) = run_worker(&Challenge::single(43, 16), || 0).unwrap();
        let forged = claim_seed(&other, 43, 42);
        assert_ne!(forged, other, "the seed was relabelled");
        let check = |log: &str| {
            let r = WorkerReport::from_log(log).expect("a report");
            check_report(&c, &r, None, Some(1), &SpeedConfig::default(), 3, 7)
        };
        assert!(!check(&honest).is_cheating());
        assert!(check(&forged).is_cheating(), "{:?}", check(&forged));
    }

    #[test]
    fn seeds_are_shifted_per_device_and_compute_zeroed() {
        let mut args: Vec<String> = [
            "--size",
            "8",
            "--device",
            "GPU-a:b:5:3:2",
            "--device",
            "GPU-c:9:1:1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let pairs = shift_seeds(&mut args);
        assert_eq!(pairs, vec![(6, 5), (10, 9)]);
        assert_eq!(args[3], "GPU-a:b:6:3:2");
        assert_eq!(args[5], "GPU-c:10:1:1");
        let z = zero_compute_ms("x\n{\"v\":2,\"computeMs\":840}\n");
        let lines: Vec<&str> = z.lines().collect();
        assert_eq!(lines[0], "x");
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v, serde_json::json!({"v": 2, "computeMs": 0}));
    }

    #[test]
    fn tail_lines() {
        assert_eq!(tail("a\nb\nc\n", Some("tailLines=2")), "b\nc\n");
        assert_eq!(tail("a\nb\n", None), "a\nb\n");
    }
}
