//! A static test program for containers: busybox has no System V IPC tools, and the pod tests
//! must show that two containers of a pod share one IPC namespace by a segment one of them
//! creates and the other reads. `cloak-shm-probe create KEY TEXT` creates segment KEY holding
//! TEXT; `cloak-shm-probe read KEY` prints what segment KEY holds (exit 1 if there is none).

#![allow(clippy::print_stdout)] // a command-line probe: its answer is its output

use std::ffi::CStr;

const SEGMENT_BYTES: usize = 4096;

fn fail(what: &str) -> ! {
    eprintln!("shm-probe: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn attach(key: libc::key_t, create: bool) -> *mut u8 {
    let flags = if create { libc::IPC_CREAT | 0o666 } else { 0 };
    // SAFETY: shmget takes plain integers and returns an id or -1.
    let id = unsafe { libc::shmget(key, if create { SEGMENT_BYTES } else { 0 }, flags) };
    if id < 0 {
        fail("shmget");
    }
    // SAFETY: attaching a segment the kernel just named at an address it chooses.
    let address = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if address as isize == -1 {
        fail("shmat");
    }
    address.cast()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (command, key) = match (args.get(1), args.get(2).and_then(|k| k.parse().ok())) {
        (Some(command), Some(key)) => (command.as_str(), key),
        _ => {
            eprintln!("usage: cloak-shm-probe create KEY TEXT | read KEY");
            std::process::exit(2);
        }
    };
    match command {
        "create" => {
            let text = args.get(3).map(String::as_bytes).unwrap_or_default();
            let length = text.len().min(SEGMENT_BYTES - 1);
            let segment = attach(key, true);
            // SAFETY: the segment is SEGMENT_BYTES long and `length` + 1 fits in it.
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), segment, length);
                *segment.add(length) = 0;
            }
        }
        "read" => {
            let segment = attach(key, false);
            // SAFETY: `create` wrote a NUL-terminated string within the segment.
            let text = unsafe { CStr::from_ptr(segment.cast()) };
            println!("{}", text.to_string_lossy());
        }
        other => {
            eprintln!("shm-probe: unknown command {other:?}");
            std::process::exit(2);
        }
    }
}
