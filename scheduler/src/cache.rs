//! The node and job cache the request path reads.
//!
//! Modelled on linkerd2's policy controller: watches feed indexes, the request
//! path only ever reads a prebuilt, immutable [`Index`] behind an `Arc` (swapped
//! whole when the watches change something). A request takes the read lock just
//! long enough to clone the `Arc`; it never waits for a rebuild, and never calls
//! the API server.

use crate::convert::{self, JobView, MarketConfig, NodeCondition};
use k8s_openapi::api::core::v1::Node;
use rustc_hash::FxHashMap;
use solgrid_crds::{ComputeJob, GpuNode};
use solgrid_market::matching::NodeSnapshot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// What the cache knows of one Kubernetes Node name.
#[derive(Clone, Debug, Default)]
pub struct NodeEntry {
    /// From the GpuNode whose `spec.nodeName` is this node.
    pub snapshot: Option<Arc<NodeSnapshot>>,
    /// From the Node (absent in `--snapshot` mode unless the file has Nodes).
    pub condition: Option<NodeCondition>,
    /// This node's cell in every [`Memo`] of the index.
    pub slot: u32,
}

/// Verdicts of one job over the nodes of one [`Index`], filled lazily as nodes are
/// asked about: the pods of a gang, and a pod kube-scheduler retries, reuse them
/// until the index is replaced (a watch event) or the memo is older than
/// [`MEMO_TTL_MS`] (verdicts depend on the time: a node's 12 h minimum age).
#[derive(Debug)]
pub struct Memo {
    pub job: Arc<JobView>,
    pub made_ms: u64,
    /// Per slot: 0 unknown; 1..=11 passed with extender score 0..=10; 64 + reason
    /// index: failed.
    pub cells: Box<[std::sync::atomic::AtomicU8]>,
}

/// How long a [`Memo`] is trusted, ms.
pub const MEMO_TTL_MS: u64 = 1_000;
/// At most this many jobs are memoized per index (others are evaluated each time).
pub const MEMO_MAX_JOBS: usize = 4_096;

/// A cached ComputeJob.
#[derive(Clone, Debug)]
pub struct JobEntry {
    pub uid: Option<String>,
    pub view: Arc<JobView>,
}

/// An immutable snapshot of everything the extender decides on.
#[derive(Debug, Default)]
pub struct Index {
    /// Keyed by Kubernetes Node name.
    pub nodes: FxHashMap<String, NodeEntry>,
    /// Keyed by `namespace/name`.
    pub jobs: FxHashMap<String, JobEntry>,
    pub gpunode_count: usize,
    pub node_count: usize,
    /// Per-job verdict memos (job key → memo); dropped with the index.
    pub memo: std::sync::Mutex<FxHashMap<String, Arc<Memo>>>,
}

/// `namespace/name`, the key of [`Index::jobs`].
pub fn job_key(namespace: &str, name: &str) -> String {
    let mut k = String::with_capacity(namespace.len() + name.len() + 1);
    k.push_str(namespace);
    k.push('/');
    k.push_str(name);
    k
}

impl Index {
    /// Builds an index from already-converted parts.
    pub fn from_parts(
        snapshots: impl IntoIterator<Item = Arc<NodeSnapshot>>,
        conditions: impl IntoIterator<Item = (String, NodeCondition)>,
        jobs: impl IntoIterator<Item = (String, JobEntry)>,
    ) -> Index {
        let mut nodes: FxHashMap<String, NodeEntry> = FxHashMap::default();
        let mut gpunode_count = 0;
        for s in snapshots {
            gpunode_count += 1;
            let name = s.name.clone();
            nodes.entry(name).or_default().snapshot = Some(s);
        }
        let mut node_count = 0;
        for (name, c) in conditions {
            node_count += 1;
            nodes.entry(name).or_default().condition = Some(c);
        }
        for (i, e) in nodes.values_mut().enumerate() {
            e.slot = i as u32;
        }
        Index {
            nodes,
            jobs: jobs.into_iter().collect(),
            gpunode_count,
            node_count,
            memo: Default::default(),
        }
    }

    /// The memo of `job` (keyed `key`) at `now_ms`: the current one, or a fresh one
    /// when there is none, it is stale, or the job changed. `None` past
    /// [`MEMO_MAX_JOBS`].
    pub fn memo(&self, key: &str, job: &Arc<JobView>, now_ms: u64) -> Option<Arc<Memo>> {
        let mut m = match self.memo.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(e) = m.get(key)
            && Arc::ptr_eq(&e.job, job)
            && now_ms >= e.made_ms
            && now_ms - e.made_ms < MEMO_TTL_MS
        {
            return Some(Arc::clone(e));
        }
        if m.len() >= MEMO_MAX_JOBS && !m.contains_key(key) {
            m.retain(|_, e| now_ms >= e.made_ms && now_ms - e.made_ms < MEMO_TTL_MS);
            if m.len() >= MEMO_MAX_JOBS {
                return None;
            }
        }
        let fresh = Arc::new(Memo {
            job: Arc::clone(job),
            made_ms: now_ms,
            cells: (0..self.nodes.len())
                .map(|_| std::sync::atomic::AtomicU8::new(0))
                .collect(),
        });
        m.insert(key.to_string(), Arc::clone(&fresh));
        Some(fresh)
    }

    /// Builds an index from the objects themselves.
    pub fn build<'a>(
        gpunodes: impl IntoIterator<Item = &'a GpuNode>,
        nodes: impl IntoIterator<Item = &'a Node>,
        jobs: impl IntoIterator<Item = &'a ComputeJob>,
        cfg: &MarketConfig,
    ) -> Index {
        Index::from_parts(
            gpunodes
                .into_iter()
                .map(|g| Arc::new(convert::node_snapshot(g))),
            nodes
                .into_iter()
                .filter_map(|n| Some((n.metadata.name.clone()?, convert::node_condition(n)))),
            jobs.into_iter().filter_map(|j| job_entry(j, cfg)),
        )
    }
}

/// The index entry of a ComputeJob (`None` without name).
pub fn job_entry(j: &ComputeJob, cfg: &MarketConfig) -> Option<(String, JobEntry)> {
    let name = j.metadata.name.as_deref()?;
    let ns = j.metadata.namespace.as_deref().unwrap_or("default");
    Some((
        job_key(ns, name),
        JobEntry {
            uid: j.metadata.uid.clone(),
            view: Arc::new(convert::job_view(j, cfg)),
        },
    ))
}

/// The shared, swappable cache.
#[derive(Debug, Default)]
pub struct Cache {
    index: RwLock<Arc<Index>>,
    ready: AtomicBool,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// A cache serving `index`, ready at once (snapshot mode, tests).
    pub fn with_index(index: Index) -> Cache {
        let c = Cache::default();
        c.publish(index);
        c.set_ready();
        c
    }

    /// The current index (cheap: an `Arc` clone).
    pub fn load(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Replaces the index.
    pub fn publish(&self, index: Index) {
        let index = Arc::new(index);
        match self.index.write() {
            Ok(mut g) => *g = index,
            Err(p) => *p.into_inner() = index,
        }
    }

    /// Whether every watch has listed its objects once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}
