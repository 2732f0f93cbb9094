//! The GpuNode controller (in progress).

pub mod common;
pub mod heartbeat;
pub mod machine;
