//! `cloak cache`: the node's cache of layer images (converted once per layer digest for
//! confidential pods). `prune` removes them; a running pod keeps its images open, and the next
//! pod of an image converts its layers again.

use clap::{Args, Subcommand};

use crate::runtime_args::RuntimeArgs;

#[derive(Subcommand)]
pub(crate) enum CacheCommand {
    /// Remove cached layer images (all, or all but --keep).
    Prune(PruneArgs),
}

#[derive(Args)]
pub(crate) struct PruneArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// A layer digest (sha256:...) to keep; repeatable.
    #[arg(long)]
    keep: Vec<String>,
}

pub(crate) fn run(command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Prune(args) => {
            let config = args.runtime.configuration()?;
            let cache = cloak_host::layer_cache::LayerCache::new(
                &config.layers.cache_dir,
                &config.layers.content_dir,
            );
            let (_, before) = cache.usage();
            let freed = cache.prune(&args.keep)?;
            let (_, after) = cache.usage();
            #[allow(clippy::print_stdout)] // the command's output
            {
                println!(
                    "{}: removed {} layer images, {:.1} MiB",
                    config.layers.cache_dir.display(),
                    before - after,
                    freed as f64 / (1024.0 * 1024.0)
                );
            }
            Ok(())
        }
    }
}
