//! The `DevicePlugin` gRPC service of one resource.

use crate::allocation::{PolicyError, preferred_allocation};
use crate::device::{Device, DeviceNode};
use crate::metrics::Metrics;
use crate::proto::v1beta1 as api;
use crate::resource::ResourceManager;
use futures::Stream;
use futures::StreamExt;
use solgrid_crds::GpuVendor;
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Env var with the allocated GPU UUIDs, read by the NVIDIA container toolkit.
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
/// Env var with the allocated device IDs, for every vendor.
pub const SOLGRID_DEVICE_IDS: &str = "SOLGRID_DEVICE_IDS";

/// A host directory mounted into every container that gets a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
}

impl std::str::FromStr for MountSpec {
    type Err = String;

    /// `HOST:CONTAINER[:ro|:rw]`
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let (host, container, read_only) = match parts.as_slice() {
            [h, c] => (*h, *c, false),
            [h, c, "ro"] => (*h, *c, true),
            [h, c, "rw"] => (*h, *c, false),
            _ => return Err(format!("mount {s:?}: expected HOST:CONTAINER[:ro|:rw]")),
        };
        if !host.starts_with('/') || !container.starts_with('/') {
            return Err(format!("mount {s:?}: both paths must be absolute"));
        }
        Ok(MountSpec {
            host_path: host.into(),
            container_path: container.into(),
            read_only,
        })
    }
}

fn spec_of(n: &DeviceNode) -> api::DeviceSpec {
    api::DeviceSpec {
        container_path: n.container_path.to_string_lossy().into_owned(),
        host_path: n.host_path.to_string_lossy().into_owned(),
        permissions: n.permissions.clone(),
    }
}

/// The `DevicePlugin` service for one resource.
#[derive(Clone)]
pub struct PluginService {
    manager: Arc<ResourceManager>,
    /// Per device index: its device specs, precomputed.
    specs: Arc<Vec<Vec<api::DeviceSpec>>>,
    shared_specs: Arc<Vec<api::DeviceSpec>>,
    mounts: Arc<Vec<api::Mount>>,
    metrics: Option<Metrics>,
    /// Ends `ListAndWatch` streams when the server stops.
    stop: CancellationToken,
}

impl PluginService {
    pub fn new(
        manager: Arc<ResourceManager>,
        mounts: &[MountSpec],
        metrics: Option<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        let specs = manager
            .devices()
            .iter()
            .map(|d| d.nodes.iter().map(spec_of).collect())
            .collect();
        let shared_specs = manager.shared_nodes().iter().map(spec_of).collect();
        let mounts = mounts
            .iter()
            .map(|m| api::Mount {
                container_path: m.container_path.to_string_lossy().into_owned(),
                host_path: m.host_path.to_string_lossy().into_owned(),
                read_only: m.read_only,
            })
            .collect();
        PluginService {
            manager,
            specs: Arc::new(specs),
            shared_specs: Arc::new(shared_specs),
            mounts: Arc::new(mounts),
            metrics,
            stop,
        }
    }

    pub fn options() -> api::DevicePluginOptions {
        api::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }
    }

    /// The response for one container, or InvalidArgument naming an unknown ID.
    pub fn allocate_container(
        &self,
        req: &api::ContainerAllocateRequest,
    ) -> Result<api::ContainerAllocateResponse, Status> {
        if req.devices_ids.is_empty() {
            return Err(Status::invalid_argument(
                "no device IDs in the allocation request",
            ));
        }
        let mut idx = Vec::with_capacity(req.devices_ids.len());
        for id in &req.devices_ids {
            match self.manager.index_of(id) {
                Some(i) if !idx.contains(&i) => idx.push(i),
                Some(_) => {
                    return Err(Status::invalid_argument(format!(
                        "device {id:?} requested twice"
                    )));
                }
                None => {
                    return Err(Status::invalid_argument(format!(
                        "unknown device {id:?} for resource {}",
                        self.manager.resource_name()
                    )));
                }
            }
        }
        let devices: Vec<&Device> = idx.iter().map(|&i| &self.manager.devices()[i]).collect();
        let mut specs: Vec<api::DeviceSpec> =
            Vec::with_capacity(idx.len() + self.shared_specs.len());
        for &i in &idx {
            specs.extend(self.specs[i].iter().cloned());
        }
        specs.extend(self.shared_specs.iter().cloned());
        let ids = req.devices_ids.join(",");
        let mut envs = HashMap::with_capacity(2);
        if self.manager.vendor() == GpuVendor::Nvidia {
            let uuids: Vec<&str> = devices
                .iter()
                .map(|d| d.uuid.as_deref().unwrap_or(&d.id))
                .collect();
            envs.insert(NVIDIA_VISIBLE_DEVICES.to_string(), uuids.join(","));
        }
        envs.insert(SOLGRID_DEVICE_IDS.to_string(), ids);
        Ok(api::ContainerAllocateResponse {
            envs,
            mounts: self.mounts.as_ref().clone(),
            devices: specs,
            annotations: HashMap::new(),
            cdi_devices: vec![],
        })
    }

    /// The whole `Allocate` call (all containers, or the first error).
    pub fn allocate_all(
        &self,
        req: &api::AllocateRequest,
    ) -> Result<api::AllocateResponse, Status> {
        let mut out = Vec::with_capacity(req.container_requests.len());
        for c in &req.container_requests {
            let r = self.allocate_container(c);
            if let Some(m) = &self.metrics {
                m.allocation(self.manager.resource_name(), r.is_ok(), c.devices_ids.len());
            }
            out.push(r?);
        }
        Ok(api::AllocateResponse {
            container_responses: out,
        })
    }
}

type ListAndWatchStream =
    Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl api::device_plugin_server::DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(Self::options()))
    }

    type ListAndWatchStream = ListAndWatchStream;

    async fn list_and_watch(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        tracing::info!(resource = %self.manager.resource_name(), "kubelet opened ListAndWatch");
        let stop = self.stop.clone().cancelled_owned();
        let stream = WatchStream::new(self.manager.subscribe())
            .map(|list| Ok(list.as_ref().clone()))
            .take_until(stop);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let req = request.into_inner();
        let mut out = Vec::with_capacity(req.container_requests.len());
        for c in &req.container_requests {
            let size = usize::try_from(c.allocation_size)
                .map_err(|_| Status::invalid_argument("negative allocation_size"))?;
            let ids = preferred_allocation(
                |id| self.manager.get(id),
                &c.available_device_i_ds,
                &c.must_include_device_i_ds,
                size,
            )
            .map_err(|e| match e {
                PolicyError::UnknownDevice(_)
                | PolicyError::MustIncludeNotAvailable(_)
                | PolicyError::NotEnoughDevices { .. } => {
                    Status::invalid_argument(format!("{}: {e}", self.manager.resource_name()))
                }
            })?;
            out.push(api::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses: out,
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let req = request.into_inner();
        match self.allocate_all(&req) {
            Ok(r) => Ok(Response::new(r)),
            Err(e) => {
                tracing::warn!(resource = %self.manager.resource_name(), error = %e.message(), "Allocate refused");
                Err(e)
            }
        }
    }

    async fn pre_start_container(
        &self,
        _request: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_specs_parse() {
        let m: MountSpec = "/usr/lib/x:/opt/x:ro".parse().unwrap();
        assert!(m.read_only);
        assert_eq!(m.container_path, PathBuf::from("/opt/x"));
        assert!("relative:/x".parse::<MountSpec>().is_err());
        assert!("/a".parse::<MountSpec>().is_err());
        assert!("/a:/b:zz".parse::<MountSpec>().is_err());
    }
}
