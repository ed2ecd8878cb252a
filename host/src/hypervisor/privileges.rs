//! Least privilege for the processes a VM runs on the host. The shim runs as root; a VMM or
//! helper daemon that inherited all of root's capabilities would hand a guest that escapes
//! into it the whole node. Before exec each child loses every capability but those its job
//! needs (QEMU: attaching the pod's tap), and may gain none back (no_new_privs); QEMU's own
//! seccomp sandbox then limits its syscalls (see `qemu::SANDBOX`).

use tokio::process::Command;

/// CAP_NET_ADMIN (linux/capability.h): attaching to an existing tap device (TUNSETIFF).
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_IPC_LOCK: pinning guest memory, which an SEV-SNP launch may need.
pub const CAP_IPC_LOCK: u32 = 14;

/// The capabilities a child keeps, as a bit mask over capability numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeptCapabilities(u64);

impl KeptCapabilities {
    pub const NONE: Self = Self(0);

    pub fn with(self, capability: u32) -> Self {
        Self(self.0 | (1 << capability))
    }

    pub fn keeps(self, capability: u32) -> bool {
        self.0 & (1 << capability) != 0
    }

    /// The mask as /proc/PID/status prints `CapEff` (hex), for logs and tests.
    pub fn mask(self) -> u64 {
        self.0
    }
}

/// The highest capability number this kernel knows.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
}

/// Makes `command` exec with only `kept` of the capabilities the caller has: the others leave
/// its bounding set (so a root exec cannot regain them), the ambient set is cleared, and
/// no_new_privs stops setuid binaries from raising them again. A caller that may not change
/// its bounding set (not root) has nothing to drop; the child starts as it would have.
pub fn drop_capabilities_on_exec(command: &mut Command, kept: KeptCapabilities) {
    let last = last_capability();
    // SAFETY: the closure runs in the forked child before exec and makes only prctl(2) calls,
    // which are async-signal-safe; it reads nothing but its captured integers.
    unsafe {
        command.pre_exec(move || {
            for capability in 0..=last.min(63) {
                if kept.keeps(capability) {
                    continue;
                }
                let dropped = libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    libc::c_ulong::from(capability),
                    0,
                    0,
                    0,
                );
                if dropped != 0 {
                    let error = std::io::Error::last_os_error();
                    // EPERM: no CAP_SETPCAP, so nothing to drop; EINVAL: unknown capability.
                    if !matches!(error.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) {
                        return Err(error);
                    }
                }
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            );
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The effective capabilities of process `pid` (`CapEff` of /proc/PID/status).
pub fn effective_capabilities(pid: u32) -> Option<u64> {
    status_field(pid, "CapEff:").and_then(|hex| u64::from_str_radix(&hex, 16).ok())
}

/// The seccomp mode of process `pid` (`Seccomp:`: 0 none, 1 strict, 2 filter).
pub fn seccomp_mode(pid: u32) -> Option<u32> {
    status_field(pid, "Seccomp:").and_then(|mode| mode.parse().ok())
}

fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|value| value.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_keeps_what_it_was_given() {
        let kept = KeptCapabilities::NONE.with(CAP_NET_ADMIN);
        assert!(kept.keeps(CAP_NET_ADMIN));
        assert!(!kept.keeps(CAP_IPC_LOCK));
        assert_eq!(kept.mask(), 0x1000);
    }

    /// A child started through the drop really runs with only what was kept (as root; as
    /// another user there is nothing to drop and the child has no capabilities either way).
    #[tokio::test]
    async fn a_child_keeps_only_the_kept_capabilities() {
        let mut command = Command::new("sleep");
        command.arg("5").kill_on_drop(true);
        drop_capabilities_on_exec(&mut command, KeptCapabilities::NONE.with(CAP_NET_ADMIN));
        let mut child = command.spawn().expect("spawn sleep");
        let pid = child.id().expect("a pid");
        // The pid is ours from fork; wait until exec replaced the image.
        let mut effective = None;
        for _ in 0..100 {
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
            {
                effective = effective_capabilities(pid);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = child.kill().await;
        let ours = effective_capabilities(std::process::id()).expect("our CapEff");
        let expected = ours & KeptCapabilities::NONE.with(CAP_NET_ADMIN).mask();
        assert_eq!(effective, Some(expected), "ours {ours:x}");
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(expected, 0x1000, "root keeps exactly CAP_NET_ADMIN");
        }
    }
}
