//! Block devices the agent sets up for verified root filesystems: a read-only loop device over
//! a layer image the host shares, and a dm-verity device over it. Thin bindings of the two
//! kernel interfaces (`/dev/loop-control` and the loop ioctls; `/dev/mapper/control`), kept
//! small so every `unsafe` is one ioctl with its argument laid out as the kernel's header says.

pub(crate) mod device_mapper;
pub(crate) mod loop_device;

use std::path::{Path, PathBuf};

/// Where the agent makes its own device nodes: on devtmpfs (/run is nodev), beside the ones
/// the kernel may add later, or not yet.
const NODE_DIR: &str = "/dev/cloak";

/// A block device node for `major:minor` named `name` below the agent's node directory.
pub(crate) fn block_node(name: &str, major: u32, minor: u32) -> std::io::Result<PathBuf> {
    let dir = Path::new(NODE_DIR);
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
    )
    .map_err(std::io::Error::from)?;
    Ok(path)
}
