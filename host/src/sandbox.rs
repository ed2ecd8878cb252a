//! A pod sandbox: a pod VM with the pod's shared directory (virtio-fs) mounted by the agent,
//! and the sandbox created in the guest. Containers of the pod are then created in it through
//! the agent API, their root filesystems below the shared directory.

use std::path::{Path, PathBuf};

use cloak_protocol::agent::{
    CreateSandboxRequest, Storage, UpdateInterfaceRequest, UpdateRoutesRequest,
};
use cloak_protocol::{SHARED_DIR_IN_GUEST, SHARED_FS_TAG};

use crate::config::Configuration;
use crate::hypervisor::VmNetwork;
use crate::network::PodNetwork;
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
    #[error("pod network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("configuring the guest's pod interface: {0}")]
    GuestNetwork(ttrpc::Error),
    #[error(transparent)]
    Stream(#[from] StreamError),
}

pub struct PodSandbox {
    vm: PodVm,
    vsock_socket: PathBuf,
    console_log: PathBuf,
    shared_dir: PathBuf,
    network: Option<PodNetwork>,
}

/// What a pod is set up with besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct SandboxSetup {
    pub hostname: String,
    /// Shared into the VM with virtio-fs (container root filesystems, volumes).
    pub shared_dir: PathBuf,
    /// Bound into a TEE launch as HOST_DATA, checked by the agent.
    pub init_data: Vec<u8>,
    /// The pod's network namespace (set up by CNI); its interface becomes the guest's.
    pub netns: Option<PathBuf>,
}

impl PodSandbox {
    /// Boots the pod VM and creates the sandbox in the guest: shared directory mounted, pod
    /// network attached and configured. On failure nothing of the VM or its network is left.
    pub async fn boot(
        config: &Configuration,
        manifest: &cloak_image::Manifest,
        id: &str,
        setup: &SandboxSetup,
    ) -> Result<Self, SandboxError> {
        let network = match &setup.netns {
            Some(netns) => PodNetwork::discover(netns).await?,
            None => None,
        };
        if let Some(network) = &network {
            network.attach().await?;
        }
        match Self::boot_attached(config, manifest, id, setup, network.as_ref()).await {
            Ok(sandbox) => Ok(Self { network, ..sandbox }),
            Err(err) => {
                if let Some(network) = &network {
                    network.detach().await;
                }
                Err(err)
            }
        }
    }

    /// The sandbox on an already attached `network` (which the caller owns and detaches).
    async fn boot_attached(
        config: &Configuration,
        manifest: &cloak_image::Manifest,
        id: &str,
        setup: &SandboxSetup,
        network: Option<&PodNetwork>,
    ) -> Result<Self, SandboxError> {
        let mut vm_config = vm_config_for(config, manifest, id);
        vm_config.shared_dir = Some(setup.shared_dir.clone());
        vm_config.init_data = setup.init_data.clone();
        vm_config.network = network.map(|network| VmNetwork {
            netns: network.netns.clone(),
            tap: network.tap.clone(),
            mac: network.interface.mac.clone(),
        });
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
        if let Err(err) = Self::create_in_guest(&vm, id, setup, network).await {
            let _ = vm.shutdown().await;
            return Err(err);
        }
        Ok(Self {
            vm,
            vsock_socket,
            console_log,
            shared_dir: setup.shared_dir.clone(),
            network: None,
        })
    }

    async fn create_in_guest(
        vm: &PodVm,
        id: &str,
        setup: &SandboxSetup,
        network: Option<&PodNetwork>,
    ) -> Result<(), SandboxError> {
        let agent = vm.agent();
        if let Some(network) = network {
            let interface = UpdateInterfaceRequest {
                interface: Some(network.guest_interface()).into(),
                ..Default::default()
            };
            agent
                .agent()
                .update_interface(agent.context(), &interface)
                .await
                .map_err(SandboxError::GuestNetwork)?;
            let routes = UpdateRoutesRequest {
                routes: network.routes.clone(),
                ..Default::default()
            };
            agent
                .agent()
                .update_routes(agent.context(), &routes)
                .await
                .map_err(SandboxError::GuestNetwork)?;
            tracing::info!(sandbox = %id, addresses = ?network.interface.addresses, "pod network attached");
        }
        let request = CreateSandboxRequest {
            sandbox_id: id.to_owned(),
            hostname: setup.hostname.clone(),
            storages: vec![Storage {
                driver: "virtio-fs".into(),
                source: SHARED_FS_TAG.into(),
                mount_point: SHARED_DIR_IN_GUEST.into(),
                ..Default::default()
            }],
            init_data: setup.init_data.clone(),
            ..Default::default()
        };
        agent
            .agent()
            .create_sandbox(agent.context(), &request)
            .await
            .map_err(SandboxError::CreateSandbox)?;
        Ok(())
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

    /// Stops the host processes of a VM that already exited (its backends outlive it) and
    /// detaches its network.
    pub async fn stop_exited(&mut self) -> Result<(), SandboxError> {
        let stopped = self.vm.hypervisor().stop().await;
        if let Some(network) = self.network.take() {
            network.detach().await;
        }
        Ok(stopped?)
    }

    /// Removes every container, powers the VM off, stops its host processes and detaches its
    /// network.
    pub async fn shutdown(self) -> Result<(), SandboxError> {
        let stopped = self.vm.shutdown().await;
        if let Some(network) = &self.network {
            network.detach().await;
        }
        Ok(stopped?)
    }
}
