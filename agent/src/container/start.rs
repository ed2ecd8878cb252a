//! StartContainer: lets the waiting init process exec the container's program.

use anyhow::{bail, Context as _};
use libcontainer::container::Container as LibContainer;

use super::{blocking, ContainerRuntime};
use crate::error::AgentError;

impl ContainerRuntime {
    pub(crate) async fn start(&self, id: &str) -> anyhow::Result<()> {
        let container = self.get(id).await?;
        if container.is_started() {
            bail!(AgentError::FailedPrecondition(format!(
                "container {id:?} is already started"
            )));
        }
        if !container.init.is_running() {
            bail!(AgentError::FailedPrecondition(format!(
                "container {id:?} has exited"
            )));
        }
        let state_dir = self.state_root().join(id);
        blocking("starting the container", move || {
            let mut lib_container =
                LibContainer::load(state_dir).context("loading the container state")?;
            lib_container
                .start()
                .context("libcontainer could not start the container")
        })
        .await?;
        container
            .started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(container = %id, pid = container.init.pid, "container started");
        Ok(())
    }
}
