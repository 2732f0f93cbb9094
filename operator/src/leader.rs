//! Leader election on a `coordination.k8s.io/v1` Lease (through `kube-lease-manager`,
//! which takes and renews the lock with server-side apply, so two replicas can never
//! both hold it).
//!
//! [`run_as_leader`] runs the controllers only while this replica holds the lease:
//! when the lease is lost (or the lease task dies) the controllers' cancellation
//! token fires and their futures are dropped before anything else runs; when it is
//! won again they start afresh (a fresh watch, a fresh cache).

use crate::config::OperatorConfig;
use crate::metrics::Metrics;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Shared readiness and leadership flags (read by `/readyz` and `/metrics`).
#[derive(Debug, Default)]
pub struct State {
    /// This replica holds the lease (or election is disabled).
    pub leader: AtomicBool,
    /// Start-up finished (ledger opened, client built).
    pub ready: AtomicBool,
}

impl State {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Runs `controllers(token)` while this replica leads; stops it (token cancelled,
/// future dropped) as soon as the lease is lost. Returns when `shutdown` fires.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    config: Arc<OperatorConfig>,
    metrics: Arc<Metrics>,
    state: Arc<State>,
    shutdown: CancellationToken,
    controllers: F,
) -> anyhow::Result<()>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    if !config.leader_election {
        info!("leader election disabled: running the controllers");
        state.leader.store(true, Ordering::Release);
        metrics.is_leader.set(1);
        let token = shutdown.child_token();
        tokio::select! {
            _ = controllers(token.clone()) => {}
            _ = shutdown.cancelled() => token.cancel(),
        }
        return Ok(());
    }
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(&config.identity)
        .with_duration(config.lease_duration.as_secs())
        .with_grace(config.lease_grace.as_secs())
        .with_field_manager("solgrid-operator-leader")
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = %config.lease_name, namespace = %config.lease_namespace, identity = %config.identity, "waiting for the leader lease");
    loop {
        // Wait to lead.
        while !*leading.borrow_and_update() {
            tokio::select! {
                r = leading.changed() => if r.is_err() {
                    warn!("the lease task ended");
                    return Err(anyhow::anyhow!("leader election task ended"));
                },
                _ = shutdown.cancelled() => {
                    drop(leading);
                    let _ = task.await;
                    return Ok(());
                }
            }
        }
        info!("acquired the leader lease: starting the controllers");
        state.leader.store(true, Ordering::Release);
        metrics.is_leader.set(1);
        let token = shutdown.child_token();
        let run = controllers(token.clone());
        tokio::pin!(run);
        let lost = loop {
            tokio::select! {
                _ = &mut run => break false,
                r = leading.changed() => {
                    if r.is_err() || !*leading.borrow_and_update() {
                        break true;
                    }
                }
                _ = shutdown.cancelled() => break false,
            }
        };
        token.cancel();
        state.leader.store(false, Ordering::Release);
        metrics.is_leader.set(0);
        if lost {
            warn!("lost the leader lease: controllers stopped");
            continue;
        }
        // Shut down: release the lease for the next replica.
        drop(leading);
        let _ = task.await;
        return Ok(());
    }
}
