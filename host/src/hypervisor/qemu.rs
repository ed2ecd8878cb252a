//! The `qemu` backend: `qemu-system-x86_64` with a direct kernel boot, guest RAM in a shared
//! memfd (vhost-user backends map it), vsock through `vhost-device-vsock`, and the serial
//! console in a log file. `-no-reboot` turns any guest reset (a PID 1 panic with `panic=-1`,
//! a failed power-off) into a QEMU exit, so a dead guest is never a silent hang.

use std::path::{Path, PathBuf};

use super::host;
use super::launch::VmmCommand;
use super::snp::{SnpLaunch, SNP_OBJECT_ID};
use super::{Hypervisor, HypervisorError, RunningVm, VmConfig};
use crate::config::{AccelSetting, HypervisorConfig, TeeKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn resolve(setting: AccelSetting) -> Self {
        match setting {
            AccelSetting::Kvm => Accel::Kvm,
            AccelSetting::Tcg => Accel::Tcg,
            AccelSetting::Auto if host::kvm_usable() => Accel::Kvm,
            AccelSetting::Auto => Accel::Tcg,
        }
    }
}

/// Everything the QEMU command line depends on, so it can be built and tested without
/// starting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuLaunch {
    pub machine: String,
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub console_log: PathBuf,
    pub vhost_vsock_socket: PathBuf,
    /// vhost-user-fs socket of the pod's shared directory, if any.
    pub virtiofs_socket: Option<PathBuf>,
    /// An SEV-SNP guest: q35 with OVMF, the sev-snp-guest object.
    pub snp: Option<SnpLaunch>,
    /// The pod network's tap (QEMU runs in its namespace) and the guest NIC's MAC.
    pub network: Option<super::VmNetwork>,
}

impl QemuLaunch {
    pub fn args(&self) -> Vec<String> {
        let memory = format!("{}M", self.memory_mib);
        let (accel, cpu) = match self.accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg => ("tcg", "max"),
        };
        let cpu = match &self.snp {
            Some(snp) => snp.vcpu_type.as_str(),
            None => cpu,
        };
        // SNP guests boot OVMF on q35: microvm has no firmware to measure the kernel.
        let microvm = self.machine == "microvm" && self.snp.is_none();
        let (machine, vsock_device) = if self.snp.is_some() {
            (
                format!(
                    "q35,accel={accel},confidential-guest-support={SNP_OBJECT_ID},memory-backend=mem"
                ),
                "vhost-user-vsock-pci",
            )
        } else if microvm {
            // ACPI on: Debian's kernel finds virtio-mmio devices only through ACPI.
            (
                format!("microvm,accel={accel},acpi=on,rtc=on,memory-backend=mem"),
                "vhost-user-vsock-device",
            )
        } else {
            (
                format!("{},accel={accel},memory-backend=mem", self.machine),
                "vhost-user-vsock-pci",
            )
        };
        let mut args: Vec<String> = vec![
            "-machine".into(),
            machine,
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            self.vcpus.to_string(),
            "-m".into(),
            memory.clone(),
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={memory},share=on"),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-sandbox".into(),
            SANDBOX.into(),
            "-kernel".into(),
            path_arg(&self.kernel),
            "-initrd".into(),
            path_arg(&self.initrd),
            "-append".into(),
            self.cmdline.clone(),
            "-chardev".into(),
            format!("file,id=console,path={}", path_arg(&self.console_log)),
            "-serial".into(),
            "chardev:console".into(),
            "-chardev".into(),
            format!(
                "socket,id=vsock,path={}",
                path_arg(&self.vhost_vsock_socket)
            ),
            "-device".into(),
            format!("{vsock_device},chardev=vsock"),
        ];
        if let Some(socket) = &self.virtiofs_socket {
            let fs_device = if microvm {
                "vhost-user-fs-device"
            } else {
                "vhost-user-fs-pci"
            };
            args.extend([
                "-chardev".into(),
                format!("socket,id=shared-fs,path={}", path_arg(socket)),
                "-device".into(),
                format!(
                    "{fs_device},chardev=shared-fs,tag={}",
                    cloak_protocol::SHARED_FS_TAG
                ),
            ]);
        }
        if let Some(network) = &self.network {
            let net_device = if microvm {
                "virtio-net-device"
            } else {
                "virtio-net-pci"
            };
            args.extend([
                "-netdev".into(),
                format!("tap,id=net0,ifname={},script=no,downscript=no", network.tap),
                "-device".into(),
                format!("{net_device},netdev=net0,mac={}", network.mac),
            ]);
        }
        if !microvm {
            args.extend(["-device".into(), "virtio-rng-pci".into()]);
        }
        if self.snp.is_none() {
            // Free page reporting: pages the guest frees (the unpacked initrd, a container's
            // memory after it exits) go back to the host instead of staying resident in the
            // VM's memfd. Not for SEV-SNP: its private memory cannot be handed back this way.
            let balloon = if microvm {
                "virtio-balloon-device"
            } else {
                "virtio-balloon-pci"
            };
            args.extend([
                "-device".into(),
                format!("{balloon},free-page-reporting=on"),
            ]);
        }
        if let Some(snp) = &self.snp {
            args.extend([
                "-bios".into(),
                path_arg(&snp.firmware),
                "-object".into(),
                snp.guest_object(),
            ]);
        }
        args
    }
}

/// Makes `command` start in the network namespace at `netns`, where the pod's tap device is.
fn path_arg(path: &Path) -> String {
    // QEMU option values split on commas; a comma in a path is doubled to escape it.
    path.display().to_string().replace(',', ",,")
}

/// Kernel parameters the backend adds for this host.
pub fn host_kernel_params(accel: Accel) -> Vec<String> {
    match (accel, host::tsc_khz()) {
        (Accel::Tcg, Some(khz)) => vec![format!("tsc_early_khz={khz}")],
        _ => Vec::new(),
    }
}

/// QEMU's seccomp sandbox: besides its default deny list, no obsolete syscalls, no set*uid or
/// set*gid, no fork or exec (the tap is attached with `script=no`, so QEMU never spawns), no
/// changes to scheduling or affinity. Installed before any guest code runs.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Whether `qemu` accepts `SANDBOX` (it was built with seccomp), or why not: QEMU parses
/// `-sandbox` before it handles `-version`, so the check starts no VM.
pub fn sandbox_supported(qemu: &Path) -> Result<(), String> {
    let output = std::process::Command::new(qemu)
        .args(["-sandbox", SANDBOX, "-version"])
        .output()
        .map_err(|err| format!("{} cannot run: {err}", qemu.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

pub struct Qemu {
    pub(super) settings: HypervisorConfig,
}

impl Qemu {
    pub fn new(settings: HypervisorConfig) -> Self {
        Self { settings }
    }

    /// The SNP part of the launch, or why this host cannot give the configured TEE. Decided
    /// before any helper process starts. (`sim` boots an ordinary VM; its AMD-SP is served
    /// beside it.)
    fn snp_launch(
        &self,
        accel: Accel,
        config: &VmConfig,
    ) -> Result<Option<SnpLaunch>, HypervisorError> {
        match self.settings.tee {
            TeeKind::None | TeeKind::Sim => Ok(None),
            TeeKind::Snp if accel == Accel::Tcg => Err(HypervisorError::Refused(
                "tee = \"snp\" needs KVM on an AMD host with SEV-SNP; this host runs guests under software emulation".to_owned(),
            )),
            TeeKind::Snp => Ok(Some(SnpLaunch::for_host(&self.settings, config.host_data()?)?)),
        }
    }

    /// The command line for `config` on this host; the helpers' sockets are the run
    /// directory's, which `launch` starts them on.
    pub(super) fn launch_for(
        &self,
        config: &VmConfig,
        accel: Accel,
        snp: Option<SnpLaunch>,
    ) -> QemuLaunch {
        let mut cmdline = config.cmdline.clone();
        for param in host_kernel_params(accel) {
            cmdline.push(' ');
            cmdline.push_str(&param);
        }
        QemuLaunch {
            machine: self.settings.machine.clone(),
            accel,
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            kernel: config.kernel.clone(),
            initrd: config.initrd.clone(),
            cmdline,
            console_log: config.console_log(),
            vhost_vsock_socket: crate::run_dir::vhost_vsock_socket(&config.run_dir),
            virtiofs_socket: config.virtiofs_socket(),
            snp,
            network: config.network.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn launch(&self, config: &VmConfig) -> Result<Box<dyn RunningVm>, HypervisorError> {
        let accel = Accel::resolve(self.settings.accel);
        let snp = self.snp_launch(accel, config)?;
        let kept = super::launch::vmm_capabilities(config, snp.is_some());
        let launch = self.launch_for(config, accel, snp);
        tracing::debug!(pod = %config.id, accel = ?launch.accel, machine = %launch.machine, "qemu launch");
        let command = VmmCommand {
            name: "qemu",
            program: self.settings.qemu_path.clone(),
            args: launch.args(),
            vsock_backend: true,
            kept,
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

    fn launch(machine: &str, accel: Accel) -> QemuLaunch {
        QemuLaunch {
            machine: machine.to_owned(),
            accel,
            vcpus: 2,
            memory_mib: 512,
            kernel: PathBuf::from("/img/vmlinuz"),
            initrd: PathBuf::from("/img/initrd.img"),
            cmdline: "console=ttyS0 quiet".to_owned(),
            console_log: PathBuf::from("/run/cloak/p,1/console.log"),
            vhost_vsock_socket: PathBuf::from("/run/cloak/p,1/vhost-vsock.sock"),
            virtiofs_socket: None,
            snp: None,
            network: None,
        }
    }

    #[test]
    fn microvm_under_tcg() {
        let args = launch("microvm", Accel::Tcg).args();
        assert_eq!(
            value_after(&args, "-machine"),
            ["microvm,accel=tcg,acpi=on,rtc=on,memory-backend=mem"]
        );
        assert_eq!(value_after(&args, "-cpu"), ["max"]);
        assert_eq!(value_after(&args, "-smp"), ["2"]);
        assert_eq!(
            value_after(&args, "-object"),
            ["memory-backend-memfd,id=mem,size=512M,share=on"]
        );
        assert_eq!(value_after(&args, "-append"), ["console=ttyS0 quiet"]);
        assert!(args.contains(&"-no-reboot".to_owned()));
        assert_eq!(
            value_after(&args, "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
        assert_eq!(
            value_after(&args, "-device"),
            [
                "vhost-user-vsock-device,chardev=vsock",
                "virtio-balloon-device,free-page-reporting=on"
            ]
        );
        // Commas in paths are escaped for QEMU's option parser.
        assert!(value_after(&args, "-chardev")
            .contains(&"file,id=console,path=/run/cloak/p,,1/console.log".to_owned()));
    }

    #[test]
    fn q35_under_kvm_uses_pci_devices() {
        let args = launch("q35", Accel::Kvm).args();
        assert_eq!(
            value_after(&args, "-machine"),
            ["q35,accel=kvm,memory-backend=mem"]
        );
        assert_eq!(value_after(&args, "-cpu"), ["host"]);
        assert_eq!(
            value_after(&args, "-device"),
            [
                "vhost-user-vsock-pci,chardev=vsock",
                "virtio-rng-pci",
                "virtio-balloon-pci,free-page-reporting=on"
            ]
        );
    }

    #[test]
    fn shared_directory_is_a_vhost_user_fs_device() {
        let mut microvm = launch("microvm", Accel::Tcg);
        microvm.virtiofs_socket = Some(PathBuf::from("/run/p/virtiofs.sock"));
        let args = microvm.args();
        assert!(value_after(&args, "-chardev")
            .contains(&"socket,id=shared-fs,path=/run/p/virtiofs.sock".to_owned()));
        assert!(value_after(&args, "-device")
            .contains(&"vhost-user-fs-device,chardev=shared-fs,tag=cloak-shared".to_owned()));
        let mut q35 = launch("q35", Accel::Kvm);
        q35.virtiofs_socket = Some(PathBuf::from("/s"));
        assert!(value_after(&q35.args(), "-device")
            .iter()
            .any(|d| d.starts_with("vhost-user-fs-pci,")));
    }

    #[test]
    fn snp_guests_boot_ovmf_on_q35_with_the_sev_snp_object() {
        let mut snp = launch("microvm", Accel::Kvm);
        snp.snp = Some(SnpLaunch {
            firmware: PathBuf::from("/fw/OVMF.amdsev.fd"),
            policy: 0x30000,
            vcpu_type: "EPYC-Milan".to_owned(),
            cbitpos: 51,
            reduced_phys_bits: 1,
            host_data: [0; 32],
        });
        let args = snp.args();
        assert_eq!(
            value_after(&args, "-machine"),
            ["q35,accel=kvm,confidential-guest-support=sev0,memory-backend=mem"]
        );
        assert_eq!(value_after(&args, "-cpu"), ["EPYC-Milan"]);
        assert_eq!(value_after(&args, "-bios"), ["/fw/OVMF.amdsev.fd"]);
        let objects = value_after(&args, "-object");
        assert_eq!(objects[0], "memory-backend-memfd,id=mem,size=512M,share=on");
        assert!(
            objects[1].starts_with("sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,host-data="),
            "{objects:?}"
        );
        // The kernel, initrd and command line stay: OVMF measures them (kernel-hashes).
        assert_eq!(value_after(&args, "-kernel"), ["/img/vmlinuz"]);
        assert!(value_after(&args, "-device")
            .contains(&"vhost-user-vsock-pci,chardev=vsock".to_owned()));
        // SNP's private memory is not handed back through a balloon.
        assert!(!value_after(&args, "-device")
            .iter()
            .any(|d| d.starts_with("virtio-balloon")));
    }

    #[test]
    fn snp_under_software_emulation_is_refused_with_the_reason() {
        let qemu = Qemu::new(HypervisorConfig {
            tee: TeeKind::Snp,
            accel: AccelSetting::Tcg,
            ..Default::default()
        });
        let config = VmConfig {
            id: "pod".into(),
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd.img".into(),
            cmdline: String::new(),
            vcpus: 1,
            memory_mib: 128,
            run_dir: "/run/cloak/pod".into(),
            shared_dir: None,
            init_data: Vec::new(),
            network: None,
        };
        let err = qemu
            .snp_launch(Accel::Tcg, &config)
            .expect_err("TCG cannot run SNP");
        assert!(err.to_string().contains("software emulation"), "{err}");
    }

    #[test]
    fn the_pod_tap_becomes_a_virtio_net_device_with_the_pod_mac() {
        let network = Some(crate::hypervisor::VmNetwork {
            netns: "/var/run/netns/cni-1".into(),
            tap: "tap0_cloak".into(),
            mac: "9a:55:e8:3e:8b:33".into(),
        });
        for (machine, device) in [("microvm", "virtio-net-device"), ("q35", "virtio-net-pci")] {
            let mut qemu = launch(machine, Accel::Tcg);
            qemu.network = network.clone();
            let args = qemu.args();
            assert_eq!(
                value_after(&args, "-netdev"),
                ["tap,id=net0,ifname=tap0_cloak,script=no,downscript=no"]
            );
            assert!(
                value_after(&args, "-device")
                    .contains(&format!("{device},netdev=net0,mac=9a:55:e8:3e:8b:33")),
                "{args:?}"
            );
        }
        assert!(value_after(&launch("microvm", Accel::Tcg).args(), "-netdev").is_empty());
    }

    #[test]
    fn forced_accel_is_kept() {
        assert_eq!(Accel::resolve(AccelSetting::Tcg), Accel::Tcg);
        assert_eq!(Accel::resolve(AccelSetting::Kvm), Accel::Kvm);
    }
}
