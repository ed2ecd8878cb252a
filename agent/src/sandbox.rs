//! The pod-level part of the guest: hostname, DNS, shared storages, and tearing it all down.

use std::time::Duration;

use anyhow::Context as _;
use cloak_protocol::agent::CreateSandboxRequest;

use crate::container::ContainerRuntime;
use crate::storage::{self, MountStack};

#[derive(Default)]
pub(crate) struct Sandbox {
    pub id: Option<String>,
    mounts: MountStack,
    /// Why this sandbox runs no containers (its init-data does not match its launch).
    pub refusal: Option<String>,
}

impl Sandbox {
    /// Sets the sandbox up; `refusal` (from the init-data check) makes it refuse containers.
    pub(crate) fn create(
        &mut self,
        request: &CreateSandboxRequest,
        refusal: Option<String>,
    ) -> anyhow::Result<()> {
        if let Some(existing) = &self.id {
            anyhow::bail!(crate::error::AgentError::AlreadyExists(format!(
                "sandbox {existing:?} already exists"
            )));
        }
        if !request.hostname.is_empty() {
            nix::unistd::sethostname(&request.hostname).context("setting the hostname")?;
        }
        if !request.dns.is_empty() {
            std::fs::create_dir_all("/etc").context("creating /etc")?;
            let mut resolv = request.dns.join("\n");
            resolv.push('\n');
            std::fs::write("/etc/resolv.conf", resolv).context("writing /etc/resolv.conf")?;
        }
        let mut mounts = MountStack::default();
        for storage in &request.storages {
            if let Err(err) = storage::mount_storage(storage, &mut mounts) {
                mounts.unmount_all();
                return Err(err);
            }
        }
        self.mounts = mounts;
        self.id = Some(request.sandbox_id.clone());
        if let Some(reason) = &refusal {
            tracing::error!(sandbox = %request.sandbox_id, reason, "containers refused");
        }
        self.refusal = refusal;
        tracing::info!(sandbox = %request.sandbox_id, storages = request.storages.len(), "sandbox created");
        Ok(())
    }

    /// Removes every container (killing what still runs), then the sandbox's mounts.
    pub(crate) async fn destroy(&mut self, containers: &ContainerRuntime) {
        for id in containers.ids().await {
            if let Err(err) = containers.remove(&id, Duration::ZERO).await {
                tracing::warn!(container = %id, error = format!("{err:#}"), "removing at sandbox teardown");
            }
        }
        self.mounts.unmount_all();
        self.id = None;
        self.refusal = None;
    }
}
