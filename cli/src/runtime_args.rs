//! Options every command that boots a pod VM takes: which configuration, guest image and run
//! directory.

use std::path::PathBuf;

use clap::Args;
use cloak_host::config::{Configuration, DEFAULT_CONFIG_PATH};

#[derive(Args)]
pub(crate) struct RuntimeArgs {
    /// Runtime configuration (defaults apply when the file does not exist).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Guest image directory (overrides guest.image_dir).
    #[arg(long, env = "CLOAK_GUEST_DIR")]
    guest_dir: Option<PathBuf>,
    /// Run directory (overrides runtime.run_dir).
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

impl RuntimeArgs {
    /// The configuration file with the command-line overrides applied.
    pub(crate) fn configuration(&self) -> anyhow::Result<Configuration> {
        let mut config = if self.config.exists() {
            Configuration::load(&self.config)?
        } else {
            Configuration::default()
        };
        if let Some(dir) = &self.guest_dir {
            config.guest.image_dir = dir.clone();
        }
        if let Some(dir) = &self.run_dir {
            config.runtime.run_dir = dir.clone();
        }
        Ok(config)
    }
}
