//! "The agent is serving": the agent connects to the host's ready port once its ttrpc server
//! runs. The listener is bound before the VM starts, so the host never polls a guest that is
//! still booting.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;

use super::HypervisorError;

pub struct ReadyListener {
    listener: UnixListener,
    path: PathBuf,
}

/// How often the VM's liveness is checked while waiting.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

impl ReadyListener {
    pub fn bind(path: &Path) -> Result<Self, HypervisorError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| HypervisorError::RunDir {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// Waits for the agent's ready message. `vm_exit` is polled so a dead VM ends the wait at
    /// once instead of at the deadline.
    /// Waits for the agent of the VM `vmm` runs; a VMM that exits first is reported with its
    /// own last words (a bad argument, a missing device), which explain more than its exit code.
    pub async fn wait_for_vmm(
        &self,
        name: &str,
        vmm: &mut super::child::ChildProcess,
        deadline: Instant,
    ) -> Result<(), HypervisorError> {
        match self.wait(deadline, || vmm.try_exit()).await {
            Err(HypervisorError::VmExited(exit)) => {
                let details = vmm.log_tail(5);
                if details.trim().is_empty() {
                    Err(HypervisorError::VmExited(exit))
                } else {
                    Err(HypervisorError::EarlyExit {
                        what: name.to_owned(),
                        exit,
                        details: format!("\n{details}"),
                    })
                }
            }
            other => other,
        }
    }

    pub async fn wait(
        &self,
        deadline: Instant,
        mut vm_exit: impl FnMut() -> Option<super::VmExit>,
    ) -> Result<(), HypervisorError> {
        loop {
            if let Some(exit) = vm_exit() {
                return Err(HypervisorError::VmExited(exit));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HypervisorError::AgentTimeout);
            }
            let slice = LIVENESS_POLL.min(deadline - now);
            if let Ok(Ok((stream, _))) = tokio::time::timeout(slice, self.listener.accept()).await {
                if reads_ready(stream).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Whether what a guest connection to the ready port sends (to its end, at most 64 bytes,
/// within 2 s) is exactly the agent's ready message.
pub async fn reads_ready(mut stream: impl tokio::io::AsyncRead + Unpin) -> bool {
    let mut message = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        (&mut stream).take(64).read_to_end(&mut message),
    )
    .await;
    let ready = matches!(read, Ok(Ok(_))) && message == cloak_protocol::READY_MESSAGE;
    if !ready {
        tracing::warn!(?message, "unexpected message on the ready port");
    }
    ready
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn ready_message_ends_the_wait_and_drop_removes_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock_1025");
        let listener = ReadyListener::bind(&path).unwrap();
        let client_path = path.clone();
        tokio::spawn(async move {
            let mut stream = tokio::net::UnixStream::connect(client_path).await.unwrap();
            stream
                .write_all(cloak_protocol::READY_MESSAGE)
                .await
                .unwrap();
        });
        listener
            .wait(Instant::now() + Duration::from_secs(5), || None)
            .await
            .unwrap();
        drop(listener);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn dead_vm_and_deadline_end_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let listener = ReadyListener::bind(&dir.path().join("r")).unwrap();
        let exit = super::super::VmExit {
            code: Some(1),
            signal: None,
        };
        let started = Instant::now();
        let err = listener
            .wait(started + Duration::from_secs(30), || Some(exit.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, HypervisorError::VmExited(_)));
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = listener
            .wait(Instant::now() + Duration::from_millis(200), || None)
            .await
            .unwrap_err();
        assert!(matches!(err, HypervisorError::AgentTimeout));
    }
}
