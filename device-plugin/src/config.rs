//! Command-line flags (each also settable from the environment).

use crate::backend::HostPaths;
use crate::kubelet::{DEFAULT_PLUGIN_DIR, RunnerConfig};
use crate::nvidia::NvidiaHealthConfig;
use crate::nvidia::health::HealthPolicy;
use crate::plugin::MountSpec;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// A GPU vendor backend to enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VendorArg {
    Nvidia,
    Apple,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// solgrid kubelet device plugin: advertises NVIDIA GPUs (NVML) as
/// `solgrid.dev/nvidia-gpu` and Apple GPUs (asahi DRM) as `solgrid.dev/apple-gpu`.
#[derive(Clone, Debug, Parser)]
#[command(name = "solgrid-device-plugin", version, about)]
pub struct Settings {
    /// Print what the plugin would advertise (resources, devices, health, labels) and exit.
    #[arg(long)]
    pub list: bool,

    /// Print `--list` as JSON.
    #[arg(long, requires = "list")]
    pub json: bool,

    /// The kubelet's device plugin directory (holds kubelet.sock and our sockets).
    #[arg(long, env = "SOLGRID_DEVICE_PLUGIN_DIR", default_value = DEFAULT_PLUGIN_DIR)]
    pub device_plugin_dir: PathBuf,

    /// Vendors to look for.
    #[arg(
        long,
        env = "SOLGRID_VENDORS",
        value_enum,
        value_delimiter = ',',
        default_value = "nvidia,apple"
    )]
    pub vendors: Vec<VendorArg>,

    /// sysfs root.
    #[arg(long, env = "SOLGRID_SYSFS_ROOT", default_value = "/sys")]
    pub sysfs_root: PathBuf,

    /// Where this process sees /dev.
    #[arg(long, env = "SOLGRID_DEV_ROOT", default_value = "/dev")]
    pub dev_root: PathBuf,

    /// Where the host (kubelet, container runtime) sees /dev: host paths of allocated device nodes.
    #[arg(long, env = "SOLGRID_HOST_DEV_ROOT", default_value = "/dev")]
    pub host_dev_root: PathBuf,

    /// Device tree root (Apple chip identification).
    #[arg(
        long,
        env = "SOLGRID_DEVICE_TREE_ROOT",
        default_value = "/proc/device-tree"
    )]
    pub device_tree_root: PathBuf,

    /// procfs root (meminfo: unified memory of Apple GPUs).
    #[arg(long, env = "SOLGRID_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,

    /// NVML library to load (name or path); default `libnvidia-ml.so.1` from the loader path.
    #[arg(long, env = "SOLGRID_NVML_LIBRARY")]
    pub nvml_library: Option<PathBuf>,

    /// Turn NVML health checks off (devices stay Healthy).
    #[arg(long, env = "SOLGRID_DISABLE_HEALTH_CHECKS")]
    pub disable_health_checks: bool,

    /// More XIDs to ignore, besides the application XIDs 13, 31, 43, 45, 68, 109.
    #[arg(long, env = "SOLGRID_IGNORE_XIDS", value_delimiter = ',')]
    pub ignore_xid: Vec<u64>,

    /// Seconds a faulted GPU stays Unhealthy before a recovery probe; 0 = never recover.
    #[arg(long, env = "SOLGRID_HEALTH_RECOVERY_SECONDS", default_value_t = 300)]
    pub health_recovery_seconds: u64,

    /// Milliseconds between health checks without events (NVML wait tick, asahi sysfs poll).
    #[arg(long, env = "SOLGRID_HEALTH_POLL_MS", default_value_t = 500)]
    pub health_poll_ms: u64,

    /// Milliseconds between checks of the socket directory (kubelet restart, socket removal).
    #[arg(long, env = "SOLGRID_SOCKET_POLL_MS", default_value_t = 1000)]
    pub socket_poll_ms: u64,

    /// Extra mount for every allocated container: HOST:CONTAINER[:ro|:rw] (repeatable).
    #[arg(long = "mount", env = "SOLGRID_MOUNTS", value_delimiter = ';')]
    pub mounts: Vec<MountSpec>,

    /// This node's name (downward API `spec.nodeName`); enables inventory publishing and node labels.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Name of the GpuNode to publish to (default: the node name).
    #[arg(long, env = "SOLGRID_GPUNODE_NAME")]
    pub gpunode_name: Option<String>,

    /// Do not publish the inventory to the GpuNode.
    #[arg(long, env = "SOLGRID_NO_INVENTORY")]
    pub no_inventory: bool,

    /// Do not label the Node.
    #[arg(long, env = "SOLGRID_NO_NODE_LABELS")]
    pub no_node_labels: bool,

    /// Seconds between inventory publications (also published on every health change).
    #[arg(long, env = "SOLGRID_INVENTORY_INTERVAL_SECONDS", default_value_t = 30)]
    pub inventory_interval_seconds: u64,

    /// Payout wallet for a GpuNode this plugin creates (when none exists).
    #[arg(long, env = "SOLGRID_GPUNODE_PAYOUT_WALLET")]
    pub gpunode_payout_wallet: Option<String>,

    /// Region for a GpuNode this plugin creates.
    #[arg(long, env = "SOLGRID_GPUNODE_REGION")]
    pub gpunode_region: Option<String>,

    /// ISO country code for a GpuNode this plugin creates.
    #[arg(long, env = "SOLGRID_GPUNODE_COUNTRY")]
    pub gpunode_country: Option<String>,

    /// Address of the /metrics and /healthz HTTP endpoint; empty disables it.
    #[arg(long, env = "SOLGRID_METRICS_ADDR", default_value = "0.0.0.0:9402")]
    pub metrics_addr: String,

    /// Log format.
    #[arg(long, env = "SOLGRID_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Settings {
    pub fn host_paths(&self) -> HostPaths {
        HostPaths {
            sysfs_root: self.sysfs_root.clone(),
            dev_root: self.dev_root.clone(),
            host_dev_root: self.host_dev_root.clone(),
            device_tree_root: self.device_tree_root.clone(),
            proc_root: self.proc_root.clone(),
        }
    }

    pub fn nvidia_health(&self) -> NvidiaHealthConfig {
        NvidiaHealthConfig {
            disabled: self.disable_health_checks,
            policy: HealthPolicy {
                recovery_after: (self.health_recovery_seconds > 0)
                    .then(|| Duration::from_secs(self.health_recovery_seconds)),
                ..HealthPolicy::default()
            }
            .with_extra_ignored(self.ignore_xid.iter().copied()),
            tick: self.health_poll(),
        }
    }

    pub fn health_poll(&self) -> Duration {
        Duration::from_millis(self.health_poll_ms.max(10))
    }

    pub fn runner(&self) -> RunnerConfig {
        RunnerConfig {
            plugin_dir: self.device_plugin_dir.clone(),
            poll: Duration::from_millis(self.socket_poll_ms.max(10)),
            mounts: self.mounts.clone(),
            ..RunnerConfig::default()
        }
    }

    /// A spec for creating a missing GpuNode, when wallet, region and country are all set.
    pub fn gpunode_spec(&self, node_name: &str) -> Option<solgrid_crds::GpuNodeSpec> {
        Some(solgrid_crds::GpuNodeSpec {
            node_name: node_name.to_string(),
            payout_wallet: self.gpunode_payout_wallet.clone()?,
            location: solgrid_crds::Location {
                region: self.gpunode_region.clone()?,
                country: self.gpunode_country.clone()?,
                coordinates: None,
            },
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = Settings::try_parse_from(["solgrid-device-plugin"]).unwrap();
        assert_eq!(
            s.device_plugin_dir,
            PathBuf::from("/var/lib/kubelet/device-plugins")
        );
        assert_eq!(s.vendors, [VendorArg::Nvidia, VendorArg::Apple]);
        assert_eq!(s.sysfs_root, PathBuf::from("/sys"));
        assert!(!s.list);
        assert!(s.nvidia_health().policy.ignored_xids.contains(&43));
    }

    #[test]
    fn flags() {
        let s = Settings::try_parse_from([
            "x",
            "--list",
            "--vendors",
            "apple",
            "--sysfs-root",
            "/tmp/sys",
            "--ignore-xid",
            "48,63",
            "--mount",
            "/a:/b:ro",
            "--health-recovery-seconds",
            "0",
        ])
        .unwrap();
        assert!(s.list);
        assert_eq!(s.vendors, [VendorArg::Apple]);
        let h = s.nvidia_health();
        assert!(h.policy.ignored_xids.contains(&48) && h.policy.ignored_xids.contains(&63));
        assert_eq!(h.policy.recovery_after, None);
        assert_eq!(s.mounts.len(), 1);
        assert!(Settings::try_parse_from(["x", "--mount", "nonsense"]).is_err());
        assert!(Settings::try_parse_from(["x", "--vendors", "amd"]).is_err());
    }

    #[test]
    fn gpunode_spec_needs_all_three() {
        let s = Settings::try_parse_from(["x", "--gpunode-region", "eu-west"]).unwrap();
        assert!(s.gpunode_spec("n").is_none());
    }
}
