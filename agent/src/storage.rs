//! Filesystems the host hands the guest: the pod's shared directory (virtio-fs) and container
//! root filesystems. A rootfs arrives through a `RootfsSource`, so a block transport (erofs +
//! dm-verity for confidential pods) can sit next to the shared-directory one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cloak_protocol::agent::Storage;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::AgentError;

/// What was set up for one purpose: mounts, and the device-mapper devices below them.
#[derive(Debug)]
enum Undo {
    Unmount(PathBuf),
    RemoveDevice(String),
}

/// Mounts (and devices) done for one purpose, undone in reverse order.
#[derive(Debug, Default)]
pub(crate) struct MountStack {
    steps: Vec<Undo>,
}

impl MountStack {
    pub(crate) fn push(&mut self, target: &Path) {
        self.steps.push(Undo::Unmount(target.to_owned()));
    }

    /// A device-mapper device to remove once the mounts above it are gone.
    pub(crate) fn push_device(&mut self, name: &str) {
        self.steps.push(Undo::RemoveDevice(name.to_owned()));
    }

    /// Detaches every mount and removes every device, newest first. Lazy, so a process still
    /// holding a file open does not keep the container from being removed (its device then
    /// stays until that file is closed: removal is retried once the mounts are detached).
    pub(crate) fn unmount_all(&mut self) {
        while let Some(step) = self.steps.pop() {
            match step {
                Undo::Unmount(target) => {
                    if let Err(err) = umount2(&target, MntFlags::MNT_DETACH) {
                        tracing::warn!(target = %target.display(), error = %err, "unmount failed");
                    }
                }
                Undo::RemoveDevice(name) => crate::layers::remove_device(&name),
            }
        }
    }
}

pub(crate) fn mount_at(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    stack: &mut MountStack,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(target)
        .with_context(|| format!("creating mount point {}", target.display()))?;
    mount(Some(source), target, fstype, flags, data).with_context(|| {
        format!(
            "mounting {source} ({}) on {}",
            fstype.unwrap_or("bind"),
            target.display()
        )
    })?;
    stack.push(target);
    Ok(())
}

/// Mounts a sandbox-level storage (the shared directory, a tmpfs) at its mount point.
pub(crate) fn mount_storage(storage: &Storage, stack: &mut MountStack) -> anyhow::Result<()> {
    let target = Path::new(&storage.mount_point);
    if !target.is_absolute() {
        bail!(AgentError::InvalidArgument(format!(
            "storage mount point {:?} is not absolute",
            storage.mount_point
        )));
    }
    match storage.driver.as_str() {
        "virtio-fs" => mount_at(
            &storage.source,
            target,
            Some("virtiofs"),
            MsFlags::empty(),
            None,
            stack,
        ),
        "tmpfs" => mount_at(
            "tmpfs",
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None,
            stack,
        ),
        "bind" => mount_at(
            &storage.source,
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            stack,
        ),
        other => bail!(AgentError::InvalidArgument(format!(
            "unknown storage driver {other:?}"
        ))),
    }
}

/// Where a container's root filesystem comes from.
pub(crate) trait RootfsSource: Send + Sync {
    /// Makes the root filesystem appear at `target`; the returned stack undoes it.
    fn mount(&self, target: &Path, scratch: &Path) -> anyhow::Result<MountStack>;
}

/// A directory the guest already sees (inside the pod's virtio-fs share), used directly or
/// under an overlay whose upper layer lives in guest memory, so the host copy stays untouched.
pub(crate) struct DirectoryRootfs {
    pub source: PathBuf,
    pub overlay_in_memory: bool,
}

impl RootfsSource for DirectoryRootfs {
    fn mount(&self, target: &Path, scratch: &Path) -> anyhow::Result<MountStack> {
        if !self.source.is_dir() {
            bail!(AgentError::NotFound(format!(
                "container rootfs {} does not exist in the guest",
                self.source.display()
            )));
        }
        let mut stack = MountStack::default();
        let result = if self.overlay_in_memory {
            self.mount_overlay(target, scratch, &mut stack)
        } else {
            mount_at(
                &self.source.to_string_lossy(),
                target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                &mut stack,
            )
        };
        if let Err(err) = result {
            stack.unmount_all();
            return Err(err);
        }
        Ok(stack)
    }
}

impl DirectoryRootfs {
    fn mount_overlay(
        &self,
        target: &Path,
        scratch: &Path,
        stack: &mut MountStack,
    ) -> anyhow::Result<()> {
        mount_scratch(scratch, stack)?;
        mount_overlay(std::slice::from_ref(&self.source), scratch, target, stack)
    }
}

/// A tmpfs at `scratch`, for an overlay's upper layer (and anything else kept in guest memory).
pub(crate) fn mount_scratch(scratch: &Path, stack: &mut MountStack) -> anyhow::Result<()> {
    mount_at(
        "tmpfs",
        scratch,
        Some("tmpfs"),
        MsFlags::MS_NODEV,
        Some("mode=0755"),
        stack,
    )
}

/// overlayfs of `lower` (bottom first) at `target`, its upper and work directories in the
/// scratch tmpfs at `scratch`.
pub(crate) fn mount_overlay(
    lower: &[PathBuf],
    scratch: &Path,
    target: &Path,
    stack: &mut MountStack,
) -> anyhow::Result<()> {
    let upper = scratch.join("upper");
    let work = scratch.join("work");
    for dir in [&upper, &work] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // overlayfs lists the top layer first.
    let lowerdir: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    mount_at(
        "overlay",
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(&options),
        stack,
    )
}

/// The rootfs transport a `Storage` names: a shared directory, or (`layers`) the verified
/// layer images of `layers`, bottom first.
pub(crate) fn rootfs_source(
    storage: &Storage,
    container: &str,
    layers: Vec<crate::layers::Layer>,
) -> anyhow::Result<Box<dyn RootfsSource>> {
    match storage.driver.as_str() {
        "bind" | "virtio-fs" => Ok(Box::new(DirectoryRootfs {
            source: PathBuf::from(&storage.source),
            overlay_in_memory: storage.overlay_in_memory,
        })),
        crate::layers::LAYERS_DRIVER => Ok(Box::new(crate::layers::VerifiedLayers::new(
            container, layers,
        )?)),
        other => bail!(AgentError::InvalidArgument(format!(
            "rootfs driver {other:?} is not supported (bind, virtio-fs, {})",
            crate::layers::LAYERS_DRIVER
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_drivers_are_invalid_arguments() {
        let storage = Storage {
            driver: "nfs".into(),
            mount_point: "/x".into(),
            ..Default::default()
        };
        let err = rootfs_source(&storage, "c", Vec::new()).err().unwrap();
        assert!(matches!(
            err.downcast_ref::<AgentError>(),
            Some(AgentError::InvalidArgument(_))
        ));
        let err = mount_storage(&storage, &mut MountStack::default()).unwrap_err();
        assert!(err.to_string().contains("nfs"));
    }

    #[test]
    fn missing_rootfs_is_not_found() {
        let source = DirectoryRootfs {
            source: PathBuf::from("/nonexistent/rootfs"),
            overlay_in_memory: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = source
            .mount(&dir.path().join("r"), &dir.path().join("s"))
            .unwrap_err();
        assert!(matches!(
            err.downcast_ref::<AgentError>(),
            Some(AgentError::NotFound(_))
        ));
    }
}
