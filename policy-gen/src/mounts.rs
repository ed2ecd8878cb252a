//! The mounts a container may have: the runtime's own (proc, sysfs read-only, /dev...), the
//! files the CRI plugin and kubelet bind in (hostname, hosts, resolv.conf, /dev/shm, the
//! termination log, the service account token) and the pod's volumes at their mount points.
//! Every bind arrives in the guest as an entry of the shim's shared directory, so its source
//! is pinned to that shape; its content is the host's (untrusted, as network traffic is).

use crate::data::MountEntry;
use crate::workload::{Container, PodSpec};
use crate::GenerateError;

/// Where the shim shares a container's bind sources in the guest.
const SHARED_BIND_SOURCE: &str = "^/run/cloak/shared/[^/]+/mounts/[0-9]+$";

fn runtime(destination: &str, kind: &str, read_only: bool) -> MountEntry {
    MountEntry {
        destination: destination.to_owned(),
        kind: kind.to_owned(),
        source: format!("^{kind}$"),
        options: if read_only {
            vec!["ro".to_owned()]
        } else {
            Vec::new()
        },
        below: false,
        volume: None,
    }
}

fn bind(destination: &str, read_only: bool, below: bool, volume: Option<&str>) -> MountEntry {
    MountEntry {
        destination: destination.to_owned(),
        kind: "bind".to_owned(),
        source: SHARED_BIND_SOURCE.to_owned(),
        options: if read_only {
            vec!["ro".to_owned()]
        } else {
            Vec::new()
        },
        below,
        volume: volume.map(str::to_owned),
    }
}

fn runtime_mounts() -> Vec<MountEntry> {
    vec![
        runtime("/proc", "proc", false),
        runtime("/dev", "tmpfs", false),
        runtime("/dev/pts", "devpts", false),
        runtime("/dev/mqueue", "mqueue", false),
        runtime("/sys", "sysfs", true),
        runtime("/sys/fs/cgroup", "cgroup", true),
    ]
}

const CRI_FILES: [&str; 4] = [
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/dev/shm",
];

/// The sandbox container's mounts (containerd 1.6 gives it a tmpfs /dev/shm of its own).
pub(crate) fn sandbox() -> Vec<MountEntry> {
    let mut mounts = runtime_mounts();
    mounts.push(MountEntry {
        source: "^shm$".to_owned(),
        ..runtime("/dev/shm", "tmpfs", false)
    });
    mounts.extend(CRI_FILES.iter().map(|file| bind(file, false, false, None)));
    mounts
}

/// `container`'s mounts in `pod`.
pub(crate) fn container(
    pod: &PodSpec,
    container: &Container,
) -> Result<Vec<MountEntry>, GenerateError> {
    let mut mounts = runtime_mounts();
    mounts.extend(CRI_FILES.iter().map(|file| bind(file, false, false, None)));
    let termination_log = container
        .termination_message_path
        .as_deref()
        .unwrap_or("/dev/termination-log");
    mounts.push(bind(termination_log, false, false, None));
    if pod.automount_service_account_token != Some(false) {
        mounts.push(bind(
            "/var/run/secrets/kubernetes.io/serviceaccount",
            true,
            true,
            Some("serviceAccountToken"),
        ));
    }
    for volume_mount in &container.volume_mounts {
        let volume = pod
            .volumes
            .iter()
            .find(|volume| volume.name == volume_mount.name)
            .ok_or_else(|| GenerateError::Container {
                container: container.name.clone(),
                reason: format!(
                    "it mounts volume {}, which the pod does not have",
                    volume_mount.name
                ),
            })?;
        mounts.push(bind(
            &volume_mount.mount_path,
            volume_mount.read_only,
            true,
            Some(&volume.kind),
        ));
    }
    Ok(mounts)
}
