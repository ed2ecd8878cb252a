//! The filesystems PID 1 mounts before anything else runs.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MountError {
    #[error("creating mount point {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("mounting {fstype} on {path}: {source}")]
    Mount {
        fstype: String,
        path: String,
        source: nix::Error,
    },
}

struct BaseMount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In mount order: /dev before /dev/pts and /dev/shm, /sys before its cgroup hierarchy.
const BASE_MOUNTS: &[BaseMount] = &[
    BaseMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    BaseMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    BaseMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    BaseMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    },
    BaseMount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("mode=1777"),
    },
    BaseMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    BaseMount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    BaseMount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
];

/// Mounts proc, sys, dev, devpts, shm, run, tmp and the unified cgroup hierarchy.
pub(crate) fn mount_base_filesystems() -> Result<(), MountError> {
    for base in BASE_MOUNTS {
        create_mount_point(base.target)?;
        mount(
            Some(base.source),
            base.target,
            Some(base.fstype),
            base.flags,
            base.data,
        )
        .map_err(|source| MountError::Mount {
            fstype: base.fstype.to_owned(),
            path: base.target.to_owned(),
            source,
        })?;
    }
    // /dev/ptmx must point at this devpts instance for ptys opened in the guest.
    let _ = std::fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    Ok(())
}

fn create_mount_point(path: &str) -> Result<(), MountError> {
    if Path::new(path).is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|source| MountError::CreateDir {
        path: path.to_owned(),
        source,
    })?;
    let _ = nix::sys::stat::fchmodat(
        None,
        path,
        Mode::from_bits_truncate(0o755),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    );
    Ok(())
}
