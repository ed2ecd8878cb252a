//! A read-only loop device over a file (LOOP_CTL_GET_FREE, then LOOP_CONFIGURE), cleared by the
//! kernel once its last user (the dm-verity device above it) lets go.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LOOP_MAJOR: u32 = 7;

/// `struct loop_info64` of `linux/loop.h`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `linux/loop.h`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// A configured loop device. It is held open until the device above it has opened it:
/// with autoclear, the kernel detaches it at the last close.
#[derive(Debug)]
pub(crate) struct LoopDevice {
    pub(crate) minor: u32,
    _held: File,
}

/// Attaches `file` read-only to a free loop device.
pub(crate) fn attach_read_only(file: &Path) -> std::io::Result<LoopDevice> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
    let minor = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if minor < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let minor = minor as u32;
    let path = super::block_node(&format!("loop{minor}"), LOOP_MAJOR, minor)?;
    let device = OpenOptions::new().read(true).open(&path)?;
    let backing = File::open(file)?;
    let mut name = [0u8; 64];
    let text = file.as_os_str().as_encoded_bytes();
    let length = text.len().min(63);
    name[..length].copy_from_slice(&text[..length]);
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 4096,
        info: LoopInfo64 {
            device: 0,
            inode: 0,
            rdevice: 0,
            offset: 0,
            sizelimit: 0,
            number: 0,
            encrypt_type: 0,
            encrypt_key_size: 0,
            flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            file_name: name,
            crypt_name: [0; 64],
            encrypt_key: [0; 32],
            init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is (its size is
    // checked above), and the fds it names stay open for the call.
    let configured = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
    if configured < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(LoopDevice {
        minor,
        _held: device,
    })
}
