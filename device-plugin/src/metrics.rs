//! Prometheus metrics and the HTTP endpoint serving `/metrics` and `/healthz`.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// The plugin's metrics. Cheap to clone (handles to the same registry).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    devices: IntGaugeVec,
    allocations: IntCounterVec,
    allocated_devices: IntCounterVec,
    registrations: IntCounterVec,
    health_events: IntCounterVec,
    inventory_publishes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let devices = IntGaugeVec::new(
            Opts::new(
                "solgrid_device_plugin_devices",
                "Devices advertised to the kubelet, by resource and health",
            ),
            &["resource", "health"],
        )?;
        let allocations = IntCounterVec::new(
            Opts::new(
                "solgrid_device_plugin_allocate_requests_total",
                "Allocate calls per container request, by resource and result",
            ),
            &["resource", "result"],
        )?;
        let allocated_devices = IntCounterVec::new(
            Opts::new(
                "solgrid_device_plugin_allocated_devices_total",
                "Devices handed to containers by Allocate",
            ),
            &["resource"],
        )?;
        let registrations = IntCounterVec::new(
            Opts::new(
                "solgrid_device_plugin_registrations_total",
                "Registrations with the kubelet, by resource and result",
            ),
            &["resource", "result"],
        )?;
        let health_events = IntCounterVec::new(
            Opts::new(
                "solgrid_device_plugin_health_events_total",
                "Health events seen (NVML XIDs, ECC errors, sysfs changes), by resource and kind",
            ),
            &["resource", "kind"],
        )?;
        let inventory_publishes = IntCounterVec::new(
            Opts::new(
                "solgrid_device_plugin_inventory_publishes_total",
                "GpuNode status / Node label publications, by result",
            ),
            &["result"],
        )?;
        registry.register(Box::new(devices.clone()))?;
        registry.register(Box::new(allocations.clone()))?;
        registry.register(Box::new(allocated_devices.clone()))?;
        registry.register(Box::new(registrations.clone()))?;
        registry.register(Box::new(health_events.clone()))?;
        registry.register(Box::new(inventory_publishes.clone()))?;
        Ok(Metrics {
            registry,
            devices,
            allocations,
            allocated_devices,
            registrations,
            health_events,
            inventory_publishes,
        })
    }

    pub fn set_devices(&self, resource: &str, healthy: usize, unhealthy: usize) {
        self.devices
            .with_label_values(&[resource, "Healthy"])
            .set(i64::try_from(healthy).unwrap_or(i64::MAX));
        self.devices
            .with_label_values(&[resource, "Unhealthy"])
            .set(i64::try_from(unhealthy).unwrap_or(i64::MAX));
    }

    pub fn allocation(&self, resource: &str, ok: bool, devices: usize) {
        let result = if ok { "ok" } else { "error" };
        self.allocations
            .with_label_values(&[resource, result])
            .inc();
        if ok {
            self.allocated_devices
                .with_label_values(&[resource])
                .inc_by(devices as u64);
        }
    }

    pub fn registration(&self, resource: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.registrations
            .with_label_values(&[resource, result])
            .inc();
    }

    /// Successful registrations of `resource` so far.
    pub fn registrations_ok(&self, resource: &str) -> u64 {
        self.registrations
            .with_label_values(&[resource, "ok"])
            .get()
    }

    pub fn health_event(&self, resource: &str, kind: &str) {
        self.health_events
            .with_label_values(&[resource, kind])
            .inc();
    }

    pub fn inventory_publish(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.inventory_publishes.with_label_values(&[result]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// `/metrics` and `/healthz`.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(|| async { (StatusCode::OK, "ok").into_response() }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_contains_counters() {
        let m = Metrics::new().expect("metrics");
        m.set_devices("solgrid.dev/nvidia-gpu", 3, 1);
        m.registration("solgrid.dev/nvidia-gpu", true);
        m.allocation("solgrid.dev/nvidia-gpu", true, 2);
        let text = m.render();
        assert!(text.contains(
            "solgrid_device_plugin_devices{health=\"Unhealthy\",resource=\"solgrid.dev/nvidia-gpu\"} 1"
        ));
        assert!(text.contains(
            "solgrid_device_plugin_allocated_devices_total{resource=\"solgrid.dev/nvidia-gpu\"} 2"
        ));
        assert_eq!(m.registrations_ok("solgrid.dev/nvidia-gpu"), 1);
    }
}
