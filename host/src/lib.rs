//! The host side of cloak below containerd: configuration, the `Hypervisor` trait with its
//! backends, the hybrid-vsock agent client, pod networking, and the pod VM that ties them
//! together. The containerd shim (`containerd-shim-cloak-v2`) and the `cloak` command are
//! built on it; nothing here knows containerd's Task API.

pub mod agent_client;
pub mod config;
pub mod console;
pub mod host_mounts;
pub mod hybrid_vsock;
pub mod hypervisor;
pub mod layer_cache;
pub mod network;
pub mod phase_timeline;
pub mod pod_size;
pub mod pod_vm;
pub mod port_forward;
pub mod run_dir;
pub mod run_dir_sweep;
pub mod stdio_streams;

pub use agent_client::{AgentClient, AgentClientError};
pub use config::Configuration;
pub use hypervisor::{Hypervisor, HypervisorError, RunningVm, VmConfig, VmExit};
pub use pod_vm::{BootError, PodError, PodSetup, PodVm};
