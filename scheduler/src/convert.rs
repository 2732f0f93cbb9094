//! Conversions from the cluster's objects to the market's matching inputs.
//!
//! - [`GpuNode`] → [`NodeSnapshot`] (built once per watch event, never per request);
//! - [`Node`] → [`NodeCondition`] (Ready, cordoned);
//! - [`ComputeJob`] → [`JobView`] (the job's [`JobRequirements`] at its locked price);
//! - a pod → the key of its ComputeJob (owner reference, else label `solgrid.dev/job`).

use k8s_openapi::api::core::v1::{Node, Pod};
use solgrid_crds::{ComputeJob, ComputeJobPhase, GpuHealth, GpuNode, LABEL_JOB, RegionPolicy};
use solgrid_market::Token;
use solgrid_market::gpu::{GpuModel, GpuVendor, ModelSet};
use solgrid_market::matching::{GeoPoint, GpuGroup, JobRequirements, NodeSnapshot};

/// The market configuration (the one [`solgrid_market::MarketConfig`]); the
/// extender reads its matching weights and thresholds, and the token rates that
/// turn a locked price into micro-USD.
pub use solgrid_market::MarketConfig;

/// What the Kubernetes Node says about scheduling onto it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCondition {
    /// `Ready=True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub cordoned: bool,
}

/// The Node's Ready condition and cordon.
pub fn node_condition(node: &Node) -> NodeCondition {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    NodeCondition { ready, cordoned }
}

/// The Kubernetes Node name a GpuNode stands for (`spec.nodeName`, else its own name).
pub fn gpunode_node_name(gn: &GpuNode) -> String {
    if gn.spec.node_name.is_empty() {
        gn.metadata.name.clone().unwrap_or_default()
    } else {
        gn.spec.node_name.clone()
    }
}

/// Builds the matching snapshot of a GpuNode.
///
/// GPUs are grouped by model (a GPU whose model the market does not know is left
/// out); a group's VRAM is its smallest GPU's. `status.allocatedGpus` is per node,
/// not per group, so a group's free count is `min(its healthy GPUs, node's healthy −
/// allocated)` (exact for the usual one-model node; kube-scheduler's own resource
/// fit still checks the extended-resource count).
pub fn node_snapshot(gn: &GpuNode) -> NodeSnapshot {
    let st = gn.status.clone().unwrap_or_default();
    let mut gpus: Vec<GpuGroup> = Vec::new();
    let mut healthy_all = 0u32;
    for d in &st.gpus {
        let Some(model) = GpuModel::parse(&d.model) else {
            continue;
        };
        if model.vendor() != GpuVendor::from(d.vendor) {
            continue;
        }
        let healthy = u32::from(d.health == GpuHealth::Healthy);
        healthy_all += healthy;
        match gpus.iter_mut().find(|g| g.model == model) {
            Some(g) => {
                g.total += 1;
                g.healthy += healthy;
                g.vram_mib = g.vram_mib.min(d.vram_mib);
            }
            None => gpus.push(GpuGroup {
                model,
                vram_mib: d.vram_mib,
                total: 1,
                healthy,
                healthy_free: 0,
            }),
        }
    }
    let node_free = healthy_all.saturating_sub(st.allocated_gpus);
    for g in &mut gpus {
        g.healthy_free = g.healthy.min(node_free);
    }
    let first_seen_ms = st
        .first_seen
        .as_ref()
        .or(gn.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_millisecond().max(0) as u64)
        .unwrap_or(0);
    let loc = &gn.spec.location;
    NodeSnapshot {
        name: gpunode_node_name(gn),
        gpus,
        phase: st.phase,
        draining: gn.spec.draining,
        stake: st.stake_total,
        min_stake: st.minimum_stake,
        reputation: st.reputation.score.min(1000),
        floor_micro_usd: gn.spec.floor_micro_usd_per_gpu_hour,
        region: loc.region.clone(),
        country: loc.country.clone(),
        coords: loc.coordinates.as_ref().map(|c| GeoPoint {
            lat: c.latitude,
            lon: c.longitude,
        }),
        first_seen_ms,
    }
}

/// What the extender does with a ComputeJob's pods.
#[derive(Clone, Debug, PartialEq)]
pub enum JobView {
    /// Match the pods against nodes with these requirements.
    Match(Box<JobRequirements>),
    /// The job cannot be placed at all (finished, cancelled, no usable model list):
    /// every node fails, unresolvably, with this reason.
    Refuse(String),
}

/// Converts a ComputeJob into what its pods need.
///
/// The price is the locked quote (`status.quote.pricePerGpuHour`, base units of the
/// quote's token) converted to micro-USD at the configured token rate (rounded
/// down, so a node whose floor equals the quoted price still fits); before a quote
/// is locked the job's cap (`spec.maxPricePerGpuHour`) stands in.
pub fn job_view(job: &ComputeJob, cfg: &MarketConfig) -> JobView {
    let phase = job.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase.is_finished() {
        return JobView::Refuse(format!("ComputeJob is {phase:?}; it places no more pods"));
    }
    if job.spec.cancel && phase != ComputeJobPhase::Running {
        return JobView::Refuse("ComputeJob is cancelled".into());
    }
    let spec = &job.spec;
    let mut models = ModelSet::EMPTY;
    let mut unknown = Vec::new();
    for m in &spec.gpus.models {
        match GpuModel::parse(m) {
            Some(model) if model.vendor() == GpuVendor::from(spec.gpus.vendor) => {
                models = models.with(model)
            }
            Some(model) => unknown.push(format!("{m} (a {} GPU)", model.vendor())),
            None => unknown.push(m.clone()),
        }
    }
    if !spec.gpus.models.is_empty() && models.is_empty() {
        return JobView::Refuse(format!(
            "none of the ComputeJob's GPU models is a known {} model: {}",
            spec.gpus.vendor,
            unknown.join(", ")
        ));
    }
    let (amount, token) = match job.status.as_ref().and_then(|s| s.quote.as_ref()) {
        Some(q) => (q.price_per_gpu_hour, q.token),
        None => (spec.max_price_per_gpu_hour, spec.payment_token),
    };
    let token = Token::from(token);
    // An unconvertible price (zero rate, overflow) checks no floor rather than
    // refusing every node; the operator's quote already respected floors.
    let price_micro_usd = cfg
        .pricing
        .rate(token)
        .to_micro_usd(amount)
        .unwrap_or(u64::MAX);
    JobView::Match(Box::new(JobRequirements {
        vendor: Some(spec.gpus.vendor.into()),
        models,
        min_vram_mib: spec.gpus.min_vram_mib,
        gpus_per_worker: spec.gpus.count.max(1),
        price_micro_usd,
        min_reputation: spec.min_reputation.min(1000),
        preferred_regions: spec.preferred_regions.clone(),
        strict_regions: spec.region_policy == RegionPolicy::Require,
        location: spec.origin.as_ref().map(|c| GeoPoint {
            lat: c.latitude,
            lon: c.longitude,
        }),
        preference: spec.preference,
    }))
}

/// The ComputeJob a pod belongs to: `(namespace, name, uid if known)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

/// Finds the pod's ComputeJob: an owner reference of kind `ComputeJob` in the
/// `solgrid.dev` group, else the label `solgrid.dev/job` (same namespace). `None`:
/// the pod is not solgrid's (pass-through).
pub fn pod_job(pod: &Pod) -> Option<JobRef> {
    let md = &pod.metadata;
    let namespace = md.namespace.clone().unwrap_or_else(|| "default".into());
    if let Some(owner) = md.owner_references.as_ref().and_then(|os| {
        os.iter().find(|o| {
            o.kind == "ComputeJob"
                && (o.api_version == "solgrid.dev" || o.api_version.starts_with("solgrid.dev/"))
        })
    }) {
        return Some(JobRef {
            namespace,
            name: owner.name.clone(),
            uid: Some(owner.uid.clone()).filter(|u| !u.is_empty()),
        });
    }
    let name = md.labels.as_ref()?.get(LABEL_JOB)?;
    if name.is_empty() {
        return None;
    }
    Some(JobRef {
        namespace,
        name: name.clone(),
        uid: None,
    })
}
