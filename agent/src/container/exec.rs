//! ExecProcess: a new process in a running container's namespaces and cgroup.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use cloak_protocol::agent::ExecProcessRequest;

use super::executor::PayloadExecutor;
use super::stdio::{PendingIo, StreamGrants};
use super::{blocking, spec, ContainerRuntime, ProcessState};
use crate::error::AgentError;

impl ContainerRuntime {
    /// Runs process `request.exec_id` in its container; `grants` says which of its streams may
    /// reach the host.
    pub(crate) async fn exec(
        &self,
        request: ExecProcessRequest,
        grants: StreamGrants,
    ) -> anyhow::Result<()> {
        let container = self.get(&request.container_id).await?;
        let exec_id = request.exec_id.clone();
        if !cloak_protocol::is_valid_id(&exec_id) {
            bail!(AgentError::InvalidArgument(format!(
                "invalid exec id {exec_id:?}"
            )));
        }
        if !container.is_started() || !container.init.is_running() {
            bail!(AgentError::FailedPrecondition(format!(
                "container {:?} is not running",
                container.id
            )));
        }
        if container.lock_execs().contains_key(&exec_id) {
            bail!(AgentError::AlreadyExists(format!(
                "exec {exec_id:?} already exists"
            )));
        }
        let mut process = spec::parse_process(&request.process_json)?;
        spec::resolve_executable(&container.bundle.join("rootfs"), &process)?;
        let executor = PayloadExecutor::for_exec(container.seccomp.clone(), &mut process);
        let process_file = container.bundle.join(format!("exec-{exec_id}.json"));
        std::fs::write(&process_file, serde_json::to_vec(&process)?)
            .context("writing the exec process")?;

        let default_stdio = cloak_protocol::agent::StdioConfig::default();
        let stdio_config = request.stdio.as_ref().unwrap_or(&default_stdio);
        let (pending_io, child) =
            PendingIo::prepare(&self.streams, &container.id, &exec_id, stdio_config, grants)
                .await?;
        let reaper = self.reaper.clone();
        let state_root = self.state_root().to_owned();
        let container_id = container.id.clone();
        let file = process_file.clone();
        let spawned = blocking("executing the process", move || {
            reaper
                .spawn_registered(|| {
                    let builder = child.builder(container_id, &state_root, executor)?;
                    builder
                        .as_tenant()
                        .with_process(Some(&file))
                        .with_detach(true)
                        .build()
                        .map(|pid| pid.as_raw())
                })
                .map_err(|err| {
                    anyhow::Error::new(err).context("libcontainer could not exec the process")
                })
        })
        .await;
        let _ = std::fs::remove_file(&process_file);
        let (pid, exited) = spawned?;
        self.reaper.reap_exited_children();
        let io = pending_io.start().await?;
        let state = Arc::new(ProcessState::track(pid, &exec_id, exited, io));
        container.lock_execs().insert(exec_id.clone(), state);
        tracing::info!(container = %container.id, exec = %exec_id, pid, "process executed");
        Ok(())
    }
}
