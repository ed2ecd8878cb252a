//! Requests that only read: state, wait, pids, stats, connect.

use containerd_shim::api::{
    ConnectRequest, ConnectResponse, PidsRequest, PidsResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, WaitRequest, WaitResponse,
};
use containerd_shim::protos::types::task::ProcessInfo;

use super::super::errors::{TaskError, TaskResult};
use super::super::events::timestamp;
use super::super::metrics;
use super::{locked, not_found, Inner};

impl Inner {
    pub(super) fn do_state(&self, req: &StateRequest) -> TaskResult<StateResponse> {
        let containers = locked(&self.containers);
        let container = containers
            .get(&req.id)
            .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
        let process = container
            .process(&req.exec_id)
            .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
        let exit = process.exit();
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: container.bundle.clone(),
            pid: process.pid,
            status: process.status(container.paused).into(),
            stdin: process.fifos.stdin.clone(),
            stdout: process.fifos.stdout.clone(),
            stderr: process.fifos.stderr.clone(),
            terminal: process.fifos.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub(super) async fn do_wait(&self, req: &WaitRequest) -> TaskResult<WaitResponse> {
        let mut watch = {
            let containers = locked(&self.containers);
            containers
                .get(&req.id)
                .and_then(|c| c.process(&req.exec_id))
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?
                .exit_watch()
        };
        let exit = watch
            .wait_for(Option::is_some)
            .await
            .map_err(|_| not_found(&req.id, &req.exec_id))?
            .expect("wait_for returned a value that passed is_some");
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    pub(super) fn ensure_container(&self, id: &str) -> TaskResult<()> {
        if locked(&self.containers).contains_key(id) {
            Ok(())
        } else {
            Err(not_found(id, ""))
        }
    }

    pub(super) async fn do_pids(&self, req: &PidsRequest) -> TaskResult<PidsResponse> {
        self.ensure_container(&req.id)?;
        let pod = self.current_pod().await?;
        let list = pod
            .list_processes(&req.id)
            .await
            .map_err(TaskError::agent(format!(
                "listing the processes of {}",
                req.id
            )))?;
        Ok(PidsResponse {
            processes: list
                .processes
                .iter()
                .map(|p| ProcessInfo {
                    pid: p.pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    pub(super) async fn do_stats(&self, req: &StatsRequest) -> TaskResult<StatsResponse> {
        self.ensure_container(&req.id)?;
        let pod = self.current_pod().await?;
        let stats = pod
            .stats_container(&req.id)
            .await
            .map_err(TaskError::agent(format!("stats of {}", req.id)))?;
        let metrics = metrics::to_cgroup_v2(&stats);
        let any = containerd_shim::util::convert_to_any(Box::new(metrics))
            .map_err(|err| TaskError::Internal(anyhow::anyhow!("encoding metrics: {err}")))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    pub(super) async fn do_connect(&self, req: &ConnectRequest) -> TaskResult<ConnectResponse> {
        let task_pid = locked(&self.containers)
            .get(&req.id)
            .map(|c| c.init.pid)
            .ok_or_else(|| not_found(&req.id, ""))?;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }
}
