//! The GpuNode controller: keeps each GpuNode in step with its Node, its heartbeat
//! Lease, its stake and its proof-of-work verifications.
//!
//! Entry point: [`run`]`(ctx)` — `main` spawns it next to the other controllers
//! (under the leader lease). It runs reflectors for Nodes, heartbeat Leases
//! ([`heartbeat`]) and StakePositions (or uses `ctx.caches.stakepositions`), creates
//! missing GpuNodes for Nodes with GPU capacity ([`gpunode_for_node`]), and
//! reconciles each GpuNode at least every 30 s.
//!
//! Each reconcile ([`reconcile`]):
//! 1. reads the Node, the Lease and the stakes from the caches (no API call);
//! 2. drives the node's verification pod ([`verify`]): checks a finished one (a
//!    wrong or far-too-slow result slashes the node), starts the period's one;
//! 3. decides the phase ([`machine::next_phase`]), `onlineSince` (reset by a
//!    restart), reputation, stake total and minimum, reward eligibility;
//! 4. applies its own status fields by server-side apply (field manager
//!    `solgrid-operator`; the device plugin owns `gpus`, `gpuCount`, `model`,
//!    `lastHeartbeat`; the job controller `jobs`, `allocatedGpus`, compute
//!    earnings; the rewards loop `earnings.idleRewardsIo`), with
//!    `observedGeneration`, conditions and an Event on every phase change;
//! 5. while `Slashed`: makes sure every StakePosition locked on the node before the
//!    incident has its slash recorded (`<uid>/slash/p<period>`, state `Planned`) in
//!    its status — the StakePosition controller then burns it exactly once.
//!
//! Annotations: `solgrid.dev/clear-slash=true` (set by an admin) clears a slash:
//! the node verifies again; `solgrid.dev/uptime` (written by the operator) keeps the
//! uptime track ([`solgrid_market::reputation::UptimeTrack`]).

pub mod heartbeat;
pub mod machine;
pub mod verify;

use crate::stake::machine as stake_machine;
use crate::toolkit::{event, ms_time, now_ms, publish, set_condition, time_ms};
use crate::verification::Verdict;
use crate::{Context, Error, Result};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use solgrid_crds::{
    GpuNode, GpuNodePhase, GpuNodeSpec, GpuNodeStatus, LedgerRecord, Location, ReputationStatus,
    SettlementState, StakePosition,
};
use solgrid_market::gpu::model_groups;
use solgrid_market::reputation::{EvidenceAge, ReputationInputs, UptimeTrack};
use solgrid_market::staking::EligibilityInput;
use std::sync::Arc;
use std::time::Duration;
use verify::{PodState, VerifySettings};

/// The controller's name (metrics label).
pub const CONTROLLER: &str = "gpunode";
pub use solgrid_crds::labels::{
    ANN_CLEAR_SLASH, ANN_NODE_COUNTRY, ANN_NODE_REGION, ANN_NODE_WALLET, ANN_UPTIME,
};

/// The GpuNode controller's settings (derived from the operator configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    pub lease_namespace: String,
    /// Lease name = prefix + node name (`""`: the kubelet's node lease).
    pub lease_prefix: String,
    pub heartbeat_timeout_ms: u64,
    /// Every GpuNode is looked at least this often.
    pub resync: Duration,
    pub verify: VerifySettings,
}

impl Settings {
    pub fn from_config(c: &crate::config::OperatorConfig) -> Self {
        Settings {
            lease_namespace: c.node_lease_namespace.clone(),
            lease_prefix: String::new(),
            heartbeat_timeout_ms: c.heartbeat_timeout.as_millis() as u64,
            resync: Duration::from_secs(30),
            verify: VerifySettings {
                namespace: c.lease_namespace.clone(),
                image: c.verifier_image.clone(),
                period_ms: (c.verification_interval.as_millis() as u64).max(1),
                size: c.verify.verify_size,
                deadline_s: c.verify.verify_deadline_seconds,
                rounds: 3,
                speed: c.verify.speed(),
                expire_after: c.verify.verify_expire_after.max(1),
                default_nvidia: c.default_nvidia_model,
                default_apple: c.default_apple_model,
            },
        }
    }
}

/// What a GpuNode reconcile reads besides the Context.
pub struct GpuNodeCtx {
    pub ctx: Arc<Context>,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub stakes: Store<StakePosition>,
    pub settings: Settings,
    /// Seeds of Freivalds' vectors (tests fix it; `None`: fresh per check).
    pub verifier_seed: Option<u64>,
    /// Seeds of the challenges (tests fix it; `None`: fresh per pod).
    pub challenge_seed: Option<u64>,
}

fn strip_node(mut n: Node) -> Node {
    n.metadata.managed_fields = None;
    if let Some(st) = n.status.as_mut() {
        st.images = None;
    }
    n
}

/// Runs the GpuNode controller (and the GpuNode creation loop) until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let settings = Settings::from_config(&ctx.config);

    let (nodes, nodes_w) = reflector::store();
    let node_stream = reflector::reflector(
        nodes_w,
        watcher(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        ),
    )
    .modify(|n| {
        let s = strip_node(n.clone());
        *n = s;
    })
    .applied_objects()
    .boxed();
    tokio::spawn(async move {
        node_stream.for_each(|_| async {}).await;
    });

    let (leases, leases_w) = reflector::store();
    let lease_stream = reflector::reflector(
        leases_w,
        watcher(
            Api::<Lease>::namespaced(client.clone(), &settings.lease_namespace),
            watcher::Config::default().any_semantic(),
        ),
    )
    .modify(|l| l.metadata.managed_fields = None)
    .applied_objects()
    .boxed();
    tokio::spawn(async move {
        lease_stream.for_each(|_| async {}).await;
    });

    let stakes = match ctx.caches.stakepositions.clone() {
        Some(s) => s,
        None => {
            let (s, w) = reflector::store();
            let st = reflector::reflector(
                w,
                watcher(
                    Api::<StakePosition>::all(client.clone()),
                    watcher::Config::default().any_semantic(),
                ),
            )
            .applied_objects()
            .boxed();
            tokio::spawn(async move {
                st.for_each(|_| async {}).await;
            });
            s
        }
    };

    let gctx = Arc::new(GpuNodeCtx {
        ctx: ctx.clone(),
        nodes: nodes.clone(),
        leases,
        stakes,
        settings: settings.clone(),
        verifier_seed: None,
        challenge_seed: None,
    });

    // GpuNodes for Nodes with GPU capacity
    {
        let ctx = ctx.clone();
        let nodes = nodes.clone();
        tokio::spawn(async move {
            let _ = nodes.wait_until_ready().await;
            loop {
                ensure_gpunodes(&ctx, &nodes).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
    }

    let gpunodes: Api<GpuNode> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &settings.verify.namespace);
    Controller::new(gpunodes, watcher::Config::default().any_semantic())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        )
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().any_semantic(),
            |n: Node| {
                // GpuNodes are named after their Node by default (device plugin, creation loop)
                Some(ObjectRef::<GpuNode>::new(&n.name_any()))
            },
        )
        .watches(
            Api::<StakePosition>::all(client.clone()),
            watcher::Config::default().any_semantic(),
            |s: StakePosition| Some(ObjectRef::<GpuNode>::new(&s.spec.node_name)),
        )
        .watches(
            pods,
            watcher::Config::default().labels("app.kubernetes.io/component=verification"),
            |p: Pod| {
                p.annotations()
                    .get(verify::ANN_NODE)
                    .map(|n| ObjectRef::<GpuNode>::new(n))
            },
        )
        // shutdown: main drops this future when the leader lease is lost or on SIGTERM
        .run(reconcile, error_policy, gctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "gpunode reconcile failed");
            }
        })
        .await;
}

/// Backoff per object; a malformed object never wedges the controller.
pub fn error_policy(obj: Arc<GpuNode>, err: &Error, g: Arc<GpuNodeCtx>) -> Action {
    g.ctx
        .metrics
        .reconcile_failure(CONTROLLER, err.metric_label());
    tracing::warn!(gpunode = %obj.name_any(), error = %err, "reconcile failed");
    Action::requeue(
        g.ctx
            .failure_backoff(&format!("gn:{}", obj.name_any()), err),
    )
}

/// The GpuNode to create for a Node with GPU capacity, if it has any and the
/// provider named a payout wallet (`solgrid.dev/payout-wallet` annotation). Region
/// from `solgrid.dev/region` or `topology.kubernetes.io/region`, country from
/// `solgrid.dev/country` (default `ZZ`, unknown).
pub fn gpunode_for_node(n: &Node) -> Option<GpuNode> {
    let has_gpu = [n.status.as_ref().and_then(|s| s.capacity.as_ref())]
        .into_iter()
        .flatten()
        .any(|cap| {
            [
                "solgrid.dev/nvidia-gpu",
                "solgrid.dev/apple-gpu",
                "nvidia.com/gpu",
            ]
            .iter()
            .any(|r| cap.get(*r).is_some_and(|q| q.0.trim() != "0"))
        });
    if !has_gpu {
        return None;
    }
    let ann = n.annotations();
    let labels = n.labels();
    let wallet = ann.get(ANN_NODE_WALLET)?.trim().to_string();
    let region_raw = ann
        .get(ANN_NODE_REGION)
        .or_else(|| labels.get("topology.kubernetes.io/region"))
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let mut region: String = region_raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    region = region.trim_matches('-').to_string();
    if region.is_empty() {
        region = "unknown".into();
    }
    let country = ann
        .get(ANN_NODE_COUNTRY)
        .filter(|c| c.len() == 2 && c.chars().all(|x| x.is_ascii_uppercase()))
        .cloned()
        .unwrap_or_else(|| "ZZ".into());
    let name = n.name_any();
    Some(GpuNode::new(
        &name,
        GpuNodeSpec {
            node_name: name.clone(),
            payout_wallet: wallet,
            location: Location {
                region,
                country,
                coordinates: None,
            },
            floor_micro_usd_per_gpu_hour: 0,
            staker_commission_bps: 0,
            draining: false,
        },
    ))
}

async fn ensure_gpunodes(ctx: &Context, nodes: &Store<Node>) {
    let api: Api<GpuNode> = Api::all(ctx.client.clone());
    for n in nodes.state() {
        let Some(gn) = gpunode_for_node(&n) else {
            continue;
        };
        match api.get_opt(&gn.name_any()).await {
            Ok(Some(_)) => {}
            Ok(None) => match api.create(&PostParams::default(), &gn).await {
                Ok(created) => {
                    publish(
                        ctx,
                        &created,
                        event(
                            false,
                            "Created",
                            "Create",
                            "GpuNode created for a Node with GPU capacity",
                        ),
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(node = %n.name_any(), error = %e, "creating a GpuNode failed")
                }
            },
            Err(e) => tracing::warn!(error = %e, "reading a GpuNode failed"),
        }
    }
}

/// The period index of a time.
pub fn period_of(ms: u64, period_ms: u64) -> u64 {
    ms / period_ms.max(1)
}

/// The status fields this controller owns, as an apply body.
pub fn status_apply(gn: &GpuNode, st: &GpuNodeStatus) -> serde_json::Value {
    let st = &crate::kstatus::gpunode(st);
    let mut status = serde_json::json!({
        "phase": st.phase,
        "reputation": st.reputation,
        "stakeTotal": st.stake_total,
        "minimumStake": st.minimum_stake,
        "rewardEligible": st.reward_eligible,
        "verification": st.verification,
        "conditions": st.conditions,
    });
    for (k, v) in [
        ("onlineSince", st.online_since.as_ref()),
        ("firstSeen", st.first_seen.as_ref()),
    ] {
        if let Some(t) = v {
            status[k] = serde_json::to_value(t).unwrap_or_default();
        }
    }
    if let Some(r) = &st.eligibility_reason {
        status["eligibilityReason"] = r.clone().into();
    }
    if let Some(g) = st.observed_generation {
        status["observedGeneration"] = g.into();
    }
    serde_json::json!({
        "apiVersion": GpuNode::api_version(&()),
        "kind": GpuNode::kind(&()),
        "metadata": { "name": gn.name_any() },
        "status": status,
    })
}

fn fresh_seed(g: &GpuNodeCtx, fixed: Option<u64>) -> u64 {
    fixed.unwrap_or_else(|| {
        crate::verification::fresh_seed(g.ctx.clock.now().timestamp_nanos_opt().unwrap_or(0) as u128)
    })
}

/// Reconciles one GpuNode (module docs).
pub async fn reconcile(obj: Arc<GpuNode>, g: Arc<GpuNodeCtx>) -> Result<Action> {
    let ctx = &g.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let name = obj.name_any();
    let now = now_ms(ctx);
    let s = &g.settings;
    let gpunodes: Api<GpuNode> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &s.verify.namespace);
    let cfg = &ctx.config.market;

    let node_name = obj.spec.node_name.clone();
    let node = g.nodes.get(&ObjectRef::new(&node_name));
    let lease = g.leases.get(
        &ObjectRef::new(&heartbeat::lease_name(&s.lease_prefix, &node_name))
            .within(&s.lease_namespace),
    );
    let hb = heartbeat::evaluate(
        lease.as_deref(),
        node.as_deref(),
        now,
        s.heartbeat_timeout_ms,
        40,
    );
    let old = obj.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let generation = obj.metadata.generation;

    let (groups, unknown) = model_groups(st.gpus.iter().map(|d| d.model.as_str()));
    let mut events: Vec<(bool, &'static str, String)> = Vec::new();
    let mut delete_pod: Option<String> = None;

    // --- 1. a finished verification
    let mut slashed_now = false;
    let mut judge_at: Option<u64> = None;
    if st.verification.last_result.as_deref() == Some("Running") {
        let run = check_verification(&g, &pods, &name, &node_name, &st, now).await;
        judge_at = run.judge_at;
        if run.delete {
            delete_pod = Some(verify::pod_name(
                &name,
                period_of(run.started, s.verify.period_ms),
            ));
        }
        if let Some(v) = run.verdict {
            let was_verified = st.verification.verified;
            ctx.metrics
                .verifications
                .with_label_values(&[verdict_reason(&v)])
                .inc();
            slashed_now = record_verdict(&mut st, &v, &s.verify, &mut events, generation, now)
                && old.phase != GpuNodePhase::Slashed;
            if was_verified && !st.verification.verified && !v.is_cheating() {
                ctx.metrics
                    .verifications
                    .with_label_values(&["Expired"])
                    .inc();
            }
        }
    }

    // --- 2. the phase
    let clear = obj.annotations().get(ANN_CLEAR_SLASH).map(String::as_str) == Some("true");
    let input = machine::PhaseInput {
        current: st.phase,
        node_exists: node.is_some(),
        cordoned: node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        draining: obj.spec.draining,
        online: hb.online,
        gpus: st.gpus.len() as u32,
        verified: st.verification.verified,
        clear_slash: clear,
    };
    let (phase, reason) = machine::next_phase(&input);
    let cleared = st.phase == GpuNodePhase::Slashed && phase != GpuNodePhase::Slashed;
    if cleared {
        st.verification.verified = false;
        events.push((
            false,
            "SlashCleared",
            "an admin cleared the slash: the node verifies again".into(),
        ));
    }
    st.phase = phase;

    // --- 3. times, uptime, reputation, stake, eligibility
    let created_ms = obj
        .meta()
        .creation_timestamp
        .as_ref()
        .map(time_ms)
        .unwrap_or(now);
    let first_seen = st
        .first_seen
        .as_ref()
        .map(time_ms)
        .unwrap_or(created_ms.min(now));
    st.first_seen = Some(ms_time(first_seen));
    let prev_since = old.online_since.as_ref().map(time_ms);
    let since = machine::online_since(&hb, prev_since, now);
    if prev_since.is_some() && since.is_some() && since != prev_since {
        events.push((
            true,
            "Restarted",
            "the node restarted: continuous uptime starts again".into(),
        ));
    }
    st.online_since = since.map(ms_time);
    let prev_track = obj
        .annotations()
        .get(ANN_UPTIME)
        .and_then(|a| UptimeTrack::decode(a));
    let rcfg = &cfg.reputation;
    let track = UptimeTrack::observe(prev_track, hb.online, now, rcfg.uptime_half_life_ms);
    let age_ms = now.saturating_sub(first_seen);
    let rep = rcfg.score_decayed(
        &ReputationInputs {
            uptime_ppm: rcfg.uptime_ppm(&track, age_ms, now),
            jobs_succeeded: st.jobs.succeeded,
            jobs_failed_provider: st.jobs.failed_by_provider,
            verifications_passed: st.verification.passed,
            verifications_failed: st.verification.failed,
            age_ms,
            slashed: st.phase == GpuNodePhase::Slashed,
        },
        EvidenceAge {
            jobs_ms: st
                .jobs
                .last_outcome
                .as_ref()
                .map(|t| now.saturating_sub(time_ms(t))),
            verification_ms: st
                .verification
                .last_run
                .as_ref()
                .map(|t| now.saturating_sub(time_ms(t))),
        },
    );
    st.reputation = ReputationStatus {
        score: rep.score,
        uptime: rep.uptime,
        job_success: rep.job_success,
        verification: rep.verification,
        age: rep.age,
    };
    let positions: Vec<Arc<StakePosition>> = g
        .stakes
        .state()
        .into_iter()
        .filter(|p| p.spec.node_name == name)
        .collect();
    st.stake_total = positions
        .iter()
        .filter_map(|p| p.status.as_ref())
        .filter(|s| stake_machine::counts_for_node(s.phase))
        .fold(0u64, |acc, s| acc.saturating_add(s.locked));
    st.minimum_stake = cfg
        .staking
        .min_stake_inventory(&groups, unknown)
        .map_err(Error::market)?;
    let (eligible, why) = machine::eligibility(
        &cfg.staking,
        &EligibilityInput {
            phase: st.phase,
            verified: st.verification.verified,
            online_since_ms: since,
            first_seen_ms: first_seen,
            stake: st.stake_total,
            min_stake: st.minimum_stake,
            slashed: st.phase == GpuNodePhase::Slashed,
        },
        now,
    );
    st.reward_eligible = eligible;
    st.eligibility_reason = Some(why.clone());

    // --- 4. start this period's verification
    let period = period_of(now, s.verify.period_ms);
    let last_period = st
        .verification
        .last_run
        .as_ref()
        .map(|t| period_of(time_ms(t), s.verify.period_ms));
    let running = st.verification.last_result.as_deref() == Some("Running");
    // every device is challenged at once: only when none is allocated
    let all_free = st.allocated_gpus == 0 && !st.gpus.is_empty();
    if machine::verifies(st.phase)
        && !running
        && last_period != Some(period)
        && all_free
        && hb.online
    {
        let vendor = st.gpus.first().map(|d| d.vendor).unwrap_or_default();
        let seed = fresh_seed(&g, g.challenge_seed);
        let devices = verify::plan(&s.verify, &st.gpus, seed);
        let p = verify::pod(
            &s.verify, &name, &node_name, vendor, period, seed, &devices, now,
        );
        // a pod that cannot be created (quota, RBAC) does not hold the status back
        let created = match pods.create(&PostParams::default(), &p).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 409 => true,
            Err(e) => {
                tracing::warn!(gpunode = %name, error = %e, "creating the verification pod failed");
                events.push((
                    true,
                    "VerificationNotStarted",
                    format!("the proof-of-work pod could not be created: {e}"),
                ));
                false
            }
        };
        if created {
            st.verification.last_run = Some(ms_time(now));
            st.verification.last_result = Some("Running".into());
            events.push((
                false,
                "VerificationStarted",
                format!(
                    "proof-of-work pod {} started",
                    verify::pod_name(&name, period)
                ),
            ));
        }
    }

    // --- 5. conditions
    set_condition(
        &mut st.conditions,
        "Ready",
        st.phase == GpuNodePhase::Active,
        reason.as_str(),
        reason.message(),
        generation,
        now,
    );
    set_condition(
        &mut st.conditions,
        "Online",
        hb.online,
        if hb.online {
            "HeartbeatCurrent"
        } else if node.is_none() {
            "NodeGone"
        } else {
            "HeartbeatExpired"
        },
        if hb.online {
            "the heartbeat lease is current"
        } else {
            "no current heartbeat lease"
        },
        generation,
        now,
    );
    set_condition(
        &mut st.conditions,
        "RewardEligible",
        eligible,
        if eligible { "Eligible" } else { "NotEligible" },
        &why,
        generation,
        now,
    );
    set_condition(
        &mut st.conditions,
        "Slashed",
        st.phase == GpuNodePhase::Slashed,
        if st.phase == GpuNodePhase::Slashed {
            "CaughtCheating"
        } else {
            "NotSlashed"
        },
        if st.phase == GpuNodePhase::Slashed {
            PhaseReasonMsg::SLASHED
        } else {
            "not slashed"
        },
        generation,
        now,
    );
    st.observed_generation = generation;

    // --- 6. write
    if old.phase != st.phase {
        events.push((
            matches!(st.phase, GpuNodePhase::Offline | GpuNodePhase::Slashed),
            "PhaseChanged",
            format!("{:?} -> {:?}: {}", old.phase, st.phase, reason.message()),
        ));
    }
    let changed = status_apply(&obj, &st) != status_apply(&obj, &old);
    let mut updated = (*obj).clone();
    if changed {
        let pp = PatchParams::apply(&ctx.config.field_manager).force();
        updated = gpunodes
            .patch_status(&name, &pp, &Patch::Apply(status_apply(&obj, &st)))
            .await?;
    }
    // annotations: the uptime track, the clear-slash request
    let mut ann = serde_json::Map::new();
    if prev_track != Some(track) {
        ann.insert(ANN_UPTIME.into(), track.encode().into());
    }
    if clear && cleared {
        ann.insert(ANN_CLEAR_SLASH.into(), serde_json::Value::Null);
    }
    if !ann.is_empty() {
        let patch = serde_json::json!({"metadata": {"annotations": ann}});
        gpunodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    if let Some(p) = delete_pod {
        match pods.delete(&p, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(pod = %p, error = %e, "deleting a verification pod failed"),
        }
    }
    for (warning, reason, note) in events {
        publish(ctx, &updated, event(warning, reason, "Reconcile", note)).await;
    }

    // --- 7. slash the stakes (idempotent while Slashed)
    if st.phase == GpuNodePhase::Slashed
        && let Some(incident_ms) = st.verification.last_run.as_ref().map(time_ms)
    {
        let incident = format!("p{}", period_of(incident_ms, s.verify.period_ms));
        plan_slashes(ctx, &positions, &incident, incident_ms, now).await?;
        if slashed_now {
            tracing::warn!(gpunode = %name, incident = %incident, "node slashed");
        }
    }

    ctx.reset_failures(&format!("gn:{name}"));
    let next = if st.verification.last_result.as_deref() == Some("Running") {
        // look again when the running pod can no longer pass
        let until = judge_at.map(|t| Duration::from_millis(t.saturating_sub(now) + 200));
        Duration::from_secs(15)
            .min(s.resync)
            .min(until.unwrap_or(Duration::MAX))
    } else {
        s.resync
    };
    Ok(Action::requeue(next))
}

/// What a look at the running verification pod found.
struct VerificationRun {
    verdict: Option<Verdict>,
    /// Delete the pod (judged, or not ours to judge).
    delete: bool,
    /// When the run was started (the status' `lastRun`).
    started: u64,
    /// When a pod still running can no longer pass.
    judge_at: Option<u64>,
}

/// Looks at the period's verification pod: judges it once it has succeeded (the
/// operator's time from creation to reading the report) or can no longer pass.
async fn check_verification(
    g: &GpuNodeCtx,
    pods: &Api<Pod>,
    name: &str,
    node_name: &str,
    st: &GpuNodeStatus,
    now: u64,
) -> VerificationRun {
    let s = &g.settings.verify;
    let started = st
        .verification
        .last_run
        .as_ref()
        .map(time_ms)
        .unwrap_or(now);
    let mut run = VerificationRun {
        verdict: None,
        delete: false,
        started,
        judge_at: None,
    };
    let pname = verify::pod_name(name, period_of(started, s.period_ms));
    let p = match pods.get_opt(&pname).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            run.verdict = Some(Verdict::Inconclusive {
                reason: "the verification pod disappeared".into(),
            });
            return run;
        }
        Err(e) => {
            // keep waiting; the rest of the status is still kept in step
            tracing::warn!(gpunode = %name, error = %e, "reading the verification pod failed");
            return run;
        }
    };
    if !verify::ran_on(&p, node_name) {
        run.delete = true;
        run.verdict = Some(Verdict::Inconclusive {
            reason: format!(
                "the verification pod ran on {}, not on {node_name}: its report is rejected",
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or("no node")
            ),
        });
        return run;
    }
    let created = verify::created_ms_of(&p, started);
    let (n, devices) = verify::devices_of(&p).unwrap_or_default();
    let limit = verify::pod_limit_ms(s, n, &devices);
    run.judge_at = Some(verify::judge_at(s, created, limit));
    match verify::classify(&p, s, created, limit, now) {
        PodState::Running => {}
        PodState::Verdict(v) => {
            run.delete = true;
            run.verdict = Some(v);
        }
        PodState::Succeeded { started_late } => {
            let lp = LogParams {
                container: Some(verify::CONTAINER.into()),
                limit_bytes: Some(((n * n * 3 + 4_096) * devices.len().max(1) + 65_536) as i64),
                ..Default::default()
            };
            match pods.logs(&pname, &lp).await {
                Err(e) => {
                    tracing::warn!(gpunode = %name, error = %e, "reading the verification log failed")
                }
                Ok(log) => {
                    // the clock stops when the report is in the operator's hands
                    let read = now_ms(&g.ctx);
                    run.delete = true;
                    let seed = fresh_seed(g, g.verifier_seed);
                    // Freivalds over the chains is O(rounds n^2) per device: off the runtime
                    let settings = s.clone();
                    let judged = tokio::task::spawn_blocking(move || {
                        verify::judge_log(&p, &log, &settings, created, read, started_late, seed)
                    })
                    .await;
                    run.verdict = Some(judged.unwrap_or_else(|e| Verdict::Inconclusive {
                        reason: format!("the check did not complete: {e}"),
                    }));
                    if let Some(v) = &run.verdict {
                        if limit > 0 {
                            g.ctx
                                .metrics
                                .verification_time_ratio
                                .observe(read.saturating_sub(created) as f64 / limit as f64);
                        }
                        tracing::info!(gpunode = %name, duration_ms = read.saturating_sub(created), limit_ms = limit, verdict = v.label(), "verification judged");
                    }
                }
            }
        }
    }
    run
}

/// The `Verified` condition's reason (and the metric's label) of a verdict.
fn verdict_reason(v: &Verdict) -> &'static str {
    match v {
        Verdict::Passed => "Passed",
        Verdict::WrongResult { .. } => "WrongResult",
        Verdict::TooSlow { .. } => "TooSlow",
        Verdict::Inconclusive { .. } => "Inconclusive",
    }
}

/// Records a verdict in the status; `true` when the node is caught cheating.
/// Inconclusive results in a row (`verification.inconclusive`) expire `verified`
/// after `expire_after` of them.
fn record_verdict(
    st: &mut GpuNodeStatus,
    v: &Verdict,
    s: &VerifySettings,
    events: &mut Vec<(bool, &'static str, String)>,
    generation: Option<i64>,
    now: u64,
) -> bool {
    st.verification.last_result = Some(v.label().to_string());
    let mut reason = verdict_reason(v);
    let mut message = v.message();
    let cheating = v.is_cheating();
    match v {
        Verdict::Passed => {
            st.verification.passed = st.verification.passed.saturating_add(1);
            st.verification.verified = true;
            st.verification.inconclusive = 0;
            events.push((false, "VerificationPassed", v.message()));
        }
        Verdict::Inconclusive { .. } => {
            st.verification.inconclusive = st.verification.inconclusive.saturating_add(1);
            events.push((true, "VerificationInconclusive", v.message()));
            if st.verification.inconclusive >= s.expire_after && st.verification.verified {
                st.verification.verified = false;
                reason = "Expired";
                message = format!(
                    "{} verification periods in a row were inconclusive (last: {}): not verified until a run passes",
                    st.verification.inconclusive,
                    v.message()
                );
                events.push((true, "VerificationExpired", message.clone()));
            } else if !st.verification.verified {
                // keep the reason a node lost its verification for
                if let Some(c) = st.conditions.iter().find(|c| c.type_ == "Verified")
                    && c.reason == "Expired"
                {
                    reason = "Expired";
                    message = c.message.clone();
                }
            }
        }
        Verdict::WrongResult { .. } | Verdict::TooSlow { .. } => {
            st.verification.failed = st.verification.failed.saturating_add(1);
            st.verification.verified = false;
            st.verification.inconclusive = 0;
            st.phase = GpuNodePhase::Slashed;
            events.push((true, "VerificationFailed", v.message()));
        }
    }
    set_condition(
        &mut st.conditions,
        "Verified",
        st.verification.verified,
        reason,
        &message,
        generation,
        now,
    );
    cheating
}

struct PhaseReasonMsg;
impl PhaseReasonMsg {
    const SLASHED: &'static str = "caught cheating: stake slashed, no rewards until an admin sets solgrid.dev/clear-slash=true";
}

/// Records the slash of `incident` (state `Planned`) in every slashable position's
/// status; positions that already have it are left alone.
pub async fn plan_slashes(
    ctx: &Context,
    positions: &[Arc<StakePosition>],
    incident: &str,
    incident_ms: u64,
    now: u64,
) -> Result<usize> {
    let mut planned = 0;
    for p in positions {
        let Some(st) = p.status.as_ref() else {
            continue;
        };
        let Some(uid) = p.uid() else { continue };
        let key = stake_machine::slash_key(&uid, incident);
        if st.operations.iter().any(|r| r.key == key) {
            continue;
        }
        if !stake_machine::slashable(
            st.phase,
            st.locked,
            st.active_since.as_ref().map(time_ms),
            incident_ms,
            &st.operations,
        ) {
            continue;
        }
        let Some(ns) = p.namespace() else { continue };
        let mut new = st.clone();
        new.operations.push(LedgerRecord {
            key,
            purpose: stake_machine::SLASH.into(),
            state: SettlementState::Planned,
            ..Default::default()
        });
        new.observed_generation = p.metadata.generation;
        set_condition(
            &mut new.conditions,
            "SlashPending",
            true,
            "NodeCaughtCheating",
            "the node this stake backs failed its proof-of-work verification",
            p.metadata.generation,
            now,
        );
        let api: Api<StakePosition> = Api::namespaced(ctx.client.clone(), &ns);
        let body = crate::stake::store::status_apply(p, &new, true);
        let pp = PatchParams::apply(&ctx.config.field_manager).force();
        api.patch_status(&p.name_any(), &pp, &Patch::Apply(body))
            .await?;
        planned += 1;
    }
    Ok(planned)
}
