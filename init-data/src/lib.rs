//! A pod's init-data: the initdata TOML document of Confidential Containers (trustee's
//! `kbs/docs/initdata.md`, version 0.1.0) — `version`, `algorithm` and a `[data]` table of named
//! strings, the agent policy (`policy.rego`) among them. The host hands it to the pod; a TEE
//! launch binds its digest as HOST_DATA, which the agent compares with its own report before it
//! uses any of it, and a verifier compares with the document it expects.
//!
//! The digest is always of the exact bytes the pod was given, never of a re-encoding: a parser
//! that re-serialises (other key order, other quoting) would bind a document nobody wrote and
//! that no verifier can predict. Host, agent and verifier all take HOST_DATA from `host_data_for`.

mod annotation;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256, Sha384, Sha512};

pub use annotation::{decode_annotation, encode_annotation, MAX_INIT_DATA_BYTES};

/// The one version of the initdata format there is.
pub const INIT_DATA_VERSION: &str = "0.1.0";
/// The `[data]` entry holding the agent policy (Rego).
pub const POLICY_KEY: &str = "policy.rego";
/// Pod annotation carrying the init-data (base64, optionally gzip-compressed).
pub const ANNOTATION: &str = "io.cloak.init-data";
/// The `[data]` key that lets a pod in a TEE run containers from a host-shared directory
/// (value `"shared"`): for development only, as the host then chooses every file.
pub const ROOTFS_KEY: &str = "cloak.rootfs";
/// Kata Containers' annotation for the same, accepted so pods written for Kata CoCo run.
/// Confidential Containers' data-hub settings: `[kbc] url` (and `kbs_cert`) name the key
/// broker the pod's secrets come from — measured, since they are part of the init-data.
pub const CDH_KEY: &str = "cdh.toml";
/// Resources (`kbs:///repo/type/tag`, one per line) the pod gets as files below
/// `/run/cloak/secrets/` in every container.
pub const SECRETS_KEY: &str = "cloak.secrets";
pub const KATA_ANNOTATION: &str = "io.katacontainers.config.hypervisor.cc_init_data";
/// SEV-SNP's HOST_DATA: a digest longer than this is truncated, a shorter one zero-padded.
pub use cloak_snp_abi::HOST_DATA_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum InitDataError {
    #[error("init-data is not UTF-8 text")]
    NotUtf8,
    #[error("init-data is not an initdata TOML document: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("init-data version {0:?} is not supported (only \"{INIT_DATA_VERSION}\")")]
    Version(String),
    #[error("init-data algorithm {0:?} is not supported (sha256, sha384 or sha512)")]
    Algorithm(String),
    #[error("init-data annotation is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("init-data annotation: gzip: {0}")]
    Gzip(std::io::Error),
    #[error("init-data is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("init-data {CDH_KEY}: {0}")]
    Cdh(String),
}

/// The key broker a pod's init-data names (`cdh.toml`'s `[kbc]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbsSettings {
    pub url: String,
    /// The broker's CA certificate (PEM), for an https:// broker.
    pub cert: Option<String>,
}

#[derive(serde::Deserialize)]
struct CdhDocument {
    kbc: Option<Kbc>,
}

#[derive(serde::Deserialize)]
struct Kbc {
    #[serde(default)]
    name: Option<String>,
    url: String,
    #[serde(default)]
    kbs_cert: Option<String>,
}

/// The digest algorithms the format allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// The algorithm of `name` ("sha256", "sha384", "sha512").
    pub fn named(name: &str) -> Result<Self, InitDataError> {
        match name {
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            other => Err(InitDataError::Algorithm(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    pub fn digest(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(bytes).to_vec(),
            Self::Sha384 => Sha384::digest(bytes).to_vec(),
            Self::Sha512 => Sha512::digest(bytes).to_vec(),
        }
    }
}

/// The document as written; nothing else is accepted at its top level.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: String,
    algorithm: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// A parsed init-data document together with the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitData {
    bytes: Vec<u8>,
    algorithm: Algorithm,
    data: BTreeMap<String, String>,
}

impl InitData {
    /// Parses `bytes` strictly (version 0.1.0, a known algorithm, string entries only) and keeps
    /// them as they are for the digest.
    pub fn parse(bytes: &[u8]) -> Result<Self, InitDataError> {
        if bytes.len() > MAX_INIT_DATA_BYTES {
            return Err(InitDataError::TooLarge {
                limit: MAX_INIT_DATA_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| InitDataError::NotUtf8)?;
        let document: Document = toml::from_str(text)?;
        if document.version != INIT_DATA_VERSION {
            return Err(InitDataError::Version(document.version));
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            algorithm: Algorithm::named(&document.algorithm)?,
            data: document.data,
        })
    }

    /// The exact bytes the document was parsed from.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The document's digest with its own algorithm, over its exact bytes.
    pub fn digest(&self) -> Vec<u8> {
        self.algorithm.digest(&self.bytes)
    }

    /// HOST_DATA of a launch with this document: its digest, truncated or zero-padded to 32
    /// bytes as the initdata specification says for SEV-SNP.
    pub fn host_data(&self) -> [u8; HOST_DATA_BYTES] {
        let mut host_data = [0u8; HOST_DATA_BYTES];
        let digest = self.digest();
        let len = digest.len().min(HOST_DATA_BYTES);
        host_data[..len].copy_from_slice(&digest[..len]);
        host_data
    }

    /// A `[data]` entry.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// The agent policy the document carries, if any.
    pub fn policy(&self) -> Option<&str> {
        self.get(POLICY_KEY)
    }

    /// The key broker this pod's secrets come from, if the document names one.
    pub fn kbs(&self) -> Result<Option<KbsSettings>, InitDataError> {
        let Some(text) = self.get(CDH_KEY) else {
            return Ok(None);
        };
        let document: CdhDocument =
            toml::from_str(text).map_err(|err| InitDataError::Cdh(err.to_string()))?;
        let Some(kbc) = document.kbc else {
            return Ok(None);
        };
        if let Some(name) = kbc.name.filter(|name| name != "cc_kbc") {
            return Err(InitDataError::Cdh(format!(
                "[kbc] name {name:?}: only cc_kbc (the KBS protocol) is supported"
            )));
        }
        Ok(Some(KbsSettings {
            url: kbc.url,
            cert: kbc.kbs_cert.filter(|cert| !cert.trim().is_empty()),
        }))
    }

    /// The resources the document asks to have as files (`cloak.secrets`, one per line).
    pub fn secret_files(&self) -> Vec<&str> {
        self.get(SECRETS_KEY)
            .map(|text| {
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The names of the `[data]` entries, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }
}

/// HOST_DATA of a pod launched with `init_data` (its exact bytes): all zero for a pod without
/// init-data, otherwise the document's `host_data`. Invalid init-data has none: the host must
/// not launch such a pod, and the agent refuses it.
pub fn host_data_for(init_data: &[u8]) -> Result<[u8; HOST_DATA_BYTES], InitDataError> {
    if init_data.is_empty() {
        return Ok([0; HOST_DATA_BYTES]);
    }
    Ok(InitData::parse(init_data)?.host_data())
}

#[cfg(test)]
mod tests;
