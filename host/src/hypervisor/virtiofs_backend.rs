//! The pod's shared directory: `virtiofsd` serves it over vhost-user to QEMU's
//! `vhost-user-fs` device or cloak-vmm's virtio-fs frontend. One daemon per VM; it exits when the VM disconnects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::child::ChildProcess;
use super::HypervisorError;

pub struct VirtiofsBackend {
    process: ChildProcess,
    socket: PathBuf,
}

impl VirtiofsBackend {
    /// Starts virtiofsd for `shared_dir`; returns once its vhost-user socket exists.
    pub async fn start(
        program: &Path,
        run_dir: &Path,
        shared_dir: &Path,
    ) -> Result<Self, HypervisorError> {
        let socket = crate::run_dir::virtiofs_socket(run_dir);
        let _ = std::fs::remove_file(&socket);
        let mut command = Command::new(program);
        command
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(shared_dir)
            // The guest may cache: only the runtime writes the shared tree, before containers
            // start, and the container side of a rootfs is an overlay in guest memory.
            .arg("--cache=auto")
            // Its own sandbox, spelled out so no default can loosen it: the shared directory
            // becomes its mount namespace's root (its capabilities are what it needs to serve
            // files with their owners), and a seccomp filter kills it on any other syscall.
            .arg("--sandbox=namespace")
            .arg("--seccomp=kill")
            .arg("--log-level=warn");
        let process = ChildProcess::spawn("virtiofsd", command, run_dir)?;
        let mut backend = Self { process, socket };
        let socket = backend.socket.clone();
        if let Err(err) = backend.process.wait_for_socket(&socket).await {
            backend.stop().await;
            return Err(err);
        }
        Ok(backend)
    }

    /// virtiofsd for the VM's shared directory, if it has one.
    pub async fn start_for(
        program: &Path,
        config: &super::VmConfig,
    ) -> Result<Option<Self>, HypervisorError> {
        match &config.shared_dir {
            Some(dir) => Ok(Some(Self::start(program, &config.run_dir, dir).await?)),
            None => Ok(None),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `Some` once the daemon has exited.
    pub fn try_exit(&mut self) -> Option<super::VmExit> {
        self.process.try_exit()
    }

    pub async fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(2)).await;
        let _ = std::fs::remove_file(&self.socket);
        // virtiofsd's own pid file beside its socket.
        let mut pid_file = self.socket.clone().into_os_string();
        pid_file.push(".pid");
        let _ = std::fs::remove_file(pid_file);
    }
}
