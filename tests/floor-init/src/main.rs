//! The boot benchmark's floor: the least an init can do and still be reached on vsock. It
//! loads the image's module list (vsock is a module in Debian's kernel), listens on vsock port
//! 1024, tells the host it is ready exactly as cloak-agent does, and echoes what it receives.
//! The difference between booting this and booting cloak-agent is the agent's own cost.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

const MODULE_LIST: &str = "/etc/cloak/modules";
const LISTEN_PORT: u32 = 1024;
const READY_PORT: u32 = 1025;
const HOST_CID: u32 = 2;

fn main() {
    load_modules();
    let listener = match vsock_socket().and_then(|fd| listen(fd, LISTEN_PORT)) {
        Ok(fd) => fd,
        Err(err) => {
            // Exiting PID 1 panics the kernel, and `panic=-1` with `-no-reboot` ends the VM.
            eprintln!("floor-init: vsock listen failed: {err}");
            std::process::exit(1);
        }
    };
    notify_ready();
    loop {
        // SAFETY: `listener` is a listening socket owned by this function; accept4 does not
        // retain the null address pointers.
        let fd = unsafe {
            libc::accept4(
                std::os::fd::AsRawFd::as_raw_fd(&listener),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let mut stream = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        });
    }
}

fn load_modules() {
    let Ok(list) = std::fs::read_to_string(MODULE_LIST) else {
        return;
    };
    for line in list.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, path)) = line.split_once(' ') else {
            continue;
        };
        let Ok(file) = std::fs::File::open(format!("/lib/modules/{path}")) else {
            continue;
        };
        let params = CString::default();
        // SAFETY: finit_module reads the open module file and a valid NUL-terminated string.
        unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                params.as_ptr(),
                0,
            );
        }
    }
}

fn vsock_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socket returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn address(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value before the fields are set.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn listen(fd: OwnedFd, port: u32) -> std::io::Result<OwnedFd> {
    let addr = address(libc::VMADDR_CID_ANY, port);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: `addr` is a valid sockaddr_vm for the given length; `raw` is an open socket.
    let bound = unsafe {
        libc::bind(
            raw,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    // SAFETY: `raw` is an open, bound socket.
    if bound < 0 || unsafe { libc::listen(raw, 16) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn notify_ready() {
    for _ in 0..5 {
        let Ok(fd) = vsock_socket() else { return };
        let addr = address(HOST_CID, READY_PORT);
        // SAFETY: `addr` is a valid sockaddr_vm for the given length; `fd` is an open socket.
        let connected = unsafe {
            libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if connected == 0 {
            let _ = std::fs::File::from(fd).write_all(b"READY\n");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
