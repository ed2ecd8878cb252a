//! `manifest.json`: what a guest image contains, written beside it by the builder and read by
//! the runtime (file names, default command line) and by tests (kernel release, hashes).

use std::path::Path;

use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub kernel: KernelInfo,
    pub initrd: InitrdInfo,
    /// Kernel command line the image is meant to boot (and be measured) with.
    pub cmdline: String,
    /// Modules in the initrd, in the order the agent loads them.
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// File name inside the image directory.
    pub file: String,
    pub sha256: String,
    pub release: String,
    pub package: String,
    pub package_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitrdInfo {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub compression: String,
    /// SHA-256 of the binary installed as /init.
    pub init_sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: format version {found}, this cloak reads {FORMAT_VERSION}")]
    Version { path: String, found: u32 },
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let display = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: display.clone(),
            source,
        })?;
        let manifest: Self =
            serde_json::from_str(&text).map_err(|source| ManifestError::Parse {
                path: display.clone(),
                source,
            })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(ManifestError::Version {
                path: display,
                found: manifest.format_version,
            });
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(self).expect("a manifest always serializes to JSON");
        text.push('\n');
        text
    }
}
