//! RemoveContainer: stop what still runs (SIGTERM, then SIGKILL after the timeout), delete the
//! libcontainer state and cgroup, unmount the rootfs, remove the bundle.

use std::time::Duration;

use anyhow::Context as _;
use libcontainer::container::Container as LibContainer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{blocking, cgroup, oom, ContainerRuntime};

impl ContainerRuntime {
    pub(crate) async fn remove(&self, id: &str, timeout: Duration) -> anyhow::Result<()> {
        let container = self.get(id).await?;
        if container.init.is_running() {
            let members = cgroup::member_pids(&container.cgroup);
            for pid in &members {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
            }
            // A frozen container cannot act on SIGTERM; thaw it so it can.
            let _ = std::fs::write(container.cgroup.join("cgroup.freeze"), "0");
            if timeout.is_zero()
                || tokio::time::timeout(timeout, container.init.wait())
                    .await
                    .is_err()
            {
                let _ = std::fs::write(container.cgroup.join("cgroup.kill"), "1");
                for pid in cgroup::member_pids(&container.cgroup) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if tokio::time::timeout(Duration::from_secs(10), container.init.wait())
                    .await
                    .is_err()
                {
                    anyhow::bail!("container {id:?} did not stop after SIGKILL");
                }
            }
        }
        container.oom_watch.abort();
        oom::report_new_kills(
            id,
            &container.cgroup,
            &container.oom_reported,
            &self.oom_sender,
        );
        self.delete_state(id).await;
        container
            .rootfs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unmount_all();
        // Unsealed copies of its secrets, in guest memory.
        let _ = std::fs::remove_dir_all(crate::secrets::unsealed_dir(id));
        std::fs::remove_dir_all(&container.bundle)
            .or_else(|err| {
                if err.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(err)
                }
            })
            .with_context(|| format!("removing {}", container.bundle.display()))?;
        self.containers.lock().await.remove(id);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    /// Deletes libcontainer's state and cgroup (errors are logged: the caller is cleaning up).
    pub(super) async fn delete_state(&self, id: &str) {
        let state_dir = self.state_root().join(id);
        let result = blocking("deleting the container state", move || {
            if !state_dir.exists() {
                return Ok(());
            }
            let mut container =
                LibContainer::load(state_dir).context("loading the container state")?;
            container
                .delete(true)
                .context("libcontainer could not delete the container")
        })
        .await;
        if let Err(err) = result {
            tracing::warn!(container = %id, error = format!("{err:#}"), "deleting state");
        }
    }
}
