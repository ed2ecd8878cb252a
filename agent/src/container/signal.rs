//! SignalProcess and WaitProcess.

use anyhow::bail;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{cgroup, ContainerRuntime, ExitInfo};
use crate::error::AgentError;

impl ContainerRuntime {
    pub(crate) async fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> anyhow::Result<()> {
        let container = self.get(id).await?;
        let signal = match Signal::try_from(signal as i32) {
            Ok(signal) => signal,
            Err(_) => bail!(AgentError::InvalidArgument(format!(
                "invalid signal {signal}"
            ))),
        };
        let process = container.process(exec_id)?;
        if !process.is_running() {
            bail!(AgentError::NotFound(format!(
                "process {}/{exec_id} already exited",
                container.id
            )));
        }
        let targets = if all && exec_id.is_empty() {
            cgroup::member_pids(&container.cgroup)
        } else {
            vec![process.pid]
        };
        for pid in targets {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(err) => bail!("sending {signal} to {pid}: {err}"),
            }
        }
        tracing::debug!(container = %id, exec = exec_id, %signal, all, "signalled");
        Ok(())
    }

    pub(crate) async fn wait(&self, id: &str, exec_id: &str) -> anyhow::Result<ExitInfo> {
        let process = self.get(id).await?.process(exec_id)?;
        Ok(process.wait().await)
    }

    pub(crate) async fn close_stdin(&self, id: &str, exec_id: &str) -> anyhow::Result<()> {
        self.get(id).await?.process(exec_id)?.close_stdin().await
    }

    pub(crate) async fn resize_tty(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> anyhow::Result<()> {
        let process = self.get(id).await?.process(exec_id)?;
        let rows = u16::try_from(rows).unwrap_or(u16::MAX);
        let columns = u16::try_from(columns).unwrap_or(u16::MAX);
        process.resize(rows, columns).await
    }
}
