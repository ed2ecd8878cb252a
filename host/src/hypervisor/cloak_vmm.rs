//! The `cloak-vmm` backend: cloak's own VMM (vmm/), started as `cloak-vmm run` with the
//! kernel and initrd booted through the direct-launch plan, vsock served by the VMM itself
//! (the same hybrid-vsock socket layout as the qemu backend, so the rest of the shim cannot
//! tell them apart), virtio-fs through `virtiofsd`, and the serial console in a log file.
//!
//! It needs a KVM that boots Linux: VMX or SVM in /proc/cpuinfo. Hosts whose /dev/kvm is
//! something else (DESIGN.md) run only cloak-vmm's test guests, and this backend says so.
//! With tee = "snp" on an SNP host it asks for the SEV-SNP launch of the same plan (`--snp`,
//! the init-data's SHA-256 as HOST_DATA, this CPU's C-bit); no firmware is involved.

use std::path::{Path, PathBuf};

use super::launch::VmmCommand;
use super::{host, Hypervisor, HypervisorError, RunningVm, VmConfig};
use crate::config::{HypervisorConfig, TeeKind};

/// Everything the `cloak-vmm run` command line depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloakVmmLaunch {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub console_log: PathBuf,
    pub vsock_socket: PathBuf,
    pub virtiofs_socket: Option<PathBuf>,
    /// The pod network's tap (the VMM runs in its namespace) and the guest NIC's MAC.
    pub network: Option<super::VmNetwork>,
    /// An SEV-SNP launch of the same plan.
    pub snp: Option<CloakVmmSnp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloakVmmSnp {
    pub policy: u64,
    /// SHA-256 of the pod's init-data.
    pub host_data: [u8; 32],
    /// This CPU's encryption bit (page tables of the plan carry it).
    pub c_bit: u32,
}

impl CloakVmmLaunch {
    pub fn args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        let mut args = vec![
            "run".to_owned(),
            "--kernel".into(),
            path(&self.kernel),
            "--initrd".into(),
            path(&self.initrd),
            "--append".into(),
            self.cmdline.clone(),
            "--vcpus".into(),
            self.vcpus.to_string(),
            "--memory-mib".into(),
            self.memory_mib.to_string(),
            "--console".into(),
            path(&self.console_log),
            "--vsock".into(),
            path(&self.vsock_socket),
        ];
        if let Some(socket) = &self.virtiofs_socket {
            args.extend([
                "--fs-socket".into(),
                path(socket),
                "--fs-tag".into(),
                cloak_protocol::SHARED_FS_TAG.to_owned(),
            ]);
        }
        if let Some(network) = &self.network {
            args.extend([
                "--tap".into(),
                network.tap.clone(),
                "--mac".into(),
                network.mac.clone(),
            ]);
        }
        if let Some(snp) = &self.snp {
            args.extend([
                "--snp".into(),
                "--snp-policy".into(),
                format!("{:#x}", snp.policy),
                "--host-data".into(),
                hex::encode(snp.host_data),
                "--c-bit".into(),
                snp.c_bit.to_string(),
            ]);
        }
        args
    }
}

/// Why cloak-vmm cannot run these pod VMs on a host whose KVM boots Linux (`kvm_usable`,
/// host::kvm_usable) or not, with this CPU's memory encryption, if it cannot.
pub fn unavailable_reason(
    settings: &HypervisorConfig,
    kvm_usable: bool,
    encryption: Option<host::MemoryEncryption>,
) -> Option<String> {
    if !kvm_usable {
        return Some(
            "hypervisor.kind = \"cloak-vmm\" boots Linux on KVM with hardware virtualization; \
             this host's /proc/cpuinfo shows neither vmx nor svm (or /dev/kvm cannot be opened), \
             so its KVM runs only cloak-vmm's test guests: use kind = \"qemu\""
                .to_owned(),
        );
    }
    if settings.tee == TeeKind::Snp && !encryption.is_some_and(|e| e.sev_snp) {
        return Some(
            "tee = \"snp\": this CPU does not report SEV-SNP (CPUID Fn8000_001F EAX bit 4)"
                .to_owned(),
        );
    }
    None
}

/// The SNP part of the launch for tee = "snp" on this host.
fn snp_launch(
    settings: &HypervisorConfig,
    host_data: [u8; 32],
    encryption: Option<host::MemoryEncryption>,
) -> Option<CloakVmmSnp> {
    let encryption = encryption.filter(|e| e.sev_snp)?;
    (settings.tee == TeeKind::Snp).then_some(CloakVmmSnp {
        policy: settings.snp_policy,
        host_data,
        c_bit: encryption.cbitpos,
    })
}

pub struct CloakVmm {
    settings: HypervisorConfig,
}

impl CloakVmm {
    pub fn new(settings: HypervisorConfig) -> Self {
        Self { settings }
    }

    fn launch_for(
        &self,
        config: &VmConfig,
        host_data: [u8; 32],
        encryption: Option<host::MemoryEncryption>,
    ) -> CloakVmmLaunch {
        let snp = snp_launch(&self.settings, host_data, encryption);
        CloakVmmLaunch {
            kernel: config.kernel.clone(),
            initrd: config.initrd.clone(),
            // As given: nothing host-specific is added, so a simulated TEE's digest of
            // config.cmdline is the digest of what boots. (A guest reset — the kernel's
            // fallback after its ACPI attempt is the i8042 line — ends the VMM.)
            cmdline: config.cmdline.clone(),
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            console_log: config.console_log(),
            vsock_socket: config.vsock_socket(),
            virtiofs_socket: config.virtiofs_socket(),
            network: config.network.clone(),
            snp,
        }
    }
}

#[async_trait::async_trait]
impl Hypervisor for CloakVmm {
    fn name(&self) -> &'static str {
        "cloak-vmm"
    }

    async fn launch(&self, config: &VmConfig) -> Result<Box<dyn RunningVm>, HypervisorError> {
        let encryption = host::memory_encryption();
        if let Some(reason) = unavailable_reason(&self.settings, host::kvm_usable(), encryption) {
            return Err(HypervisorError::Refused(reason));
        }
        let command = VmmCommand {
            name: "cloak-vmm",
            program: self.settings.cloak_vmm_path.clone(),
            args: self
                .launch_for(config, config.host_data()?, encryption)
                .args(),
            // cloak-vmm serves the hybrid-vsock socket itself.
            vsock_backend: false,
            kept: super::launch::vmm_capabilities(config, self.settings.tee == TeeKind::Snp),
        };
        Ok(Box::new(
            super::launch::launch(&self.settings, config, command).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::value_after;
    use super::*;

    fn launch() -> CloakVmmLaunch {
        CloakVmmLaunch {
            kernel: PathBuf::from("/img/vmlinuz"),
            initrd: PathBuf::from("/img/initrd.img"),
            cmdline: "console=ttyS0 quiet".to_owned(),
            vcpus: 2,
            memory_mib: 512,
            console_log: PathBuf::from("/run/cloak/p,1/console.log"),
            vsock_socket: PathBuf::from("/run/cloak/p,1/vsock.sock"),
            virtiofs_socket: None,
            network: None,
            snp: None,
        }
    }

    #[test]
    fn the_vmm_is_told_what_to_boot_and_where_its_sockets_go() {
        let args = launch().args();
        assert_eq!(args[0], "run");
        assert_eq!(value_after(&args, "--kernel"), ["/img/vmlinuz"]);
        assert_eq!(value_after(&args, "--initrd"), ["/img/initrd.img"]);
        assert_eq!(value_after(&args, "--append"), ["console=ttyS0 quiet"]);
        assert_eq!(value_after(&args, "--vcpus"), ["2"]);
        assert_eq!(value_after(&args, "--memory-mib"), ["512"]);
        // No QEMU-style comma escaping: each value is its own argument.
        assert_eq!(
            value_after(&args, "--console"),
            ["/run/cloak/p,1/console.log"]
        );
        assert_eq!(value_after(&args, "--vsock"), ["/run/cloak/p,1/vsock.sock"]);
        assert!(value_after(&args, "--fs-socket").is_empty());
        assert!(value_after(&args, "--tap").is_empty());
        assert!(!args.contains(&"--snp".to_owned()));
    }

    #[test]
    fn an_snp_launch_binds_the_init_data_and_uses_this_cpus_c_bit() {
        let settings = HypervisorConfig {
            tee: TeeKind::Snp,
            ..HypervisorConfig::default()
        };
        let host_data = [0x5a; 32];
        let snp_cpu = host::MemoryEncryption {
            sev: true,
            sev_snp: true,
            cbitpos: 47,
            reduced_phys_bits: 1,
        };
        assert_eq!(snp_launch(&settings, host_data, None), None);
        let snp = snp_launch(&settings, host_data, Some(snp_cpu)).expect("snp");
        let mut launch = launch();
        launch.snp = Some(snp);
        let args = launch.args();
        assert!(args.contains(&"--snp".to_owned()));
        assert_eq!(value_after(&args, "--snp-policy"), ["0x30000"]);
        assert_eq!(value_after(&args, "--c-bit"), ["47"]);
        assert_eq!(value_after(&args, "--host-data"), ["5a".repeat(32)]);
        let plain = HypervisorConfig::default();
        assert_eq!(
            snp_launch(&plain, host_data, Some(snp_cpu)),
            None,
            "tee = none"
        );
    }

    #[test]
    fn shared_directory_and_network_add_their_devices() {
        let mut launch = launch();
        launch.virtiofs_socket = Some(PathBuf::from("/run/cloak/p/virtiofs.sock"));
        launch.network = Some(super::super::VmNetwork {
            netns: PathBuf::from("/var/run/netns/cni-1"),
            tap: "tap0_cloak".to_owned(),
            mac: "02:00:00:00:00:01".to_owned(),
        });
        let args = launch.args();
        assert_eq!(
            value_after(&args, "--fs-socket"),
            ["/run/cloak/p/virtiofs.sock"]
        );
        assert_eq!(
            value_after(&args, "--fs-tag"),
            [cloak_protocol::SHARED_FS_TAG]
        );
        assert_eq!(value_after(&args, "--tap"), ["tap0_cloak"]);
        assert_eq!(value_after(&args, "--mac"), ["02:00:00:00:00:01"]);
    }

    #[test]
    fn what_cannot_run_is_refused_with_the_reason() {
        let plain = HypervisorConfig::default();
        assert_eq!(unavailable_reason(&plain, true, None), None);
        let reason = unavailable_reason(&plain, false, None).expect("no hardware virtualization");
        assert!(reason.contains("vmx nor svm"), "{reason}");
        assert!(reason.contains("kind = \"qemu\""), "{reason}");
        let snp = HypervisorConfig {
            tee: TeeKind::Snp,
            ..HypervisorConfig::default()
        };
        let reason = unavailable_reason(&snp, true, None).expect("no SNP on this CPU");
        assert!(reason.contains("SEV-SNP"), "{reason}");
        let snp_cpu = host::MemoryEncryption {
            sev: true,
            sev_snp: true,
            cbitpos: 51,
            reduced_phys_bits: 1,
        };
        assert_eq!(unavailable_reason(&snp, true, Some(snp_cpu)), None);
        let sim = HypervisorConfig {
            tee: TeeKind::Sim,
            ..HypervisorConfig::default()
        };
        assert_eq!(
            unavailable_reason(&sim, true, None),
            None,
            "the simulated TEE works"
        );
    }
}
