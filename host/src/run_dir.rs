//! The run directory of a pod VM and every file in it, named in this one place: the VMM's
//! sockets and console log, the backends' sockets, the shared directory, the guest's host
//! ports. Backends, the shim and its cleanup all ask here.

use std::path::{Path, PathBuf};

/// The guest's serial console, kept after the VM stops for post-mortems.
pub const CONSOLE_LOG: &str = "console.log";
/// Hybrid-vsock socket the host connects to (`CONNECT <port>\n`).
const VSOCK_SOCKET: &str = "vsock.sock";
/// vhost-user socket between the VMM and vhost-device-vsock.
const VHOST_VSOCK_SOCKET: &str = "vhost-vsock.sock";
/// vhost-user socket between the VMM and virtiofsd.
const VIRTIOFS_SOCKET: &str = "virtiofs.sock";
/// The directory shared into the VM with virtio-fs.
const SHARED_DIR: &str = "shared";

/// Longer pod ids get a shortened directory name: the VM's Unix sockets live in it, and a
/// socket path may not exceed 108 bytes (CRI sandbox ids alone are 64 characters).
const MAX_POD_DIR_NAME: usize = 24;

/// The name of pod `id`'s directory below the run directory: the id itself when short, else
/// its first 12 characters and 12 hex digits of its SHA-256 (unique, still recognisable).
pub fn pod_dir_name(id: &str) -> String {
    use sha2::{Digest, Sha256};
    if id.len() <= MAX_POD_DIR_NAME {
        return id.to_owned();
    }
    let prefix: String = id.chars().take(12).collect();
    let hash = hex_prefix(&Sha256::digest(id.as_bytes()), 6);
    format!("{prefix}-{hash}")
}

fn hex_prefix(bytes: &[u8], count: usize) -> String {
    bytes
        .iter()
        .take(count)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pod `id`'s directory below `run_root`.
pub fn pod_dir(run_root: &Path, id: &str) -> PathBuf {
    run_root.join(pod_dir_name(id))
}

pub fn vsock_socket(pod_dir: &Path) -> PathBuf {
    pod_dir.join(VSOCK_SOCKET)
}

pub fn console_log(pod_dir: &Path) -> PathBuf {
    pod_dir.join(CONSOLE_LOG)
}

/// Listener for guest connections to host port `port` (the hybrid-vsock convention:
/// `<vsock socket>_<port>`).
pub fn host_port_socket(pod_dir: &Path, port: u32) -> PathBuf {
    pod_dir.join(format!("{VSOCK_SOCKET}_{port}"))
}

pub fn vhost_vsock_socket(pod_dir: &Path) -> PathBuf {
    pod_dir.join(VHOST_VSOCK_SOCKET)
}

pub fn virtiofs_socket(pod_dir: &Path) -> PathBuf {
    pod_dir.join(VIRTIOFS_SOCKET)
}

pub fn shared_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join(SHARED_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_pod_ids_get_short_distinct_directory_names() {
        assert_eq!(pod_dir_name("pod-7"), "pod-7");
        let sandbox = "785e9653a801291d7381ef9d496abaea00c0dcca24cd3e1d1fea7555c020af49";
        let name = pod_dir_name(sandbox);
        assert!(name.starts_with("785e9653a801-"), "{name}");
        assert_eq!(name.len(), 25);
        let other = sandbox.replace("49", "50");
        assert_ne!(pod_dir_name(&other), name);
        // Deep socket below /run/cloak stays far below the 108-byte limit.
        let socket = vhost_vsock_socket(&pod_dir(Path::new("/run/cloak"), sandbox));
        assert!(socket.as_os_str().len() < 108);
    }
}
