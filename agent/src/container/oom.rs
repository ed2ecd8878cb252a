//! OOM kills per container: the cgroup's `memory.events` oom_kill counter, polled while the
//! container lives, and checked once more before its cgroup is deleted, so a kill that ended
//! the container right before removal is still reported.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{cgroup, ProcessState};

const POLL: Duration = Duration::from_millis(200);

/// Kills counted so far, shared between the watcher and the final check.
pub(super) type Reported = Arc<AtomicU64>;

/// Sends one event per OOM kill counted since the last report.
pub(super) fn report_new_kills(
    container_id: &str,
    cgroup_dir: &Path,
    reported: &AtomicU64,
    events: &mpsc::Sender<String>,
) {
    let count = cgroup::oom_kill_count(cgroup_dir);
    let previous = reported.fetch_max(count, Ordering::SeqCst);
    if count > previous {
        tracing::warn!(container = %container_id, kills = count - previous, "OOM kill");
        // A full queue means nobody listens for OOM events: dropping is fine then.
        let _ = events.try_send(container_id.to_owned());
    }
}

pub(super) fn watch(
    container_id: String,
    cgroup_dir: PathBuf,
    init: Arc<ProcessState>,
    reported: Reported,
    events: mpsc::Sender<String>,
) -> tokio::task::JoinHandle<()> {
    reported.store(cgroup::oom_kill_count(&cgroup_dir), Ordering::SeqCst);
    tokio::spawn(async move {
        loop {
            let exited = !init.is_running();
            report_new_kills(&container_id, &cgroup_dir, &reported, &events);
            if exited {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
}
