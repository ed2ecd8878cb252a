//! PauseContainer and ResumeContainer (the cgroup freezer, through libcontainer).

use anyhow::Context as _;
use libcontainer::container::Container as LibContainer;

use super::{blocking, ContainerRuntime};

impl ContainerRuntime {
    pub(crate) async fn pause(&self, id: &str) -> anyhow::Result<()> {
        self.freeze(id, true).await
    }

    pub(crate) async fn resume(&self, id: &str) -> anyhow::Result<()> {
        self.freeze(id, false).await
    }

    async fn freeze(&self, id: &str, frozen: bool) -> anyhow::Result<()> {
        self.get(id).await?;
        let state_dir = self.state_root().join(id);
        blocking("freezing the container", move || {
            let mut container =
                LibContainer::load(state_dir).context("loading the container state")?;
            if frozen {
                container
                    .pause()
                    .context("libcontainer could not pause the container")
            } else {
                container
                    .resume()
                    .context("libcontainer could not resume the container")
            }
        })
        .await?;
        tracing::info!(container = %id, frozen, "container freezer changed");
        Ok(())
    }
}
