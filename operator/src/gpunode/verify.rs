//! Scheduling the hourly proof-of-work pod of a node and reading its verdict.
//!
//! Each period (`--verification-interval-seconds`, hourly by default) an `Active` or
//! `Verifying` node with a free GPU gets one pod, named
//! `solgrid-verify-<node>-<period index>` in the verification namespace (the
//! operator's namespace by default), bound to the node by `spec.nodeName` (not a
//! `kubernetes.io/hostname` selector: a node may set that label on itself and
//! draw another node's challenge), requesting one GPU of the node's vendor, with
//! `activeDeadlineSeconds` ≤ 900 and a fresh random seed (argument and annotation).
//! The container runs `verify-worker --seed <seed> --size <n>` (the operator image's
//! `solgrid-operator verify-worker`, or a GPU image with the same contract, see
//! [`crate::verification`]). When the pod has terminated, the operator reads the
//! report from the container's log, checks it ([`crate::verification::check_report`]),
//! records the verdict in the GpuNode status and deletes the pod.

use crate::toolkit::{label_safe, time_ms};
use crate::verification::{Challenge, SpeedConfig, Verdict, WorkerReport, check_report};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::json;
use solgrid_crds::GpuVendor;
use solgrid_market::GpuModel;

/// Annotation: the node a verification pod verifies.
pub const ANN_NODE: &str = "solgrid.dev/gpunode";
/// Annotation: the challenge's seed.
pub const ANN_SEED: &str = "solgrid.dev/verify-seed";
/// Annotation: the challenge's size.
pub const ANN_SIZE: &str = "solgrid.dev/verify-size";
/// Label: marks verification pods.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// The container's name.
pub const CONTAINER: &str = "verify";
/// The longest run allowed (ECONOMICS.md: at most 15 minutes of the hour).
pub const MAX_DEADLINE_S: u64 = 900;

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
    /// Freivalds rounds.
    pub rounds: u32,
    pub speed: SpeedConfig,
    /// How long past the deadline a pod that never finished is given up on.
    pub grace_ms: u64,
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

/// The verification pod (a JSON object, posted as is).
pub fn pod(
    s: &VerifySettings,
    gpunode: &str,
    node_name: &str,
    vendor: GpuVendor,
    period: u64,
    seed: u64,
) -> Pod {
    let deadline = s.deadline_s();
    let resource = vendor.resource_name();
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
                "args": ["verify-worker", "--seed", seed.to_string(), "--size", s.size.to_string()],
                "resources": {
                    "requests": { resource: "1", "cpu": "1", "memory": "256Mi" },
                    "limits": { resource: "1", "memory": "2Gi" },
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

/// The challenge a pod was given (from its annotations); `None` if they are missing
/// or malformed (a pod the operator did not create).
pub fn challenge_of(p: &Pod) -> Option<Challenge> {
    let ann = p.metadata.annotations.as_ref()?;
    Some(Challenge {
        seed: ann.get(ANN_SEED)?.parse().ok()?,
        n: ann.get(ANN_SIZE)?.parse().ok()?,
    })
}

/// Where a verification pod stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not finished; keep waiting.
    Running,
    /// Terminated successfully: read the log and check it; duration per the kubelet.
    Succeeded { duration_ms: Option<u64> },
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

/// Classifies a verification pod at `now_ms` (`created_ms`: when it was created).
pub fn classify(
    p: &Pod,
    s: &VerifySettings,
    model: Option<GpuModel>,
    created_ms: u64,
    now_ms: u64,
) -> PodState {
    let Some(st) = p.status.as_ref() else {
        return PodState::Running;
    };
    let (started, finished) = container_times(st);
    let deadline_ms = s.deadline_s() * 1000;
    let phase = st.phase.as_deref().unwrap_or("Pending");
    match phase {
        "Succeeded" => PodState::Succeeded {
            duration_ms: started.zip(finished).map(|(a, b)| b.saturating_sub(a)),
        },
        "Failed" => {
            let deadline = st.reason.as_deref() == Some("DeadlineExceeded");
            match (deadline, started) {
                (true, Some(_)) => {
                    let limit = model
                        .map(|m| s.speed.limit_ms(m, s.size))
                        .unwrap_or(deadline_ms);
                    if limit < deadline_ms {
                        PodState::Verdict(Verdict::TooSlow {
                            duration_ms: deadline_ms,
                            limit_ms: limit,
                        })
                    } else {
                        PodState::Verdict(Verdict::Inconclusive {
                            reason: "the verification ran into its deadline".into(),
                        })
                    }
                }
                _ => PodState::Verdict(Verdict::Inconclusive {
                    reason: format!(
                        "the verification pod failed ({})",
                        st.reason.as_deref().unwrap_or("no reason")
                    ),
                }),
            }
        }
        _ => {
            let overdue = now_ms
                > created_ms
                    .saturating_add(deadline_ms)
                    .saturating_add(s.grace_ms);
            if !overdue {
                PodState::Running
            } else if phase == "Running" && started.is_some() {
                // the kubelet should have killed it at the deadline: it did not finish in time
                let limit = model
                    .map(|m| s.speed.limit_ms(m, s.size))
                    .unwrap_or(deadline_ms);
                PodState::Verdict(Verdict::TooSlow {
                    duration_ms: now_ms.saturating_sub(started.unwrap_or(created_ms)),
                    limit_ms: limit,
                })
            } else {
                PodState::Verdict(Verdict::Inconclusive {
                    reason: "the verification pod never ran (unschedulable or image not pulled)"
                        .into(),
                })
            }
        }
    }
}

/// The verdict of a terminated pod's log.
pub fn judge_log(
    p: &Pod,
    log: &str,
    s: &VerifySettings,
    model: Option<GpuModel>,
    duration_ms: Option<u64>,
    verifier_seed: u64,
) -> Verdict {
    let Some(challenge) = challenge_of(p) else {
        return Verdict::Inconclusive {
            reason: "the verification pod has no challenge annotations".into(),
        };
    };
    match WorkerReport::from_log(log) {
        None => Verdict::WrongResult {
            reason: "the worker exited successfully without a report".into(),
        },
        Some(r) => check_report(
            &challenge,
            &r,
            model,
            duration_ms,
            &s.speed,
            s.rounds,
            verifier_seed,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolkit::ms_time;
    use crate::verification::run_worker;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    };

    fn settings() -> VerifySettings {
        VerifySettings {
            namespace: "solgrid-system".into(),
            image: "img".into(),
            period_ms: 3_600_000,
            size: 24,
            deadline_s: 5_000,
            rounds: 3,
            speed: SpeedConfig::default(),
            grace_ms: 60_000,
        }
    }

    #[test]
    fn pod_shape() {
        let p = pod(&settings(), "gpu-a", "node-a", GpuVendor::Nvidia, 7, 42);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["metadata"]["name"], pod_name("gpu-a", 7));
        assert!(pod_name("gpu-a", 7).starts_with("solgrid-verify-gpu-a-"));
        assert_eq!(v["spec"]["activeDeadlineSeconds"], 900);
        assert_eq!(v["spec"]["nodeName"], "node-a");
        assert!(v["spec"].get("nodeSelector").is_none());
        assert!(ran_on(&p, "node-a"));
        assert!(!ran_on(&p, "node-b"));
        assert_eq!(
            v["spec"]["containers"][0]["resources"]["limits"]["solgrid.dev/nvidia-gpu"],
            "1"
        );
        assert_eq!(v["spec"]["containers"][0]["args"][2], "42");
        assert_eq!(challenge_of(&p), Some(Challenge { seed: 42, n: 24 }));
        assert!(pod_name(&"x".repeat(300), 1).len() < 100);
    }

    fn with_status(
        phase: &str,
        reason: Option<&str>,
        started: Option<u64>,
        finished: Option<u64>,
    ) -> Pod {
        let mut p = pod(&settings(), "g", "n", GpuVendor::Nvidia, 1, 9);
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
        let h100 = Some(GpuModel::H100);
        assert_eq!(
            classify(
                &with_status("Succeeded", None, Some(1_000), Some(3_000)),
                &s,
                h100,
                0,
                5_000
            ),
            PodState::Succeeded {
                duration_ms: Some(2_000)
            }
        );
        assert_eq!(
            classify(
                &with_status("Running", None, Some(1_000), None),
                &s,
                h100,
                0,
                5_000
            ),
            PodState::Running
        );
        // running long past its deadline: too slow
        let v = classify(
            &with_status("Running", None, Some(1_000), None),
            &s,
            h100,
            0,
            2_000_000,
        );
        assert!(
            matches!(v, PodState::Verdict(Verdict::TooSlow { .. })),
            "{v:?}"
        );
        // never started: inconclusive
        let v = classify(
            &with_status("Pending", None, None, None),
            &s,
            h100,
            0,
            2_000_000,
        );
        assert!(matches!(v, PodState::Verdict(Verdict::Inconclusive { .. })));
        // killed at the deadline after starting: too slow for an H100
        let v = classify(
            &with_status("Failed", Some("DeadlineExceeded"), Some(1), Some(900_001)),
            &s,
            h100,
            0,
            1_000_000,
        );
        assert!(
            matches!(v, PodState::Verdict(Verdict::TooSlow { .. })),
            "{v:?}"
        );
        // crashed: inconclusive
        let v = classify(
            &with_status("Failed", Some("Error"), Some(1), Some(5)),
            &s,
            h100,
            0,
            10,
        );
        assert!(matches!(v, PodState::Verdict(Verdict::Inconclusive { .. })));
    }

    #[test]
    fn judge() {
        let s = settings();
        let p = pod(&s, "g", "n", GpuVendor::Nvidia, 1, 9);
        let (line, _) = run_worker(&Challenge { seed: 9, n: 24 }, || 0).unwrap();
        assert_eq!(
            judge_log(&p, &line, &s, Some(GpuModel::H100), Some(10), 1),
            Verdict::Passed
        );
        let other = run_worker(&Challenge { seed: 8, n: 24 }, || 0).unwrap().0;
        assert!(judge_log(&p, &other, &s, None, None, 1).is_cheating());
        assert!(judge_log(&p, "", &s, None, None, 1).is_cheating());
    }
}
