//! Any bytes through the filter and prioritize handlers over the example snapshot:
//! 200 or 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use solgrid_scheduler::cache::Cache;
use solgrid_scheduler::convert::MarketConfig;
use solgrid_scheduler::extender::Extender;
use solgrid_scheduler::metrics::Metrics;
use solgrid_scheduler::server::{AppState, filter_bytes, prioritize_bytes};
use solgrid_scheduler::snapshot::Snapshot;
use std::sync::{Arc, OnceLock};

fn state() -> &'static AppState {
    static S: OnceLock<AppState> = OnceLock::new();
    S.get_or_init(|| {
        let snap = Snapshot::parse(include_str!("../../testdata/snapshot.yaml")).unwrap();
        let cfg = MarketConfig::default();
        let metrics = Metrics::new();
        AppState::new(
            Arc::new(Cache::with_index(snap.index(&cfg))),
            Extender::new(cfg.matching, Some(metrics.clone())),
            metrics,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    for r in [filter_bytes(state(), data), prioritize_bytes(state(), data)] {
        let c = r.status().as_u16();
        assert!(c == 200 || c == 400, "status {c}");
    }
});
