//! Guest networking the agent owns from boot: the loopback interface. (Pod interfaces are
//! configured later through UpdateInterface.)

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::Context as _;

/// Brings `lo` up: containers share the VM's network namespace and talk over localhost.
pub fn bring_up_loopback() -> anyhow::Result<()> {
    // SAFETY: plain socket creation; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error())
            .context("creating a socket for interface flags");
    }
    // SAFETY: socket() returned a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value before the name is set.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: `request` is a valid ifreq naming an interface; the kernel fills in the flags.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error()).context("reading the flags of lo");
    }
    // SAFETY: the union member written by SIOCGIFFLAGS is ifru_flags.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: `request` is a valid ifreq with the name and the new flags.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(std::io::Error::last_os_error()).context("setting lo up");
    }
    Ok(())
}
