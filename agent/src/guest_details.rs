//! What the guest is: kernel, agent, vCPUs, memory, TEE.

use std::path::Path;

use cloak_protocol::agent::TeeKind;

/// Decides the TEE kind. Hardware comes first: an SNP guest driver or a configfs-tsm provider
/// means SNP whatever the host offers; a simulated AMD-SP on the host (`simulated_psp_answers`)
/// counts only where no hardware TEE exists.
pub(crate) fn detect_tee(root: &Path, simulated_psp_answers: bool) -> TeeKind {
    if has_snp_guest_driver(root) {
        TeeKind::TEE_SNP
    } else if simulated_psp_answers {
        TeeKind::TEE_SIM
    } else {
        TeeKind::TEE_NONE
    }
}

/// An SNP guest driver: /dev/sev-guest or a configfs-tsm provider named after SEV.
pub(crate) fn has_snp_guest_driver(root: &Path) -> bool {
    let tsm_provider = std::fs::read_to_string(root.join("sys/kernel/config/tsm/report/provider"))
        .unwrap_or_default();
    root.join("dev/sev-guest").exists() || tsm_provider.contains("sev")
}

pub(crate) fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|uts| uts.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) fn online_vcpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

pub(crate) fn memory_total_bytes() -> u64 {
    nix::sys::sysinfo::sysinfo()
        .map(|info| info.ram_total())
        .unwrap_or(0)
}

/// Milliseconds since the kernel started (CLOCK_BOOTTIME).
pub(crate) fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|ts| ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_wins_over_a_simulated_psp() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(detect_tee(root.path(), false), TeeKind::TEE_NONE);
        assert_eq!(detect_tee(root.path(), true), TeeKind::TEE_SIM);
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::write(root.path().join("dev/sev-guest"), "").unwrap();
        assert_eq!(detect_tee(root.path(), true), TeeKind::TEE_SNP);
    }

    #[test]
    fn tsm_provider_means_snp() {
        let root = tempfile::tempdir().unwrap();
        let report = root.path().join("sys/kernel/config/tsm/report");
        std::fs::create_dir_all(&report).unwrap();
        std::fs::write(report.join("provider"), "sev_guest\n").unwrap();
        assert_eq!(detect_tee(root.path(), false), TeeKind::TEE_SNP);
    }

    #[test]
    fn host_facts_are_plausible() {
        assert!(!kernel_release().is_empty());
        assert!(online_vcpus() >= 1);
        assert!(memory_total_bytes() > 0);
    }
}
