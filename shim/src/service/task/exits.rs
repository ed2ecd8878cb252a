//! Exits: a waiter per started process turns the agent's WaitProcess into containerd's
//! TaskExit after the process's output reached the fifos; the VM watcher reports every live
//! process exited when the pod VM dies; the OOM relay forwards the guest's OOM kills.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloak_protocol::agent::GetOOMEventRequest;

use super::super::events::Exit;
use super::super::pod::{Pod, VM_DIED_EXIT_STATUS};
use super::{locked, Inner, OUTPUT_DRAIN_LIMIT};

pub(super) fn exit_from_agent(status: i32, exited_at_unix_nanos: u64) -> Exit {
    let at = if exited_at_unix_nanos == 0 {
        SystemTime::now()
    } else {
        UNIX_EPOCH + Duration::from_nanos(exited_at_unix_nanos)
    };
    Exit {
        status: u32::try_from(status).unwrap_or(VM_DIED_EXIT_STATUS),
        at,
    }
}

impl Inner {
    /// The VM watcher, the console forwarder and the OOM event relay of a new pod.
    pub(super) fn watch_pod(self: &Arc<Self>, pod: &Arc<Pod>) {
        Pod::forward_console(pod);
        let inner = self.clone();
        let watched = pod.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            if let Some(exit) = watched.watch_vm().await {
                inner.fail_all_processes(&exit.to_string()).await;
            }
        }));
        let inner = self.clone();
        let agent = pod.agent().clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            loop {
                let event = agent
                    .get_oom_event(ttrpc::context::with_timeout(0), &GetOOMEventRequest::new())
                    .await;
                match event {
                    Ok(event) => {
                        tracing::info!(container = %event.container_id, "OOM kill in the guest");
                        inner.events.oom(&event.container_id).await;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "OOM event relay ended");
                        break;
                    }
                }
            }
        }));
    }

    /// Reports every live process exited after the VM died.
    pub(super) async fn fail_all_processes(&self, why: &str) {
        let at = SystemTime::now();
        let mut failed = Vec::new();
        {
            let mut containers = locked(&self.containers);
            for container in containers.values_mut() {
                let id = container.id.clone();
                for process in container.live_processes_mut() {
                    let exit = Exit {
                        status: VM_DIED_EXIT_STATUS,
                        at,
                    };
                    if process.record_exit(exit) {
                        failed.push((id.clone(), process.exec_id.clone(), process.pid, exit));
                    }
                }
            }
        }
        for (id, exec_id, pid, exit) in failed {
            tracing::warn!(container = %id, exec = %exec_id, why, "process reported exited: its VM died");
            self.events.exited(&id, &exec_id, pid, exit).await;
        }
    }

    pub(super) async fn guest_pid(&self, pod: &Pod, id: &str, exec_id: &str) -> u32 {
        match pod.list_processes(id).await {
            Ok(list) => list
                .processes
                .iter()
                .find(|p| p.exec_id == exec_id)
                .map(|p| p.pid)
                .unwrap_or(0),
            Err(err) => {
                tracing::warn!(container = %id, exec = %exec_id, error = %err, "listing processes");
                0
            }
        }
    }

    /// Waits for a started process to exit, drains its output, records and publishes the
    /// exit.
    pub(super) fn spawn_waiter(
        self: &Arc<Self>,
        pod: Arc<Pod>,
        id: String,
        exec_id: String,
        pid: u32,
    ) {
        let drain = locked(&self.containers)
            .get_mut(&id)
            .and_then(|container| container.process_mut(&exec_id))
            .and_then(|process| process.drain.take());
        let inner = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let waited = pod.wait_process(&id, &exec_id).await;
            let exit = match waited {
                Ok(response) => {
                    exit_from_agent(response.exit_status, response.exited_at_unix_nanos)
                }
                Err(err) => {
                    tracing::warn!(container = %id, exec = %exec_id, error = %err, "waiting for the process failed");
                    Exit {
                        status: VM_DIED_EXIT_STATUS,
                        at: SystemTime::now(),
                    }
                }
            };
            if let Some(drain) = drain {
                if !drain.wait(OUTPUT_DRAIN_LIMIT).await {
                    tracing::warn!(container = %id, exec = %exec_id, "output not drained in time");
                }
            }
            let first = locked(&inner.containers)
                .get_mut(&id)
                .and_then(|container| container.process_mut(&exec_id))
                .is_some_and(|process| process.record_exit(exit));
            if first {
                tracing::info!(container = %id, exec = %exec_id, status = exit.status, "process exited");
                inner.events.exited(&id, &exec_id, pid, exit).await;
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_exits_keep_their_time_and_bad_statuses_are_flagged() {
        let exit = exit_from_agent(3, 1_000_000_123);
        assert_eq!(exit.status, 3);
        assert_eq!(exit.at, UNIX_EPOCH + Duration::from_nanos(1_000_000_123));
        assert_eq!(exit_from_agent(-1, 0).status, VM_DIED_EXIT_STATUS);
    }
}
