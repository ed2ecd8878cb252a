//! The leak census (`cloak_tests::leaks`) sees what a pod can leave behind where it lives: a
//! tap inside a named network namespace (not only on the host), a process of a cloak program
//! with its descriptors, a mount. Each is made here by the test, outside cloak, counted, then
//! removed; the census after shows no growth.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test fails loudly by design

use std::process::Command;

use cloak_tests::leaks::{Census, Scope};

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?}");
}

#[test]
fn the_census_counts_taps_in_pod_namespaces_processes_and_mounts() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (network namespaces, mounts)");
        return;
    }
    let scope = Scope::default();
    let before = Census::take(&scope);

    let namespace = format!("cloak-census-{}", std::process::id());
    run(&["ip", "netns", "add", &namespace]);
    run(&[
        "ip", "-n", &namespace, "tuntap", "add", "dev", "tap0", "mode", "tap",
    ]);
    let dir = tempfile::tempdir().unwrap();
    // A process the kernel names like cloak's VMM, holding one extra descriptor.
    let program = dir.path().join("cloak-vmm");
    std::fs::copy("/bin/sleep", &program).unwrap();
    let held = std::fs::File::open("/proc/self/status").unwrap();
    let mut child = Command::new(&program)
        .arg("30")
        .stdin(held)
        .spawn()
        .unwrap();
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    run(&[
        "mount",
        "-t",
        "tmpfs",
        "census",
        mount_point.to_str().unwrap(),
    ]);
    // The child names itself once it has exec'd.
    std::thread::sleep(std::time::Duration::from_millis(200));

    let during = Census::take(&scope);
    let grown: Vec<String> = during
        .growth_since(&before, u64::MAX)
        .into_iter()
        .map(|growth| growth.what)
        .collect();
    for what in [
        "network namespaces",
        "taps (host and pod namespaces)",
        "processes cloak-vmm",
        "open fds of cloak-vmm",
        "mounts",
    ] {
        assert!(
            grown.iter().any(|g| g == what),
            "{what} not seen:\n{during}"
        );
    }

    run(&["umount", mount_point.to_str().unwrap()]);
    child.kill().unwrap();
    child.wait().unwrap();
    run(&["ip", "netns", "del", &namespace]);
    let after = Census::take(&scope);
    let left: Vec<_> = after
        .growth_since(&before, u64::MAX)
        .into_iter()
        .filter(|growth| growth.what != "unix sockets" && growth.what != "cgroups")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
