//! Publishing the node's GPUs to its GpuNode status (server-side apply with
//! field manager `solgrid-device-plugin`, creating the GpuNode when missing
//! and a spec for it is configured) and the GPU labels to its Node.
//!
//! The apply patch names only the fields this plugin owns (`status.gpus`,
//! `status.gpuCount`, `status.model`, `status.lastHeartbeat`), so the
//! operator's fields (phase, reputation, ...) are never touched.
//!
//! Those are also the only writes its rights allow: the chart's
//! `device-plugin-node-scope` admission policy admits, from this plugin's
//! pod-bound token, only those four status fields of the GpuNode whose
//! `spec.nodeName` is the token's node, only the [`crate::labels`] keys on that
//! Node, and a GpuNode *create* with the spec the provider configured. A GpuNode's
//! spec is never patched from here: a missing one is created (POST, which never
//! overwrites), one that appeared meanwhile is left as it is.

use crate::device::Health;
use crate::labels::primary_model;
use crate::resource::DeviceState;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use solgrid_crds::{GpuDevice, GpuHealth, GpuNode, GpuNodeSpec};
use std::collections::BTreeMap;

/// The server-side apply field manager.
pub const FIELD_MANAGER: &str = "solgrid-device-plugin";

/// Device states → the GpuNode status inventory.
pub fn to_inventory(states: &[DeviceState]) -> Vec<GpuDevice> {
    states
        .iter()
        .map(|s| GpuDevice {
            id: s.device.id.clone(),
            uuid: s.device.uuid.clone().or_else(|| Some(s.device.id.clone())),
            vendor: s.device.vendor,
            model: s.device.model.clone(),
            vram_mib: s.device.memory_mib,
            health: match s.health {
                Health::Healthy => GpuHealth::Healthy,
                Health::Unhealthy => GpuHealth::Unhealthy,
            },
            pci_bus_id: s.device.pci_bus_id.clone(),
            numa_node: s.device.numa_node,
        })
        .collect()
}

/// The apply patch for the status subresource.
pub fn status_patch(name: &str, gpus: &[GpuDevice], now: chrono::DateTime<chrono::Utc>) -> Value {
    let model = primary_model(gpus.iter().map(|g| g.model.as_str()));
    let mut status = json!({
        "gpus": gpus,
        "gpuCount": gpus.len(),
        "lastHeartbeat": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let Some(m) = model {
        status["model"] = Value::String(m);
    }
    json!({
        "apiVersion": solgrid_crds::API_VERSION,
        "kind": "GpuNode",
        "metadata": { "name": name },
        "status": status,
    })
}

/// The GpuNode created when it is missing (spec only: status is the subresource's).
pub fn new_gpunode(name: &str, spec: &GpuNodeSpec) -> GpuNode {
    GpuNode::new(name, spec.clone())
}

/// The apply patch for the Node's labels.
pub fn node_labels_patch(node: &str, labels: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": node, "labels": labels },
    })
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "GpuNode {0} does not exist and no spec to create it is configured (set --gpunode-payout-wallet, --gpunode-region, --gpunode-country, or let the operator create it)"
    )]
    Missing(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Publishes to the API server.
pub struct Publisher {
    gpunodes: Api<GpuNode>,
    nodes: Api<Node>,
    gpunode_name: String,
    node_name: String,
    create_spec: Option<GpuNodeSpec>,
}

impl Publisher {
    /// `gpunode_name` is the GpuNode's name (the Node's name unless configured).
    pub fn new(
        client: kube::Client,
        node_name: String,
        gpunode_name: String,
        create_spec: Option<GpuNodeSpec>,
    ) -> Self {
        Publisher {
            gpunodes: Api::all(client.clone()),
            nodes: Api::all(client),
            gpunode_name,
            node_name,
            create_spec,
        }
    }

    fn params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// Apply the inventory to the GpuNode's status, creating the GpuNode first
    /// if it is missing and a spec is configured.
    pub async fn publish(&self, states: &[DeviceState]) -> Result<(), InventoryError> {
        let gpus = to_inventory(states);
        let patch = status_patch(&self.gpunode_name, &gpus, chrono::Utc::now());
        let pp = Self::params();
        match self
            .gpunodes
            .patch_status(&self.gpunode_name, &pp, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                let Some(spec) = &self.create_spec else {
                    return Err(InventoryError::Missing(self.gpunode_name.clone()));
                };
                tracing::info!(gpunode = %self.gpunode_name, "GpuNode missing: creating it");
                let pp_create = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..Default::default()
                };
                match self
                    .gpunodes
                    .create(&pp_create, &new_gpunode(&self.gpunode_name, spec))
                    .await
                {
                    Ok(_) => {}
                    // Created meanwhile (by the operator or the provider): its spec
                    // stands, whatever this plugin was configured with.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                self.gpunodes
                    .patch_status(&self.gpunode_name, &pp, &Patch::Apply(&patch))
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Apply the GPU labels to the Node (labels this manager set before and
    /// no longer computes are removed by server-side apply).
    pub async fn apply_labels(&self, labels: &BTreeMap<String, String>) -> Result<(), kube::Error> {
        self.nodes
            .patch(
                &self.node_name,
                &Self::params(),
                &Patch::Apply(&node_labels_patch(&self.node_name, labels)),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use solgrid_crds::GpuVendor;

    fn state(id: &str, health: Health) -> DeviceState {
        DeviceState {
            device: Device {
                id: id.into(),
                vendor: GpuVendor::Nvidia,
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_mib: 81_559,
                uuid: Some(id.into()),
                pci_bus_id: Some("0000:07:00.0".into()),
                numa_node: Some(0),
                index: 0,
                links: Default::default(),
                nodes: vec![],
                attributes: Default::default(),
            },
            health,
            reason: None,
        }
    }

    #[test]
    fn inventory_maps_every_field() {
        let inv = to_inventory(&[
            state("GPU-1", Health::Healthy),
            state("GPU-2", Health::Unhealthy),
        ]);
        assert_eq!(inv.len(), 2);
        assert_eq!(inv[0].id, "GPU-1");
        assert_eq!(inv[0].uuid.as_deref(), Some("GPU-1"));
        assert_eq!(inv[0].vendor, GpuVendor::Nvidia);
        assert_eq!(inv[0].vram_mib, 81_559);
        assert_eq!(inv[0].pci_bus_id.as_deref(), Some("0000:07:00.0"));
        assert_eq!(inv[0].numa_node, Some(0));
        assert_eq!(inv[0].health, GpuHealth::Healthy);
        assert_eq!(inv[1].health, GpuHealth::Unhealthy);
    }

    #[test]
    fn status_patch_owns_only_inventory_fields() {
        let inv = to_inventory(&[state("GPU-1", Health::Unhealthy)]);
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T14:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let p = status_patch("node-a", &inv, now);
        assert_eq!(p["apiVersion"], "solgrid.dev/v1alpha1");
        assert_eq!(p["kind"], "GpuNode");
        assert_eq!(p["metadata"]["name"], "node-a");
        let status = p["status"].as_object().unwrap();
        let mut keys: Vec<_> = status.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["gpuCount", "gpus", "lastHeartbeat", "model"]);
        assert_eq!(status["gpuCount"], 1);
        assert_eq!(status["model"], "NVIDIA H100 80GB HBM3");
        assert_eq!(status["lastHeartbeat"], "2026-11-25T14:00:00Z");
        assert_eq!(status["gpus"][0]["vramMib"], 81_559);
        assert_eq!(status["gpus"][0]["health"], "Unhealthy");
        assert_eq!(status["gpus"][0]["vendor"], "nvidia");
        assert!(p.get("spec").is_none());
    }

    #[test]
    fn a_created_gpunode_carries_only_the_configured_spec() {
        let spec = GpuNodeSpec {
            node_name: "node-a".into(),
            payout_wallet: "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU".into(),
            location: solgrid_crds::Location {
                region: "eu-west".into(),
                country: "DE".into(),
                coordinates: None,
            },
            ..Default::default()
        };
        let g = serde_json::to_value(new_gpunode("node-a", &spec)).unwrap();
        assert_eq!(g["kind"], "GpuNode");
        assert_eq!(g["metadata"]["name"], "node-a");
        assert_eq!(g["spec"]["nodeName"], "node-a");
        assert_eq!(g["spec"]["floorMicroUsdPerGpuHour"], 0);
        assert_eq!(g["spec"]["stakerCommissionBps"], 0);
        assert!(g.get("status").is_none_or(|s| s.is_null()));
    }
}
