//! cloak-vmm: cloak's micro-VMM on KVM, built from rust-vmm crates (kvm-ioctls, vm-memory,
//! vm-superio). Guest RAM comes from a memfd so vhost-user backends can share it; devices sit
//! on a port-I/O and an MMIO bus; each vCPU runs in its own thread; booting is a sequence of
//! small steps (builder.rs). Every thread confines itself with its own seccomp filter before
//! it runs guest code (seccomp.rs).
//!
//! It boots Linux from the direct-launch plan (the same description that predicts the SEV-SNP
//! launch digest, in cloak-launch's direct.rs) on in-kernel APICs and PIT, COM1,
//! and ACPI-described virtio-mmio devices (vsock, fs through virtiofsd, net, blk, rng), and
//! launches the same plan as an SEV-SNP guest where the host has SNP. Tiny hand-assembled
//! guests (TinyVmConfig, feature `test-guests`: the KVM tests and the start-up benchmark, not
//! the product) exercise the machine on hosts whose KVM cannot boot Linux.

pub mod builder;
pub mod bus;
pub mod control;
pub mod devices;
pub mod direct_boot;
pub mod event_loop;
pub mod machine;
pub mod memory;
pub mod seccomp;
pub mod snp_launch;
pub mod vcpu;

#[cfg(feature = "test-guests")]
pub use builder::TinyVmConfig;
pub use builder::{DirectVmConfig, RunningVm, SnpSettings, StartVmError, VirtioSpec};
pub use control::VmExitReason;
pub use seccomp::SeccompLevel;

/// Whether this host's KVM can run a VM at all, or why not.
pub fn kvm_available() -> Result<(), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|err| format!("/dev/kvm: {err}"))?;
    kvm.create_vm()
        .map(|_| ())
        .map_err(|err| format!("KVM_CREATE_VM: {err}"))
}
