//! Facts about the host that decide how a VM can be run.

use std::path::Path;

/// True where /proc/cpuinfo shows VMX or SVM: a real KVM that can boot Linux. (Some hosts have
/// a /dev/kvm backed by something else, which cannot; see DESIGN.md.)
pub fn cpu_has_hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|cpuinfo| cpuinfo_has_virt_flags(&cpuinfo))
        .unwrap_or(false)
}

pub fn cpuinfo_has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| {
            line.split_whitespace()
                .any(|flag| flag == "vmx" || flag == "svm")
        })
}

/// KVM is usable for Linux guests: hardware virtualization and an openable /dev/kvm.
pub fn kvm_usable() -> bool {
    cpu_has_hardware_virtualization()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new("/dev/kvm"))
            .is_ok()
}

/// `KVM_CREATE_VM`: _IO(KVMIO = 0xAE, 0x01) (linux/kvm.h).
const KVM_CREATE_VM: libc::c_ulong = 0xae01;

/// Whether this host's KVM can create a VM at all (even one that cannot boot Linux), or why
/// not. What `cloak check` reports for cloak-vmm, without linking the VMM.
pub fn kvm_creates_vms() -> Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|err| format!("/dev/kvm: {err}"))?;
    // SAFETY: KVM_CREATE_VM takes the machine type (0: default) by value and returns a new
    // descriptor or -1; no memory of ours is passed.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!(
            "KVM_CREATE_VM: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `vm` is a descriptor the kernel just returned to us and nothing else owns.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    Ok(())
}

/// The host TSC frequency in kHz, from the first "cpu MHz" in /proc/cpuinfo. Under software
/// emulation the guest kernel is told this (`tsc_early_khz=`), because calibrating against
/// the emulated PIT can hang a loaded host (DESIGN.md).
pub fn tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    tsc_khz_from_cpuinfo(&cpuinfo)
}

pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|line| line.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virt_flags_are_whole_words() {
        assert!(cpuinfo_has_virt_flags("flags\t\t: fpu vme svm lm\n"));
        assert!(cpuinfo_has_virt_flags("processor: 0\nflags : a vmx b\n"));
        assert!(!cpuinfo_has_virt_flags("flags : fpu vmxnot svm_lock\n"));
        assert!(!cpuinfo_has_virt_flags("model name : vmx svm\n"));
    }

    #[test]
    fn tsc_from_cpu_mhz() {
        assert_eq!(
            tsc_khz_from_cpuinfo("cpu MHz\t\t: 2299.998\n"),
            Some(2_299_998)
        );
        assert_eq!(
            tsc_khz_from_cpuinfo("cpu MHz : 2300.000\ncpu MHz : 1.0\n"),
            Some(2_300_000)
        );
        assert_eq!(tsc_khz_from_cpuinfo("model : x\n"), None);
    }
}

/// What CPUID Fn8000_001F (AMD "Encrypted Memory Capabilities") says of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEncryption {
    pub sev: bool,
    pub sev_snp: bool,
    /// Page-table bit that marks a page encrypted (EBX[5:0]).
    pub cbitpos: u32,
    /// Physical address bits lost to encryption (EBX[11:6]).
    pub reduced_phys_bits: u32,
}

impl MemoryEncryption {
    /// From the leaf's EAX and EBX: EAX bit 1 is SEV, bit 4 SEV-SNP.
    pub fn from_cpuid(eax: u32, ebx: u32) -> Self {
        Self {
            sev: eax & (1 << 1) != 0,
            sev_snp: eax & (1 << 4) != 0,
            cbitpos: ebx & 0x3f,
            reduced_phys_bits: (ebx >> 6) & 0x3f,
        }
    }
}

/// This CPU's memory-encryption leaf, `None` where the CPU has no such leaf (Intel, old AMD).
#[cfg(target_arch = "x86_64")]
pub fn memory_encryption() -> Option<MemoryEncryption> {
    use std::arch::x86_64::__cpuid;
    const LEAF: u32 = 0x8000_001f;
    let max_extended = __cpuid(0x8000_0000).eax;
    if max_extended < LEAF {
        return None;
    }
    let leaf = __cpuid(LEAF);
    Some(MemoryEncryption::from_cpuid(leaf.eax, leaf.ebx))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn memory_encryption() -> Option<MemoryEncryption> {
    None
}

#[cfg(test)]
mod memory_encryption_tests {
    use super::*;

    #[test]
    fn an_epyc_milan_leaf_decodes() {
        // EAX: SME, SEV, SEV-ES, SEV-SNP and more; EBX 0x4173: C-bit 51, 5 address bits lost.
        let leaf = MemoryEncryption::from_cpuid(0x0101_fd3f, 0x0000_4173);
        assert!(leaf.sev && leaf.sev_snp);
        assert_eq!((leaf.cbitpos, leaf.reduced_phys_bits), (51, 5));
        let none = MemoryEncryption::from_cpuid(0, 0);
        assert!(!none.sev_snp);
    }
}
