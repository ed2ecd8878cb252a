//! The node's cache of layer images: each layer a confidential pod runs from is converted once
//! per layer digest (`cloak-layers`: erofs + dm-verity tree) from containerd's content store
//! and kept, so the next pod of the same image only shares the file. A conversion is written
//! to a temporary file and renamed into place, so a crash or two pods converting the same
//! layer at once never leave a half image; a `.json` beside each image records its root hash.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum LayerCacheError {
    #[error("{0} is not a sha256 layer digest")]
    Digest(String),
    #[error("layer {digest} is not in containerd's content store ({path}): {source}")]
    Blob {
        digest: String,
        path: String,
        source: std::io::Error,
    },
    #[error("layer {0} is compressed with zstd, which cloak does not read yet")]
    Zstd(String),
    #[error("converting layer {digest}: {reason}")]
    Convert { digest: String, reason: String },
    #[error("the layer cache {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A layer image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLayer {
    pub image: PathBuf,
    pub root_hash: String,
    /// Whether this call converted it (false: it was in the cache).
    pub converted: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    root_hash: String,
    image_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
    content_dir: PathBuf,
}

fn hex_of(digest: &str) -> Result<&str, LayerCacheError> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| LayerCacheError::Digest(digest.to_owned()))
}

impl LayerCache {
    pub fn new(dir: &Path, content_dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            content_dir: content_dir.to_owned(),
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayerCacheError + '_ {
        move |source| LayerCacheError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The image of layer `digest`, converted now if the cache has none.
    pub fn ensure(&self, digest: &str) -> Result<CachedLayer, LayerCacheError> {
        let hex = hex_of(digest)?;
        let image = self.dir.join(format!("{hex}.img"));
        let record_path = self.dir.join(format!("{hex}.json"));
        if let Some(record) = std::fs::read(&record_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
        {
            if image.exists() {
                tracing::info!(layer = %digest, root_hash = %record.root_hash, "layer image cache hit");
                return Ok(CachedLayer {
                    image,
                    root_hash: record.root_hash,
                    converted: false,
                });
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let blob = self.content_dir.join("blobs/sha256").join(hex);
        let file = std::fs::File::open(&blob).map_err(|source| LayerCacheError::Blob {
            digest: digest.to_owned(),
            path: blob.display().to_string(),
            source,
        })?;
        let mut reader = std::io::BufReader::new(file);
        let magic = {
            use std::io::BufRead;
            reader
                .fill_buf()
                .map_err(Self::io(&blob))?
                .get(..4)
                .map(<[u8]>::to_vec)
        };
        let tar: Box<dyn Read> = match magic.as_deref() {
            Some([0x1f, 0x8b, ..]) => Box::new(flate2::read::GzDecoder::new(reader)),
            Some([0x28, 0xb5, 0x2f, 0xfd]) => return Err(LayerCacheError::Zstd(digest.to_owned())),
            _ => Box::new(reader),
        };
        let started = std::time::Instant::now();
        let temporary = tempfile::NamedTempFile::new_in(&self.dir).map_err(Self::io(&self.dir))?;
        let mut out = temporary
            .as_file()
            .try_clone()
            .map_err(Self::io(&self.dir))?;
        let converted =
            cloak_layers::convert(tar, &mut out).map_err(|err| LayerCacheError::Convert {
                digest: digest.to_owned(),
                reason: err.to_string(),
            })?;
        temporary
            .persist(&image)
            .map_err(|err| Self::io(&image)(err.error))?;
        let record = Record {
            root_hash: converted.verity.root_hex(),
            image_bytes: converted.image_bytes,
        };
        let json = serde_json::to_vec(&record).map_err(|err| Self::io(&record_path)(err.into()))?;
        std::fs::write(&record_path, json).map_err(Self::io(&record_path))?;
        tracing::info!(
            layer = %digest,
            root_hash = %record.root_hash,
            bytes = converted.image_bytes,
            millis = started.elapsed().as_millis() as u64,
            "layer image converted"
        );
        Ok(CachedLayer {
            image,
            root_hash: record.root_hash,
            converted: true,
        })
    }

    /// The cache's size in bytes and its number of layers.
    pub fn usage(&self) -> (u64, usize) {
        let mut bytes = 0;
        let mut layers = 0;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if let Ok(metadata) = entry.metadata() {
                bytes += metadata.len();
                if entry.path().extension().is_some_and(|e| e == "img") {
                    layers += 1;
                }
            }
        }
        (bytes, layers)
    }

    /// Removes every cached layer not in `keep` (digests); what was removed, in bytes.
    pub fn prune(&self, keep: &[String]) -> Result<u64, LayerCacheError> {
        let keep: Vec<&str> = keep.iter().filter_map(|d| hex_of(d).ok()).collect();
        let mut freed = 0;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            if keep.contains(&stem.as_str()) {
                continue;
            }
            freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(Self::io(&path))?;
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn layer_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(6);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "etc/hostname", &b"cache\n"[..])
            .unwrap_or_else(|err| panic!("{err}"));
        builder.into_inner().unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn a_layer_is_converted_once_then_found_and_pruned() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let content = dir.path().join("content");
        std::fs::create_dir_all(content.join("blobs/sha256")).unwrap_or_else(|err| panic!("{err}"));
        // A gzip blob, as registries serve layers.
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&layer_tar())
            .unwrap_or_else(|err| panic!("{err}"));
        let blob = gzip.finish().unwrap_or_else(|err| panic!("{err}"));
        let hex: String = sha2::Sha256::digest(&blob)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(content.join("blobs/sha256").join(&hex), &blob)
            .unwrap_or_else(|err| panic!("{err}"));
        let digest = format!("sha256:{hex}");
        let cache = LayerCache::new(&dir.path().join("cache"), &content);
        let first = cache.ensure(&digest).unwrap_or_else(|err| panic!("{err}"));
        let second = cache.ensure(&digest).unwrap_or_else(|err| panic!("{err}"));
        assert!(first.converted && !second.converted);
        assert_eq!(first.root_hash, second.root_hash);
        let mut direct = tempfile::tempfile().unwrap_or_else(|err| panic!("{err}"));
        let expected = cloak_layers::convert(&layer_tar()[..], &mut direct)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            first.root_hash,
            expected.verity.root_hex(),
            "the gzip layer's tar"
        );
        assert_eq!(cache.usage().1, 1);
        assert!(matches!(
            cache.ensure("sha256:00"),
            Err(LayerCacheError::Digest(_))
        ));
        assert_eq!(
            cache
                .prune(std::slice::from_ref(&digest))
                .unwrap_or_else(|err| panic!("{err}")),
            0
        );
        assert!(cache.prune(&[]).unwrap_or_else(|err| panic!("{err}")) > 0);
        assert_eq!(cache.usage(), (0, 0));
    }
}
