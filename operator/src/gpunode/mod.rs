//! The GpuNode controller: keeps each GpuNode in step with its Node, its heartbeat
//! Lease, its stake and its proof-of-work verifications.
//!
//! Entry point: [`run`]`(ctx)` — `main` spawns it next to the other controllers
//! (under the leader lease). It runs reflectors for Nodes, heartbeat Leases
//! ([`heartbeat`]) and StakePositions (or uses `ctx.caches.stakepositions`), creates
//! missing GpuNodes for Nodes with GPU capacity ([`gpunode_for_node`]), and
//! reconciles each GpuNode at least every 30 s.
//!
//! Each reconcile ([`reconcile`]) observes, plans, then applies:
//! 1. observe: the Node, the Lease and the stakes from the caches (no API call),
//!    and the running verification pod ([`driver::check_verification`]: a wrong
//!    or far-too-slow result is cheating);
//! 2. plan ([`plan::plan`], pure): the verdict, the phase ([`machine::next_phase`]),
//!    `onlineSince` (reset by a restart), reputation, stake total and minimum,
//!    reward eligibility ([`eligibility`]), whether the period's verification
//!    starts ([`driver`]), conditions, Events, annotations; while `Slashed`, the
//!    incident in the node's own `status.slashIncident` ([`slashing`]);
//! 3. apply: creates the verification pod, applies its own status fields by
//!    server-side apply (field manager `solgrid-operator`; the device plugin owns
//!    `gpus`, `gpuCount`, `model`, `lastHeartbeat`; the job controller `jobs`,
//!    `allocatedGpus`, compute earnings; the rewards loop `earnings.idleRewardsIo`),
//!    with `observedGeneration`, conditions and an Event on every phase change.
//!
//! It writes no other kind's status: the StakePosition controller watches GpuNodes
//! and slashes each position locked before the incident exactly once
//! ([`crate::stake::slash`]).
//!
//! Annotations: `solgrid.dev/clear-slash=true` (set by an admin) clears a slash:
//! the node verifies again; `solgrid.dev/uptime` (written by the operator) keeps the
//! uptime track ([`solgrid_market::reputation::UptimeTrack`]).

pub mod driver;
pub mod eligibility;
pub mod heartbeat;
pub mod machine;
pub mod plan;
pub mod slashing;
pub mod verify;

use crate::toolkit::{event, now_ms, publish};
use crate::{Context, Error, Result};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use solgrid_crds::{GpuNode, GpuNodeSpec, GpuNodeStatus, Location, StakePosition};
use std::sync::Arc;
use std::time::Duration;
use verify::VerifySettings;

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
    let results = Controller::new(gpunodes, watcher::Config::default().any_semantic())
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
        .run(reconcile, error_policy, gctx);
    crate::toolkit::drive(CONTROLLER, results).await;
}

/// Backoff per object; a malformed object never wedges the controller.
pub fn error_policy(obj: Arc<GpuNode>, err: &Error, g: Arc<GpuNodeCtx>) -> Action {
    tracing::warn!(gpunode = %obj.name_any(), error = %err, "reconcile failed");
    crate::toolkit::requeue_failed(&g.ctx, CONTROLLER, &format!("gn:{}", obj.name_any()), err)
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
    if let Some(i) = &st.slash_incident {
        status["slashIncident"] = serde_json::to_value(i).unwrap_or_default();
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

/// Reconciles one GpuNode (module docs): observe → [`plan::plan`] → apply.
pub async fn reconcile(obj: Arc<GpuNode>, g: Arc<GpuNodeCtx>) -> Result<Action> {
    let ctx = &g.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let name = obj.name_any();
    let now = now_ms(ctx);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &g.settings.verify.namespace);
    let observed = observe(&g, &obj, &pods, now).await;
    let plan = plan::plan(&obj, &observed, &g.settings, &ctx.config.market, now)?;
    let next = apply(&g, &obj, &pods, plan, now).await?;
    ctx.reset_failures(&format!("gn:{name}"));
    Ok(Action::requeue(next))
}

/// Reads the Node, its heartbeat Lease and the stakes from the caches, and looks at
/// the running verification pod (judging its report once it is in).
async fn observe(g: &GpuNodeCtx, obj: &GpuNode, pods: &Api<Pod>, now: u64) -> plan::Observed {
    let s = &g.settings;
    let node_name = &obj.spec.node_name;
    let node = g.nodes.get(&ObjectRef::new(node_name));
    let lease = g.leases.get(
        &ObjectRef::new(&heartbeat::lease_name(&s.lease_prefix, node_name))
            .within(&s.lease_namespace),
    );
    let hb = heartbeat::evaluate(
        lease.as_deref(),
        node.as_deref(),
        now,
        s.heartbeat_timeout_ms,
        40,
    );
    let name = obj.name_any();
    let stakes = g
        .stakes
        .state()
        .into_iter()
        .filter(|p| p.spec.node_name == name)
        .filter_map(|p| p.status.clone())
        .collect();
    let st = obj.status.clone().unwrap_or_default();
    let run = if driver::running(&st) {
        Some(driver::check_verification(g, pods, &name, node_name, &st, now).await)
    } else {
        None
    };
    plan::Observed {
        node_exists: node.is_some(),
        cordoned: node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        hb,
        stakes,
        run,
    }
}

/// Carries out a plan: starts the verification pod, applies the status and the
/// annotations, deletes a judged pod, publishes the Events. Returns when to look again.
async fn apply(
    g: &GpuNodeCtx,
    obj: &GpuNode,
    pods: &Api<Pod>,
    mut plan: plan::Plan,
    now: u64,
) -> Result<Duration> {
    let ctx = &g.ctx;
    let s = &g.settings;
    let name = obj.name_any();
    let gpunodes: Api<GpuNode> = Api::all(ctx.client.clone());
    for label in &plan.verdicts {
        ctx.metrics.verifications.with_label_values(&[label]).inc();
    }
    if let Some(period) = plan.start {
        let start = driver::Start {
            period,
            seed: fresh_seed(g, g.challenge_seed),
        };
        let st = &plan.status;
        let node_name = &obj.spec.node_name;
        let mut started = Vec::new();
        match driver::create_pod(pods, &s.verify, &name, node_name, st, &start, now).await {
            Ok(()) => driver::record_started(&mut plan.status, &name, period, now, &mut started),
            Err(note) => started.push((true, "VerificationNotStarted", note)),
        }
        // the run's Event comes before the phase change's
        let at = (plan.events.iter())
            .position(|e| e.1 == "PhaseChanged")
            .unwrap_or(plan.events.len());
        plan.events.splice(at..at, started);
    }
    let old = obj.status.clone().unwrap_or_default();
    let mut updated = obj.clone();
    if status_apply(obj, &plan.status) != status_apply(obj, &old) {
        let pp = PatchParams::apply(&ctx.config.field_manager).force();
        updated = gpunodes
            .patch_status(&name, &pp, &Patch::Apply(status_apply(obj, &plan.status)))
            .await?;
    }
    if !plan.annotations.is_empty() {
        let patch = serde_json::json!({"metadata": {"annotations": plan.annotations}});
        gpunodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    if let Some(p) = &plan.delete_pod {
        match pods.delete(p, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(pod = %p, error = %e, "deleting a verification pod failed"),
        }
    }
    for (warning, reason, note) in std::mem::take(&mut plan.events) {
        publish(ctx, &updated, event(warning, reason, "Reconcile", note)).await;
    }
    if let Some(inc) = &plan.incident {
        tracing::warn!(gpunode = %name, incident = %inc.id, "node slashed: incident recorded for the stake controller");
    }
    Ok(plan::requeue(&plan.status, plan.judge_at, now, s.resync))
}
