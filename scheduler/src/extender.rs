//! The extender's decisions: `filter` and `prioritize` over the cached index.
//!
//! The market library decides ([`solgrid_market::matching::filter`] and
//! [`solgrid_market::matching::score`]); this module finds the pod's job, looks up
//! each candidate node, adds what only the cluster knows (the Node is Ready and
//! not cordoned), sorts rejections into resolvable and unresolvable ones, and
//! words them for `kubectl describe pod`.
//!
//! Reasons are worded per *job*, never per node (no node's own numbers in them):
//! kube-scheduler folds identical reasons into one line (`0/5000 nodes are
//! available: 4000 solgrid: node GPU model is not among ...`), so a per-node
//! wording would print thousands of lines.

use crate::cache::{Index, Memo, job_key};
use crate::convert::{self, JobView};
use crate::metrics::{Metrics, Verb};
use crate::wire::{ExtenderArgs, FilterResult, HostPriority, NodeList};
use solgrid_market::matching::{self, JobRequirements, MatchConfig, NodeSnapshot};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use crate::reason::Reason;

const N_REASONS: usize = Reason::ALL.len();

/// What a request's pod is to the extender.
#[derive(Debug)]
pub enum JobCtx {
    /// Not a solgrid pod: every node passes, all scores equal.
    PassThrough,
    /// Every node fails with one reason.
    AllFail { reason: Reason, message: Arc<str> },
    /// Match against these requirements (`key`: `namespace/name`).
    Match { key: String, view: Arc<JobView> },
}

/// One node's verdict: it fits (on this GPU group of this snapshot), or why not.
pub type Verdict<'i> = Result<(matching::Fit, &'i NodeSnapshot), Reason>;

/// The decision engine (cheap to clone).
#[derive(Clone, Debug)]
pub struct Extender {
    pub cfg: Arc<MatchConfig>,
    pub metrics: Option<Metrics>,
}

/// Wall-clock now, ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Extender {
    pub fn new(cfg: MatchConfig, metrics: Option<Metrics>) -> Extender {
        Extender {
            cfg: Arc::new(cfg),
            metrics,
        }
    }

    /// Finds the pod's job in the index.
    pub fn job_ctx(&self, index: &Index, args: &ExtenderArgs<'_>) -> JobCtx {
        let Some(jr) = args.pod.as_ref().and_then(convert::pod_job) else {
            return JobCtx::PassThrough;
        };
        let key = job_key(&jr.namespace, &jr.name);
        match index.jobs.get(&key) {
            Some(e) if jr.uid.is_none() || e.uid.is_none() || jr.uid == e.uid => {
                match e.view.as_ref() {
                    JobView::Match(_) => JobCtx::Match {
                        key,
                        view: Arc::clone(&e.view),
                    },
                    JobView::Refuse(msg) => JobCtx::AllFail {
                        reason: Reason::JobRefused,
                        message: format!("solgrid: ComputeJob {key}: {msg}").into(),
                    },
                }
            }
            _ => JobCtx::AllFail {
                reason: Reason::JobNotCached,
                message: format!(
                    "solgrid: ComputeJob {key} is not in the scheduler's cache yet (retrying)"
                )
                .into(),
            },
        }
    }

    /// One node's verdict for a job.
    #[inline]
    pub fn verdict<'i>(
        &self,
        index: &'i Index,
        job: &JobRequirements,
        name: &str,
        now_ms: u64,
    ) -> Verdict<'i> {
        let Some(entry) = index.nodes.get(name) else {
            return Err(Reason::UnknownNode);
        };
        if let Some(c) = entry.condition {
            if !c.ready {
                return Err(Reason::NotReady);
            }
            if c.cordoned {
                return Err(Reason::Cordoned);
            }
        }
        let Some(snap) = entry.snapshot.as_deref() else {
            return Err(Reason::NotGpuNode);
        };
        match matching::filter(snap, job, &self.cfg, now_ms) {
            Ok(fit) => Ok((fit, snap)),
            Err(r) => Err(Reason::of_rejection(&r)),
        }
    }

    /// One node's outcome for a job, through the job's memo when there is one:
    /// `Ok(extender score 0–10)` or why not.
    #[inline]
    pub fn decide(
        &self,
        index: &Index,
        memo: Option<&Memo>,
        job: &JobRequirements,
        name: &str,
        now_ms: u64,
    ) -> Result<i64, Reason> {
        let Some(entry) = index.nodes.get(name) else {
            return Err(Reason::UnknownNode);
        };
        let cell = memo.and_then(|m| m.cells.get(entry.slot as usize));
        if let Some(c) = cell {
            match c.load(Ordering::Relaxed) {
                0 => {}
                v @ 1..=11 => return Ok(v as i64 - 1),
                v => {
                    if let Some(r) = Reason::ALL.get((v - 64) as usize) {
                        return Err(*r);
                    }
                }
            }
        }
        let out = self.verdict(index, job, name, now_ms).map(|(fit, snap)| {
            matching::extender_score(matching::score(snap, job, &self.cfg, fit))
        });
        if let Some(c) = cell {
            let v = match out {
                Ok(s) => s.clamp(0, 10) as u8 + 1,
                Err(r) => 64 + r as u8,
            };
            c.store(v, Ordering::Relaxed);
        }
        out
    }

    /// `filter`. Answers with `NodeNames` when asked with names, with a filtered
    /// `Nodes` list when asked with a node list.
    pub fn filter<'a>(
        &self,
        index: &Index,
        mut args: ExtenderArgs<'a>,
        now_ms: u64,
    ) -> FilterResult<'a> {
        let ctx = self.job_ctx(index, &args);
        let names: Vec<Cow<'a, str>> = match args.node_names.take() {
            Some(n) => n,
            None => args
                .nodes
                .as_ref()
                .map(|l| {
                    l.items
                        .iter()
                        .map(|n| Cow::Owned(n.metadata.name.clone().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let by_list = args.nodes.is_some();
        let mut passed: Vec<bool> = Vec::with_capacity(names.len());
        let mut failed = Vec::new();
        let mut failed_unres = Vec::new();
        let mut counts = [0u32; N_REASONS];
        let mut n_passed = 0u64;
        match &ctx {
            JobCtx::PassThrough => {
                if let Some(m) = &self.metrics {
                    m.passthrough(Verb::Filter);
                }
                passed.resize(names.len(), true);
            }
            JobCtx::AllFail { reason, message } => {
                counts[*reason as usize] += names.len() as u32;
                passed.resize(names.len(), false);
                let target = if reason.unresolvable() {
                    &mut failed_unres
                } else {
                    &mut failed
                };
                for n in &names {
                    target.push((n.clone(), Arc::clone(message)));
                }
            }
            JobCtx::Match { key, view } => {
                let JobView::Match(job) = view.as_ref() else {
                    unreachable_refuse();
                    return FilterResult::default();
                };
                let memo = index.memo(key, view, now_ms);
                let mut messages: [Option<Arc<str>>; N_REASONS] = Default::default();
                for n in &names {
                    match self.decide(index, memo.as_deref(), job, n, now_ms) {
                        Ok(_) => {
                            n_passed += 1;
                            passed.push(true);
                        }
                        Err(r) => {
                            passed.push(false);
                            counts[r as usize] += 1;
                            let msg = messages[r as usize]
                                .get_or_insert_with(|| r.message(Some(job), &self.cfg).into());
                            let target = if r.unresolvable() {
                                &mut failed_unres
                            } else {
                                &mut failed
                            };
                            target.push((n.clone(), Arc::clone(msg)));
                        }
                    }
                }
            }
        }
        if let Some(m) = &self.metrics
            && !matches!(ctx, JobCtx::PassThrough)
        {
            m.add_decisions(n_passed, &counts);
        }
        let mut out = FilterResult {
            failed,
            failed_unresolvable: failed_unres,
            ..FilterResult::default()
        };
        // A job not (yet) in the cache is transient: answered as an error, which
        // kube-scheduler retries after its backoff (1 s, 2 s, ... 10 s). Turned away
        // as "no fit" the pod would wait for an unrelated cluster event, or 5 minutes.
        if let JobCtx::AllFail {
            reason: Reason::JobNotCached,
            message,
        } = &ctx
        {
            out.error = message.to_string();
        }
        if by_list {
            let list = args.nodes.take().unwrap_or_default();
            let items = list
                .items
                .into_iter()
                .zip(passed.iter())
                .filter_map(|(n, ok)| ok.then_some(n))
                .collect();
            out.nodes = Some(NodeList {
                metadata: list.metadata,
                items,
            });
        } else {
            out.node_names = Some(
                names
                    .into_iter()
                    .zip(passed.iter())
                    .filter_map(|(n, ok)| ok.then_some(n))
                    .collect(),
            );
        }
        out
    }

    /// `prioritize`: 0–10 per candidate, the market's score for the job's
    /// preference; 0 for a node that would not pass `filter`; all 0 for a pod of no
    /// ComputeJob (equal scores leave kube-scheduler's own ranking alone).
    pub fn prioritize<'x>(
        &self,
        index: &Index,
        args: &'x ExtenderArgs<'_>,
        now_ms: u64,
    ) -> Vec<HostPriority<&'x str>> {
        let names = args.candidate_names();
        let ctx = self.job_ctx(index, args);
        let (job, memo) = match &ctx {
            JobCtx::Match { key, view } => match view.as_ref() {
                JobView::Match(j) => (Some(j.as_ref()), index.memo(key, view, now_ms)),
                JobView::Refuse(_) => (None, None),
            },
            JobCtx::PassThrough => {
                if let Some(m) = &self.metrics {
                    m.passthrough(Verb::Prioritize);
                }
                (None, None)
            }
            JobCtx::AllFail { .. } => (None, None),
        };
        names
            .into_iter()
            .map(|host| {
                let score = match job {
                    Some(j) => self
                        .decide(index, memo.as_deref(), j, host, now_ms)
                        .unwrap_or(0),
                    None => 0,
                };
                HostPriority { host, score }
            })
            .collect()
    }
}

#[cold]
fn unreachable_refuse() {
    tracing::error!("internal: JobCtx::Match holds a refused job");
}
