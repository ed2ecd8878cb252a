//! The host side of cloak: configuration, the `Hypervisor` trait with its backends, the
//! hybrid-vsock agent client, and the pod VM that ties them together. The containerd Task API
//! (the `containerd-shim-cloak-v2` binary) is built on these.

pub mod agent_client;
pub mod config;
pub mod console;
pub mod hybrid_vsock;
pub mod hypervisor;
pub mod network;
pub mod pod_vm;
pub mod sandbox;
pub mod service;
pub mod stdio_streams;

pub use agent_client::{AgentClient, AgentClientError};
pub use config::Configuration;
pub use hypervisor::{Hypervisor, HypervisorError, VmConfig, VmExit};
pub use pod_vm::{BootError, PodVm};
