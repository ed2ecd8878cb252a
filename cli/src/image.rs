//! `cloak image build`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build vmlinuz, initrd.img and manifest.json reproducibly into --out.
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
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
}

pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("cloak")
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Build(args) => build(args),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let config = cloak_image::ImageConfig::load(&args.config)?;
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
    Ok(())
}
