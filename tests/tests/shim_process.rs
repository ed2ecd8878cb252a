//! The shim server as a process: serves on its socket, and a termination signal ends it when
//! it runs no container (a shim whose containerd went away must not linger).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use cloak_tests::containerd::shim_binary;
use cloak_tests::skip;

#[test]
fn an_idle_shim_serves_and_exits_on_sigterm() {
    let test = "an_idle_shim_serves_and_exits_on_sigterm";
    let Some(shim) = shim_binary() else {
        skip(
            test,
            "containerd-shim-cloak-v2 is not built (cargo build --release)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Stands in for containerd's ttrpc socket: the event publisher connects to it at start.
    let events =
        std::os::unix::net::UnixListener::bind(dir.path().join("containerd.ttrpc")).unwrap();
    let socket = dir.path().join("shim.sock");
    let mut server = Command::new(&shim)
        .args(["-namespace", "test", "-id", "idle", "-address"])
        .arg(dir.path().join("containerd.sock"))
        .arg("-socket")
        .arg(format!("unix://{}", socket.display()))
        .env("TTRPC_ADDRESS", dir.path().join("containerd.ttrpc"))
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "the shim never served on {}",
            socket.display()
        );
        assert!(
            server.try_wait().unwrap().is_none(),
            "the shim exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(server.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("an idle shim ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the shim removes its socket");
    drop(events);
}
