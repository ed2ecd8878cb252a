//! The pod's containers, run with youki's `libcontainer` (namespaces, cgroups, capabilities,
//! rlimits, seccomp, masked and readonly paths, devices, mounts, user and groups — as the OCI
//! spec says). This module keeps what libcontainer does not: the registry of containers and
//! their processes, stdio, exits, OOM events and cgroup statistics. One file per operation.

mod cgroup;
mod create;
mod delete;
mod exec;
mod executor;
mod oom;
mod pause;
mod process;
mod signal;
pub(crate) mod spec;
mod start;
mod stats;
mod stdio;
mod streams;
mod sysctl;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use tokio::sync::{mpsc, Mutex};

pub(crate) use process::{ExitInfo, ProcessState};
pub(crate) use stdio::StreamGrants;
pub(crate) use streams::StreamBroker;

use crate::error::AgentError;
use crate::reaper::Reaper;
use crate::storage::MountStack;

/// libcontainer's state directory (one subdirectory per container).
pub(crate) const STATE_ROOT: &str = "/run/cloak/libcontainer";
/// Bundles: `<id>/config.json`, `<id>/rootfs`, scratch space for overlays and sockets.
pub(crate) const BUNDLE_ROOT: &str = "/run/cloak/containers";

pub(crate) struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub cgroup: PathBuf,
    pub init: Arc<ProcessState>,
    /// The spec's seccomp filter, which libcontainer gives the init only (see `executor`).
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    execs: std::sync::Mutex<HashMap<String, Arc<ProcessState>>>,
    rootfs: std::sync::Mutex<MountStack>,
    started: std::sync::atomic::AtomicBool,
    oom_watch: tokio::task::JoinHandle<()>,
    oom_reported: oom::Reported,
}

impl Container {
    pub(crate) fn is_started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The init process (empty exec id) or an exec.
    pub(crate) fn process(&self, exec_id: &str) -> anyhow::Result<Arc<ProcessState>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        match self.lock_execs().get(exec_id) {
            Some(process) => Ok(process.clone()),
            None => bail!(AgentError::NotFound(format!(
                "container {}: no process {exec_id:?}",
                self.id
            ))),
        }
    }

    fn lock_execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ProcessState>>> {
        self.execs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn exec_ids(&self) -> HashMap<i32, String> {
        self.lock_execs()
            .values()
            .map(|process| (process.pid, process.exec_id.clone()))
            .collect()
    }
}

/// Every container of the pod, and the OOM events they raise.
pub(crate) struct ContainerRuntime {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    reaper: Arc<Reaper>,
    oom_sender: mpsc::Sender<String>,
    oom_receiver: Mutex<mpsc::Receiver<String>>,
    state_root: PathBuf,
    bundle_root: PathBuf,
    pub streams: Arc<StreamBroker>,
}

impl ContainerRuntime {
    pub(crate) fn new(reaper: Arc<Reaper>) -> Self {
        let (oom_sender, oom_receiver) = mpsc::channel(256);
        Self {
            containers: Mutex::new(HashMap::new()),
            reaper,
            oom_sender,
            oom_receiver: Mutex::new(oom_receiver),
            state_root: PathBuf::from(STATE_ROOT),
            bundle_root: PathBuf::from(BUNDLE_ROOT),
            streams: Arc::default(),
        }
    }

    pub(crate) async fn get(&self, id: &str) -> anyhow::Result<Arc<Container>> {
        match self.containers.lock().await.get(id) {
            Some(container) => Ok(container.clone()),
            None => bail!(AgentError::NotFound(format!("no container {id:?}"))),
        }
    }

    pub(crate) async fn ids(&self) -> Vec<String> {
        self.containers.lock().await.keys().cloned().collect()
    }

    fn bundle_dir(&self, id: &str) -> PathBuf {
        self.bundle_root.join(id)
    }

    fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// Blocks until a container is OOM-killed; returns its id.
    pub(crate) async fn next_oom_event(&self) -> anyhow::Result<String> {
        match self.oom_receiver.lock().await.recv().await {
            Some(id) => Ok(id),
            None => bail!("the OOM event channel closed"),
        }
    }

    pub(crate) async fn list_processes(
        &self,
        id: &str,
    ) -> anyhow::Result<Vec<(i32, String, Vec<String>)>> {
        let container = self.get(id).await?;
        let execs = container.exec_ids();
        Ok(cgroup::member_pids(&container.cgroup)
            .into_iter()
            .map(|pid| {
                let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|raw| {
                        raw.split(|&b| b == 0)
                            .filter(|arg| !arg.is_empty())
                            .map(|arg| String::from_utf8_lossy(arg).into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                (pid, execs.get(&pid).cloned().unwrap_or_default(), command)
            })
            .collect())
    }
}

/// Runs a blocking libcontainer call off the async workers, turning its error into anyhow.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    call: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|err| anyhow::anyhow!("{what}: task failed: {err}"))?
}
