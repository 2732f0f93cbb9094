//! Scheduling the proof-of-work pod of a node and reading its verdict
//! (the workload and the check: [`crate::verification`]).
//!
//! Each period (`--verification-interval-seconds`, hourly by default) an `Active` or
//! `Verifying` node whose GPUs are all free gets one pod, named
//! `solgrid-verify-<node>-<period index>` in the verification namespace (the
//! operator's namespace by default), bound to the node by `spec.nodeName` (not a
//! `kubernetes.io/hostname` selector: a node may set that label on itself and
//! draw another node's challenge), requesting *every* GPU of the node, with
//! `activeDeadlineSeconds` ≤ 900. Every device of the inventory (by UUID) gets its
//! own challenge ([`plan`]): a fresh seed, rounds sized from its claimed model
//! ([`SpeedConfig::rounds_for`]) and matrices from its claimed VRAM
//! ([`SpeedConfig::matrices_for`]); the challenges are in the pod's arguments and
//! in its `solgrid.dev/verify-devices` annotation, the operator's clock at
//! creation in `solgrid.dev/verify-created-ms`. A node with a GPU allocated to a
//! job is not challenged that period (and that is no inconclusive result).
//!
//! The container runs `verify-worker --size <n> --device <uuid>:<seed>:<rounds>:<matrices> ...`
//! (the operator image's `solgrid-operator verify-worker`, or a GPU image with the
//! same contract). When the pod has succeeded, the operator reads the reports from
//! the container's log, times the run from the creation to that read, checks it
//! ([`crate::verification::check_devices`]), records the verdict in the GpuNode
//! status and deletes the pod. A pod that has not succeeded by
//! `created + limit + slack` (the longest any device may take, plus the slack for
//! reading) can no longer pass: it is judged then ([`classify`]) without waiting
//! for its deadline.

use crate::toolkit::{label_safe, time_ms};
use crate::verification::{DeviceChallenge, SpeedConfig, SplitMix64, Verdict, check_devices};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::json;
use solgrid_crds::{GpuDevice, GpuVendor};
use solgrid_market::GpuModel;

/// The verification pod's annotations and label (defined in `solgrid_crds::labels`):
/// the node it verifies, the run's base seed, the challenges' matrix size, the
/// devices' challenges (JSON list of [`DeviceChallenge`]), the operator's clock when
/// it created the pod, and the label marking verification pods.
pub use solgrid_crds::labels::{
    ANN_GPUNODE as ANN_NODE, ANN_VERIFY_CREATED_MS as ANN_CREATED_MS,
    ANN_VERIFY_DEVICES as ANN_DEVICES, ANN_VERIFY_SEED as ANN_SEED, ANN_VERIFY_SIZE as ANN_SIZE,
    LABEL_COMPONENT,
};
/// The container's name.
pub const CONTAINER: &str = "verify";
/// The longest run allowed (ECONOMICS.md: at most 15 minutes of the hour).
pub const MAX_DEADLINE_S: u64 = 900;

pub use crate::config::VerifyArgs;

/// Verification settings.
#[derive(Clone, Debug)]
pub struct VerifySettings {
    pub namespace: String,
    pub image: String,
    pub period_ms: u64,
    /// Matrix size.
    pub size: usize,
    /// `activeDeadlineSeconds` (capped at 900).
    pub deadline_s: u64,
    /// Freivalds vectors per device.
    pub rounds: u32,
    pub speed: SpeedConfig,
    /// Inconclusive periods in a row after which `verified` expires.
    pub expire_after: u32,
    /// The models a device whose model name is unknown is held to (as the market
    /// prices it), per vendor.
    pub default_nvidia: GpuModel,
    pub default_apple: GpuModel,
}

impl VerifySettings {
    pub fn deadline_s(&self) -> u64 {
        self.deadline_s.clamp(1, MAX_DEADLINE_S)
    }
}

/// The pod's name for a node and period.
pub fn pod_name(node: &str, period: u64) -> String {
    let base = label_safe(node)
        .to_ascii_lowercase()
        .replace(['_', '.'], "-");
    let base: String = base.chars().take(40).collect();
    let base = base.trim_matches('-');
    format!(
        "solgrid-verify-{base}-{:08x}-{period}",
        crate::toolkit::fnv32(node)
    )
}

/// Every device's challenge: a seed derived from `seed` and the device's index,
/// rounds from its claimed model, matrices from its claimed VRAM.
pub fn plan(s: &VerifySettings, gpus: &[GpuDevice], seed: u64) -> Vec<DeviceChallenge> {
    let mut rng = SplitMix64::new(seed);
    gpus.iter()
        .map(|d| {
            let model = GpuModel::parse(&d.model).unwrap_or(match d.vendor {
                GpuVendor::Apple => s.default_apple,
                _ => s.default_nvidia,
            });
            let rounds = s.speed.rounds_for(model, s.size);
            DeviceChallenge {
                uuid: d.uuid.clone().unwrap_or_else(|| d.id.clone()),
                model: Some(model.name().to_string()),
                seed: rng.next().to_string(),
                rounds,
                matrices: s.speed.matrices_for(d.vram_mib, s.size, rounds),
            }
        })
        .collect()
}

/// The container's arguments (appended to the image's entrypoint):
/// `verify-worker --size <n> --device <uuid>:<seed>:<rounds>:<matrices> ...`.
pub fn worker_args(n: usize, devices: &[DeviceChallenge]) -> Vec<String> {
    let mut args = vec!["verify-worker".to_string()];
    args.extend(["--size".to_string(), n.to_string()]);
    for d in devices {
        args.extend(["--device".to_string(), d.arg()]);
    }
    args
}

/// The verification pod (a JSON object, posted as is).
#[allow(clippy::too_many_arguments)]
pub fn pod(
    s: &VerifySettings,
    gpunode: &str,
    node_name: &str,
    vendor: GpuVendor,
    period: u64,
    seed: u64,
    devices: &[DeviceChallenge],
    created_ms: u64,
) -> Pod {
    let deadline = s.deadline_s();
    let resource = vendor.resource_name();
    let count = devices.len().max(1).to_string();
    let value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(gpunode, period),
            "namespace": s.namespace,
            "labels": {
                "app.kubernetes.io/name": "solgrid",
                LABEL_COMPONENT: "verification",
                ANN_NODE: label_safe(gpunode),
            },
            "annotations": {
                ANN_NODE: gpunode,
                ANN_SEED: seed.to_string(),
                ANN_SIZE: s.size.to_string(),
                ANN_DEVICES: serde_json::to_string(devices).unwrap_or_default(),
                ANN_CREATED_MS: created_ms.to_string(),
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "nodeName": node_name,
            "tolerations": [
                {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"} },
            "containers": [{
                "name": CONTAINER,
                "image": s.image,
                "imagePullPolicy": "IfNotPresent",
                "args": worker_args(s.size, devices),
                "resources": {
                    "requests": { resource: count, "cpu": "1", "memory": "256Mi" },
                    "limits": { resource: count, "memory": "2Gi" },
                },
                "terminationMessagePolicy": "File",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
            }],
        },
    });
    serde_json::from_value(value).unwrap_or_default()
}

/// The pod ran on `node_name`, the node the challenge was for. A report from a
/// pod on any other node is no verdict about this one.
pub fn ran_on(p: &Pod, node_name: &str) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name)
}

/// The devices' challenges a pod was given (from its annotations); `None` if they
/// are missing or malformed (a pod the operator did not create).
pub fn devices_of(p: &Pod) -> Option<(usize, Vec<DeviceChallenge>)> {
    let ann = p.metadata.annotations.as_ref()?;
    let n = ann.get(ANN_SIZE)?.parse().ok()?;
    let devices: Vec<DeviceChallenge> = serde_json::from_str(ann.get(ANN_DEVICES)?).ok()?;
    Some((n, devices))
}

/// When the operator created the pod (its annotation), else `fallback`.
pub fn created_ms_of(p: &Pod, fallback: u64) -> u64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_CREATED_MS))
        .and_then(|v| v.parse().ok())
        .unwrap_or(fallback)
}

/// The longest any of the pod's devices may take (without the reading slack).
pub fn pod_limit_ms(s: &VerifySettings, n: usize, devices: &[DeviceChallenge]) -> u64 {
    devices
        .iter()
        .map(|d| match d.gpu_model() {
            Some(m) => s.speed.limit_ms(m, n, d.rounds),
            None => s.deadline_s() * 1000,
        })
        .max()
        .unwrap_or(0)
}

/// When a pod that has not succeeded can no longer pass.
pub fn judge_at(s: &VerifySettings, created_ms: u64, limit_ms: u64) -> u64 {
    created_ms
        .saturating_add(limit_ms)
        .saturating_add(s.speed.slack_ms)
}

/// Where a verification pod stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not finished; keep waiting.
    Running,
    /// Terminated successfully: read the log and check it. `started_late`: the
    /// node says its container started more than the slack after creation.
    Succeeded { started_late: bool },
    /// Decided without a log.
    Verdict(Verdict),
}

fn container_times(st: &PodStatus) -> (Option<u64>, Option<u64>) {
    let cs = st
        .container_statuses
        .as_ref()
        .and_then(|v| v.iter().find(|c| c.name == CONTAINER));
    let term = cs
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let running = cs
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref());
    let started = term
        .and_then(|t| t.started_at.as_ref())
        .or_else(|| running.and_then(|r| r.started_at.as_ref()))
        .map(time_ms);
    let finished = term.and_then(|t| t.finished_at.as_ref()).map(time_ms);
    (started, finished)
}

/// The node's own span of the container (`finishedAt - startedAt`), if it gave one.
pub fn node_span_ms(p: &Pod) -> Option<u64> {
    let (s, f) = container_times(p.status.as_ref()?);
    s.zip(f).map(|(s, f)| f.saturating_sub(s))
}

/// Classifies a verification pod at `now_ms` (`created_ms`: the operator's clock
/// at creation; `limit_ms`: [`pod_limit_ms`]).
pub fn classify(
    p: &Pod,
    s: &VerifySettings,
    created_ms: u64,
    limit_ms: u64,
    now_ms: u64,
) -> PodState {
    let st = p.status.clone().unwrap_or_default();
    let (started, _) = container_times(&st);
    let late = started.is_none_or(|t| t > created_ms.saturating_add(s.speed.slack_ms));
    let phase = st.phase.as_deref().unwrap_or("Pending");
    let too_slow = || Verdict::TooSlow {
        duration_ms: now_ms.saturating_sub(created_ms),
        limit_ms,
    };
    match phase {
        "Succeeded" => PodState::Succeeded { started_late: late },
        "Failed"
            if st.reason.as_deref() == Some("DeadlineExceeded")
                && !late
                && s.deadline_s() * 1000 > limit_ms =>
        {
            PodState::Verdict(too_slow())
        }
        "Failed" => PodState::Verdict(Verdict::Inconclusive {
            reason: format!(
                "the verification pod failed ({})",
                st.reason.as_deref().unwrap_or("no reason")
            ),
        }),
        _ if now_ms <= judge_at(s, created_ms, limit_ms) => PodState::Running,
        "Running" if !late => PodState::Verdict(too_slow()),
        "Running" => PodState::Verdict(Verdict::Inconclusive {
            reason: "the verification started late and did not finish in time (image pull?)".into(),
        }),
        _ => PodState::Verdict(Verdict::Inconclusive {
            reason: "the verification pod never ran (unschedulable or image not pulled)".into(),
        }),
    }
}

/// The verdict of a succeeded pod's log, read at `read_ms` (operator's clock).
pub fn judge_log(
    p: &Pod,
    log: &str,
    s: &VerifySettings,
    created_ms: u64,
    read_ms: u64,
    started_late: bool,
    verifier_seed: u64,
) -> Verdict {
    let Some((n, devices)) = devices_of(p) else {
        return Verdict::Inconclusive {
            reason: "the verification pod has no challenge annotations".into(),
        };
    };
    // the node's own figures only ever make it slower
    let duration = read_ms
        .saturating_sub(created_ms)
        .max(node_span_ms(p).unwrap_or(0));
    check_devices(
        &devices,
        n,
        log,
        duration,
        started_late,
        &s.speed,
        s.rounds,
        verifier_seed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolkit::ms_time;
    use crate::verification::{Challenge, run_device_worker};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    };
    use solgrid_crds::GpuHealth;

    fn settings() -> VerifySettings {
        VerifySettings {
            namespace: "solgrid-system".into(),
            image: "img".into(),
            period_ms: 3_600_000,
            size: 16,
            deadline_s: 5_000,
            rounds: 3,
            // an RTX 4090 takes 1 ms per 16-product: 200 rounds for the 200 ms target
            speed: SpeedConfig::quick(16),
            expire_after: 3,
            default_nvidia: GpuModel::Rtx4090,
            default_apple: GpuModel::AppleM1,
        }
    }

    fn gpu(uuid: &str, model: &str, vram_mib: u64) -> GpuDevice {
        GpuDevice {
            id: format!("id-{uuid}"),
            uuid: Some(uuid.into()),
            vendor: GpuVendor::Nvidia,
            model: model.into(),
            vram_mib,
            health: GpuHealth::Healthy,
            pci_bus_id: None,
            numa_node: None,
        }
    }

    fn two_gpus() -> Vec<GpuDevice> {
        vec![
            gpu("GPU-a", "NVIDIA H100 80GB HBM3", 81_559),
            gpu("GPU-b", "NVIDIA GeForce RTX 3060", 12_288),
        ]
    }

    #[test]
    fn plan_sizes_each_device_by_its_claim() {
        let s = settings();
        let devs = plan(&s, &two_gpus(), 7);
        assert_eq!(devs.len(), 2);
        assert_eq!(devs[0].uuid, "GPU-a");
        assert_eq!(devs[0].model.as_deref(), Some("h100"));
        // H100: 2.4x a 4090 -> 480 rounds; RTX 3060: 0.22x -> 44 rounds
        assert_eq!(devs[0].rounds, 480);
        assert_eq!(devs[1].rounds, 44);
        assert_eq!(devs[0].matrices, 8);
        assert_ne!(devs[0].seed, devs[1].seed);
        // an unknown model is held to the vendor's default; no uuid: the id
        let mut odd = gpu("x", "Mystery GPU", 0);
        odd.uuid = None;
        let d = plan(&s, &[odd], 7);
        assert_eq!(d[0].model.as_deref(), Some("rtx-4090"));
        assert_eq!(d[0].uuid, "id-x");
        assert_eq!(d[0].matrices, 1);
        // fixed seed: the same plan
        assert_eq!(plan(&s, &two_gpus(), 7), devs);
    }

    #[test]
    fn pod_shape() {
        let s = settings();
        let devs = plan(&s, &two_gpus(), 42);
        let p = pod(
            &s,
            "gpu-a",
            "node-a",
            GpuVendor::Nvidia,
            7,
            42,
            &devs,
            1_000,
        );
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["metadata"]["name"], pod_name("gpu-a", 7));
        assert!(pod_name("gpu-a", 7).starts_with("solgrid-verify-gpu-a-"));
        assert_eq!(v["spec"]["activeDeadlineSeconds"], 900);
        assert_eq!(v["spec"]["nodeName"], "node-a");
        assert!(v["spec"].get("nodeSelector").is_none());
        assert!(ran_on(&p, "node-a"));
        assert!(!ran_on(&p, "node-b"));
        // every GPU of the node
        assert_eq!(
            v["spec"]["containers"][0]["resources"]["limits"]["solgrid.dev/nvidia-gpu"],
            "2"
        );
        let args = &v["spec"]["containers"][0]["args"];
        assert_eq!(args[3], "--device");
        assert_eq!(args[4], devs[0].arg());
        assert_eq!(args[6], devs[1].arg());
        assert_eq!(devices_of(&p), Some((16, devs)));
        assert_eq!(created_ms_of(&p, 5), 1_000);
        assert!(pod_name(&"x".repeat(300), 1).len() < 100);
    }

    fn with_status(
        phase: &str,
        reason: Option<&str>,
        started: Option<u64>,
        finished: Option<u64>,
    ) -> Pod {
        let s = settings();
        let devs = plan(&s, &two_gpus(), 9);
        let mut p = pod(&s, "g", "n", GpuVendor::Nvidia, 1, 9, &devs, 0);
        let state = match finished {
            Some(f) => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    started_at: started.map(ms_time),
                    finished_at: Some(ms_time(f)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            None => ContainerState {
                running: started.map(|s| ContainerStateRunning {
                    started_at: Some(ms_time(s)),
                }),
                ..Default::default()
            },
        };
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            reason: reason.map(str::to_string),
            container_statuses: Some(vec![ContainerStatus {
                name: CONTAINER.into(),
                state: Some(state),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn classify_states() {
        let s = settings();
        let limit = 10_000;
        let c = |p: &Pod, now| classify(p, &s, 0, limit, now);
        assert_eq!(
            c(&with_status("Succeeded", None, Some(0), Some(3_000)), 5_000),
            PodState::Succeeded {
                started_late: false
            }
        );
        // kubelet times are whole seconds: a start 1 s after creation is late here
        assert_eq!(
            c(
                &with_status("Succeeded", None, Some(1_000), Some(3_000)),
                5_000
            ),
            PodState::Succeeded { started_late: true }
        );
        assert_eq!(
            c(&with_status("Running", None, Some(0), None), 5_000),
            PodState::Running
        );
        // running past the limit and the slack: it can no longer pass
        assert_eq!(
            c(&with_status("Running", None, Some(0), None), 10_050),
            PodState::Running
        );
        let v = c(&with_status("Running", None, Some(0), None), 10_051);
        assert_eq!(
            v,
            PodState::Verdict(Verdict::TooSlow {
                duration_ms: 10_051,
                limit_ms: limit
            })
        );
        // ... unless the node says it started late: inconclusive
        let v = c(&with_status("Running", None, Some(5_000), None), 10_051);
        assert!(
            matches!(v, PodState::Verdict(Verdict::Inconclusive { .. })),
            "{v:?}"
        );
        // never started: inconclusive as soon as it can no longer pass
        assert_eq!(
            c(&with_status("Pending", None, None, None), 9_000),
            PodState::Running
        );
        let v = c(&with_status("Pending", None, None, None), 20_000);
        assert!(matches!(v, PodState::Verdict(Verdict::Inconclusive { .. })));
        // killed at the deadline after starting on time: too slow
        let v = c(
            &with_status("Failed", Some("DeadlineExceeded"), Some(0), Some(900_001)),
            1_000_000,
        );
        assert!(
            matches!(v, PodState::Verdict(Verdict::TooSlow { .. })),
            "{v:?}"
        );
        // ... but not when the deadline is shorter than the limit
        let v = classify(
            &with_status("Failed", Some("DeadlineExceeded"), Some(0), Some(900_001)),
            &s,
            0,
            2_000_000,
            1_000_000,
        );
        assert!(
            matches!(v, PodState::Verdict(Verdict::Inconclusive { .. })),
            "{v:?}"
        );
        // crashed: inconclusive
        let v = c(&with_status("Failed", Some("Error"), Some(0), Some(5)), 10);
        assert!(matches!(v, PodState::Verdict(Verdict::Inconclusive { .. })));
    }

    fn log_for(devs: &[DeviceChallenge], n: usize) -> String {
        devs.iter()
            .map(|d| {
                let c: Challenge = d.challenge(n).unwrap();
                run_device_worker(Some(&d.uuid), &c, || 0).unwrap().0
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn judge() {
        let s = settings();
        let p = with_status("Succeeded", None, Some(0), Some(10));
        let (n, devs) = devices_of(&p).unwrap();
        let log = log_for(&devs, n);
        // H100's 480 rounds: 200 ms expected, 2x + 50 ms allowed
        let limit = pod_limit_ms(&s, n, &devs);
        assert_eq!(limit, 450);
        assert_eq!(judge_log(&p, &log, &s, 0, 450, false, 1), Verdict::Passed);
        let v = judge_log(&p, &log, &s, 0, 451, false, 1);
        assert_eq!(
            v,
            Verdict::TooSlow {
                duration_ms: 451,
                limit_ms: 450
            }
        );
        assert!(matches!(
            judge_log(&p, &log, &s, 0, 451, true, 1),
            Verdict::Inconclusive { .. }
        ));
        // the node's own span only makes it slower
        let slow_span = with_status("Succeeded", None, Some(0), Some(60_000));
        assert!(judge_log(&slow_span, &log, &s, 0, 10, false, 1).is_cheating());
        // one device missing
        let one = log.lines().next().unwrap();
        let v = judge_log(&p, one, &s, 0, 10, false, 1);
        assert!(
            matches!(&v, Verdict::WrongResult { reason } if reason.contains("GPU-b")),
            "{v:?}"
        );
        assert!(judge_log(&p, "", &s, 0, 10, false, 1).is_cheating());
    }

    #[test]
    fn flags_validate() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct C {
            #[command(flatten)]
            v: VerifyArgs,
        }
        let ok = C::parse_from(["x"]).v.validated().unwrap();
        assert_eq!(ok.speed().target_ms, 30_000);
        assert!(
            C::parse_from(["x", "--verify-slack-ms", "30000"])
                .v
                .validated()
                .is_err()
        );
        assert!(
            C::parse_from(["x", "--verify-expire-after", "0"])
                .v
                .validated()
                .is_err()
        );
        assert!(
            C::parse_from(["x", "--verify-size", "0"])
                .v
                .validated()
                .is_err()
        );
    }
}
