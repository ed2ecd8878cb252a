//! A process the agent started (a container's init or an exec): its pid, its stdio, and its
//! exit, published only after its output is drained.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch, Mutex};

use super::stdio::ProcessIo;
use crate::reaper::ExitCode;

/// How long a process's output may keep flowing after it exited before the exit is reported
/// anyway (a detached grandchild can hold the pipe open forever).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    pub code: ExitCode,
    pub at_unix_nanos: u64,
}

pub(crate) struct ProcessState {
    pub pid: i32,
    pub exec_id: String,
    exit: watch::Receiver<Option<ExitInfo>>,
    io: std::sync::Arc<Mutex<ProcessIo>>,
}

impl ProcessState {
    /// Tracks `pid`: when the reaper reports its exit, the output is drained, then the exit
    /// is published to every waiter.
    pub(crate) fn track(
        pid: i32,
        exec_id: &str,
        exited: oneshot::Receiver<ExitCode>,
        io: ProcessIo,
    ) -> Self {
        let (sender, receiver) = watch::channel(None);
        let io = std::sync::Arc::new(Mutex::new(io));
        let drain_io = io.clone();
        tokio::spawn(async move {
            // A dropped sender means the reaper is gone: report it like a kill.
            let code = exited.await.unwrap_or(128 + libc::SIGKILL);
            let at_unix_nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            drain_io.lock().await.drain(DRAIN_LIMIT).await;
            let _ = sender.send(Some(ExitInfo {
                code,
                at_unix_nanos,
            }));
        });
        Self {
            pid,
            exec_id: exec_id.to_owned(),
            exit: receiver,
            io,
        }
    }

    pub(crate) fn exit(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    pub(crate) fn is_running(&self) -> bool {
        self.exit().is_none()
    }

    pub(crate) async fn wait(&self) -> ExitInfo {
        let mut receiver = self.exit.clone();
        let published = match receiver.wait_for(Option::is_some).await {
            Ok(value) => *value,
            Err(_) => None,
        };
        // None: the tracking task ended without publishing (cancelled with the runtime).
        published.unwrap_or(ExitInfo {
            code: 128 + libc::SIGKILL,
            at_unix_nanos: 0,
        })
    }

    pub(crate) async fn close_stdin(&self) -> anyhow::Result<()> {
        self.io.lock().await.close_stdin().await
    }

    pub(crate) async fn resize(&self, rows: u16, columns: u16) -> anyhow::Result<()> {
        self.io.lock().await.resize(rows, columns)
    }
}
