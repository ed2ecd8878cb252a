//! Local images, read from OCI image archives (`ctr images export`, `docker save` of an OCI
//! layout, `skopeo copy oci-archive:`): no registry is asked. An image gives what the runtime
//! takes from it — its config (Entrypoint, Cmd, Env, WorkingDir, User) — and its identity
//! (config digest, layer digests), every blob checked against its digest; its /etc/passwd and
//! /etc/group resolve a user name the way containerd does.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::GenerateError;

/// What the image's config says the runtime should run.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// One image, as found in an archive.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub config_digest: String,
    pub layers: Vec<String>,
    /// Each layer's dm-verity root hash as a `cloak-layers` image (what the guest checks).
    pub layer_root_hashes: Vec<String>,
    pub config: RunConfig,
    /// The image's /etc/passwd and /etc/group after all layers (empty where it has none).
    pub passwd: String,
    pub group: String,
}

/// The images of some OCI archives, by name.
#[derive(Debug, Default)]
pub struct ImageStore {
    images: BTreeMap<String, Image>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    platform: Option<Platform>,
}

#[derive(Deserialize, Clone)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: RunConfig,
}

/// The blobs of one archive: small ones held, layers read again when needed.
struct Archive {
    path: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
}

/// Blobs above this are layers: read from the archive only to find /etc/passwd and /etc/group.
const HELD_BLOB_BYTES: u64 = 4 << 20;

impl Archive {
    fn open(path: &Path) -> Result<Self, GenerateError> {
        let mut files = BTreeMap::new();
        let failed = |source| GenerateError::Archive {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(failed)?;
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(failed)? {
            let mut entry = entry.map_err(failed)?;
            if entry.size() > HELD_BLOB_BYTES {
                continue;
            }
            let name = entry.path().map_err(failed)?.display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(failed)?;
            files.insert(name.trim_start_matches("./").to_owned(), bytes);
        }
        Ok(Self {
            path: path.to_owned(),
            files,
        })
    }

    fn blob_path(digest: &str) -> Result<String, GenerateError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| GenerateError::Digest(digest.to_owned()))?;
        Ok(format!("blobs/sha256/{hex}"))
    }

    /// A held blob, checked against its digest.
    fn blob(&self, digest: &str) -> Result<&[u8], GenerateError> {
        let bytes = self.files.get(&Self::blob_path(digest)?).ok_or_else(|| {
            GenerateError::MissingBlob {
                archive: self.path.display().to_string(),
                digest: digest.to_owned(),
            }
        })?;
        check_digest(digest, bytes)?;
        Ok(bytes)
    }

    /// The uncompressed tar of a layer.
    fn layer_tar(&self, layer: &Descriptor) -> Result<Box<dyn Read>, GenerateError> {
        let media_type = layer.media_type.clone().unwrap_or_default();
        let bytes = self.layer_bytes(&layer.digest)?;
        let cursor = std::io::Cursor::new(bytes);
        if media_type.ends_with("gzip") {
            Ok(Box::new(flate2::read::GzDecoder::new(cursor)))
        } else if media_type.ends_with(".tar") || media_type.is_empty() {
            Ok(Box::new(cursor))
        } else {
            Err(GenerateError::LayerType(media_type))
        }
    }

    /// The root hash of a layer's image, converted as every node converts it.
    fn root_hash(&self, layer: &Descriptor) -> Result<String, GenerateError> {
        let failed = |source| GenerateError::Archive {
            path: format!("{} layer {}", self.path.display(), layer.digest),
            source,
        };
        let mut image = tempfile::tempfile().map_err(failed)?;
        let converted =
            cloak_layers::convert(self.layer_tar(layer)?, &mut image).map_err(|err| {
                GenerateError::Layer {
                    digest: layer.digest.clone(),
                    reason: err.to_string(),
                }
            })?;
        Ok(converted.verity.root_hex())
    }

    /// `/etc/passwd` and `/etc/group` after applying `layers` in order (whiteouts included).
    fn user_files(&self, layers: &[Descriptor]) -> Result<(String, String), GenerateError> {
        let mut found = [String::new(), String::new()];
        for layer in layers {
            let reader = self.layer_tar(layer)?;
            let failed = |source| GenerateError::Archive {
                path: format!("{} layer {}", self.path.display(), layer.digest),
                source,
            };
            let mut tar = tar::Archive::new(reader);
            for entry in tar.entries().map_err(failed)? {
                let mut entry = entry.map_err(failed)?;
                let name = entry.path().map_err(failed)?.display().to_string();
                let name = name.trim_start_matches("./").trim_start_matches('/');
                for (slot, file) in ["etc/passwd", "etc/group"].iter().enumerate() {
                    let whiteout = file.replace("etc/", "etc/.wh.");
                    if name == *file {
                        let mut text = String::new();
                        entry.read_to_string(&mut text).map_err(failed)?;
                        found[slot] = text;
                    } else if name == whiteout {
                        found[slot].clear();
                    }
                }
            }
        }
        let [passwd, group] = found;
        Ok((passwd, group))
    }

    /// A layer's bytes (held or read from the archive again), checked against its digest.
    fn layer_bytes(&self, digest: &str) -> Result<Vec<u8>, GenerateError> {
        let path = Self::blob_path(digest)?;
        if let Some(bytes) = self.files.get(&path) {
            check_digest(digest, bytes)?;
            return Ok(bytes.clone());
        }
        let failed = |source| GenerateError::Archive {
            path: self.path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(&self.path).map_err(failed)?;
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(failed)? {
            let mut entry = entry.map_err(failed)?;
            let name = entry.path().map_err(failed)?.display().to_string();
            if name.trim_start_matches("./") == path {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(failed)?;
                check_digest(digest, &bytes)?;
                return Ok(bytes);
            }
        }
        Err(GenerateError::MissingBlob {
            archive: self.path.display().to_string(),
            digest: digest.to_owned(),
        })
    }
}

fn check_digest(digest: &str, bytes: &[u8]) -> Result<(), GenerateError> {
    let actual = format!("sha256:{}", hex_of(&Sha256::digest(bytes)));
    if actual == digest {
        Ok(())
    } else {
        Err(GenerateError::DigestMismatch {
            expected: digest.to_owned(),
            actual,
        })
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl ImageStore {
    /// Adds every image named in the archive at `path`.
    pub fn add_archive(&mut self, path: &Path) -> Result<(), GenerateError> {
        let archive = Archive::open(path)?;
        let index: Index =
            serde_json::from_slice(archive.files.get("index.json").ok_or_else(|| {
                GenerateError::MissingBlob {
                    archive: path.display().to_string(),
                    digest: "index.json".to_owned(),
                }
            })?)
            .map_err(GenerateError::Json)?;
        for descriptor in index.manifests {
            let Some(name) = image_name(&descriptor) else {
                continue;
            };
            let manifest = archive.manifest_for(&descriptor)?;
            let config: ImageConfig =
                serde_json::from_slice(archive.blob(&manifest.config.digest)?)
                    .map_err(GenerateError::Json)?;
            let (passwd, group) = archive.user_files(&manifest.layers)?;
            let layer_root_hashes = manifest
                .layers
                .iter()
                .map(|layer| archive.root_hash(layer))
                .collect::<Result<_, _>>()?;
            let image = Image {
                name: name.clone(),
                config_digest: manifest.config.digest.clone(),
                layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
                layer_root_hashes,
                config: config.config,
                passwd,
                group,
            };
            self.images.insert(name, image);
        }
        Ok(())
    }

    /// The image `reference` (as written in a pod: normalised the way containerd does).
    pub fn get(&self, reference: &str) -> Result<&Image, GenerateError> {
        let name = normalize(reference);
        self.images
            .get(&name)
            .ok_or_else(|| GenerateError::NoImage {
                name,
                known: self.images.keys().cloned().collect(),
            })
    }
}

impl Archive {
    /// The image manifest of `descriptor`, choosing linux/amd64 from an index.
    fn manifest_for(&self, descriptor: &Descriptor) -> Result<Manifest, GenerateError> {
        let bytes = self.blob(&descriptor.digest)?;
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(GenerateError::Json)?;
        if value.get("manifests").is_none() {
            return serde_json::from_value(value).map_err(GenerateError::Json);
        }
        let index: Index = serde_json::from_value(value).map_err(GenerateError::Json)?;
        let chosen = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .ok_or_else(|| GenerateError::NoPlatform(descriptor.digest.clone()))?;
        self.manifest_for(chosen)
    }
}

/// The full name of an index entry: containerd's annotation, or a full reference as OCI's.
fn image_name(descriptor: &Descriptor) -> Option<String> {
    descriptor
        .annotations
        .get("io.containerd.image.name")
        .or_else(|| {
            descriptor
                .annotations
                .get("org.opencontainers.image.ref.name")
                .filter(|name| name.contains('/') || name.contains(':'))
        })
        .map(|name| normalize(name))
}

/// `busybox` → `docker.io/library/busybox:latest`, as containerd's reference parsing does.
pub fn normalize(reference: &str) -> String {
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let has_domain =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut name = if has_domain {
        reference.to_owned()
    } else if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else {
        format!("docker.io/{reference}")
    };
    let last = name.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        name.push_str(":latest");
    }
    name
}
