//! Requests that act on running processes: signals, pause/resume, resource updates, terminal
//! resizes, closing stdin.

use std::sync::Arc;

use containerd_shim::api::{CloseIORequest, KillRequest, ResizePtyRequest, UpdateTaskRequest};

use super::super::errors::{TaskError, TaskResult};
use super::super::process::ProcessState;
use super::{locked, not_found, Inner};

impl Inner {
    pub(super) async fn do_kill(self: &Arc<Self>, req: KillRequest) -> TaskResult<()> {
        let state = {
            let containers = locked(&self.containers);
            let process = containers
                .get(&req.id)
                .and_then(|c| c.process(&req.exec_id))
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            if process.exit().is_some() {
                return Err(TaskError::NotFound(format!(
                    "process {} of container {} already finished",
                    req.exec_id, req.id
                )));
            }
            process.state
        };
        // An exec that never started (its start was refused) has nothing to signal in the
        // guest. containerd kills such an exec before deleting it and, told "not found",
        // waits for an exit that never comes; "failed precondition" is what runc's shim says.
        if state == ProcessState::Created && !req.exec_id.is_empty() {
            return Err(TaskError::FailedPrecondition(format!(
                "exec {} of container {} was never started",
                req.exec_id, req.id
            )));
        }
        let pod = self
            .current_pod()
            .await
            .map_err(|err| TaskError::NotFound(err.to_string()))?;
        pod.signal_process(&req.id, &req.exec_id, req.signal, req.all)
            .await
            .map_err(TaskError::agent(format!(
                "signalling {} {}",
                req.id, req.exec_id
            )))?;
        // An init that was never started has no waiter yet: the signal may end it.
        if state == ProcessState::Created && req.exec_id.is_empty() {
            let pid = locked(&self.containers)
                .get(&req.id)
                .map(|c| c.init.pid)
                .unwrap_or(0);
            self.spawn_waiter(pod, req.id.clone(), String::new(), pid);
        }
        Ok(())
    }

    pub(super) async fn do_pause(&self, id: &str, pause: bool) -> TaskResult<()> {
        self.ensure_container(id)?;
        let pod = self.current_pod().await?;
        if pause {
            pod.pause_container(id)
                .await
                .map_err(TaskError::agent(format!("pausing {id}")))?;
        } else {
            pod.resume_container(id)
                .await
                .map_err(TaskError::agent(format!("resuming {id}")))?;
        }
        if let Some(container) = locked(&self.containers).get_mut(id) {
            container.paused = pause;
        }
        if pause {
            self.events.paused(id).await;
        } else {
            self.events.resumed(id).await;
        }
        Ok(())
    }

    pub(super) async fn do_update(&self, req: &UpdateTaskRequest) -> TaskResult<()> {
        self.ensure_container(&req.id)?;
        let pod = self.current_pod().await?;
        let resources_json = req
            .resources
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| TaskError::InvalidArgument("update without resources".into()))?;
        pod.update_container(&req.id, resources_json)
            .await
            .map_err(TaskError::agent(format!("updating {}", req.id)))?;
        Ok(())
    }

    pub(super) async fn do_resize_pty(&self, req: &ResizePtyRequest) -> TaskResult<()> {
        let pod = self.current_pod().await?;
        pod.resize_terminal(&req.id, &req.exec_id, req.height, req.width)
            .await
            .map_err(TaskError::agent(format!(
                "resizing the terminal of {}",
                req.id
            )))?;
        Ok(())
    }

    pub(super) fn do_close_io(&self, req: &CloseIORequest) -> TaskResult<()> {
        let mut containers = locked(&self.containers);
        let process = containers
            .get_mut(&req.id)
            .and_then(|c| c.process_mut(&req.exec_id))
            .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
        if req.stdin {
            process.bridge.close_stdin();
        }
        Ok(())
    }
}
