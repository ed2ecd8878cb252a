//! `cloak image build`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Build vmlinuz, initrd.img and manifest.json reproducibly into --out.
    Build(BuildArgs),
}

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// The statically linked binary to install as /init (cloak-agent).
    #[arg(long)]
    agent: PathBuf,
    /// Image definition: pinned kernel package, modules, command line.
    #[arg(long, default_value = "configs/guest-image.toml")]
    config: PathBuf,
    /// Downloaded packages and unpacked kernels are kept here.
    #[arg(long, env = "CLOAK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Timestamp for every initrd entry.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u32,
    /// Runtime configuration the reference values assume (the kernel command line the shim
    /// passes depends on it); built-in defaults when absent.
    #[arg(long)]
    runtime_config: Option<PathBuf>,
    /// The OVMF AmdSev firmware SNP pods boot on the qemu backend (`cloak firmware build`),
    /// instead of the image config's `reference_values.firmware`. It is copied into the image
    /// as OVMF.amdsev.fd (where `cloak install` takes it from) and the QEMU+OVMF reference
    /// digests are computed for it.
    #[arg(long)]
    firmware: Option<PathBuf>,
}

/// The firmware's name in a guest image directory.
pub(crate) const FIRMWARE_FILE: &str = "OVMF.amdsev.fd";

pub(crate) fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("cloak")
}

pub(crate) fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Build(args) => build(args),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let config = cloak_image::ImageConfig::load(&args.config)?;
    let mut launches = config.reference_values.clone();
    if let Some(firmware) = &args.firmware {
        launches.firmware = Some(firmware.clone());
    }
    let options = cloak_image::BuildOptions {
        config,
        init_binary: args.agent,
        out_dir: args.out.clone(),
        cache_dir: args.cache_dir.unwrap_or_else(default_cache_dir),
        source_date_epoch: args.source_date_epoch,
    };
    let manifest = cloak_image::build_image(&options).context("building the guest image")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "guest image in {}: kernel {} ({}), initrd {} bytes ({}), {} modules",
        args.out.display(),
        manifest.kernel.release,
        &manifest.kernel.sha256[..16],
        manifest.initrd.size,
        &manifest.initrd.sha256[..16],
        manifest.modules.len()
    )?;
    if let Some(firmware) = launches.firmware.take() {
        let shipped = args.out.join(FIRMWARE_FILE);
        std::fs::copy(&firmware, &shipped).with_context(|| {
            format!("copying the firmware {} into the image", firmware.display())
        })?;
        writeln!(
            stdout,
            "firmware {} in {}",
            firmware.display(),
            shipped.display()
        )?;
        launches.firmware = Some(shipped);
    }
    let runtime = match &args.runtime_config {
        Some(path) => cloak_host::Configuration::load(path)?,
        None => cloak_host::Configuration::default(),
    };
    let written = write_reference_values(&args.out, &manifest, &runtime, &launches)?;
    writeln!(stdout, "{written}")?;
    Ok(())
}

/// The listed direct-launch sizes with the configured one, each once, in order.
fn direct_memory_sizes(listed: &[u32], configured: u32) -> Vec<u32> {
    let mut sizes: Vec<u32> = listed.iter().copied().chain([configured]).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Writes reference-values.json (and the Trustee form) beside the manifest; returns a line
/// saying what was written.
fn write_reference_values(
    out: &std::path::Path,
    manifest: &cloak_image::Manifest,
    runtime: &cloak_host::Configuration,
    launches: &cloak_image::ReferenceLaunches,
) -> anyhow::Result<String> {
    use cloak_attestation::reference_values::{ReferenceLaunchSet, ReferenceValues};
    // The command line exactly as the shim passes it to a pod VM of this image.
    let mut image_runtime = runtime.clone();
    image_runtime.guest.image_dir = out.to_owned();
    let vm = cloak_host::pod_vm::vm_config_for(&image_runtime, manifest, "reference");
    let launch_set = ReferenceLaunchSet {
        firmware: launches.firmware.clone(),
        vcpus: launches.vcpus.clone(),
        vcpu_types: launches.vcpu_types.clone(),
        guest_features: launches.guest_features,
        direct_memory_mib: direct_memory_sizes(&launches.memory_mib, runtime.hypervisor.memory_mib),
    };
    let values = ReferenceValues::for_image(&vm.kernel, &vm.initrd, &vm.cmdline, &launch_set)?;
    let path = out.join("reference-values.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&values)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let trustee = out.join("reference-values.trustee.json");
    std::fs::write(
        &trustee,
        serde_json::to_vec_pretty(&values.trustee_message())?,
    )
    .with_context(|| format!("writing {}", trustee.display()))?;
    let firmware_note = if launches.firmware.is_none() {
        " (none for qemu+OVMF: pass --firmware, e.g. from `cloak firmware build`)"
    } else {
        ""
    };
    Ok(format!(
        "reference values in {}: kernel, initrd and command-line hashes, {} SNP launch digests{firmware_note}",
        path.display(),
        values.launch_digests.len()
    ))
}
