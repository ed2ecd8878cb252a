//! A helper process of a VM (the VMM itself, a vhost-user backend): spawned with its output in
//! a log file, its pid recorded in the run directory (so a later `delete` can find it after a
//! shim crash), and stopped with SIGTERM, then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::{HypervisorError, VmExit};

/// How long a helper daemon may take to create its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ChildProcess {
    name: String,
    child: Child,
    pid: u32,
    pid_file: PathBuf,
    log_file: PathBuf,
    exit: Option<VmExit>,
}

impl ChildProcess {
    /// Spawns `command`, stdout and stderr into `<run_dir>/<name>.log`, pid into `<name>.pid`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        run_dir: &Path,
    ) -> Result<Self, HypervisorError> {
        let program = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        let log_file = run_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_file).map_err(|source| HypervisorError::RunDir {
            path: log_file.display().to_string(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| HypervisorError::RunDir {
            path: log_file.display().to_string(),
            source,
        })?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Its own process group: a terminal's Ctrl-C to the shim must not hit the VM first.
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| HypervisorError::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let pid_file = run_dir.join(format!("{name}.pid"));
        // Best effort: only crash cleanup reads it.
        let _ = std::fs::write(&pid_file, format!("{pid}\n"));
        tracing::debug!(name, pid, program, "helper process started");
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            pid_file,
            log_file,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some` once the process has exited; reaps it.
    pub fn try_exit(&mut self) -> Option<VmExit> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(exit_of(status));
            }
        }
        self.exit.clone()
    }

    /// SIGKILL, unless it already exited; `try_exit` reaps it.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.start_kill();
        }
    }

    /// The end of the process's own log, for errors.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::console::tail(&self.log_file, lines)
    }

    /// Waits until the process has created `socket`; an exit or `SOCKET_TIMEOUT` first is an
    /// error (the caller stops the process).
    pub async fn wait_for_socket(&mut self, socket: &Path) -> Result<(), HypervisorError> {
        let started = std::time::Instant::now();
        while !socket.exists() {
            if let Some(exit) = self.try_exit() {
                return Err(HypervisorError::EarlyExit {
                    what: self.name.clone(),
                    exit,
                    details: format!("\n{}", self.log_tail(10)),
                });
            }
            if started.elapsed() > SOCKET_TIMEOUT {
                return Err(HypervisorError::NotReady {
                    what: format!("{} socket {}", self.name, socket.display()),
                    waited_ms: SOCKET_TIMEOUT.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit and removes the pid file.
    pub async fn terminate(&mut self, grace: Duration) -> VmExit {
        if let Some(exit) = self.try_exit() {
            self.forget_pid();
            return exit;
        }
        let pid = Pid::from_raw(self.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => exit_of(status),
            _ => {
                tracing::warn!(name = %self.name, pid = self.pid, "no exit after SIGTERM, killing");
                let _ = self.child.start_kill();
                match self.child.wait().await {
                    Ok(status) => exit_of(status),
                    Err(_) => VmExit {
                        code: None,
                        signal: Some(Signal::SIGKILL as i32),
                    },
                }
            }
        };
        self.exit = Some(status.clone());
        self.forget_pid();
        status
    }

    fn forget_pid(&self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

fn exit_of(status: std::process::ExitStatus) -> VmExit {
    use std::os::unix::process::ExitStatusExt;
    VmExit {
        code: status.code(),
        signal: status.signal(),
    }
}

/// Makes `command` start inside the network namespace at `netns` (setns before exec).
pub fn enter_netns_on_exec(command: &mut Command, netns: &Path) -> Result<(), HypervisorError> {
    use std::os::fd::AsRawFd as _;
    let namespace = std::fs::File::open(netns).map_err(|source| HypervisorError::RunDir {
        path: netns.display().to_string(),
        source,
    })?;
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which
    // is async-signal-safe; `namespace` is moved in and stays open until then.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Ok(())
}
