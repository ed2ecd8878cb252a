//! `cloak check`: what this host can do for cloak, and why not. One line per fact.

use std::io::Write;

use clap::Args;
use cloak_shim::config::TeeKind;
use cloak_shim::hypervisor::host;

use crate::runtime_args::RuntimeArgs;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn line(out: &mut impl std::io::Write, what: &str, ok: bool, detail: &str) -> std::io::Result<()> {
    writeln!(out, "{:<4} {what}: {detail}", if ok { "yes" } else { "no" })
}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
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
    let firmware_ok = match cloak_attestation::ovmf_launch::has_kernel_hashes_table(firmware) {
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
    Ok(())
}
