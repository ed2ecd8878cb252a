//! Strict TOML configuration files, read the one way cloak reads them: the file's text parsed
//! into a `deny_unknown_fields` type, every error naming the file. The guest-image pin
//! (`configs/guest-image.toml`) and the runtime configuration (`configuration.toml`, in
//! cloak-host) both load through here and then check their own values.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The text of `path` and the name errors give it.
pub fn read(path: &Path) -> Result<(String, String), ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: origin.clone(),
        source,
    })?;
    Ok((text, origin))
}

/// `text` (from `origin`) as a `T`.
pub fn parse<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: origin.to_owned(),
        source,
    })
}
