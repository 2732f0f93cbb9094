//! solgrid's kubelet device plugin (API v1beta1): NVIDIA GPUs through NVML and
//! Apple GPUs through the asahi DRM driver, with live health, topology-aware
//! preferred allocation, and the node's inventory published to its GpuNode.
//!
//! Modules, after NVIDIA's k8s-device-plugin:
//! - [`kubelet`]: registration and the plugin server's lifecycle;
//! - [`plugin`]: the `DevicePlugin` gRPC service;
//! - [`resource`]: the resource manager (devices, health, change feed);
//! - [`allocation`]: the preferred-allocation policy;
//! - [`nvidia`], [`apple`]: vendor backends (discovery, health);
//! - [`inventory`], [`labels`]: what is published to Kubernetes;
//! - [`metrics`], [`config`], [`app`].

pub mod allocation;
pub mod app;
pub mod apple;
pub mod backend;
pub mod config;
pub mod device;
pub mod inventory;
pub mod kubelet;
pub mod labels;
pub mod metrics;
pub mod nvidia;
pub mod plugin;
pub mod resource;

/// The kubelet device plugin API, generated from `proto/api.proto`.
pub mod proto {
    pub mod v1beta1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("v1beta1");
    }
}
