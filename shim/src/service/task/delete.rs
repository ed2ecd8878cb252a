//! Delete of an exec or a container (its guest side, stdio, host mounts; the pod with its
//! last container), and the shim's shutdown.

use containerd_shim::api::{DeleteRequest, DeleteResponse};

use super::super::errors::{TaskError, TaskResult};
use super::super::process::ProcessState;
use super::{delete_response, locked, not_found, Inner};
use cloak_host::host_mounts;

impl Inner {
    pub(super) async fn do_delete(&self, req: DeleteRequest) -> TaskResult<DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut process = {
                let mut containers = locked(&self.containers);
                let container = containers
                    .get_mut(&req.id)
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
                let process = container
                    .execs
                    .get(&req.exec_id)
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
                if process.state == ProcessState::Running && process.exit().is_none() {
                    return Err(TaskError::FailedPrecondition(format!(
                        "exec {} of container {} is still running",
                        req.exec_id, req.id
                    )));
                }
                container
                    .execs
                    .remove(&req.exec_id)
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))?
            };
            process.bridge.stop();
            return Ok(delete_response(&process));
        }
        let mut container = {
            let mut containers = locked(&self.containers);
            let container = containers
                .get(&req.id)
                .ok_or_else(|| not_found(&req.id, ""))?;
            if container.init.state == ProcessState::Running && container.init.exit().is_none() {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {} is still running",
                    req.id
                )));
            }
            containers
                .remove(&req.id)
                .ok_or_else(|| not_found(&req.id, ""))?
        };
        if let Ok(pod) = self.current_pod().await {
            if let Err(err) = pod.remove_container(&req.id).await {
                tracing::warn!(container = %req.id, error = %err, "removing the container in the guest");
            }
        }
        container.init.bridge.stop();
        for exec in container.execs.values_mut() {
            exec.bridge.stop();
        }
        if let Err(err) = host_mounts::unmount_and_remove(&container.host_dir) {
            tracing::warn!(container = %req.id, error = %err, "removing the container's host mounts");
        }
        let response = delete_response(&container.init);
        self.events
            .deleted(&req.id, container.init.pid, container.init.exit())
            .await;
        tracing::info!(container = %req.id, "container deleted");
        self.release_pod_if_unused().await;
        Ok(response)
    }

    pub(super) async fn do_shutdown(&self) {
        if !locked(&self.containers).is_empty() {
            return;
        }
        self.release_pod_if_unused().await;
        tracing::info!("no containers left: shim exits");
        self.exit_signal.signal();
    }
}
