//! The launch sequence every backend shares: the host side prepared (files checked, run
//! directory, readiness listener, simulated AMD-SP), the helper daemons the VMM needs
//! started, the VMM spawned in the pod's network namespace, and on any failure everything
//! already started stopped again. A backend supplies only what differs: its `VmmCommand`.

use std::path::PathBuf;

use tokio::process::Command;

use super::child::{enter_netns_on_exec, ChildProcess};
use super::privileges::{self, KeptCapabilities};
use super::virtiofs_backend::VirtiofsBackend;
use super::vm_processes::{HostSide, VmProcesses};
use super::vsock_backend::VsockBackend;
use super::{HypervisorError, VmConfig};
use crate::config::HypervisorConfig;

/// What one backend runs for one VM, decided (and refused, if this host cannot) before any
/// process starts. Its arguments name the helpers' sockets by their run-dir paths, which the
/// helpers then create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VmmCommand {
    /// "qemu", "cloak-vmm": the process name in logs, pid files and errors.
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The VMM reaches vsock through vhost-device-vsock (QEMU) instead of serving it itself.
    pub vsock_backend: bool,
    /// The only capabilities the VMM keeps (`privileges`).
    pub kept: KeptCapabilities,
}

/// What a VMM needs of root's capabilities for `config`: CAP_NET_ADMIN to attach the pod's
/// tap, CAP_IPC_LOCK to pin an SEV-SNP guest's memory; nothing else.
pub(super) fn vmm_capabilities(config: &VmConfig, snp: bool) -> KeptCapabilities {
    let mut kept = KeptCapabilities::NONE;
    if config.network.is_some() {
        kept = kept.with(privileges::CAP_NET_ADMIN);
    }
    if snp {
        kept = kept.with(privileges::CAP_IPC_LOCK);
    }
    kept
}

/// Starts the VM `command` describes; returns once the VMM runs.
pub(super) async fn launch(
    settings: &HypervisorConfig,
    config: &VmConfig,
    command: VmmCommand,
) -> Result<VmProcesses, HypervisorError> {
    let host_side = HostSide::prepare(settings, config).await?;
    let mut helpers = Helpers::start(settings, config, command.vsock_backend).await?;
    let _ = std::fs::remove_file(config.console_log());
    let mut vmm = Command::new(&command.program);
    vmm.args(&command.args);
    let spawned = match &config.network {
        Some(network) => enter_netns_on_exec(&mut vmm, &network.netns),
        None => Ok(()),
    }
    .and_then(|()| {
        // After setns, which needs CAP_SYS_ADMIN: pre_exec hooks run in order.
        privileges::drop_capabilities_on_exec(&mut vmm, command.kept);
        ChildProcess::spawn(command.name, vmm, &config.run_dir)
    });
    let vmm = match spawned {
        Ok(vmm) => vmm,
        Err(err) => {
            helpers.stop().await;
            return Err(err);
        }
    };
    tracing::info!(
        pod = %config.id,
        vmm = command.name,
        pid = vmm.pid(),
        capabilities = format!("{:#x}", command.kept.mask()),
        vcpus = config.vcpus,
        memory_mib = config.memory_mib,
        "VMM started"
    );
    Ok(VmProcesses {
        name: command.name,
        vmm,
        helpers,
        host_side,
        id: config.id.clone(),
        vsock_socket: config.vsock_socket(),
        helper_exit: None,
    })
}

/// The daemons beside a VMM: virtio-fs for the shared directory, vhost-device-vsock for a
/// VMM without its own vsock.
pub struct Helpers {
    pub virtiofs: Option<VirtiofsBackend>,
    pub vsock: Option<VsockBackend>,
}

impl Helpers {
    async fn start(
        settings: &HypervisorConfig,
        config: &VmConfig,
        vsock_backend: bool,
    ) -> Result<Self, HypervisorError> {
        let vsock = if vsock_backend {
            Some(
                VsockBackend::start(
                    &settings.vsock_backend_path,
                    &config.run_dir,
                    &config.vsock_socket(),
                )
                .await?,
            )
        } else {
            None
        };
        let mut helpers = Self {
            virtiofs: None,
            vsock,
        };
        match VirtiofsBackend::start_for(&settings.virtiofsd_path, config).await {
            Ok(virtiofs) => {
                helpers.virtiofs = virtiofs;
                Ok(helpers)
            }
            Err(err) => {
                helpers.stop().await;
                Err(err)
            }
        }
    }

    /// Stops each helper (again: a stopped helper stays stopped).
    pub async fn stop(&mut self) {
        if let Some(backend) = self.virtiofs.as_mut() {
            backend.stop().await;
        }
        if let Some(backend) = self.vsock.as_mut() {
            backend.stop().await;
        }
    }

    /// The first helper found exited, by name, with how it ended.
    pub fn exited(&mut self) -> Option<(&'static str, super::VmExit)> {
        if let Some(exit) = self.virtiofs.as_mut().and_then(VirtiofsBackend::try_exit) {
            return Some(("virtiofsd", exit));
        }
        self.vsock
            .as_mut()
            .and_then(VsockBackend::try_exit)
            .map(|exit| ("vhost-device-vsock", exit))
    }

    /// virtiofsd's pid, then vhost-device-vsock's.
    pub fn pids(&self) -> Vec<u32> {
        self.virtiofs
            .iter()
            .map(VirtiofsBackend::pid)
            .chain(self.vsock.iter().map(VsockBackend::pid))
            .collect()
    }
}
