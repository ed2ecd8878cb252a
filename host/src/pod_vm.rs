//! A pod VM: booted through a `Hypervisor`, with a connected agent. Boot is a few ordered
//! steps; if any fails the VM is stopped before the error is returned, and the error carries
//! the end of the guest console, which is where a guest that did not come up says why.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::agent_client::AgentClient;
use crate::config::Configuration;
use crate::hypervisor::{Hypervisor, HypervisorError, VmConfig};

/// Console lines carried by boot errors.
const CONSOLE_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
#[error("pod VM {id}: {stage} failed: {reason}\n--- last guest console lines ({console_log}) ---\n{console_tail}")]
pub struct BootError {
    pub id: String,
    pub stage: &'static str,
    pub reason: String,
    pub console_log: String,
    pub console_tail: String,
}

pub struct PodVm {
    id: String,
    hypervisor: Box<dyn Hypervisor>,
    agent: AgentClient,
    run_dir: PathBuf,
}

impl PodVm {
    /// Starts the VM and waits until the agent answers Check, or `boot_timeout` passes.
    pub async fn boot(
        mut hypervisor: Box<dyn Hypervisor>,
        config: VmConfig,
        boot_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, BootError> {
        let started = Instant::now();
        let deadline = started + boot_timeout;
        let step = match hypervisor.start(&config).await {
            Ok(()) => hypervisor
                .wait_for_agent(deadline)
                .await
                .map_err(|err| ("waiting for the agent", err.to_string())),
            Err(err) => Err(("starting the VM", err.to_string())),
        };
        if let Err((stage, reason)) = step {
            return Err(fail(hypervisor, &config, stage, reason).await);
        }
        let vsock_socket = config.vsock_socket();
        let connected = AgentClient::connect_until(
            &vsock_socket,
            cloak_protocol::AGENT_VSOCK_PORT,
            request_timeout,
            deadline,
            || {
                hypervisor
                    .try_exit()
                    .map(|exit| format!("the VM exited ({exit})"))
            },
        )
        .await;
        let agent = match connected {
            Ok(agent) => agent,
            Err(err) => {
                return Err(fail(
                    hypervisor,
                    &config,
                    "connecting to the agent",
                    err.to_string(),
                )
                .await)
            }
        };
        if let Err(err) = agent.check().await {
            return Err(fail(hypervisor, &config, "checking the agent", err.to_string()).await);
        }
        tracing::info!(
            sandbox = %config.id,
            hypervisor = hypervisor.name(),
            boot_ms = started.elapsed().as_millis() as u64,
            "pod VM ready"
        );
        Ok(Self {
            id: config.id.clone(),
            hypervisor,
            agent,
            run_dir: config.run_dir.clone(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    pub fn hypervisor(&mut self) -> &mut dyn Hypervisor {
        self.hypervisor.as_mut()
    }

    pub fn run_dir(&self) -> &std::path::Path {
        &self.run_dir
    }

    /// Asks the agent to power off, waits briefly for the VM to exit by itself, then stops
    /// every host process of the VM.
    pub async fn shutdown(mut self) -> Result<(), HypervisorError> {
        if let Err(err) = self.agent.destroy_sandbox().await {
            tracing::warn!(sandbox = %self.id, error = %err, "agent did not take the shutdown request");
        }
        let grace = Instant::now() + Duration::from_secs(5);
        while self.hypervisor.try_exit().is_none() && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.hypervisor.stop().await
    }
}

/// Builds the VM config for sandbox `id` from the configuration and the guest image manifest.
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

async fn fail(
    mut hypervisor: Box<dyn Hypervisor>,
    config: &VmConfig,
    stage: &'static str,
    reason: String,
) -> BootError {
    if let Err(err) = hypervisor.stop().await {
        tracing::warn!(sandbox = %config.id, error = %err, "stopping the failed VM");
    }
    let console_log = config.console_log();
    BootError {
        id: config.id.clone(),
        stage,
        reason,
        console_tail: crate::console::tail(&console_log, CONSOLE_TAIL_LINES),
        console_log: console_log.display().to_string(),
    }
}
