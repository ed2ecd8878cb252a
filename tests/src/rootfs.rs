//! A busybox root filesystem for test containers, built from Debian's `busybox-static`
//! (installed by scripts/setup-host.sh): the static binary plus one symlink per applet.

use std::path::Path;

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes a busybox rootfs into `dir` (which must not exist yet or be empty).
pub fn build_busybox_rootfs(dir: &Path) -> std::io::Result<()> {
    for sub in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/user",
        "www",
    ] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
    let output = std::process::Command::new(BUSYBOX)
        .arg("--list-full")
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other("busybox --list-full failed"));
    }
    for applet in String::from_utf8_lossy(&output.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = dir.join(applet);
        if link.exists() {
            continue;
        }
        std::os::unix::fs::symlink("/bin/busybox", link)?;
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n",
    )?;
    std::fs::write(dir.join("www/index.html"), "hello from cloak\n")?;
    for tool in [SHM_PROBE, VSOCK_FLOOD] {
        if let Some(binary) = guest_tool_binary(tool) {
            std::fs::copy(binary, dir.join("bin").join(tool))?;
        }
    }
    Ok(())
}

/// The raw vsock writer (tests/floor-init): the stdout benchmark's floor.
pub const VSOCK_FLOOD: &str = "cloak-vsock-flood";

/// A static guest tool: `CLOAK_SHM_PROBE_BIN` for the shm probe, else the one built beside
/// the floor init `make test` names.
fn guest_tool_binary(name: &str) -> Option<std::path::PathBuf> {
    if name == SHM_PROBE {
        if let Some(path) = std::env::var_os("CLOAK_SHM_PROBE_BIN") {
            return Some(path.into());
        }
    }
    let floor = std::path::PathBuf::from(std::env::var_os("CLOAK_FLOOR_INIT_BIN")?);
    let binary = floor.parent()?.join(name);
    binary.is_file().then_some(binary)
}

/// The System V shared-memory probe's name in the rootfs's /bin (tests/floor-init).
pub const SHM_PROBE: &str = "cloak-shm-probe";

/// The static shm probe: `CLOAK_SHM_PROBE_BIN`, else beside the floor init `make test` names.
pub fn shm_probe_binary() -> Option<std::path::PathBuf> {
    guest_tool_binary(SHM_PROBE)
}

/// Whether this host can build the rootfs; the reason otherwise.
pub fn busybox_available() -> Result<(), String> {
    if Path::new(BUSYBOX).is_file() {
        Ok(())
    } else {
        Err(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static; scripts/setup-host.sh does)"
        ))
    }
}
