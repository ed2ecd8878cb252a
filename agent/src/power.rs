//! Powering the VM off: the one way PID 1 ends.

use nix::sys::reboot::{reboot, RebootMode};

/// Flushes filesystems and powers the VM off. If the platform refuses power-off, a reset makes
/// QEMU (started with `-no-reboot`) or cloak-vmm exit instead; this never returns.
pub(crate) fn power_off() -> ! {
    nix::unistd::sync();
    let err = reboot(RebootMode::RB_POWER_OFF).err();
    eprintln!("cloak-agent: power-off failed ({err:?}), resetting");
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    // Only reached when not PID 1 in a VM (a development run): exit like any process.
    std::process::exit(1)
}
