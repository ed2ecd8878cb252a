//! `configuration.toml`: the runtime's defaults. Every field has a default, so an empty file
//! is a valid configuration; unknown keys are errors, so a typo is never silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the node install puts the configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cloak/configuration.toml";

pub use cloak_image::toml_file::ConfigError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Configuration {
    pub hypervisor: HypervisorConfig,
    pub guest: GuestConfig,
    pub agent: AgentConfig,
    pub runtime: RuntimeConfig,
    pub layers: LayersConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HypervisorKind {
    Qemu,
    CloakVmm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelSetting {
    /// KVM where the CPU has VMX/SVM and /dev/kvm is usable, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

/// What protects a pod VM's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    /// An ordinary VM.
    None,
    /// AMD SEV-SNP: encrypted memory, a launch digest and signed attestation reports.
    Snp,
    /// A simulated TEE for development and tests (not confidential).
    Sim,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HypervisorConfig {
    pub kind: HypervisorKind,
    pub qemu_path: PathBuf,
    /// cloak's own VMM, for kind = "cloak-vmm".
    pub cloak_vmm_path: PathBuf,
    /// vhost-user vsock backend used by the qemu backend.
    pub vsock_backend_path: PathBuf,
    /// virtio-fs daemon sharing the pod directory (container root filesystems) with the VM.
    pub virtiofsd_path: PathBuf,
    /// QEMU machine type: `microvm` (fast boot) or `q35`.
    pub machine: String,
    pub accel: AccelSetting,
    /// vCPUs and memory of a pod VM without resource limits; a pod with limits gets more
    /// (`pod_size.rs`: memory_mib + the pod's memory limit, at least its CPU limit in vCPUs).
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The most a pod's limits can size its VM to; 0: the host's online CPUs / its memory.
    pub max_vcpus: u32,
    pub max_memory_mib: u32,
    /// Appended to the image's kernel command line.
    pub kernel_params: String,
    pub tee: TeeKind,
    /// Firmware of SNP guests: an OVMF AmdSev build (it measures the kernel, initrd and
    /// command line through its hashes table, QEMU's `kernel-hashes=on`).
    pub firmware: PathBuf,
    /// SNP guest policy (SNP ABI, "Guest Policy"): 0x30000 allows SMT (bit 16) with the
    /// must-be-one bit 17, and leaves debugging (bit 19) off.
    pub snp_policy: u64,
    /// vCPU model of SNP guests; its CPUID signature is part of the launch digest.
    pub snp_vcpu_type: String,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        Self {
            kind: HypervisorKind::Qemu,
            qemu_path: PathBuf::from("qemu-system-x86_64"),
            cloak_vmm_path: PathBuf::from("cloak-vmm"),
            vsock_backend_path: PathBuf::from("vhost-device-vsock"),
            virtiofsd_path: PathBuf::from("virtiofsd"),
            machine: "microvm".to_owned(),
            accel: AccelSetting::Auto,
            vcpus: 2,
            memory_mib: 512,
            max_vcpus: 0,
            max_memory_mib: 0,
            kernel_params: String::new(),
            tee: TeeKind::None,
            firmware: PathBuf::from("/usr/share/cloak/guest/OVMF.amdsev.fd"),
            snp_policy: 0x30000,
            snp_vcpu_type: "EPYC-v4".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuestConfig {
    /// Directory with vmlinuz, initrd.img and manifest.json from `cloak image build`.
    pub image_dir: PathBuf,
    /// Overrides for the image's files; relative paths are taken from `image_dir`.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            image_dir: PathBuf::from("/usr/share/cloak/guest"),
            kernel: None,
            initrd: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// From starting the VM until the agent answers Check (software emulation boots in ~3 s;
    /// a loaded host needs much more).
    pub boot_timeout_secs: u64,
    /// Timeout of each ordinary agent RPC.
    pub request_timeout_secs: u64,
    /// How often a running pod's agent is asked Check: a guest that hangs (its kernel stuck,
    /// the VMM wedged) answers nothing, and without a probe its pod would look alive forever.
    /// 0 turns the probe off.
    pub liveness_interval_secs: u64,
    /// Probes in a row without an answer (each waits one interval) after which the pod is
    /// declared dead: its VMM is killed and every process reported exited.
    pub liveness_misses: u32,
    /// The agent's log filter on the guest console.
    pub log_level: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            boot_timeout_secs: 60,
            request_timeout_secs: 30,
            liveness_interval_secs: 10,
            liveness_misses: 3,
            log_level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Per-VM directories (sockets, console log, pid files) live below this.
    pub run_dir: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            run_dir: PathBuf::from("/run/cloak"),
        }
    }
}

/// Where confidential pods' layer images come from and are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayersConfig {
    /// Converted layer images (erofs + dm-verity), one per layer digest, kept between pods.
    pub cache_dir: PathBuf,
    /// containerd's content store, where layer blobs are read by digest.
    pub content_dir: PathBuf,
}

impl Default for LayersConfig {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("/var/lib/cloak/layers"),
            content_dir: PathBuf::from("/var/lib/containerd/io.containerd.content.v1.content"),
        }
    }
}

impl Configuration {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, origin) = cloak_image::toml_file::read(path)?;
        Self::parse(&text, &origin)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = cloak_image::toml_file::parse(text, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |reason: String| {
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                reason,
            })
        };
        let hv = &self.hypervisor;
        if hv.vcpus == 0 || hv.vcpus > 255 {
            return invalid(format!("hypervisor.vcpus = {} (1 to 255)", hv.vcpus));
        }
        if hv.memory_mib < 64 {
            return invalid(format!(
                "hypervisor.memory_mib = {} (at least 64)",
                hv.memory_mib
            ));
        }
        if !matches!(hv.machine.as_str(), "microvm" | "q35") {
            return invalid(format!(
                "hypervisor.machine = {:?} (microvm or q35)",
                hv.machine
            ));
        }
        if self.agent.boot_timeout_secs == 0 {
            return invalid("agent.boot_timeout_secs must be positive".to_owned());
        }
        if self.agent.liveness_misses == 0 {
            return invalid("agent.liveness_misses must be positive".to_owned());
        }
        Ok(())
    }

    /// The sizing rule of pod VMs, the maximums resolved against this host.
    pub fn size_policy(&self) -> crate::pod_size::SizePolicy {
        let (host_cpus, host_memory_mib) = crate::pod_size::host_capacity();
        let or_host = |configured: u32, host: u32| if configured == 0 { host } else { configured };
        crate::pod_size::SizePolicy {
            base_vcpus: self.hypervisor.vcpus,
            base_memory_mib: self.hypervisor.memory_mib,
            max_vcpus: or_host(self.hypervisor.max_vcpus, host_cpus).min(255),
            max_memory_mib: or_host(self.hypervisor.max_memory_mib, host_memory_mib),
        }
    }

    pub fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.agent.boot_timeout_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.agent.request_timeout_secs.max(1))
    }

    /// The agent liveness probe: its interval and the misses that declare a pod dead; `None`
    /// when turned off.
    pub fn liveness(&self) -> Option<(Duration, u32)> {
        (self.agent.liveness_interval_secs > 0).then(|| {
            (
                Duration::from_secs(self.agent.liveness_interval_secs),
                self.agent.liveness_misses,
            )
        })
    }

    /// The kernel to boot: the override, or the image's.
    pub fn kernel_path(&self, manifest: &cloak_image::Manifest) -> PathBuf {
        self.guest_file(self.guest.kernel.as_deref(), &manifest.kernel.file)
    }

    pub fn initrd_path(&self, manifest: &cloak_image::Manifest) -> PathBuf {
        self.guest_file(self.guest.initrd.as_deref(), &manifest.initrd.file)
    }

    fn guest_file(&self, override_path: Option<&Path>, image_file: &str) -> PathBuf {
        self.guest
            .image_dir
            .join(override_path.unwrap_or(Path::new(image_file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(
            Configuration::parse("", "t").unwrap(),
            Configuration::default()
        );
    }

    #[test]
    fn shipped_configuration_parses_and_documents_every_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/configuration.toml");
        let shipped = Configuration::load(&path).unwrap();
        // The shipped file writes the defaults out: it must not drift from the code.
        assert_eq!(shipped, Configuration::default());
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let typo = Configuration::parse("[hypervisor]\nvcpu = 2\n", "t").unwrap_err();
        assert!(typo.to_string().contains("vcpu"), "{typo}");
        let zero = Configuration::parse("[hypervisor]\nvcpus = 0\n", "t").unwrap_err();
        assert!(matches!(zero, ConfigError::Invalid { .. }), "{zero}");
        let machine = Configuration::parse("[hypervisor]\nmachine = \"pc\"\n", "t").unwrap_err();
        assert!(machine.to_string().contains("microvm or q35"), "{machine}");
        let kind = Configuration::parse("[hypervisor]\nkind = \"cloak-vmm\"\n", "t").unwrap();
        assert_eq!(kind.hypervisor.kind, HypervisorKind::CloakVmm);
    }

    #[test]
    fn overrides_are_relative_to_the_image_dir() {
        let config =
            Configuration::parse("[guest]\nimage_dir = \"/img\"\ninitrd = \"/abs/i\"\n", "t")
                .unwrap();
        assert_eq!(
            config.guest_file(None, "vmlinuz"),
            PathBuf::from("/img/vmlinuz")
        );
        assert_eq!(
            config.guest_file(config.guest.initrd.as_deref(), "x"),
            PathBuf::from("/abs/i")
        );
    }
}
