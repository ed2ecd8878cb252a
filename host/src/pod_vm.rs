//! A pod VM: launched through a `Hypervisor`, its agent connected and — for a pod — the pod
//! created in the guest (shared directory mounted by the agent, pod network attached and
//! configured). Boot is a few named ordered steps; if any fails, what it started is stopped
//! before the error returns, and a boot error carries the end of the guest console, which is
//! where a guest that did not come up says why. Containers of the pod are then created through
//! the agent, their root filesystems below the shared directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloak_protocol::agent::{
    CreateSandboxRequest, Storage, UpdateInterfaceRequest, UpdateRoutesRequest,
};
use cloak_protocol::{SHARED_DIR_IN_GUEST, SHARED_FS_TAG};

use crate::agent_client::AgentClient;
use crate::config::Configuration;
use crate::hypervisor::{Hypervisor, RunningVm, VmConfig, VmExit, VmNetwork};
use crate::network::PodNetwork;
use crate::phase_timeline::PhaseTimeline;

/// Console lines carried by boot errors.
const CONSOLE_TAIL_LINES: usize = 30;

/// How long a VM the agent was asked to power off may take to exit by itself.
const POWER_OFF_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("pod VM {id}: {stage} failed: {reason}\n--- last guest console lines ({console_log}) ---\n{console_tail}")]
pub struct BootError {
    pub id: String,
    pub stage: &'static str,
    pub reason: String,
    pub console_log: String,
    pub console_tail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("creating the pod in the guest: {0}")]
    CreateInGuest(ttrpc::Error),
    #[error("pod network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("configuring the guest's pod interface: {0}")]
    GuestNetwork(ttrpc::Error),
    #[error(transparent)]
    InitData(#[from] cloak_init_data::InitDataError),
}

/// What a pod is set up with besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct PodSetup {
    pub hostname: String,
    /// Shared into the VM with virtio-fs (container root filesystems, volumes).
    pub shared_dir: PathBuf,
    /// Bound into a TEE launch as HOST_DATA, checked by the agent.
    pub init_data: Vec<u8>,
    /// The pod's network namespace (set up by CNI); its interface becomes the guest's.
    pub netns: Option<PathBuf>,
    /// The pod's limits (the CRI's sandbox annotations); they size the VM.
    pub resources: crate::pod_size::PodResources,
}

pub struct PodVm {
    id: String,
    vm: Box<dyn RunningVm>,
    agent: AgentClient,
    run_dir: PathBuf,
    /// Attached before the VM launched, detached once it stopped.
    network: Option<PodNetwork>,
    /// Answers the CRI plugin's port-forward dials in the pod's namespace; stopped with the VM.
    port_forward: Option<crate::port_forward::PortForwarder>,
    /// The phases of this VM's start, from the launch (or the network setup) on.
    timeline: PhaseTimeline,
}

impl PodVm {
    /// Launches the VM and waits until the agent answers Check, or `boot_timeout` passes:
    /// a VM with an agent and nothing else (`cloak probe`, boot benchmarks).
    pub async fn boot(
        hypervisor: &dyn Hypervisor,
        config: VmConfig,
        boot_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, BootError> {
        Self::boot_timed(
            hypervisor,
            config,
            boot_timeout,
            request_timeout,
            PhaseTimeline::new(),
        )
        .await
    }

    /// `boot`, its phases added to `timeline`: the VMM and its helpers started, the guest
    /// booted to its agent, the agent connected.
    async fn boot_timed(
        hypervisor: &dyn Hypervisor,
        config: VmConfig,
        boot_timeout: Duration,
        request_timeout: Duration,
        mut timeline: PhaseTimeline,
    ) -> Result<Self, BootError> {
        let started = Instant::now();
        let deadline = started + boot_timeout;
        let mut vm = match hypervisor.launch(&config).await {
            Ok(vm) => vm,
            Err(err) => return Err(boot_error(&config, "starting the VM", err.to_string())),
        };
        timeline.phase("vm launch");
        let agent = match connect_agent(
            vm.as_mut(),
            &config,
            deadline,
            request_timeout,
            &mut timeline,
        )
        .await
        {
            Ok(agent) => agent,
            Err((stage, reason)) => {
                vm.stop().await;
                return Err(boot_error(&config, stage, reason));
            }
        };
        tracing::info!(
            pod = %config.id,
            hypervisor = hypervisor.name(),
            boot_ms = started.elapsed().as_millis() as u64,
            "pod VM ready"
        );
        Ok(Self {
            id: config.id.clone(),
            vm,
            agent,
            run_dir: config.run_dir.clone(),
            network: None,
            port_forward: None,
            timeline,
        })
    }

    /// Boots the pod VM and creates the pod in the guest: shared directory mounted, pod
    /// network attached and configured. On failure nothing of the VM or its network is left.
    pub async fn create_pod(
        config: &Configuration,
        manifest: &cloak_image::Manifest,
        id: &str,
        setup: &PodSetup,
    ) -> Result<Self, PodError> {
        // Invalid init-data is refused before anything starts.
        cloak_init_data::host_data_for(&setup.init_data)?;
        let mut timeline = PhaseTimeline::new();
        let network = match &setup.netns {
            Some(netns) => PodNetwork::discover(netns).await?,
            None => None,
        };
        if let Some(network) = &network {
            network.attach().await?;
            timeline.phase("network attach");
        }
        let mut vm_config = vm_config_for(config, manifest, id);
        let (size, capped) = config.size_policy().size_for(&setup.resources);
        if capped {
            tracing::warn!(pod = %id, resources = ?setup.resources, vcpus = size.vcpus, memory_mib = size.memory_mib,
                "the pod's limits exceed hypervisor.max_vcpus/max_memory_mib: the VM is capped");
        }
        tracing::info!(pod = %id, vcpus = size.vcpus, memory_mib = size.memory_mib, "pod VM size");
        vm_config.vcpus = size.vcpus;
        vm_config.memory_mib = size.memory_mib;
        vm_config.shared_dir = Some(setup.shared_dir.clone());
        vm_config.init_data = setup.init_data.clone();
        vm_config.network = network.as_ref().map(|network| VmNetwork {
            netns: network.netns.clone(),
            tap: network.tap.clone(),
            mac: network.interface.mac.clone(),
        });
        let hypervisor = crate::hypervisor::from_config(&config.hypervisor);
        let booted = Self::boot_timed(
            hypervisor.as_ref(),
            vm_config,
            config.boot_timeout(),
            config.request_timeout(),
            timeline,
        )
        .await;
        let mut pod = match booted {
            Ok(pod) => pod,
            Err(err) => {
                if let Some(network) = &network {
                    network.detach().await;
                }
                return Err(err.into());
            }
        };
        pod.network = network;
        if let Err(err) = pod.create_in_guest(setup).await {
            pod.shutdown().await;
            return Err(err);
        }
        pod.timeline.phase("create sandbox");
        pod.start_port_forward().await;
        if pod.network.is_some() {
            pod.timeline.phase("port forward");
        }
        Ok(pod)
    }

    /// The pod in the guest: CreateSandbox first (it carries the init-data, whose policy
    /// decides every later request), then the pod network.
    async fn create_in_guest(&self, setup: &PodSetup) -> Result<(), PodError> {
        let agent = &self.agent;
        let request = CreateSandboxRequest {
            sandbox_id: self.id.clone(),
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
            .map_err(PodError::CreateInGuest)?;
        if let Some(network) = &self.network {
            let interface = UpdateInterfaceRequest {
                interface: Some(network.guest_interface()).into(),
                ..Default::default()
            };
            agent
                .agent()
                .update_interface(agent.context(), &interface)
                .await
                .map_err(PodError::GuestNetwork)?;
            let routes = UpdateRoutesRequest {
                routes: network.routes.clone(),
                ..Default::default()
            };
            agent
                .agent()
                .update_routes(agent.context(), &routes)
                .await
                .map_err(PodError::GuestNetwork)?;
            tracing::info!(pod = %self.id, addresses = ?network.interface.addresses, "pod network attached");
        }
        Ok(())
    }

    /// Port-forward for a pod with a network namespace. A node where it cannot be set up
    /// (no iptables, say) still runs the pod: port-forward to it then fails as it did before.
    async fn start_port_forward(&mut self) {
        let Some(network) = &self.network else {
            return;
        };
        let vsock_socket = crate::run_dir::vsock_socket(&self.run_dir);
        match crate::port_forward::PortForwarder::start(&network.netns, vsock_socket).await {
            Ok(forwarder) => self.port_forward = Some(forwarder),
            Err(err) => {
                tracing::warn!(pod = %self.id, error = %err, "port-forward is not available for this pod");
            }
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The phases of this VM's start so far.
    pub fn timeline(&self) -> &PhaseTimeline {
        &self.timeline
    }

    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// The backend that runs the VM ("qemu", "cloak-vmm").
    pub fn backend(&self) -> &'static str {
        self.vm.backend()
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The guest's serial console; it outlives the VM.
    pub fn console_log(&self) -> PathBuf {
        crate::run_dir::console_log(&self.run_dir)
    }

    /// `Some` once the VM has exited by itself.
    pub fn try_exit(&mut self) -> Option<VmExit> {
        self.vm.try_exit()
    }

    /// Kills the VMM of a guest that stopped answering; `try_exit` reports it once reaped.
    pub fn kill(&mut self) {
        self.vm.kill();
    }

    /// Host processes of the VM (VMM first, then its helpers).
    pub fn process_ids(&self) -> Vec<u32> {
        self.vm.process_ids()
    }

    /// Stops the host processes of a VM that already exited (its helpers outlive it) and
    /// detaches its network.
    pub async fn stop_exited(&mut self) -> VmExit {
        self.stop_timed(&mut PhaseTimeline::new()).await
    }

    async fn stop_timed(&mut self, timeline: &mut PhaseTimeline) -> VmExit {
        self.port_forward = None;
        let exit = self.vm.stop().await;
        timeline.phase("stop vm processes");
        if let Some(network) = self.network.take() {
            network.detach().await;
            timeline.phase("network detach");
        }
        exit
    }

    /// Asks the agent to power off, waits briefly for the VM to exit by itself, then stops
    /// every host process of the VM and detaches its network.
    pub async fn shutdown(mut self) -> VmExit {
        let mut timeline = PhaseTimeline::new();
        if let Err(err) = self.agent.destroy_sandbox().await {
            tracing::warn!(pod = %self.id, error = %err, "agent did not take the shutdown request");
        }
        timeline.phase("destroy sandbox");
        let grace = Instant::now() + POWER_OFF_GRACE;
        while self.vm.try_exit().is_none() && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        timeline.phase("power off");
        let exit = self.stop_timed(&mut timeline).await;
        timeline.log(&self.id, crate::phase_timeline::STOP_MESSAGE);
        exit
    }
}

/// Where a path below the pod's shared directory appears in the guest.
pub fn guest_path(relative: &Path) -> PathBuf {
    Path::new(SHARED_DIR_IN_GUEST).join(relative)
}

/// The boot steps after the launch: the agent's readiness, a connection, a Check. The error
/// names the step.
async fn connect_agent(
    vm: &mut dyn RunningVm,
    config: &VmConfig,
    deadline: Instant,
    request_timeout: Duration,
    timeline: &mut PhaseTimeline,
) -> Result<AgentClient, (&'static str, String)> {
    vm.wait_for_agent(deadline)
        .await
        .map_err(|err| ("waiting for the agent", err.to_string()))?;
    timeline.phase("guest boot");
    let agent = AgentClient::connect_until(
        &config.vsock_socket(),
        cloak_protocol::AGENT_VSOCK_PORT,
        request_timeout,
        deadline,
        || vm.try_exit().map(|exit| format!("the VM exited ({exit})")),
    )
    .await
    .map_err(|err| ("connecting to the agent", err.to_string()))?;
    agent
        .check()
        .await
        .map_err(|err| ("checking the agent", err.to_string()))?;
    timeline.phase("agent connect");
    Ok(agent)
}

/// Builds the VM config for pod `id` from the configuration and the guest image manifest.
pub fn vm_config_for(
    config: &Configuration,
    manifest: &cloak_image::Manifest,
    id: &str,
) -> VmConfig {
    let mut cmdline = manifest.cmdline.clone();
    cmdline.push_str(&format!(" cloak.log={}", config.agent.log_level));
    if !config.hypervisor.kernel_params.trim().is_empty() {
        cmdline.push(' ');
        cmdline.push_str(config.hypervisor.kernel_params.trim());
    }
    VmConfig {
        id: id.to_owned(),
        kernel: config.kernel_path(manifest),
        initrd: config.initrd_path(manifest),
        cmdline,
        vcpus: config.hypervisor.vcpus,
        memory_mib: config.hypervisor.memory_mib,
        run_dir: crate::run_dir::pod_dir(&config.runtime.run_dir, id),
        shared_dir: None,
        init_data: Vec::new(),
        network: None,
    }
}

fn boot_error(config: &VmConfig, stage: &'static str, reason: String) -> BootError {
    let console_log = config.console_log();
    BootError {
        id: config.id.clone(),
        stage,
        reason,
        console_tail: crate::console::tail(&console_log, CONSOLE_TAIL_LINES),
        console_log: console_log.display().to_string(),
    }
}
