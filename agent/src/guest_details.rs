//! What the guest is: kernel, agent, vCPUs, memory, TEE.

use std::path::Path;

use cloak_protocol::agent::TeeKind;

/// Decides the TEE kind. Hardware is trusted over hints: an SNP guest driver or a configfs-tsm
/// provider means SNP whatever the command line says; `cloak.tee=sim` only marks a simulated
/// TEE where no hardware one exists.
pub fn detect_tee(root: &Path, hint: Option<&str>) -> TeeKind {
    let has_sev_guest = root.join("dev/sev-guest").exists();
    let tsm_provider = std::fs::read_to_string(root.join("sys/kernel/config/tsm/report/provider"))
        .unwrap_or_default();
    if has_sev_guest || tsm_provider.contains("sev") {
        return TeeKind::TEE_SNP;
    }
    match hint {
        Some("sim") => TeeKind::TEE_SIM,
        _ => TeeKind::TEE_NONE,
    }
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|uts| uts.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn online_vcpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

pub fn memory_total_bytes() -> u64 {
    nix::sys::sysinfo::sysinfo()
        .map(|info| info.ram_total())
        .unwrap_or(0)
}

/// Milliseconds since the kernel started (CLOCK_BOOTTIME).
pub fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|ts| ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_wins_over_hint() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(detect_tee(root.path(), None), TeeKind::TEE_NONE);
        assert_eq!(detect_tee(root.path(), Some("sim")), TeeKind::TEE_SIM);
        assert_eq!(detect_tee(root.path(), Some("bogus")), TeeKind::TEE_NONE);
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::write(root.path().join("dev/sev-guest"), "").unwrap();
        assert_eq!(detect_tee(root.path(), Some("sim")), TeeKind::TEE_SNP);
    }

    #[test]
    fn tsm_provider_means_snp() {
        let root = tempfile::tempdir().unwrap();
        let report = root.path().join("sys/kernel/config/tsm/report");
        std::fs::create_dir_all(&report).unwrap();
        std::fs::write(report.join("provider"), "sev_guest\n").unwrap();
        assert_eq!(detect_tee(root.path(), None), TeeKind::TEE_SNP);
    }

    #[test]
    fn host_facts_are_plausible() {
        assert!(!kernel_release().is_empty());
        assert!(online_vcpus() >= 1);
        assert!(memory_total_bytes() > 0);
    }
}
