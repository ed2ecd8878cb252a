//! `configs/guest-image.toml`: the pinned kernel package, the modules, the command line.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::toml_file::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub kernel: KernelPin,
    pub modules: ModuleSelection,
    pub cmdline: CmdlineConfig,
    #[serde(default)]
    pub reference_values: ReferenceLaunches,
}

/// The SEV-SNP launches `cloak image build` computes reference launch digests for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReferenceLaunches {
    /// OVMF AmdSev firmware the `qemu` backend boots SNP guests with; no launch digests
    /// without it (the kernel, initrd and command-line hashes are written regardless).
    pub firmware: Option<std::path::PathBuf>,
    pub vcpus: Vec<u32>,
    /// Memory sizes of direct launches (cloak-vmm measures its memory map): the configured
    /// `memory_mib` is always added; pods with limits get larger sizes in 256 MiB steps.
    pub memory_mib: Vec<u32>,
    pub vcpu_types: Vec<String>,
    pub guest_features: u64,
}

impl Default for ReferenceLaunches {
    fn default() -> Self {
        Self {
            firmware: None,
            vcpus: vec![1, 2, 3, 4],
            memory_mib: vec![512, 1024, 1536, 2048],
            vcpu_types: vec!["EPYC-v4".into(), "EPYC-Milan".into(), "EPYC-Genoa".into()],
            guest_features: 0x1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelPin {
    pub package: String,
    pub version: String,
    /// SHA-256 of the .deb, checked after download.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSelection {
    pub load: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdlineConfig {
    pub default: String,
}

impl ImageConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, origin) = crate::toml_file::read(path)?;
        Self::parse(&text, &origin)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = crate::toml_file::parse(text, origin)?;
        let invalid = |reason: &str| ConfigError::Invalid {
            path: origin.to_owned(),
            reason: reason.to_owned(),
        };
        let sha = &config.kernel.sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("kernel.sha256 must be 64 hex digits"));
        }
        if config.kernel.package.is_empty() || config.kernel.version.is_empty() {
            return Err(invalid("kernel.package and kernel.version must be set"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[kernel]
package = "linux-image-x"
version = "1.0"
sha256 = "69c92f43b23821de79576fa4d7c86e2924ae2c1b247a47cc5ed9339e220fbcb7"
[modules]
load = ["vsock"]
[cmdline]
default = "console=ttyS0"
"#;

    #[test]
    fn parses_the_shipped_config() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/guest-image.toml");
        let config = ImageConfig::load(&path).unwrap();
        assert!(config.kernel.package.starts_with("linux-image-"));
        assert!(config
            .modules
            .load
            .contains(&"vmw_vsock_virtio_transport".to_owned()));
    }

    #[test]
    fn rejects_bad_hash_and_unknown_keys() {
        assert!(ImageConfig::parse(GOOD, "t").is_ok());
        let bad_hash = GOOD.replace("69c92f43", "zzzz");
        assert!(matches!(
            ImageConfig::parse(&bad_hash, "t"),
            Err(ConfigError::Invalid { .. })
        ));
        let unknown = GOOD.replace("[cmdline]", "[cmdline]\nextra = 1");
        assert!(matches!(
            ImageConfig::parse(&unknown, "t"),
            Err(ConfigError::Parse { .. })
        ));
    }
}
