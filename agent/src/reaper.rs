//! Child reaping for PID 1. Every orphan in the VM is re-parented to the agent, so the agent
//! collects all exits with `waitpid(-1)` on SIGCHLD and hands each one to whoever registered
//! that pid. Processes the agent starts must be registered while the registry lock is held
//! (`spawn_registered`), so an exit can never be reaped before its watcher exists; exits of
//! unregistered pids are orphans and are only logged.
//!
//! Nothing else in the agent may wait for children (no `tokio::process`): a second waiter would
//! steal exit statuses from this one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// Exit code, or 128 + signal number for a process killed by a signal (as shells report it).
pub(crate) type ExitCode = i32;

#[derive(Default)]
pub(crate) struct Reaper {
    watchers: Mutex<HashMap<i32, oneshot::Sender<ExitCode>>>,
}

impl Reaper {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitCode>>> {
        // A poisoned registry only means a panic elsewhere; the map itself stays consistent.
        self.watchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `spawn` (which returns the new pid) with the registry locked and registers the pid,
    /// so its exit is delivered to the returned receiver even if it exits immediately.
    pub(crate) fn spawn_registered<E>(
        &self,
        spawn: impl FnOnce() -> Result<i32, E>,
    ) -> Result<(i32, oneshot::Receiver<ExitCode>), E> {
        let mut watchers = self.lock();
        let pid = spawn()?;
        let (sender, receiver) = oneshot::channel();
        watchers.insert(pid, sender);
        Ok((pid, receiver))
    }

    /// Collects every exited child without blocking and notifies the registered watchers.
    /// Holds the registry lock throughout, so a `spawn_registered` in progress (which may
    /// wait for its own helper processes) is never robbed of an exit status.
    pub(crate) fn reap_exited_children(&self) {
        let mut watchers = self.lock();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(status) => {
                    if let Some((pid, code)) = exit_code_of(status) {
                        match watchers.remove(&pid) {
                            // The watcher may have given up (its RPC was cancelled).
                            Some(watcher) => {
                                let _ = watcher.send(code);
                            }
                            None => tracing::debug!(pid, code, "reaped orphan"),
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "waitpid failed");
                    return;
                }
            }
        }
    }
}

/// Maps a wait status to (pid, exit code); stops and continues are not exits.
pub(crate) fn exit_code_of(status: WaitStatus) -> Option<(i32, ExitCode)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, signal, _core_dumped) => {
            Some((pid.as_raw(), 128 + signal as i32))
        }
        _ => None,
    }
}

/// Reaps on every SIGCHLD for the life of the agent.
pub(crate) fn spawn_orphan_reaper(reaper: Arc<Reaper>) -> std::io::Result<()> {
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        // Children that exited before the handler was installed.
        reaper.reap_exited_children();
        while sigchld.recv().await.is_some() {
            reaper.reap_exited_children();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn exit_codes_follow_shell_conventions() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_code_of(WaitStatus::Exited(pid, 3)), Some((42, 3)));
        assert_eq!(
            exit_code_of(WaitStatus::Signaled(pid, Signal::SIGTERM, false)),
            Some((42, 143))
        );
        assert_eq!(
            exit_code_of(WaitStatus::Stopped(pid, Signal::SIGSTOP)),
            None
        );
    }

    #[test]
    fn registered_child_exit_is_delivered() {
        let reaper = Reaper::new();
        let (pid, mut receiver) = reaper
            .spawn_registered(|| {
                std::process::Command::new("sh")
                    .args(["-c", "exit 7"])
                    .spawn()
                    .map(|child| child.id() as i32)
            })
            .unwrap();
        assert!(pid > 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            reaper.reap_exited_children();
            if let Ok(code) = receiver.try_recv() {
                assert_eq!(code, 7);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "exit never delivered");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
