//! The labels, annotations and finalizers solgrid puts on objects: one constant
//! each, shared by the operator, the scheduler extender, the device plugin and
//! `kubectl solgrid`.

/// Label on a ComputeJob's worker pods: the job's name (same namespace). The
/// extender finds a pod's job by it when the pod has no owner reference.
pub const LABEL_JOB: &str = "solgrid.dev/job";
/// Label on a worker pod: its worker index.
pub const LABEL_WORKER: &str = "solgrid.dev/worker";
/// Label on a worker pod: the gang attempt it belongs to.
pub const LABEL_ATTEMPT: &str = "solgrid.dev/attempt";
/// Node label the extender keeps equal to its GpuNode's market state (phase,
/// reputation, eligibility; [`crate::market_state`]) as the extender's own cache
/// sees it, so that kube-scheduler retries waiting workers when a node becomes
/// usable (a Node label change is a cluster event it acts on; a GpuNode change is not).
pub const LABEL_MARKET_STATE: &str = "solgrid.dev/market-state";
/// Label on a wallet Secret: the wallet's name.
pub const LABEL_WALLET: &str = "solgrid.dev/wallet";
/// Standard label naming a pod's role (`verifier` for verification pods).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// Prefix of the node labels the device plugin writes about a node's GPUs.
pub const LABEL_PREFIX: &str = "solgrid.dev/";
/// Node label the device plugin sets (`true`) on any node with a GPU.
pub const LABEL_GPU_PRESENT: &str = "solgrid.dev/gpu.present";

/// A node label the device plugin writes per vendor: `solgrid.dev/<vendor>-gpu.<key>`
/// (`count`, `model`, `memory-mib`).
pub fn gpu_label(vendor: &str, key: &str) -> String {
    format!("{LABEL_PREFIX}{vendor}-gpu.{key}")
}

/// GpuNode annotation an admin sets (`true`) to clear a slash.
pub const ANN_CLEAR_SLASH: &str = "solgrid.dev/clear-slash";
/// GpuNode annotation where the operator keeps the node's uptime track
/// (`solgrid_market::reputation::UptimeTrack::encode`).
pub const ANN_UPTIME: &str = "solgrid.dev/uptime";
/// Node annotation: the payout wallet of a GpuNode created for the Node.
pub const ANN_NODE_WALLET: &str = "solgrid.dev/payout-wallet";
/// Node annotation: the region of a GpuNode created for the Node.
pub const ANN_NODE_REGION: &str = "solgrid.dev/region";
/// Node annotation: the country of a GpuNode created for the Node.
pub const ANN_NODE_COUNTRY: &str = "solgrid.dev/country";
/// Verification pod annotation: the GpuNode it verifies.
pub const ANN_GPUNODE: &str = "solgrid.dev/gpunode";
/// Verification pod annotation: the challenge's seed.
pub const ANN_VERIFY_SEED: &str = "solgrid.dev/verify-seed";
/// Verification pod annotation: the challenge's matrix size.
pub const ANN_VERIFY_SIZE: &str = "solgrid.dev/verify-size";
/// Verification pod annotation: the devices' challenges (a JSON list).
pub const ANN_VERIFY_DEVICES: &str = "solgrid.dev/verify-devices";
/// Verification pod annotation: when the operator created it, ms since the epoch.
pub const ANN_VERIFY_CREATED_MS: &str = "solgrid.dev/verify-created-ms";
/// Worker pod annotation: the job's locked price per GPU-hour.
pub const ANN_PRICE_PER_GPU_HOUR: &str = "solgrid.dev/price-per-gpu-hour";
/// Wallet Secret annotation: the wallet's public address.
pub const ANN_WALLET_ADDRESS: &str = "solgrid.dev/wallet-address";

/// Finalizer keeping a deleted ComputeJob until it is settled.
pub const FINALIZER_SETTLEMENT: &str = "solgrid.dev/settlement";
/// Finalizer keeping a StakePosition until its stake is released.
pub const FINALIZER_STAKE: &str = "solgrid.dev/stake-protection";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_labels_carry_the_prefix() {
        assert_eq!(gpu_label("nvidia", "count"), "solgrid.dev/nvidia-gpu.count");
        assert!(LABEL_GPU_PRESENT.starts_with(LABEL_PREFIX));
        for k in [
            LABEL_JOB,
            LABEL_WORKER,
            LABEL_ATTEMPT,
            LABEL_MARKET_STATE,
            ANN_UPTIME,
        ] {
            assert!(k.starts_with(LABEL_PREFIX), "{k}");
        }
    }
}
