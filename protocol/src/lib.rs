//! The shim<->agent protocol of cloak: protobuf messages and async ttrpc services generated
//! from `protos/agent.proto` and `protos/health.proto` by `build.rs`.

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unused_qualifications,
    non_camel_case_types,
    unused_results
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/modules.rs"));
}

pub use generated::*;

/// vsock port the agent serves ttrpc on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// vsock port on the host (CID 2) the agent connects to once it serves, to say it is ready.
pub const READY_VSOCK_PORT: u32 = 1025;

/// Incompatible protocol changes bump this; Health.Version reports it.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the agent writes on the readiness connection before closing it.
pub const READY_MESSAGE: &[u8] = b"READY\n";
