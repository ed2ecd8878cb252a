//! Start: a container's init (started by the agent) or an added exec (run by the agent with
//! its own stdio streams); either gets a waiter for its exit.

use std::sync::Arc;

use containerd_shim::api::{StartRequest, StartResponse};

use super::super::errors::{TaskError, TaskResult};
use super::super::fifo_io::{OutputDrain, StdioBridge};
use super::super::process::ProcessState;
use super::{locked, not_found, Inner};

impl Inner {
    pub(super) async fn do_start(self: &Arc<Self>, req: StartRequest) -> TaskResult<StartResponse> {
        let pod = self.current_pod().await?;
        let (state, exec_spec, fifos) = {
            let containers = locked(&self.containers);
            let process = containers
                .get(&req.id)
                .and_then(|c| c.process(&req.exec_id))
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            (
                process.state,
                process.exec_spec.clone(),
                process.fifos.clone(),
            )
        };
        if state != ProcessState::Created {
            return Err(TaskError::FailedPrecondition(format!(
                "process {} of container {} was already started",
                req.exec_id, req.id
            )));
        }
        let pid = if req.exec_id.is_empty() {
            pod.start_container(&req.id)
                .await
                .map_err(TaskError::agent(format!("starting container {}", req.id)))?;
            pod.finish_start("start container");
            let pid = self.mark_running(&req.id, "", None, None)?;
            self.spawn_waiter(pod.clone(), req.id.clone(), String::new(), pid);
            self.events.started(&req.id, pid).await;
            pid
        } else {
            let process_json = exec_spec.unwrap_or_default();
            let (streams, stdio) = pod
                .client()
                .open_stdio(&req.id, &req.exec_id, fifos.wanted())
                .await
                .map_err(|err| TaskError::Internal(err.into()))?;
            let name = format!("{}/{}", req.id, req.exec_id);
            let (mut bridge, drain) =
                StdioBridge::start(&fifos, streams, &name).map_err(|err| {
                    TaskError::Internal(anyhow::anyhow!("opening the stdio fifos: {err}"))
                })?;
            if let Err(err) = pod
                .exec_process(&req.id, &req.exec_id, process_json, stdio)
                .await
            {
                bridge.stop();
                return Err(TaskError::agent(format!("exec {name}"))(err));
            }
            let pid = self.guest_pid(&pod, &req.id, &req.exec_id).await;
            self.mark_running(&req.id, &req.exec_id, Some(pid), Some((bridge, drain)))?;
            self.spawn_waiter(pod.clone(), req.id.clone(), req.exec_id.clone(), pid);
            self.events.exec_started(&req.id, &req.exec_id, pid).await;
            pid
        };
        tracing::info!(container = %req.id, exec = %req.exec_id, pid, "process started");
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// Marks a process running; returns its pid.
    pub(super) fn mark_running(
        &self,
        id: &str,
        exec_id: &str,
        pid: Option<u32>,
        stdio: Option<(StdioBridge, OutputDrain)>,
    ) -> TaskResult<u32> {
        let mut containers = locked(&self.containers);
        let process = containers
            .get_mut(id)
            .and_then(|c| c.process_mut(exec_id))
            .ok_or_else(|| not_found(id, exec_id))?;
        if process.exit().is_none() {
            process.state = ProcessState::Running;
        }
        if let Some(pid) = pid {
            process.pid = pid;
        }
        if let Some((bridge, drain)) = stdio {
            process.bridge = bridge;
            process.drain = Some(drain);
        }
        process.exec_spec = None;
        Ok(process.pid)
    }
}
