//! Device-mapper through `/dev/mapper/control`: create a device, load one table, resume it,
//! and remove it. Only what a dm-verity device over a loop device needs.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;
const DM_MAX_TYPE_NAME: usize = 16;
const DM_READONLY_FLAG: u32 = 1 << 0;

/// `struct dm_ioctl` of `linux/dm-ioctl.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; DM_NAME_LEN],
    uuid: [u8; DM_UUID_LEN],
    data: [u8; 7],
}

/// `struct dm_target_spec`, followed by its parameter string.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; DM_MAX_TYPE_NAME],
}

const _: () = assert!(std::mem::size_of::<DmIoctl>() == 312);
const _: () = assert!(std::mem::size_of::<DmTargetSpec>() == 40);

/// `_IOWR(0xfd, command, struct dm_ioctl)`.
const fn request(command: u64) -> libc::c_ulong {
    (3 << 30) | ((std::mem::size_of::<DmIoctl>() as u64) << 16) | (0xfd << 8) | command
}
const DEV_CREATE: libc::c_ulong = request(3);
const DEV_REMOVE: libc::c_ulong = request(4);
const DEV_SUSPEND: libc::c_ulong = request(6);
const TABLE_LOAD: libc::c_ulong = request(9);

#[derive(Debug, thiserror::Error)]
pub(crate) enum DmError {
    #[error("device-mapper {operation} of {name}: {source}")]
    Ioctl {
        operation: &'static str,
        name: String,
        source: std::io::Error,
    },
    #[error("device-mapper name {0:?} is too long")]
    Name(String),
}

fn header(name: &str, data_size: usize) -> Result<DmIoctl, DmError> {
    if name.len() >= DM_NAME_LEN {
        return Err(DmError::Name(name.to_owned()));
    }
    let mut bytes = [0u8; DM_NAME_LEN];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    Ok(DmIoctl {
        version: [4, 0, 0],
        data_size: data_size as u32,
        data_start: std::mem::size_of::<DmIoctl>() as u32,
        target_count: 0,
        open_count: 0,
        flags: 0,
        event_nr: 0,
        padding: 0,
        dev: 0,
        name: bytes,
        uuid: [0; DM_UUID_LEN],
        data: [0; 7],
    })
}

/// One ioctl on the control device with `buffer` (a `DmIoctl`, then its payload); the header
/// as the kernel returned it.
fn call(
    operation: &'static str,
    command: libc::c_ulong,
    name: &str,
    buffer: &mut [u8],
) -> Result<DmIoctl, DmError> {
    let failed = |source| DmError::Ioctl {
        operation,
        name: name.to_owned(),
        source,
    };
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(failed)?;
    // SAFETY: `buffer` starts with a `struct dm_ioctl` whose `data_size` is the buffer's
    // length, which is what the kernel reads and writes; it outlives the call.
    let result = unsafe { libc::ioctl(control.as_raw_fd(), command, buffer.as_mut_ptr()) };
    if result < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    // SAFETY: the buffer holds at least one `DmIoctl` (every caller sizes it so), unaligned.
    Ok(unsafe { std::ptr::read_unaligned(buffer.as_ptr().cast::<DmIoctl>()) })
}

fn header_bytes(header: &DmIoctl) -> Vec<u8> {
    // SAFETY: `DmIoctl` is plain old data of its exact size, read as bytes.
    unsafe {
        std::slice::from_raw_parts(
            (header as *const DmIoctl).cast::<u8>(),
            std::mem::size_of::<DmIoctl>(),
        )
    }
    .to_vec()
}

/// A device-mapper device the agent made.
#[derive(Debug)]
pub(crate) struct DmDevice {
    pub(crate) node: PathBuf,
}

/// Creates read-only device `name` with one `target` of `sectors` sectors and `params`, and
/// makes it live.
pub(crate) fn create_read_only(
    name: &str,
    target: &str,
    sectors: u64,
    params: &str,
) -> Result<DmDevice, DmError> {
    let size = std::mem::size_of::<DmIoctl>();
    let mut create = header_bytes(&header(name, size)?);
    let created = call("create", DEV_CREATE, name, &mut create)?;
    let loaded = (|| {
        let spec_size = std::mem::size_of::<DmTargetSpec>();
        let params_size = (params.len() + 1).div_ceil(8) * 8;
        let total = size + spec_size + params_size;
        let mut load = header(name, total)?;
        load.target_count = 1;
        load.flags = DM_READONLY_FLAG;
        let mut target_type = [0u8; DM_MAX_TYPE_NAME];
        target_type[..target.len().min(DM_MAX_TYPE_NAME - 1)]
            .copy_from_slice(&target.as_bytes()[..target.len().min(DM_MAX_TYPE_NAME - 1)]);
        let spec = DmTargetSpec {
            sector_start: 0,
            length: sectors,
            status: 0,
            next: 0,
            target_type,
        };
        let mut buffer = header_bytes(&load);
        // SAFETY: `DmTargetSpec` is plain old data of its exact size, read as bytes.
        buffer.extend_from_slice(unsafe {
            std::slice::from_raw_parts((&spec as *const DmTargetSpec).cast::<u8>(), spec_size)
        });
        buffer.extend_from_slice(params.as_bytes());
        buffer.resize(total, 0);
        call("table load", TABLE_LOAD, name, &mut buffer)?;
        // Resume: DEV_SUSPEND without the suspend flag makes the loaded table live.
        let mut resume = header_bytes(&header(name, size)?);
        call("resume", DEV_SUSPEND, name, &mut resume)
    })();
    if let Err(err) = loaded {
        let _ = remove(name);
        return Err(err);
    }
    let dev = created.dev;
    let (major, minor) = (
        nix::sys::stat::major(dev) as u32,
        nix::sys::stat::minor(dev) as u32,
    );
    let node = super::block_node(name, major, minor).map_err(|source| DmError::Ioctl {
        operation: "device node",
        name: name.to_owned(),
        source,
    })?;
    Ok(DmDevice { node })
}

/// Removes device `name` (its node too).
pub(crate) fn remove(name: &str) -> Result<(), DmError> {
    let size = std::mem::size_of::<DmIoctl>();
    let mut buffer = header_bytes(&header(name, size)?);
    call("remove", DEV_REMOVE, name, &mut buffer)?;
    let _ = std::fs::remove_file(std::path::Path::new(super::NODE_DIR).join(name));
    Ok(())
}
