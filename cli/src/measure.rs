//! `cloak measure`: the SEV-SNP launch digest of a pod VM, printed as hex. For the `qemu`
//! backend (OVMF) it takes the flags of `sev-snp-measure --mode snp` that apply, so either can
//! stand in for the other; `--backend cloak-vmm` digests cloak's direct launch (no firmware),
//! the plan cloak-vmm executes and the simulated TEE reports.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use cloak_launch::cpu_types;
use cloak_launch::direct::{DirectLaunch, DEFAULT_C_BIT};
use cloak_launch::ovmf::OvmfLaunch;

#[derive(Args)]
pub(crate) struct MeasureArgs {
    /// Guest mode; only SEV-SNP ("snp") is measured.
    #[arg(long, default_value = "snp")]
    mode: String,
    /// Which launch: "qemu" (OVMF measures the kernel through its hashes table) or
    /// "cloak-vmm" (direct launch of the kernel, no firmware).
    #[arg(long, default_value = "qemu")]
    backend: String,
    /// OVMF firmware (an AmdSev build to measure a kernel); the qemu backend only.
    #[arg(long)]
    ovmf: Option<PathBuf>,
    /// Number of vCPUs (one VMSA each).
    #[arg(long)]
    vcpus: u32,
    /// vCPU model by QEMU's name (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin, ...).
    #[arg(long)]
    vcpu_type: Option<String>,
    /// vCPU CPUID signature instead of a type name (decimal or 0x hex).
    #[arg(long)]
    vcpu_sig: Option<String>,
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
    /// VMM whose vCPU reset state to assume: QEMU or ec2.
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
    /// Output format; only hex.
    #[arg(long, default_value = "hex")]
    output_format: String,
}

fn number(text: &str) -> anyhow::Result<u64> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("{text:?} is not a number"))
}

pub(crate) fn run(args: MeasureArgs) -> anyhow::Result<()> {
    if args.mode != "snp" {
        bail!(
            "--mode {}: cloak measures SEV-SNP launches only (--mode snp)",
            args.mode
        );
    }
    if args.output_format != "hex" {
        bail!("--output-format {}: only hex", args.output_format);
    }
    let guest_features = number(&args.guest_features)?;
    let digest = match args.backend.as_str() {
        "qemu" => ovmf_digest(&args, guest_features)?,
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
                args.vcpus,
            )?;
            launch.guest_features = guest_features;
            launch.c_bit = args.c_bit;
            launch.digest()?
        }
        other => bail!("--backend {other}: qemu or cloak-vmm"),
    };
    use std::io::Write;
    writeln!(std::io::stdout(), "{digest}")?;
    Ok(())
}

fn ovmf_digest(
    args: &MeasureArgs,
    guest_features: u64,
) -> anyhow::Result<cloak_launch::LaunchDigest> {
    let ovmf = args
        .ovmf
        .clone()
        .context("--backend qemu boots OVMF: --ovmf is needed")?;
    let vcpu_signature = match (&args.vcpu_sig, &args.vcpu_type) {
        (Some(sig), _) => u32::try_from(number(sig)?).context("--vcpu-sig is 32 bits")?,
        (None, Some(name)) => cpu_types::signature_of(name).with_context(|| {
            format!(
                "unknown --vcpu-type {name:?}; known: {}",
                cpu_types::names().join(", ")
            )
        })?,
        (None, None) => bail!("--vcpu-type or --vcpu-sig is needed"),
    };
    let launch = OvmfLaunch {
        ovmf,
        vcpus: args.vcpus,
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
    Ok(launch.digest()?)
}
