//! `cloak check`: what this host can do for cloak, and why not. One line per fact.

use std::io::Write;

use clap::Args;
use cloak_host::config::{Configuration, TeeKind};
use cloak_host::hypervisor::host;

use crate::runtime_args::RuntimeArgs;

#[derive(Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// containerd configuration to look for the cloak runtimes in.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    containerd_config: std::path::PathBuf,
}

fn line(out: &mut impl std::io::Write, what: &str, ok: bool, detail: &str) -> std::io::Result<()> {
    writeln!(out, "{:<4} {what}: {detail}", if ok { "yes" } else { "no" })
}

/// The first line of `program --version`, or why there is none.
fn version_of(program: &std::path::Path) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .arg("--version")
        .output()
        .map_err(|err| format!("{} cannot run: {err}", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().unwrap_or_default().trim().to_owned();
    if output.status.success() && !first.is_empty() {
        Ok(first)
    } else {
        Err(format!("{} --version failed", program.display()))
    }
}

/// The VMM and its backends, the pod network tools, containerd and the guest image.
fn node(out: &mut impl Write, args: &CheckArgs, config: &Configuration) -> anyhow::Result<bool> {
    let mut all = true;
    let accel = cloak_host::hypervisor::qemu::Accel::resolve(config.hypervisor.accel);
    line(
        out,
        "VM acceleration",
        true,
        match accel {
            cloak_host::hypervisor::qemu::Accel::Kvm => "KVM",
            cloak_host::hypervisor::qemu::Accel::Tcg => {
                "none: QEMU software emulation (TCG), slower boots"
            }
        },
    )?;
    let vmm = cloak_host::hypervisor::host::kvm_creates_vms().map(|()| {
        cloak_host::hypervisor::cloak_vmm::unavailable_reason(
            &config.hypervisor,
            cloak_host::hypervisor::host::kvm_usable(),
            cloak_host::hypervisor::host::memory_encryption(),
        )
    });
    let vmm_runs_pods = matches!(vmm, Ok(None));
    if config.hypervisor.kind == cloak_host::config::HypervisorKind::CloakVmm {
        // The configured VMM: pods depend on it.
        all &= vmm_runs_pods;
    }
    line(
        out,
        "cloak-vmm",
        vmm_runs_pods,
        &match vmm {
            Ok(None) => "pod VMs can run on it (hypervisor.kind = \"cloak-vmm\")".to_owned(),
            Ok(Some(reason)) => format!(
                "KVM creates VMs here (cloak-vmm runs its test guests), but not pod VMs: {reason}"
            ),
            Err(reason) => format!("cannot create a KVM VM ({reason})"),
        },
    )?;
    for (what, program) in [
        ("QEMU", &config.hypervisor.qemu_path),
        ("vsock backend", &config.hypervisor.vsock_backend_path),
        ("virtio-fs backend", &config.hypervisor.virtiofsd_path),
    ] {
        let found = version_of(program);
        all &= found.is_ok();
        line(out, what, found.is_ok(), &found.unwrap_or_else(|e| e))?;
    }
    let sandbox = cloak_host::hypervisor::qemu::sandbox_supported(&config.hypervisor.qemu_path);
    all &= sandbox.is_ok();
    line(
        out,
        "VMM sandbox",
        sandbox.is_ok(),
        &match sandbox {
            Ok(()) => format!(
                "QEMU runs with -sandbox {} and CAP_NET_ADMIN only; cloak-vmm confines each thread with its own seccomp filter; vhost-device-vsock keeps no capability; virtiofsd runs --sandbox=namespace --seccomp=kill",
                cloak_host::hypervisor::qemu::SANDBOX
            ),
            Err(reason) => format!("QEMU refuses -sandbox (built without seccomp?): {reason}"),
        },
    )?;
    let tun = std::path::Path::new("/dev/net/tun").exists();
    let tools: Vec<&str> = ["ip", "tc", "nsenter"]
        .into_iter()
        .filter(|tool| which(tool).is_none())
        .collect();
    let network = tun && tools.is_empty();
    all &= network;
    line(
        out,
        "pod networking",
        network,
        &if network {
            "/dev/net/tun, ip, tc and nsenter present (tap + tc redirect)".to_owned()
        } else if !tun {
            "/dev/net/tun is missing: pods cannot get their CNI interface".to_owned()
        } else {
            format!(
                "missing {} (apt install iproute2 util-linux)",
                tools.join(", ")
            )
        },
    )?;
    let containerd = version_of(std::path::Path::new("containerd"));
    line(
        out,
        "containerd",
        containerd.is_ok(),
        &containerd.clone().unwrap_or_else(|e| e),
    )?;
    all &= containerd.is_ok();
    let registered = std::fs::read_to_string(&args.containerd_config)
        .map_err(|err| err.to_string())
        .and_then(|text| crate::install::cloak_runtimes(&text).map_err(|err| format!("{err:#}")));
    let registered_ok = registered.as_ref().is_ok_and(|names| !names.is_empty());
    all &= registered_ok;
    line(
        out,
        "containerd config",
        registered_ok,
        &match registered {
            Ok(names) if !names.is_empty() => format!(
                "{} registers runtime{} {}",
                args.containerd_config.display(),
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
            Ok(_) => format!(
                "{} has no runtime of type io.containerd.cloak.v2 (cloak install adds them)",
                args.containerd_config.display()
            ),
            Err(reason) => format!("{}: {reason}", args.containerd_config.display()),
        },
    )?;
    let image_dir = &config.guest.image_dir;
    let manifest = cloak_image::Manifest::load(image_dir);
    let image_ok = manifest
        .as_ref()
        .is_ok_and(|m| config.kernel_path(m).is_file() && config.initrd_path(m).is_file());
    all &= image_ok;
    line(
        out,
        "guest image",
        image_ok,
        &match &manifest {
            Ok(m) if image_ok => format!("{}: kernel {}", image_dir.display(), m.kernel.release),
            Ok(_) => format!(
                "{}: the kernel or initrd file is missing",
                image_dir.display()
            ),
            Err(err) => format!("{}: {err}", image_dir.display()),
        },
    )?;
    let values = image_dir.join("reference-values.json");
    let values_ok = std::fs::read(&values).ok().and_then(|bytes| {
        cloak_attestation::reference_values::ReferenceValues::from_json(&bytes).ok()
    });
    line(
        out,
        "reference values",
        values_ok.is_some(),
        &match values_ok {
            Some(v) => format!(
                "{}: {} launch digests",
                values.display(),
                v.launch_digests.len()
            ),
            None => format!(
                "{} is missing or unreadable (cloak image build writes it)",
                values.display()
            ),
        },
    )?;
    // Informational: an empty cache is fine (it fills with the first confidential pod).
    let cache = cloak_host::layer_cache::LayerCache::new(
        &config.layers.cache_dir,
        &config.layers.content_dir,
    );
    let (bytes, layers) = cache.usage();
    line(
        out,
        "layer cache",
        true,
        &format!(
            "{}: {layers} layer images, {:.1} MiB (cloak cache prune empties it)",
            config.layers.cache_dir.display(),
            bytes as f64 / (1024.0 * 1024.0)
        ),
    )?;
    Ok(all)
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(tool))
        .find(|path| path.is_file())
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<()> {
    let config = args.runtime.configuration()?;
    let mut out = std::io::stdout().lock();
    let virt = host::cpu_has_hardware_virtualization();
    let kvm = host::kvm_usable();
    line(
        &mut out,
        "hardware virtualization",
        virt,
        if virt {
            "/proc/cpuinfo shows vmx or svm"
        } else {
            "/proc/cpuinfo shows neither vmx nor svm: guests run under QEMU software emulation"
        },
    )?;
    line(
        &mut out,
        "kvm",
        kvm,
        if kvm {
            "/dev/kvm opens"
        } else {
            "/dev/kvm is missing or cannot boot guests here"
        },
    )?;

    let encryption = host::memory_encryption();
    let cpu_snp = encryption.is_some_and(|e| e.sev_snp);
    let cpu_detail = match encryption {
        None => {
            "CPUID has no memory-encryption leaf (Fn8000_001F): not an AMD EPYC with SEV".to_owned()
        }
        Some(e) if e.sev_snp => format!(
            "CPUID Fn8000_001F reports SEV-SNP (C-bit {}, {} address bits reduced)",
            e.cbitpos, e.reduced_phys_bits
        ),
        Some(_) => "CPUID Fn8000_001F does not report SEV-SNP".to_owned(),
    };
    line(&mut out, "SEV-SNP in the CPU", cpu_snp, &cpu_detail)?;
    let dev_sev = std::path::Path::new("/dev/sev").exists();
    line(
        &mut out,
        "/dev/sev",
        dev_sev,
        if dev_sev {
            "present (the AMD-SP firmware driver)"
        } else {
            "missing: the ccp driver has no SEV firmware here"
        },
    )?;
    let snp_param = std::fs::read_to_string("/sys/module/kvm_amd/parameters/sev_snp")
        .map(|v| v.trim().to_owned())
        .ok();
    let kvm_snp = matches!(snp_param.as_deref(), Some("Y") | Some("1"));
    line(
        &mut out,
        "kvm_amd sev_snp",
        kvm_snp,
        &match snp_param {
            Some(value) => format!("/sys/module/kvm_amd/parameters/sev_snp = {value}"),
            None => "kvm_amd is not loaded (or too old for SNP)".to_owned(),
        },
    )?;
    let firmware = &config.hypervisor.firmware;
    let firmware_ok = match cloak_launch::ovmf::has_kernel_hashes_table(firmware) {
        Ok(true) => {
            line(
                &mut out,
                "SNP firmware",
                true,
                &format!("{} has a kernel-hashes table", firmware.display()),
            )?;
            true
        }
        Ok(false) => {
            line(
                &mut out,
                "SNP firmware",
                false,
                &format!(
                    "{} has no kernel-hashes table (use an OVMF AmdSev build)",
                    firmware.display()
                ),
            )?;
            false
        }
        Err(err) => {
            line(&mut out, "SNP firmware", false, &err.to_string())?;
            false
        }
    };
    let snp_ready = kvm && cpu_snp && dev_sev && kvm_snp && firmware_ok;
    line(
        &mut out,
        "SNP guests",
        snp_ready,
        if snp_ready {
            "this host can launch SEV-SNP pod VMs"
        } else {
            "not on this host (see the lines above)"
        },
    )?;
    if config.hypervisor.tee == TeeKind::Snp && !snp_ready {
        writeln!(
            out,
            "warning: the configuration asks for tee = \"snp\", which this host cannot give"
        )?;
    }
    let node_ready = node(&mut out, &args, &config)?;
    line(
        &mut out,
        "cloak pods",
        node_ready,
        if node_ready {
            "this node can run cloak pods through containerd"
        } else {
            "not yet (see the lines above)"
        },
    )?;
    Ok(())
}
