//! A pod sandbox: a pod VM with the pod's shared directory (virtio-fs) mounted by the agent,
//! and the sandbox created in the guest. Containers of the pod are then created in it through
//! the agent API, their root filesystems below the shared directory.

use std::path::{Path, PathBuf};

use cloak_protocol::agent::{CreateSandboxRequest, Storage};
use cloak_protocol::{SHARED_DIR_IN_GUEST, SHARED_FS_TAG};

use crate::config::Configuration;
use crate::pod_vm::{vm_config_for, BootError, PodVm};
use crate::stdio_streams::{ProcessStdio, StdioWanted, StreamError};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Hypervisor(#[from] crate::hypervisor::HypervisorError),
    #[error("creating the sandbox in the guest: {0}")]
    CreateSandbox(ttrpc::Error),
    #[error(transparent)]
    Stream(#[from] StreamError),
}

pub struct PodSandbox {
    vm: PodVm,
    vsock_socket: PathBuf,
    console_log: PathBuf,
    shared_dir: PathBuf,
}

impl PodSandbox {
    /// Boots the pod VM with `shared_dir` shared into it and creates the sandbox in the guest
    /// with `init_data` (bound into a TEE launch as HOST_DATA). On failure nothing of the VM
    /// is left running.
    pub async fn boot(
        config: &Configuration,
        manifest: &cloak_image::Manifest,
        id: &str,
        hostname: &str,
        shared_dir: &Path,
        init_data: &[u8],
    ) -> Result<Self, SandboxError> {
        let mut vm_config = vm_config_for(config, manifest, id);
        vm_config.shared_dir = Some(shared_dir.to_owned());
        vm_config.init_data = init_data.to_owned();
        let vsock_socket = vm_config.vsock_socket();
        let console_log = vm_config.console_log();
        let hypervisor = crate::hypervisor::from_config(&config.hypervisor)?;
        let vm = PodVm::boot(
            hypervisor,
            vm_config,
            config.boot_timeout(),
            config.request_timeout(),
        )
        .await?;
        let request = CreateSandboxRequest {
            sandbox_id: id.to_owned(),
            hostname: hostname.to_owned(),
            storages: vec![Storage {
                driver: "virtio-fs".into(),
                source: SHARED_FS_TAG.into(),
                mount_point: SHARED_DIR_IN_GUEST.into(),
                ..Default::default()
            }],
            init_data: init_data.to_owned(),
            ..Default::default()
        };
        if let Err(err) = vm
            .agent()
            .agent()
            .create_sandbox(vm.agent().context(), &request)
            .await
        {
            let _ = vm.shutdown().await;
            return Err(SandboxError::CreateSandbox(err));
        }
        Ok(Self {
            vm,
            vsock_socket,
            console_log,
            shared_dir: shared_dir.to_owned(),
        })
    }

    pub fn vm(&self) -> &PodVm {
        &self.vm
    }

    pub fn agent(&self) -> &cloak_protocol::agent_ttrpc::AgentServiceClient {
        self.vm.agent().agent()
    }

    /// Hybrid-vsock socket of the VM: stdio streams and agent connections start here.
    pub fn vsock_socket(&self) -> &Path {
        &self.vsock_socket
    }

    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    /// Host directory shared with the guest at `SHARED_DIR_IN_GUEST`.
    pub fn shared_dir(&self) -> &Path {
        &self.shared_dir
    }

    /// Where a path below the shared directory appears in the guest.
    pub fn guest_path(relative: &Path) -> PathBuf {
        Path::new(SHARED_DIR_IN_GUEST).join(relative)
    }

    /// Opens the stdio streams of a process about to be created.
    pub async fn open_stdio(
        &self,
        container_id: &str,
        exec_id: &str,
        wanted: StdioWanted,
    ) -> Result<(ProcessStdio, cloak_protocol::agent::StdioConfig), SandboxError> {
        Ok(ProcessStdio::open(&self.vsock_socket, container_id, exec_id, wanted).await?)
    }

    /// `Some` once the VM has exited by itself.
    pub fn try_exit(&mut self) -> Option<crate::hypervisor::VmExit> {
        self.vm.hypervisor().try_exit()
    }

    /// Host processes of the VM (VMM first, then its backends).
    pub fn process_ids(&mut self) -> Vec<u32> {
        self.vm.hypervisor().process_ids()
    }

    /// Stops the host processes of a VM that already exited (its backends outlive it).
    pub async fn stop_exited(&mut self) -> Result<(), SandboxError> {
        Ok(self.vm.hypervisor().stop().await?)
    }

    /// Removes every container, powers the VM off and stops its host processes.
    pub async fn shutdown(self) -> Result<(), SandboxError> {
        Ok(self.vm.shutdown().await?)
    }
}
