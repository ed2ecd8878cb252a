//! The containerd runtime v2 shim (`containerd-shim-cloak-v2`): containerd's Task API served
//! for one pod whose containers run in one cloak VM.

pub mod bundle;
pub mod cleanup;
pub mod errors;
pub mod events;
pub mod fifo_io;
pub mod layers;
pub mod logging;
pub mod metrics;
pub mod pod;
mod pod_requests;
pub mod process;
pub mod rootfs;
pub mod server;
pub mod start;
pub mod task;

/// The runtime name containerd is configured with (`runtime_type`); the binary name
/// `containerd-shim-cloak-v2` follows from it.
pub const RUNTIME_ID: &str = "io.containerd.cloak.v2";
