//! `cloak measure`: the SEV-SNP launch digest of a pod VM, printed as hex. It takes the flags
//! of `sev-snp-measure --mode snp` that apply, so either can stand in for the other.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use cloak_attestation::cpu_types;
use cloak_attestation::ovmf_launch::OvmfLaunch;

#[derive(Args)]
pub struct MeasureArgs {
    /// Guest mode; only SEV-SNP ("snp") is measured.
    #[arg(long, default_value = "snp")]
    mode: String,
    /// OVMF firmware (an AmdSev build to measure a kernel).
    #[arg(long)]
    ovmf: PathBuf,
    /// Number of vCPUs (one VMSA each).
    #[arg(long)]
    vcpus: u32,
    /// vCPU model by QEMU's name (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin, ...).
    #[arg(long, required_unless_present = "vcpu_sig")]
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

pub fn run(args: MeasureArgs) -> anyhow::Result<()> {
    if args.mode != "snp" {
        bail!(
            "--mode {}: cloak measures SEV-SNP launches only (--mode snp)",
            args.mode
        );
    }
    if args.output_format != "hex" {
        bail!("--output-format {}: only hex", args.output_format);
    }
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
        ovmf: args.ovmf,
        vcpus: args.vcpus,
        vcpu_signature,
        guest_features: number(&args.guest_features)?,
        kernel: args.kernel,
        initrd: args.initrd,
        append: args.append,
        vmm: args.vmm_type.parse().map_err(anyhow::Error::msg)?,
        ovmf_digest: args
            .snp_ovmf_hash
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|err| anyhow::anyhow!("--snp-ovmf-hash: {err}"))?,
    };
    let digest = launch.digest()?;
    use std::io::Write;
    writeln!(std::io::stdout(), "{digest}")?;
    Ok(())
}
