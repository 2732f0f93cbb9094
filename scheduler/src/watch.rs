//! Cluster mode: kube-runtime reflectors over GpuNodes, Nodes and ComputeJobs feed
//! the [`Cache`]. A rebuild task turns the stores into a fresh [`Index`] after
//! every burst of watch events (coalesced: at most one rebuild per `debounce`),
//! reusing the converted snapshot of every GpuNode whose `resourceVersion` did not
//! change. The cache turns ready once all three watches have listed their objects.

use crate::cache::{self, Cache, Index};
use crate::convert::{self, MarketConfig};
use crate::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use rustc_hash::FxHashMap;
use solgrid_crds::{ComputeJob, GpuNode};
use solgrid_market::matching::NodeSnapshot;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

fn spawn_reflector<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    notify: Arc<Notify>,
    strip: fn(&mut K),
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).to_string();
    tokio::spawn(async move {
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(strip),
        );
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!(kind = %kind, error = %e, "watch error (retrying with backoff)");
            }
            notify.notify_one();
        }
        tracing::error!(kind = %kind, "watch stream ended");
    });
}

fn strip_meta(md: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    md.managed_fields = None;
    md.annotations = None;
}

fn strip_node(n: &mut Node) {
    strip_meta(&mut n.metadata);
    if let Some(st) = n.status.as_mut() {
        st.images = None;
        st.volumes_attached = None;
        st.volumes_in_use = None;
    }
}

fn strip_gpunode(g: &mut GpuNode) {
    strip_meta(&mut g.metadata);
}

fn strip_job(j: &mut ComputeJob) {
    strip_meta(&mut j.metadata);
    if let Some(st) = j.status.as_mut() {
        st.settlements.clear();
        st.usage.clear();
    }
}

/// Runs the watches and the rebuild loop forever.
pub async fn run(
    client: Client,
    cache: Arc<Cache>,
    cfg: Arc<MarketConfig>,
    metrics: Metrics,
    debounce: Duration,
) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    let (gn_store, gn_writer) = reflector::store::<GpuNode>();
    let (node_store, node_writer) = reflector::store::<Node>();
    let (job_store, job_writer) = reflector::store::<ComputeJob>();
    spawn_reflector(
        Api::<GpuNode>::all(client.clone()),
        gn_writer,
        notify.clone(),
        strip_gpunode,
    );
    spawn_reflector(
        Api::<Node>::all(client.clone()),
        node_writer,
        notify.clone(),
        strip_node,
    );
    spawn_reflector(
        Api::<ComputeJob>::all(client.clone()),
        job_writer,
        notify.clone(),
        strip_job,
    );
    tracing::info!("waiting for the GpuNode, Node and ComputeJob watches to list");
    gn_store.wait_until_ready().await?;
    node_store.wait_until_ready().await?;
    job_store.wait_until_ready().await?;
    let mut memo: FxHashMap<String, (String, Arc<NodeSnapshot>)> = FxHashMap::default();
    let mut labels_sent: FxHashMap<String, String> = FxHashMap::default();
    loop {
        let gns = gn_store.state();
        let mut next_memo = FxHashMap::default();
        let snaps: Vec<Arc<NodeSnapshot>> = gns
            .iter()
            .map(|g| {
                let key = g
                    .metadata
                    .uid
                    .clone()
                    .unwrap_or_else(|| convert::gpunode_node_name(g));
                let rv = g.metadata.resource_version.clone().unwrap_or_default();
                let snap = match memo.get(&key) {
                    Some((old_rv, s)) if !rv.is_empty() && *old_rv == rv => Arc::clone(s),
                    _ => Arc::new(convert::node_snapshot(g)),
                };
                next_memo.insert(key, (rv, Arc::clone(&snap)));
                snap
            })
            .collect();
        memo = next_memo;
        let nodes = node_store.state();
        let jobs = job_store.state();
        let index = Index::from_parts(
            snaps,
            nodes
                .iter()
                .filter_map(|n| Some((n.metadata.name.clone()?, convert::node_condition(n)))),
            jobs.iter().filter_map(|j| cache::job_entry(j, &cfg)),
        );
        metrics.set_cache_sizes(index.gpunode_count, index.node_count, index.jobs.len());
        metrics.cache_rebuilds.inc();
        cache.publish(index);
        // now that filters see the new state: tell kube-scheduler which nodes changed
        crate::requeue::sync(&client, &gns, &node_store, &mut labels_sent);
        if !cache.is_ready() {
            cache.set_ready();
            metrics.cache_ready.set(1);
            tracing::info!(
                gpunodes = gns.len(),
                nodes = nodes.len(),
                computejobs = jobs.len(),
                "caches synced; ready"
            );
        }
        notify.notified().await;
        tokio::time::sleep(debounce).await;
    }
}
