//! `--snapshot FILE`: a cluster's state from a file (replay, debugging,
//! benchmarks), and `--gen-snapshot N`: a synthetic fleet.
//!
//! A snapshot file is YAML (one or more `---`-separated documents) or JSON (one
//! object, or an array); each document is a `GpuNode`, a `ComputeJob`, a `Node`, or
//! a `List` of them (`kubectl get gpunodes,computejobs -A -o yaml` output works as
//! is). Other kinds (e.g. the Secrets of the examples) are skipped.

use crate::cache::{self, Index};
use crate::convert::{self, MarketConfig};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use solgrid_crds::{
    ComputeJob, ComputeJobPhase, ComputeJobSpec, ComputeJobStatus, Coordinates, GpuDevice,
    GpuHealth, GpuNode, GpuNodePhase, GpuNodeSpec, GpuNodeStatus, GpuRequest, GpuVendor, Location,
    PaymentToken, Preference, Quote, RegionPolicy, ReputationStatus, WalletSecretRef,
    WorkerTemplate,
};
use std::sync::Arc;

/// The objects of a snapshot.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub gpunodes: Vec<GpuNode>,
    pub jobs: Vec<ComputeJob>,
    pub nodes: Vec<Node>,
    /// Documents of other kinds that were skipped.
    pub skipped: usize,
}

/// Why a snapshot file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("parsing YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("parsing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("document {index} ({kind} {name}): {err}")]
    Object {
        index: usize,
        kind: String,
        name: String,
        err: serde_json::Error,
    },
}

impl Snapshot {
    /// Reads a snapshot file.
    pub fn load(path: &std::path::Path) -> Result<Snapshot, SnapshotError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SnapshotError::Io(path.display().to_string(), e))?;
        Snapshot::parse(&text)
    }

    /// Parses snapshot text (JSON when it starts with `{` or `[`, else YAML).
    pub fn parse(text: &str) -> Result<Snapshot, SnapshotError> {
        let t = text.trim_start();
        let mut docs: Vec<serde_json::Value> = Vec::new();
        if t.starts_with('{') || t.starts_with('[') {
            match serde_json::from_str::<serde_json::Value>(t)? {
                serde_json::Value::Array(a) => docs.extend(a),
                v => docs.push(v),
            }
        } else {
            for d in serde_yaml_ng::Deserializer::from_str(text) {
                let v = serde_json::Value::deserialize(d)?;
                if !v.is_null() {
                    docs.push(v);
                }
            }
        }
        let mut s = Snapshot::default();
        let mut index = 0;
        let mut stack: Vec<serde_json::Value> = docs.into_iter().rev().collect();
        while let Some(v) = stack.pop() {
            index += 1;
            let kind = v
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string();
            let name = v
                .pointer("/metadata/name")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string();
            let wrap = |err| SnapshotError::Object {
                index,
                kind: kind.clone(),
                name: name.clone(),
                err,
            };
            match kind.as_str() {
                "GpuNode" => s.gpunodes.push(serde_json::from_value(v).map_err(wrap)?),
                "ComputeJob" => s.jobs.push(serde_json::from_value(v).map_err(wrap)?),
                "Node" => s.nodes.push(serde_json::from_value(v).map_err(wrap)?),
                k if k.ends_with("List") => {
                    if let Some(serde_json::Value::Array(items)) = v.get("items") {
                        stack.extend(items.iter().rev().cloned());
                    }
                }
                _ => s.skipped += 1,
            }
        }
        Ok(s)
    }

    /// The cache index of this snapshot.
    pub fn index(&self, cfg: &MarketConfig) -> Index {
        Index::build(&self.gpunodes, &self.nodes, &self.jobs, cfg)
    }

    /// JSON text of the snapshot (a `List`).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut items: Vec<serde_json::Value> = Vec::new();
        for g in &self.gpunodes {
            items.push(serde_json::to_value(g)?);
        }
        for j in &self.jobs {
            items.push(serde_json::to_value(j)?);
        }
        for n in &self.nodes {
            let mut v = serde_json::to_value(n)?;
            v["apiVersion"] = "v1".into();
            v["kind"] = "Node".into();
            items.push(v);
        }
        serde_json::to_string(
            &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
        )
    }

    /// YAML text of the snapshot (one document per object).
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let mut out = String::new();
        for g in &self.gpunodes {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(g)?);
        }
        for j in &self.jobs {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(j)?);
        }
        Ok(out)
    }
}

/// The index behind a snapshot's nodes, converted (for benches and tests).
pub fn snapshots_of(s: &Snapshot) -> Vec<Arc<solgrid_market::matching::NodeSnapshot>> {
    s.gpunodes
        .iter()
        .map(|g| Arc::new(convert::node_snapshot(g)))
        .collect()
}

/// The namespace of the generated jobs.
pub const GEN_NAMESPACE: &str = "bench";
/// A generated job most nodes fit (1 NVIDIA GPU, ≥ 16 GiB, reputation ≥ 400,
/// preferring eu-west/eu-central, balanced).
pub const GEN_JOB: &str = "bench-train";
/// A generated job with strict regions, `cheapest`, 2 GPUs of A100 80GB / H100.
pub const GEN_JOB_STRICT: &str = "bench-strict";

/// Deterministic xorshift, for a reproducible fleet.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn ts(s: &str) -> Option<Time> {
    s.parse().ok().map(Time)
}

/// The name of the `i`-th generated node.
pub fn gen_node_name(i: usize) -> String {
    format!("gpu-node-{i:05}")
}

/// A synthetic fleet of `n` GpuNodes (mixed models, regions, phases, floors,
/// reputations; about 2/3 of them fit [`GEN_JOB`]) and two ComputeJobs.
pub fn generate(n: usize, seed: u64) -> Snapshot {
    let mut rng = Rng(seed.max(1) ^ 0x9E37_79B9_7F4A_7C15);
    let regions: [(&str, &str, f64, f64); 5] = [
        ("us-east", "US", 39.0, -77.5),
        ("us-west", "US", 37.4, -122.1),
        ("eu-west", "NL", 52.4, 4.9),
        ("eu-central", "DE", 50.1, 8.7),
        ("ap-southeast", "SG", 1.35, 103.8),
    ];
    let models: [(&str, GpuVendor, u64); 7] = [
        ("NVIDIA GeForce RTX 4090", GpuVendor::Nvidia, 24_564),
        ("NVIDIA GeForce RTX 3090", GpuVendor::Nvidia, 24_576),
        ("NVIDIA A100 80GB PCIe", GpuVendor::Nvidia, 81_920),
        ("NVIDIA H100 80GB HBM3", GpuVendor::Nvidia, 81_559),
        ("NVIDIA L40S", GpuVendor::Nvidia, 46_068),
        ("NVIDIA GeForce RTX 3060", GpuVendor::Nvidia, 12_288),
        ("Apple M2 Max", GpuVendor::Apple, 32_768),
    ];
    let mut gpunodes = Vec::with_capacity(n);
    for i in 0..n {
        let name = gen_node_name(i);
        let (region, country, lat, lon) = regions[rng.below(5) as usize];
        let (model, vendor, vram) = models[rng.below(7) as usize];
        let count = if vendor == GpuVendor::Apple {
            1
        } else {
            [1u32, 2, 4, 8][rng.below(4) as usize]
        };
        let phase = match rng.below(100) {
            0..=89 => GpuNodePhase::Active,
            90..=93 => GpuNodePhase::Offline,
            94..=96 => GpuNodePhase::Verifying,
            97 => GpuNodePhase::Draining,
            _ => GpuNodePhase::Slashed,
        };
        let gpus: Vec<GpuDevice> = (0..count)
            .map(|d| GpuDevice {
                id: format!("gpu-{d}"),
                uuid: Some(format!("GPU-{i:05}-{d}")),
                vendor,
                model: model.into(),
                vram_mib: vram,
                health: if rng.below(50) == 0 {
                    GpuHealth::Unhealthy
                } else {
                    GpuHealth::Healthy
                },
                pci_bus_id: None,
                numa_node: None,
            })
            .collect();
        let min_stake = 16_000_000_000_000;
        let spec = GpuNodeSpec {
            node_name: name.clone(),
            payout_wallet: "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM".into(),
            location: Location {
                region: region.into(),
                country: country.into(),
                coordinates: Some(Coordinates {
                    latitude: lat + (rng.below(200) as f64 - 100.0) / 100.0,
                    longitude: lon + (rng.below(200) as f64 - 100.0) / 100.0,
                }),
            },
            floor_micro_usd_per_gpu_hour: 100_000 + rng.below(2_400_000),
            staker_commission_bps: 1000,
            draining: phase == GpuNodePhase::Draining,
        };
        let mut gn = GpuNode::new(&name, spec);
        gn.metadata.creation_timestamp = ts("2026-01-01T00:00:00Z");
        gn.status = Some(GpuNodeStatus {
            phase,
            gpu_count: count,
            allocated_gpus: rng.below(count as u64 + 1) as u32 / 2,
            model: Some(model.into()),
            gpus,
            reputation: ReputationStatus {
                score: 300 + rng.below(701) as u16,
                ..Default::default()
            },
            first_seen: ts("2026-01-01T00:00:00Z"),
            stake_total: if rng.below(20) == 0 {
                min_stake / 2
            } else {
                min_stake
            },
            minimum_stake: min_stake,
            ..Default::default()
        });
        gpunodes.push(gn);
    }
    let job = |name: &str, gpus: GpuRequest, regions: &[&str], policy, preference, price| {
        let mut j = ComputeJob::new(
            name,
            ComputeJobSpec {
                template: WorkerTemplate {
                    image: "ghcr.io/example/train:1".into(),
                    ..Default::default()
                },
                gpus,
                workers: 4,
                max_duration_seconds: 3600,
                max_price_per_gpu_hour: price,
                payment_token: PaymentToken::Usdc,
                payer_secret_ref: WalletSecretRef {
                    name: "payer".into(),
                },
                preferred_regions: regions.iter().map(|r| r.to_string()).collect(),
                region_policy: policy,
                origin: Some(Coordinates {
                    latitude: 52.52,
                    longitude: 13.40,
                }),
                min_reputation: 400,
                preference,
                gang_timeout_seconds: 300,
                ..Default::default()
            },
        );
        j.metadata.namespace = Some(GEN_NAMESPACE.into());
        j.metadata.uid = Some(format!("uid-{name}"));
        j.status = Some(ComputeJobStatus {
            phase: ComputeJobPhase::Scheduling,
            quote: Some(Quote {
                price_per_gpu_hour: price,
                token: PaymentToken::Usdc,
                reference_price_per_gpu_hour: price,
                urgency_factor_bps: 10_000,
                complexity_factor_bps: 10_000,
                supply_factor_bps: 10_000,
                max_cost: price * 4 * 2,
                locked_at: ts("2026-06-01T00:00:00Z"),
            }),
            ..Default::default()
        });
        j
    };
    let jobs = vec![
        job(
            GEN_JOB,
            GpuRequest {
                count: 1,
                vendor: GpuVendor::Nvidia,
                models: vec![],
                min_vram_mib: 16_000,
            },
            &["eu-west", "eu-central"],
            RegionPolicy::Prefer,
            Preference::Balanced,
            3_000_000,
        ),
        job(
            GEN_JOB_STRICT,
            GpuRequest {
                count: 2,
                vendor: GpuVendor::Nvidia,
                models: vec!["A100 80GB".into(), "H100".into()],
                min_vram_mib: 80_000,
            },
            &["eu-west"],
            RegionPolicy::Require,
            Preference::Cheapest,
            2_000_000,
        ),
    ];
    Snapshot {
        gpunodes,
        jobs,
        nodes: Vec::new(),
        skipped: 0,
    }
}

/// A pod of a generated job (owner reference to the ComputeJob), as JSON.
pub fn gen_pod_json(job: &str, worker: u32) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "name": format!("{job}-worker-{worker}"),
            "namespace": GEN_NAMESPACE,
            "uid": format!("pod-uid-{job}-{worker}"),
            "labels": {"solgrid.dev/job": job},
            "ownerReferences": [{
                "apiVersion": "solgrid.dev/v1alpha1",
                "kind": "ComputeJob",
                "name": job,
                "uid": format!("uid-{job}"),
                "controller": true
            }]
        },
        "spec": {
            "schedulerName": "solgrid-scheduler",
            "containers": [{
                "name": "worker",
                "image": "ghcr.io/example/train:1",
                "resources": {
                    "limits": {"solgrid.dev/nvidia-gpu": "1"},
                    "requests": {"solgrid.dev/nvidia-gpu": "1"}
                }
            }]
        },
        "status": {"phase": "Pending"}
    })
}

/// An `ExtenderArgs` body (nodeCacheCapable form) for a generated job's pod.
pub fn gen_args_body(job: &str, names: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "Pod": gen_pod_json(job, 0),
        "Nodes": null,
        "NodeNames": names,
    }))
    .unwrap_or_default()
}

/// Re-exported for callers building an index from a snapshot's job list.
pub use cache::job_entry;
