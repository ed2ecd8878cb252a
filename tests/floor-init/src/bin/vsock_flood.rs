//! The stdout benchmark's producer and its floor. `cloak-vsock-flood PORT BYTES [CHUNK]`
//! connects to the host (CID 2) on PORT and writes BYTES zero bytes, CHUNK (default 16384,
//! the agent's own vsock write size) at a time, then closes: a raw vsock stream from inside a
//! container of the pod to the host, with no pipe, no agent and no shim in between. With PORT
//! `-` it writes the same bytes the same way to its stdout instead, so the stdout path is
//! measured with the very producer its floor has. Static: containers' rootfs has no libc to
//! link against.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

const HOST_CID: u32 = 2;

fn fail(what: &str) -> ! {
    eprintln!("vsock-flood: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn number(arg: Option<String>, name: &str) -> usize {
    match arg.map(|a| a.parse::<usize>()) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: cloak-vsock-flood PORT BYTES [CHUNK] ({name} missing or invalid)");
            std::process::exit(2);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port = args.next();
    let bytes = number(args.next(), "BYTES");
    let chunk = args.next().map_or(16384, |c| number(Some(c), "CHUNK"));
    let mut stream = if port.as_deref() == Some("-") {
        // SAFETY: fd 1 is this process's stdout, open for its whole life; nothing else in this
        // program uses it.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(1) })
    } else {
        connect(number(port, "PORT"))
    };
    let buffer = vec![0u8; chunk];
    let mut left = bytes;
    while left > 0 {
        let now = left.min(chunk);
        if stream.write_all(&buffer[..now]).is_err() {
            fail("write");
        }
        left -= now;
    }
}

fn connect(port: usize) -> std::fs::File {
    // SAFETY: plain socket creation; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        fail("socket");
    }
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; all-zero is valid before the fields are set.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = HOST_CID;
    addr.svm_port = port as u32;
    // SAFETY: `addr` is a valid sockaddr_vm for the given length; `fd` is an open socket.
    let connected = unsafe {
        libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if connected < 0 {
        fail("connect");
    }
    std::fs::File::from(socket)
}
