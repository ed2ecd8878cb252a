//! The two traits through which the host reaches a VMM — a `Hypervisor` backend launches a
//! `VmConfig` into a `RunningVm` — and what every backend shares: the launch sequence, host
//! virtualization detection, child processes, and the readiness listener the agent connects
//! to once it serves. A VM that exists is started (Cloud Hypervisor's `create_vm`): "not
//! started" and "started twice" are not states any caller can reach.

pub mod child;
pub mod cloak_vmm;
pub mod host;
mod launch;
pub mod privileges;
pub mod qemu;
pub mod readiness;
pub mod sim_psp;
pub mod snp;
pub mod snp_rehearsal;
pub mod virtiofs_backend;
pub mod vm_processes;
pub mod vsock_backend;

use std::path::PathBuf;
use std::time::Instant;

pub use readiness::ReadyListener;

/// What a backend needs to boot one pod VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Sandbox id, for logs.
    pub id: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The full kernel command line, before backend-specific additions.
    pub cmdline: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Private directory of this VM: sockets, console log, pid files. Created by `start`.
    pub run_dir: PathBuf,
    /// Host directory shared into the VM with virtio-fs (tag `SHARED_FS_TAG`), if any.
    pub shared_dir: Option<PathBuf>,
    /// The pod's init-data; a TEE launch binds its SHA-256 as HOST_DATA.
    pub init_data: Vec<u8>,
    /// The pod network's tap device: the VMM runs in `netns` and gives it to the guest.
    pub network: Option<VmNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNetwork {
    pub netns: PathBuf,
    pub tap: String,
    /// The guest NIC's MAC address: the pod interface's, so nothing on the bridge changes.
    pub mac: String,
}

impl VmConfig {
    /// Hybrid-vsock socket the host connects to (`CONNECT <port>\n`).
    pub fn vsock_socket(&self) -> PathBuf {
        crate::run_dir::vsock_socket(&self.run_dir)
    }

    /// vhost-user-fs socket of the shared directory, for a VM that has one.
    pub fn virtiofs_socket(&self) -> Option<PathBuf> {
        self.shared_dir
            .as_ref()
            .map(|_| crate::run_dir::virtiofs_socket(&self.run_dir))
    }

    /// Guest serial console, kept after the VM stops for post-mortems.
    pub fn console_log(&self) -> PathBuf {
        crate::run_dir::console_log(&self.run_dir)
    }

    /// Listener for guest connections to host port `port` (the hybrid-vsock convention:
    /// `<vsock socket>_<port>`).
    pub fn host_port_socket(&self, port: u32) -> PathBuf {
        crate::run_dir::host_port_socket(&self.run_dir, port)
    }

    /// HOST_DATA of a TEE launch with this init-data (zero without any); invalid init-data is
    /// not launched.
    pub fn host_data(&self) -> Result<[u8; cloak_init_data::HOST_DATA_BYTES], HypervisorError> {
        Ok(cloak_init_data::host_data_for(&self.init_data)?)
    }
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    /// The VMM process's exit code, or None if a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => write!(f, "unknown exit"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("preparing {path}: {source}")]
    RunDir {
        path: String,
        source: std::io::Error,
    },
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{what} exited before it was ready ({exit}){details}")]
    EarlyExit {
        what: String,
        exit: VmExit,
        /// Its own error output, if any, prefixed with a newline.
        details: String,
    },
    #[error("{what} not ready after {waited_ms} ms")]
    NotReady { what: String, waited_ms: u64 },
    #[error("the VM exited before the agent was ready ({0})")]
    VmExited(VmExit),
    #[error("the agent did not report ready within the deadline")]
    AgentTimeout,
    /// This host or configuration cannot run the VM (no VMX/SVM, SNP under emulation, a
    /// missing firmware...): the reason says which and what to do.
    #[error("{0}")]
    Refused(String),
    #[error("tee = \"sim\": measuring the launch: {0}")]
    Measurement(#[from] cloak_launch::direct::DirectLaunchError),
    #[error("tee = \"sim\": creating the simulated AMD-SP: {0}")]
    SimulatedPsp(#[from] cloak_attestation::simulated_psp::SimulatedPspError),
    #[error(transparent)]
    InitData(#[from] cloak_init_data::InitDataError),
    #[error("{what}: the blocking task failed: {source}")]
    Join {
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

/// A VMM backend: turns a `VmConfig` into a running VM. It holds only its settings, so one
/// backend can launch any number of VMs.
#[async_trait::async_trait]
pub trait Hypervisor: Send + Sync {
    /// Backend name for logs and errors ("qemu", "cloak-vmm").
    fn name(&self) -> &'static str;

    /// Boots the VM; returns once the VMM runs (not once the guest is up). Refusals (this host
    /// cannot give what the configuration asks) come before any process starts; on any error
    /// nothing of the VM is left running.
    async fn launch(&self, config: &VmConfig) -> Result<Box<dyn RunningVm>, HypervisorError>;
}

/// A VM whose VMM was started: its host processes until it is stopped or dropped (dropping
/// kills them).
#[async_trait::async_trait]
pub trait RunningVm: Send + Sync {
    /// The backend that launched it.
    fn backend(&self) -> &'static str;

    /// Waits until the agent reports ready, the VM exits, or `deadline` passes.
    async fn wait_for_agent(&mut self, deadline: Instant) -> Result<(), HypervisorError>;

    /// `Some` once the VMM has exited (it is reaped then) — or once a helper daemon did: a VM
    /// without its vsock or shared directory cannot go on, so its VMM is killed and the
    /// helper's exit is the VM's.
    fn try_exit(&mut self) -> Option<VmExit>;

    /// Kills the VMM at once (a hung guest); `try_exit` reports it once it is reaped.
    fn kill(&mut self);

    /// Stops the VMM and every helper process and removes their sockets; the console log
    /// stays. Stopping again returns the same exit.
    async fn stop(&mut self) -> VmExit;

    /// Host processes serving this VM, the VMM first, for accounting and cleanup.
    fn process_ids(&self) -> Vec<u32>;
}

/// The backend the configuration names.
pub fn from_config(config: &crate::config::HypervisorConfig) -> Box<dyn Hypervisor> {
    match config.kind {
        crate::config::HypervisorKind::Qemu => Box::new(qemu::Qemu::new(config.clone())),
        crate::config::HypervisorKind::CloakVmm => {
            Box::new(cloak_vmm::CloakVmm::new(config.clone()))
        }
    }
}

/// The value after each occurrence of `flag` in a VMM command line (tests of both backends).
#[cfg(test)]
pub(crate) fn value_after(args: &[String], flag: &str) -> Vec<String> {
    args.windows(2)
        .filter(|pair| pair[0] == flag)
        .map(|pair| pair[1].clone())
        .collect()
}
