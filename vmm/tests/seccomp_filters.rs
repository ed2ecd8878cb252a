//! The cloak-vmm binary under its seccomp filters: a tiny guest runs and prints, and the VMM
//! stops cleanly on SIGTERM with every thread confined (the supervisor's teardown included);
//! a syscall outside the lists (the hidden `--seccomp-probe`: socket(2) on the supervising
//! thread once the VM runs) kills it with SIGSYS. The lists' sufficiency for each device path
//! is what kvm_tiny.rs shows, its VMs running under the same filters.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test fails loudly by design

mod common;
use common::kvm_or_skip;
use std::io::Read as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

/// mov dx, 0x3f8; mov al, 'R'; out dx, al; mov al, '\n'; out dx, al; cli; hlt
const TINY_GUEST: [u8; 11] = [
    0xBA, 0xF8, 0x03, 0xB0, b'R', 0xEE, 0xB0, b'\n', 0xEE, 0xFA, 0xF4,
];

fn tiny(image: &std::path::Path, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_cloak-vmm"))
        .args(["tiny", "--image"])
        .arg(image)
        .args(["--console", "-", "--seccomp", "kill"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_confined_vmm_runs_its_guest_and_a_forbidden_syscall_kills_it() {
    if !kvm_or_skip("a_confined_vmm_runs_its_guest_and_a_forbidden_syscall_kills_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("tiny.bin");
    std::fs::write(&image, TINY_GUEST).unwrap();

    let mut vmm = tiny(&image, &[]);
    let mut first = [0u8; 2];
    vmm.stdout.take().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"R\n", "the guest ran under the filters");
    // Give the supervisor time to confine itself, then stop the VM through its teardown.
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vmm.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopped = vmm.wait_with_output().unwrap();
    assert!(
        stopped.status.success(),
        "teardown under the filters: {:?} {}",
        stopped.status,
        String::from_utf8_lossy(&stopped.stderr)
    );

    let probe = tiny(&image, &["--seccomp-probe"])
        .wait_with_output()
        .unwrap();
    assert_eq!(
        probe.status.signal(),
        Some(libc::SIGSYS),
        "socket(2) on the supervising thread: {:?} {}",
        probe.status,
        String::from_utf8_lossy(&probe.stderr)
    );
}
