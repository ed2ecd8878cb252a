//! Fuzz targets for what cloak parses from parties it does not trust: a guest (stdio stream
//! headers, port-forward lines, simulated AMD-SP answers, attestation reports), the host in a
//! confidential pod (every agent request as protobuf, put to the policy's input mapping; raw
//! ttrpc frames to a server with the agent's services and policy gate, `agent_ttrpc`;
//! init-data) and operators' files and annotations (configuration, pod-size annotations), and
//! the virtio rings a guest writes for cloak-vmm's devices (`virtio`: vsock, block; the host's
//! CONNECT line to the vsock muxer), the virtio-mmio register window with virtio-fs and
//! virtio-rng behind it (`mmio`), and the
//! host listeners a guest reaches (`host_listeners`: the ready port, the hybrid-vsock answer).
//!
//! The project builds on the stable toolchain only, where libFuzzer's coverage
//! instrumentation is not available; `driver` is a bounded mutation driver over the committed
//! seed corpora (`fuzz/corpus/<target>/`) instead. A target fails by panicking: every parser
//! must answer bad input with an error, never a crash, and the round-trip targets also check
//! that what parses re-encodes to the same value.

mod agent_ttrpc;
pub mod driver;
mod host_listeners;
mod mmio;
mod mutate;
pub mod seeds;
mod targets;
mod virtio;

pub use targets::TARGETS;

/// One fuzz target: a name (its corpus directory) and the function run on each input.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}
