//! Unpacking the parts of a Debian package the image needs (the kernel image and its modules)
//! without dpkg: a .deb is an `ar` archive whose `data.tar.xz` holds the files.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no data.tar.xz member (is it a Debian package?)")]
    NoData { path: String },
    #[error("{path}: data member {member} uses an unsupported compression")]
    Compression { path: String, member: String },
}

/// Extracts the members of `deb`'s data archive whose paths start with one of `prefixes`
/// (e.g. `boot/`, `lib/modules/`) into `dest`, which is created.
pub fn extract_data(deb: &Path, dest: &Path, prefixes: &[&str]) -> Result<(), DebError> {
    let io_err = |source| DebError::Io {
        path: deb.display().to_string(),
        source,
    };
    let file = std::fs::File::open(deb).map_err(io_err)?;
    let mut archive = ar::Archive::new(file);
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(io_err)?;
        let member = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !member.starts_with("data.tar") {
            continue;
        }
        if member != "data.tar.xz" {
            return Err(DebError::Compression {
                path: deb.display().to_string(),
                member,
            });
        }
        let decoder = xz2::read::XzDecoder::new(entry);
        return unpack_selected(decoder, dest, prefixes).map_err(io_err);
    }
    Err(DebError::NoData {
        path: deb.display().to_string(),
    })
}

fn unpack_selected(reader: impl Read, dest: &Path, prefixes: &[&str]) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = normalized(&entry.path()?);
        let text = path.to_string_lossy();
        if prefixes.iter().any(|prefix| text.starts_with(prefix)) {
            // unpack_in refuses paths that would escape dest.
            entry.unpack_in(dest)?;
        }
    }
    Ok(())
}

/// `./lib/modules/x` -> `lib/modules/x`.
fn normalized(path: &Path) -> PathBuf {
    path.components()
        .filter(|component| matches!(component, Component::Normal(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_leading_dot() {
        assert_eq!(
            normalized(Path::new("./lib/modules/6.1/a.ko")),
            PathBuf::from("lib/modules/6.1/a.ko")
        );
    }

    #[test]
    fn unpacks_only_selected_prefixes() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [("./boot/vmlinuz-1", b"k".as_slice()), ("./etc/x", b"e")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack_selected(bytes.as_slice(), dir.path(), &["boot/"]).unwrap();
        assert!(dir.path().join("boot/vmlinuz-1").exists());
        assert!(!dir.path().join("etc/x").exists());
    }
}
