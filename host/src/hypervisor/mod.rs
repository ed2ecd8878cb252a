//! The one trait through which the shim reaches a VMM, and what every backend shares: the VM's
//! run directory layout, host virtualization detection, child processes, and the readiness
//! listener the agent connects to once it serves.

pub mod child;
pub mod cloak_vmm;
pub mod host;
pub mod qemu;
pub mod readiness;
pub mod sim_psp;
pub mod snp;
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

    /// Guest serial console, kept after the VM stops for post-mortems.
    pub fn console_log(&self) -> PathBuf {
        crate::run_dir::console_log(&self.run_dir)
    }

    /// Listener for guest connections to host port `port` (the hybrid-vsock convention:
    /// `<vsock socket>_<port>`).
    pub fn host_port_socket(&self, port: u32) -> PathBuf {
        crate::run_dir::host_port_socket(&self.run_dir, port)
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
    #[error("the VM is not running")]
    NotRunning,
    #[error("this {backend} instance already runs a VM")]
    AlreadyRunning { backend: &'static str },
    /// This host or configuration cannot run the VM (no VMX/SVM, SNP under emulation, a
    /// missing firmware...): the reason says which and what to do.
    #[error("{0}")]
    Refused(String),
    #[error("tee = \"sim\": measuring the launch: {0}")]
    Measurement(#[from] cloak_attestation::direct_launch::DirectLaunchError),
    #[error("tee = \"sim\": creating the simulated AMD-SP: {0}")]
    SimulatedPsp(#[from] cloak_attestation::simulated_psp::SimulatedPspError),
    #[error("{what}: the blocking task failed: {source}")]
    Join {
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

/// A VMM that boots pod VMs. The shim holds one per pod VM.
#[async_trait::async_trait]
pub trait Hypervisor: Send + Sync {
    /// Backend name for logs and errors ("qemu", "cloak-vmm").
    fn name(&self) -> &'static str;

    /// Boots the VM; returns once the VMM runs (not once the guest is up).
    async fn start(&mut self, config: &VmConfig) -> Result<(), HypervisorError>;

    /// Waits until the agent reports ready, the VM exits, or `deadline` passes.
    async fn wait_for_agent(&mut self, deadline: Instant) -> Result<(), HypervisorError>;

    /// `Some` once the VM has exited (it is reaped then).
    fn try_exit(&mut self) -> Option<VmExit>;

    /// Stops the VM and every helper process and removes their sockets; the console log stays.
    /// Stopping a VM that is not running is not an error.
    async fn stop(&mut self) -> Result<(), HypervisorError>;

    /// The configuration of the VM started last (it outlives the VM for post-mortems).
    fn last_config(&self) -> Option<&VmConfig>;

    /// Guest console log.
    fn console_log(&self) -> Option<PathBuf> {
        self.last_config().map(VmConfig::console_log)
    }

    /// Hybrid-vsock socket to reach the agent.
    fn vsock_socket(&self) -> Option<PathBuf> {
        self.last_config().map(VmConfig::vsock_socket)
    }

    /// Host processes serving this VM (VMM and backends), for accounting and cleanup.
    fn process_ids(&self) -> Vec<u32>;
}

/// The backend the configuration names.
pub fn from_config(
    config: &crate::config::HypervisorConfig,
) -> Result<Box<dyn Hypervisor>, HypervisorError> {
    match config.kind {
        crate::config::HypervisorKind::Qemu => Ok(Box::new(qemu::Qemu::new(config.clone()))),
        crate::config::HypervisorKind::CloakVmm => {
            Ok(Box::new(cloak_vmm::CloakVmm::new(config.clone())))
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
