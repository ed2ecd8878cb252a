//! What a running pod VM holds on the host whichever VMM runs it — the VMM process, its
//! helper daemons, the readiness listener and the simulated AMD-SP — how they are set up
//! before the VMM starts and the order they are stopped in, so every backend prepares, waits,
//! reports and cleans up the same way. `VmProcesses` is the `RunningVm` of both backends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::child::ChildProcess;
use super::launch::Helpers;
use super::readiness::ReadyListener;
use super::sim_psp::SimPspServer;
use super::{HypervisorError, RunningVm, VmConfig, VmExit};

/// How long a VMM may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What every backend sets up before its VMM: the kernel and initrd checked, the run
/// directory, the simulated AMD-SP's port and the listener the agent reports ready on.
pub struct HostSide {
    /// Dropped with the VM: stops serving and removes its socket.
    pub sim_psp: SimPspServer,
    pub ready: ReadyListener,
}

impl HostSide {
    pub async fn prepare(
        settings: &crate::config::HypervisorConfig,
        config: &VmConfig,
    ) -> Result<Self, HypervisorError> {
        for file in [&config.kernel, &config.initrd] {
            if !file.is_file() {
                return Err(HypervisorError::RunDir {
                    path: file.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
        }
        std::fs::create_dir_all(&config.run_dir).map_err(|source| HypervisorError::RunDir {
            path: config.run_dir.display().to_string(),
            source,
        })?;
        let sim_psp = SimPspServer::serve_for(settings, config).await?;
        let ready =
            ReadyListener::bind(&config.host_port_socket(cloak_protocol::READY_VSOCK_PORT))?;
        Ok(Self { sim_psp, ready })
    }
}

pub struct VmProcesses {
    /// "qemu", "cloak-vmm": for logs and errors.
    pub name: &'static str,
    pub vmm: ChildProcess,
    pub helpers: Helpers,
    pub host_side: HostSide,
    /// The pod's id, for logs.
    pub id: String,
    /// Served by the VMM or by vhost-device-vsock; removed once both are gone (a killed VMM
    /// cannot remove it itself).
    pub vsock_socket: PathBuf,
    /// The exit of the helper that ended the VM, once seen: reported (and logged) once, then
    /// returned as it was on every later poll, not replaced by the VMM's kill.
    pub helper_exit: Option<VmExit>,
}

#[async_trait::async_trait]
impl RunningVm for VmProcesses {
    fn backend(&self) -> &'static str {
        self.name
    }

    async fn wait_for_agent(&mut self, deadline: Instant) -> Result<(), HypervisorError> {
        self.host_side
            .ready
            .wait_for_vmm(self.name, &mut self.vmm, deadline)
            .await
    }

    fn try_exit(&mut self) -> Option<VmExit> {
        if let Some(exit) = &self.helper_exit {
            return Some(exit.clone());
        }
        if let Some(exit) = self.vmm.try_exit() {
            return Some(exit);
        }
        // The VM ended with its helper: reported at once, the VMM killed (and reaped by stop).
        let (helper, exit) = self.helpers.exited()?;
        tracing::error!(pod = %self.id, helper, %exit, "a helper daemon of the VM exited: the VM cannot go on without it, killing it");
        self.vmm.kill();
        self.helper_exit = Some(exit.clone());
        Some(exit)
    }

    fn kill(&mut self) {
        self.vmm.kill();
    }

    /// The VMM first (nothing uses the daemons after it), then the daemons; the listeners
    /// close as `self` goes.
    async fn stop(&mut self) -> VmExit {
        let exit = self.vmm.terminate(STOP_GRACE).await;
        self.helpers.stop().await;
        let _ = std::fs::remove_file(&self.vsock_socket);
        tracing::info!(pod = %self.id, vmm = self.name, %exit, "VM stopped");
        exit
    }

    fn process_ids(&self) -> Vec<u32> {
        let mut pids = vec![self.vmm.pid()];
        pids.extend(self.helpers.pids());
        pids
    }
}
