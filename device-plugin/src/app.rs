//! Wiring: backends → resource managers → plugin servers, health threads,
//! metrics endpoint and inventory publishing.

use crate::apple::AppleBackend;
use crate::backend::Backend;
use crate::config::{Settings, VendorArg};
use crate::inventory::Publisher;
use crate::kubelet::PluginRunner;
use crate::labels::node_labels;
use crate::metrics::Metrics;
use crate::nvidia::NvidiaBackend;
use crate::resource::{DeviceState, ResourceManager};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The enabled backends, as configured.
pub fn backends(settings: &Settings, metrics: Option<&Metrics>) -> Vec<Box<dyn Backend>> {
    let mut out: Vec<Box<dyn Backend>> = Vec::new();
    for v in &settings.vendors {
        match v {
            VendorArg::Nvidia => {
                let mut be = NvidiaBackend::with_real_nvml(
                    settings.nvml_library.as_deref().map(|p| p.as_os_str()),
                    settings.host_paths(),
                    settings.nvidia_health(),
                );
                if let Some(m) = metrics {
                    be = be.with_metrics(m.clone());
                }
                out.push(Box::new(be));
            }
            VendorArg::Apple => out.push(Box::new(AppleBackend::new(
                settings.host_paths(),
                settings.health_poll(),
            ))),
        }
    }
    out
}

/// Discover every backend's devices; one manager per vendor that has some.
pub fn discover(
    backends: Vec<Box<dyn Backend>>,
    metrics: Option<&Metrics>,
) -> Vec<(Box<dyn Backend>, Arc<ResourceManager>)> {
    backends
        .into_iter()
        .filter_map(|be| {
            let found = be.discover();
            if found.devices.is_empty() {
                tracing::info!(vendor = %be.vendor(), "no devices: {} not advertised", be.vendor().resource_name());
                return None;
            }
            let mut mgr = ResourceManager::new(be.vendor(), found.devices, found.shared_nodes);
            if let Some(m) = metrics {
                mgr = mgr.with_metrics(m.clone());
            }
            Some((be, Arc::new(mgr)))
        })
        .collect()
}

/// What `--list` prints.
#[derive(Debug, Serialize)]
pub struct ListReport {
    pub resources: Vec<ResourceReport>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct ResourceReport {
    pub resource: String,
    pub devices: Vec<DeviceReport>,
}

#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub id: String,
    pub model: String,
    pub memory_mib: u64,
    pub health: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i32>,
    pub nvlinks: BTreeMap<String, u32>,
    pub device_nodes: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

/// Build the `--list` report from the managers.
pub fn list_report(managers: &[Arc<ResourceManager>]) -> ListReport {
    let mut all: Vec<DeviceState> = Vec::new();
    let resources = managers
        .iter()
        .map(|m| {
            let snap = m.snapshot();
            let mut nodes_shared: Vec<String> = m
                .shared_nodes()
                .iter()
                .map(|n| n.host_path.display().to_string())
                .collect();
            let devices = snap
                .iter()
                .map(|s| {
                    let mut nodes: Vec<String> = s
                        .device
                        .nodes
                        .iter()
                        .map(|n| n.host_path.display().to_string())
                        .collect();
                    nodes.append(&mut nodes_shared.clone());
                    DeviceReport {
                        id: s.device.id.clone(),
                        model: s.device.model.clone(),
                        memory_mib: s.device.memory_mib,
                        health: s.health.to_string(),
                        reason: s.reason.clone(),
                        pci_bus_id: s.device.pci_bus_id.clone(),
                        numa_node: s.device.numa_node,
                        nvlinks: s.device.links.clone(),
                        device_nodes: nodes,
                        attributes: s.device.attributes.clone(),
                    }
                })
                .collect();
            nodes_shared.clear();
            all.extend(snap);
            ResourceReport {
                resource: m.resource_name().to_string(),
                devices,
            }
        })
        .collect();
    ListReport {
        resources,
        labels: node_labels(&all),
    }
}

/// Human-readable `--list` output.
pub fn render_list(r: &ListReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if r.resources.is_empty() {
        s.push_str("no GPUs found: nothing would be advertised\n");
    }
    for res in &r.resources {
        let _ = writeln!(
            s,
            "resource {} ({} devices)",
            res.resource,
            res.devices.len()
        );
        for d in &res.devices {
            let _ = writeln!(
                s,
                "  {}  {}  {} MiB  {}{}",
                d.id,
                d.model,
                d.memory_mib,
                d.health,
                d.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            if let Some(p) = &d.pci_bus_id {
                let _ = writeln!(
                    s,
                    "    pci {p}  numa {}",
                    d.numa_node.map_or("-".to_string(), |n| n.to_string())
                );
            }
            if !d.nvlinks.is_empty() {
                let links: Vec<String> =
                    d.nvlinks.iter().map(|(p, n)| format!("{p}x{n}")).collect();
                let _ = writeln!(s, "    nvlink {}", links.join(" "));
            }
            let _ = writeln!(s, "    nodes {}", d.device_nodes.join(" "));
            for (k, v) in &d.attributes {
                let _ = writeln!(s, "    {k}: {v}");
            }
        }
    }
    if !r.labels.is_empty() {
        s.push_str("node labels\n");
        for (k, v) in &r.labels {
            let _ = writeln!(s, "  {k}={v}");
        }
    }
    s
}

/// Publish the inventory (and labels) now, on every health change of any
/// manager, and every `--inventory-interval-seconds`, until `stop`.
pub async fn inventory_loop(
    publisher: Publisher,
    managers: Vec<Arc<ResourceManager>>,
    settings: Settings,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut feeds: Vec<_> = managers.iter().map(|m| m.subscribe()).collect();
    let interval = Duration::from_secs(settings.inventory_interval_seconds.max(1));
    let mut last_labels: Option<BTreeMap<String, String>> = None;
    loop {
        let states: Vec<DeviceState> = managers.iter().flat_map(|m| m.snapshot()).collect();
        if !settings.no_inventory {
            let r = publisher.publish(&states).await;
            metrics.inventory_publish(r.is_ok());
            if let Err(e) = r {
                tracing::warn!(error = %e, "publishing the GpuNode inventory failed");
            }
        }
        if !settings.no_node_labels {
            let labels = node_labels(&states);
            if last_labels.as_ref() != Some(&labels) {
                match publisher.apply_labels(&labels).await {
                    Ok(()) => last_labels = Some(labels),
                    Err(e) => tracing::warn!(error = %e, "labelling the Node failed"),
                }
            }
        }
        let changed = async {
            if feeds.is_empty() {
                futures::future::pending::<()>().await;
            } else {
                let _ =
                    futures::future::select_all(feeds.iter_mut().map(|f| Box::pin(f.changed())))
                        .await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = changed => {}
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Run the plugin until SIGTERM / Ctrl-C.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = Metrics::new()?;
    let found = discover(backends(&settings, Some(&metrics)), Some(&metrics));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    let managers: Vec<Arc<ResourceManager>> = found.iter().map(|(_, m)| m.clone()).collect();
    if managers.is_empty() {
        tracing::warn!(
            "no GPUs found on this node: nothing is advertised (staying up for /healthz)"
        );
    }
    for (be, mgr) in &found {
        if let Some(t) = be.start_health(mgr.clone(), stop.clone()) {
            threads.push(t);
        }
        let runner = PluginRunner::new(mgr.clone(), settings.runner(), Some(metrics.clone()));
        tasks.push(tokio::spawn(runner.run(stop.clone())));
    }
    if !settings.metrics_addr.is_empty() {
        let listener = tokio::net::TcpListener::bind(&settings.metrics_addr).await?;
        tracing::info!(addr = %settings.metrics_addr, "serving /metrics and /healthz");
        let router = crate::metrics::router(metrics.clone());
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(s.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }
    match (
        &settings.node_name,
        settings.no_inventory && settings.no_node_labels,
    ) {
        (Some(node), false) => match kube::Client::try_default().await {
            Ok(client) => {
                let gpunode = settings
                    .gpunode_name
                    .clone()
                    .unwrap_or_else(|| node.clone());
                let publisher =
                    Publisher::new(client, node.clone(), gpunode, settings.gpunode_spec(node));
                tasks.push(tokio::spawn(inventory_loop(
                    publisher,
                    managers.clone(),
                    settings.clone(),
                    metrics.clone(),
                    stop.clone(),
                )));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes API access: inventory and node labels are not published")
            }
        },
        (None, false) => {
            tracing::info!("NODE_NAME not set: inventory and node labels are not published")
        }
        _ => {}
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::HostPaths;
    use crate::nvidia::NvidiaHealthConfig;
    use crate::nvidia::api::NvmlApi;
    use crate::nvidia::fake::FakeNvml;

    #[test]
    fn list_report_of_an_nvlink_box() {
        let (fake, _h) = FakeNvml::new(FakeNvml::h100_box(2, 4));
        let api: Arc<dyn NvmlApi> = Arc::new(fake);
        let be = NvidiaBackend::new(
            Some(api),
            HostPaths::under("/nonexistent"),
            NvidiaHealthConfig::default(),
        );
        let found = discover(vec![Box::new(be)], None);
        let managers: Vec<_> = found.into_iter().map(|(_, m)| m).collect();
        managers[0].set_health(
            "GPU-fake-1",
            crate::device::Health::Unhealthy,
            Some("XID 79".into()),
        );
        let r = list_report(&managers);
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.resources[0].resource, "solgrid.dev/nvidia-gpu");
        assert_eq!(r.resources[0].devices[0].nvlinks["GPU-fake-1"], 4);
        assert_eq!(
            r.resources[0].devices[0].device_nodes,
            ["/dev/nvidia0", "/dev/nvidiactl"]
        );
        assert_eq!(r.labels["solgrid.dev/nvidia-gpu.count"], "2");
        let text = render_list(&r);
        assert!(
            text.contains("resource solgrid.dev/nvidia-gpu (2 devices)"),
            "{text}"
        );
        assert!(
            text.contains("GPU-fake-1  NVIDIA H100 80GB HBM3  81559 MiB  Unhealthy (XID 79)"),
            "{text}"
        );
        assert!(text.contains("nvlink GPU-fake-1x4"), "{text}");
        assert!(
            text.contains("solgrid.dev/nvidia-gpu.model=NVIDIA-H100-80GB-HBM3"),
            "{text}"
        );
    }

    #[test]
    fn empty_report() {
        let r = list_report(&[]);
        assert!(r.labels.is_empty());
        assert!(render_list(&r).starts_with("no GPUs found"));
    }
}
