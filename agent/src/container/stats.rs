//! StatsContainer and UpdateContainer: the container's cgroup.

use anyhow::bail;
use cloak_protocol::agent::StatsContainerResponse;
use oci_spec::runtime::LinuxResources;

use super::{cgroup, ContainerRuntime};
use crate::error::AgentError;

impl ContainerRuntime {
    pub(crate) async fn stats(&self, id: &str) -> anyhow::Result<StatsContainerResponse> {
        let container = self.get(id).await?;
        Ok(cgroup::stats(&container.cgroup))
    }

    pub(crate) async fn update(&self, id: &str, resources_json: &[u8]) -> anyhow::Result<()> {
        let container = self.get(id).await?;
        let resources: LinuxResources = match serde_json::from_slice(resources_json) {
            Ok(resources) => resources,
            Err(err) => bail!(AgentError::InvalidArgument(format!(
                "invalid resources: {err}"
            ))),
        };
        cgroup::apply(&container.cgroup, &resources)?;
        tracing::info!(container = %id, "resources updated");
        Ok(())
    }
}
