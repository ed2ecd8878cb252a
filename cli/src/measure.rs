//! `cloak measure`: the SEV-SNP launch digest of a pod VM, printed as hex or base64. For the
//! `qemu` backend (OVMF) it takes `sev-snp-measure`'s flags for its SNP modes (`snp`,
//! `snp:ovmf-hash`; VMM types QEMU, ec2, gce; `--snp-ovmf-hash`, `--dump-vmsa`), so either can
//! stand in for the other; `--backend cloak-vmm` digests cloak's direct launch (no firmware),
//! the plan cloak-vmm executes and the simulated TEE reports. The oracle's other modes are
//! refused on purpose, each with its reason (`refused_mode`).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use cloak_launch::cpu_types;
use cloak_launch::direct::{DirectLaunch, DEFAULT_C_BIT};
use cloak_launch::ovmf::OvmfLaunch;

#[derive(Args)]
pub(crate) struct MeasureArgs {
    /// Guest mode: "snp" (the launch digest) or "snp:ovmf-hash" (the firmware pages' digest,
    /// for --snp-ovmf-hash).
    #[arg(long, default_value = "snp")]
    mode: String,
    /// Which launch: "qemu" (OVMF measures the kernel through its hashes table) or
    /// "cloak-vmm" (direct launch of the kernel, no firmware).
    #[arg(long, default_value = "qemu")]
    backend: String,
    /// OVMF firmware (an AmdSev build to measure a kernel); the qemu backend only.
    #[arg(long)]
    ovmf: Option<PathBuf>,
    /// Number of vCPUs (one VMSA each); not needed by --mode snp:ovmf-hash.
    #[arg(long)]
    vcpus: Option<u32>,
    /// vCPU model by QEMU's name (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin, ...).
    #[arg(long)]
    vcpu_type: Option<String>,
    /// vCPU CPUID signature instead of a type name (decimal or 0x hex).
    #[arg(long)]
    vcpu_sig: Option<String>,
    /// vCPU family, model and stepping instead of a type name or signature.
    #[arg(long, requires_all = ["vcpu_model", "vcpu_stepping"])]
    vcpu_family: Option<String>,
    #[arg(long, requires = "vcpu_family")]
    vcpu_model: Option<String>,
    #[arg(long, requires = "vcpu_family")]
    vcpu_stepping: Option<String>,
    /// SEV_FEATURES of the VMSAs (hex, e.g. 0x1 or 0x21).
    #[arg(long, default_value = "0x1")]
    guest_features: String,
    /// Kernel QEMU measures through OVMF's hashes table (kernel-hashes=on).
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// VMM whose vCPU reset state and page order to assume: QEMU, ec2 or gce.
    #[arg(long, default_value = "QEMU")]
    vmm_type: String,
    /// Precomputed digest of the firmware pages (hex) to start from.
    #[arg(long)]
    snp_ovmf_hash: Option<String>,
    /// Guest memory in MiB (cloak-vmm: the e820 map in the boot parameters is measured).
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Encryption bit position in guest page tables (cloak-vmm; 51 on Milan, Genoa, Turin).
    #[arg(long, default_value_t = DEFAULT_C_BIT)]
    c_bit: u8,
    /// Output format: hex or base64.
    #[arg(long, default_value = "hex")]
    output_format: String,
    /// Write the measured VMSAs to vmsa<N>.bin in the current directory, as
    /// `sev-snp-measure --dump-vmsa` does (the qemu backend).
    #[arg(long)]
    dump_vmsa: bool,
}

/// The oracle's modes cloak does not measure, and why.
fn refused_mode(mode: &str) -> Option<&'static str> {
    match mode {
        "sev" | "seves" => Some(
            "cloak launches SEV-SNP guests only: SEV and SEV-ES have no attestation report with \
             HOST_DATA and REPORT_DATA, which cloak's init-data and key release rely on",
        ),
        "snp:svsm" => Some(
            "cloak boots no SVSM: its guests run at VMPL 0 and its launch plans have no SVSM image",
        ),
        _ => None,
    }
}

fn number(text: &str) -> anyhow::Result<u64> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("{text:?} is not a number"))
}

pub(crate) fn run(args: MeasureArgs) -> anyhow::Result<()> {
    if let Some(reason) = refused_mode(&args.mode) {
        bail!("--mode {}: {reason}", args.mode);
    }
    if !matches!(args.output_format.as_str(), "hex" | "base64") {
        bail!("--output-format {}: hex or base64", args.output_format);
    }
    let guest_features = number(&args.guest_features)?;
    let digest = match (args.mode.as_str(), args.backend.as_str()) {
        ("snp:ovmf-hash", "qemu") => {
            let ovmf = args
                .ovmf
                .as_deref()
                .context("--mode snp:ovmf-hash digests a firmware: --ovmf is needed")?;
            cloak_launch::ovmf::ovmf_digest(ovmf)?
        }
        ("snp:ovmf-hash", other) => {
            bail!("--mode snp:ovmf-hash digests OVMF: --backend {other} boots no firmware")
        }
        ("snp", backend) => launch_digest(&args, backend, guest_features)?,
        (other, _) => bail!("--mode {other}: snp or snp:ovmf-hash"),
    };
    let text = if args.output_format == "base64" {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(digest.bytes())
    } else {
        digest.hex()
    };
    use std::io::Write;
    writeln!(std::io::stdout(), "{text}")?;
    Ok(())
}

fn launch_digest(
    args: &MeasureArgs,
    backend: &str,
    guest_features: u64,
) -> anyhow::Result<cloak_launch::LaunchDigest> {
    let vcpus = args
        .vcpus
        .context("--vcpus is needed: every vCPU's VMSA is measured")?;
    Ok(match backend {
        "qemu" => ovmf_digest(args, vcpus, guest_features)?,
        "cloak-vmm" => {
            let kernel = args
                .kernel
                .as_deref()
                .context("--backend cloak-vmm measures a kernel: --kernel is needed")?;
            let mut launch = DirectLaunch::from_files(
                kernel,
                args.initrd.as_deref(),
                args.append.as_deref().unwrap_or_default(),
                args.memory,
                vcpus,
            )?;
            launch.guest_features = guest_features;
            launch.c_bit = args.c_bit;
            launch.digest()?
        }
        other => bail!("--backend {other}: qemu or cloak-vmm"),
    })
}

fn ovmf_digest(
    args: &MeasureArgs,
    vcpus: u32,
    guest_features: u64,
) -> anyhow::Result<cloak_launch::LaunchDigest> {
    let ovmf = args
        .ovmf
        .clone()
        .context("--backend qemu boots OVMF: --ovmf is needed")?;
    let vcpu_signature = match (&args.vcpu_sig, &args.vcpu_type, &args.vcpu_family) {
        (Some(sig), _, _) => u32::try_from(number(sig)?).context("--vcpu-sig is 32 bits")?,
        (None, Some(name), _) => cpu_types::signature_of(name).with_context(|| {
            format!(
                "unknown --vcpu-type {name:?}; known: {}",
                cpu_types::names().join(", ")
            )
        })?,
        (None, None, Some(family)) => {
            let part = |text: &Option<String>, what: &str| -> anyhow::Result<u32> {
                let text = text
                    .as_deref()
                    .with_context(|| format!("--{what} is needed"))?;
                u32::try_from(number(text)?).with_context(|| format!("--{what} is 32 bits"))
            };
            cpu_types::cpu_signature(
                u32::try_from(number(family)?).context("--vcpu-family is 32 bits")?,
                part(&args.vcpu_model, "vcpu-model")?,
                part(&args.vcpu_stepping, "vcpu-stepping")?,
            )
        }
        (None, None, None) => bail!("--vcpu-type, --vcpu-sig or --vcpu-family is needed"),
    };
    let launch = OvmfLaunch {
        ovmf,
        vcpus,
        vcpu_signature,
        guest_features,
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        append: args.append.clone(),
        vmm: args.vmm_type.parse().map_err(anyhow::Error::msg)?,
        ovmf_digest: args
            .snp_ovmf_hash
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|err| anyhow::anyhow!("--snp-ovmf-hash: {err}"))?,
    };
    let plan = launch.plan()?;
    if args.dump_vmsa {
        let vmsas = plan.records.iter().filter_map(|record| match &record.kind {
            cloak_launch::PageKind::Vmsa(page) => Some(page),
            _ => None,
        });
        for (index, page) in vmsas.enumerate() {
            std::fs::write(format!("vmsa{index}.bin"), page)
                .with_context(|| format!("writing vmsa{index}.bin"))?;
        }
    }
    Ok(plan.digest()?)
}
