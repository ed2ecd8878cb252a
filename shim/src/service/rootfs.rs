//! A container's root filesystem on the host: containerd's rootfs mounts (the snapshot's
//! overlay), or the spec's root directory, mounted below the pod's shared directory.

use std::path::Path;

use cloak_host::host_mounts::{bind, create_dir, MountError};
use containerd_shim::protos::types::mount::Mount;
use oci_spec::runtime::Spec;

/// Mounts containerd's rootfs mounts (or, with none, the spec's root path taken relative to
/// the bundle) on `target`.
pub async fn mount_rootfs(
    mounts: &[Mount],
    bundle: &Path,
    spec: &Spec,
    target: &Path,
) -> Result<(), MountError> {
    create_dir(target)?;
    if mounts.is_empty() {
        let root = spec
            .root()
            .as_ref()
            .map(|root| bundle.join(root.path()))
            .unwrap_or_else(|| bundle.join("rootfs"));
        if !root.exists() {
            return Err(MountError::MissingSource(root.display().to_string()));
        }
        return bind(&root, target, false);
    }
    for rootfs_mount in mounts {
        containerd_shim::asynchronous::util::mount_rootfs(rootfs_mount, target)
            .await
            .map_err(|err| MountError::Mount {
                what: format!("{} {}", rootfs_mount.type_, rootfs_mount.source),
                target: target.display().to_string(),
                reason: err.to_string(),
            })?;
    }
    Ok(())
}
