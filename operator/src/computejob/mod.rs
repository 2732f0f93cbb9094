//! The ComputeJob controller.

use crate::context::Context;
use std::sync::Arc;

/// Runs the controller (until its future is dropped).
pub async fn run(_ctx: Arc<Context>) {
    std::future::pending::<()>().await;
}

/// Label linking a worker pod to its job (value: the job's name).
pub const LABEL_JOB: &str = "solgrid.dev/job";
