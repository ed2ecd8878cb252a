//! The userspace vsock device for QEMU: `vhost-device-vsock` serves the guest's virtio-vsock
//! queues over vhost-user and exposes the host side as a hybrid-vsock Unix socket. One backend
//! per VM; it outlives a VM disconnect, so the runtime stops it with the VM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::child::ChildProcess;
use super::HypervisorError;

/// The guest's vsock CID. Every pod VM has its own backend, so all can use the first free CID.
pub const GUEST_CID: u32 = 3;

pub struct VsockBackend {
    process: ChildProcess,
    vhost_socket: PathBuf,
    vsock_socket: PathBuf,
}

impl VsockBackend {
    /// Starts the backend; returns once its vhost-user socket exists (QEMU connects to it).
    pub async fn start(
        program: &Path,
        run_dir: &Path,
        vsock_socket: &Path,
    ) -> Result<Self, HypervisorError> {
        let vhost_socket = crate::run_dir::vhost_vsock_socket(run_dir);
        for stale in [&vhost_socket, &vsock_socket.to_path_buf()] {
            let _ = std::fs::remove_file(stale);
        }
        let mut command = Command::new(program);
        command
            .arg("--guest-cid")
            .arg(GUEST_CID.to_string())
            .arg("--socket")
            .arg(&vhost_socket)
            .arg("--uds-path")
            .arg(vsock_socket);
        // It needs no capability: its sockets are in the run directory the shim (root) owns.
        super::privileges::drop_capabilities_on_exec(
            &mut command,
            super::privileges::KeptCapabilities::NONE,
        );
        let process = ChildProcess::spawn("vsock-backend", command, run_dir)?;
        let mut backend = Self {
            process,
            vhost_socket,
            vsock_socket: vsock_socket.to_owned(),
        };
        let socket = backend.vhost_socket.clone();
        if let Err(err) = backend.process.wait_for_socket(&socket).await {
            backend.stop().await;
            return Err(err);
        }
        Ok(backend)
    }

    /// The vhost-user socket QEMU's `vhost-user-vsock-*` device connects to.
    pub fn vhost_socket(&self) -> &Path {
        &self.vhost_socket
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
        self.remove_sockets();
    }

    fn remove_sockets(&self) {
        for socket in [&self.vhost_socket, &self.vsock_socket] {
            let _ = std::fs::remove_file(socket);
        }
    }
}
