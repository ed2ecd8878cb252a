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
