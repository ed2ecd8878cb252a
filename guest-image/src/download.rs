//! Fetching the pinned kernel package with `apt-get download` into the cache, verified by
//! SHA-256. A cached file with the right hash is used as is: no network needed after that.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hashing::sha256_file_hex;
use crate::pin::KernelPin;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cache directory {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
    #[error("running apt-get: {0}")]
    Spawn(std::io::Error),
    #[error(
        "apt-get download {spec} failed: {stderr}\n\
         (is bookworm-backports in apt's sources and `apt-get update` done? \
         scripts/setup-host.sh sets both up)"
    )]
    Apt { spec: String, stderr: String },
    #[error("apt-get download {spec} produced no .deb file")]
    NoFile { spec: String },
    #[error("{path}: SHA-256 is {actual}, the pin says {expected}")]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

/// Returns the path of the verified .deb in `cache_dir/debs`, downloading it if needed.
pub fn fetch_kernel_deb(pin: &KernelPin, cache_dir: &Path) -> Result<PathBuf, DownloadError> {
    let debs = cache_dir.join("debs");
    let cache_err = |source| DownloadError::Cache {
        path: debs.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&debs).map_err(cache_err)?;
    let target = debs.join(format!(
        "{}_{}.deb",
        pin.package,
        pin.version.replace(':', "%3a")
    ));
    if target.exists() && verify(&target, &pin.sha256).is_ok() {
        tracing::debug!(path = %target.display(), "kernel package found in cache");
        return Ok(target);
    }

    // apt-get download writes into the current directory: use a private one so a concurrent
    // build never sees a half-written file under the final name.
    let staging = tempfile_dir(&debs).map_err(cache_err)?;
    let spec = format!("{}={}", pin.package, pin.version);
    tracing::info!(package = %spec, "downloading kernel package");
    let output = Command::new("apt-get")
        .args(["download", "-q", &spec])
        .current_dir(&staging)
        .output()
        .map_err(DownloadError::Spawn)?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(DownloadError::Apt {
            spec,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let downloaded = std::fs::read_dir(&staging)
        .map_err(cache_err)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"));
    let result = match downloaded {
        Some(file) => verify(&file, &pin.sha256)
            .and_then(|()| std::fs::rename(&file, &target).map_err(cache_err)),
        None => Err(DownloadError::NoFile { spec }),
    };
    let _ = std::fs::remove_dir_all(&staging);
    result.map(|()| target)
}

fn verify(path: &Path, expected: &str) -> Result<(), DownloadError> {
    let actual = sha256_file_hex(path).map_err(|source| DownloadError::Cache {
        path: path.display().to_string(),
        source,
    })?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(DownloadError::HashMismatch {
            path: path.display().to_string(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

fn tempfile_dir(parent: &Path) -> std::io::Result<PathBuf> {
    let dir = parent.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_file_with_the_wrong_hash_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.deb");
        std::fs::write(&file, b"not a deb").unwrap();
        let err = verify(&file, &"0".repeat(64)).unwrap_err();
        assert!(matches!(err, DownloadError::HashMismatch { .. }), "{err}");
    }
}
