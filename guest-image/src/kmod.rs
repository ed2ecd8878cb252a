//! Kernel module selection. Debian's package ships no modules.dep (depmod runs at install), so
//! dependencies are read from each module's `.modinfo` section (`depends=a,b`), and the load
//! order is a depth-first post-order: every module after everything it depends on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("module {name} is neither built into the kernel nor shipped as a module")]
    Unknown { name: String },
    #[error("{path}: not a kernel module ({reason})")]
    BadModule { path: String, reason: String },
}

/// A module ready for the initrd: decompressed contents and its path below `lib/modules/<rel>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    pub name: String,
    /// e.g. `kernel/net/vmw_vsock/vsock.ko` (the `.xz` suffix dropped).
    pub relative_path: PathBuf,
    pub contents: Vec<u8>,
}

/// The modules of one kernel release.
#[derive(Debug)]
pub struct ModuleIndex {
    root: PathBuf,
    /// name (with `_`) -> path relative to root, as shipped (maybe `.ko.xz`).
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// Kernel module names treat `-` and `_` alike; modinfo and modules.builtin use either.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleIndex {
    /// Scans `lib/modules/<release>` (the directory holding `kernel/` and `modules.builtin`).
    pub fn scan(root: &Path) -> Result<Self, ModuleError> {
        let mut files = BTreeMap::new();
        walk(root, Path::new("kernel"), &mut files)?;
        let builtin_path = root.join("modules.builtin");
        let builtin = std::fs::read_to_string(&builtin_path)
            .map_err(|source| ModuleError::Io {
                path: builtin_path.display().to_string(),
                source,
            })?
            .lines()
            .filter_map(module_name_of)
            .collect();
        Ok(Self {
            root: root.to_owned(),
            files,
            builtin,
        })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical_name(name))
    }

    /// Resolves `requested` and everything they depend on into load order. Built-in modules
    /// are left out; an unknown name is an error.
    pub fn resolve(&self, requested: &[String]) -> Result<Vec<ResolvedModule>, ModuleError> {
        let mut order = Vec::new();
        let mut visited = HashSet::new();
        for name in requested {
            self.visit(&canonical_name(name), &mut visited, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        visited: &mut HashSet<String>,
        order: &mut Vec<ResolvedModule>,
    ) -> Result<(), ModuleError> {
        if !visited.insert(name.to_owned()) || self.is_builtin(name) {
            return Ok(());
        }
        let relative = self.files.get(name).ok_or_else(|| ModuleError::Unknown {
            name: name.to_owned(),
        })?;
        let path = self.root.join(relative);
        let contents = read_module(&path)?;
        for dependency in modinfo_depends(&contents, &path)? {
            self.visit(&canonical_name(&dependency), visited, order)?;
        }
        order.push(ResolvedModule {
            name: name.to_owned(),
            relative_path: strip_compression_suffix(relative),
            contents,
        });
        Ok(())
    }
}

fn walk(
    root: &Path,
    relative: &Path,
    files: &mut BTreeMap<String, PathBuf>,
) -> Result<(), ModuleError> {
    let dir = root.join(relative);
    let entries = std::fs::read_dir(&dir).map_err(|source| ModuleError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ModuleError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let child = relative.join(entry.file_name());
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(root, &child, files)?;
        } else if let Some(name) = module_name_of(&child.to_string_lossy()) {
            files.insert(name, child);
        }
    }
    Ok(())
}

/// `kernel/net/vmw_vsock/vsock.ko.xz` -> `vsock`; anything not a module -> None.
fn module_name_of(path: &str) -> Option<String> {
    let file = path.trim().rsplit('/').next()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))?;
    Some(canonical_name(stem))
}

fn strip_compression_suffix(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    match text.strip_suffix(".xz") {
        Some(stripped) => PathBuf::from(stripped),
        None => path.to_owned(),
    }
}

fn read_module(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let io_err = |source| ModuleError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut contents = Vec::new();
    if path.extension().is_some_and(|ext| ext == "xz") {
        xz2::read::XzDecoder::new(file)
            .read_to_end(&mut contents)
            .map_err(io_err)?;
    } else {
        std::io::BufReader::new(file)
            .read_to_end(&mut contents)
            .map_err(io_err)?;
    }
    Ok(contents)
}

/// The `depends=` entry of a module's `.modinfo` section.
pub fn modinfo_depends(module: &[u8], path: &Path) -> Result<Vec<String>, ModuleError> {
    use object::{Object, ObjectSection};
    let bad = |reason: String| ModuleError::BadModule {
        path: path.display().to_string(),
        reason,
    };
    let elf = object::File::parse(module).map_err(|err| bad(err.to_string()))?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("no .modinfo section".to_owned()))?;
    let data = section.data().map_err(|err| bad(err.to_string()))?;
    Ok(data
        .split(|&byte| byte == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|name| !name.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_paths() {
        assert_eq!(
            module_name_of("kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz").as_deref(),
            Some("vmw_vsock_virtio_transport")
        );
        assert_eq!(
            module_name_of("kernel/drivers/md/dm-verity.ko").as_deref(),
            Some("dm_verity")
        );
        assert_eq!(module_name_of("kernel/modules.order"), None);
        assert_eq!(
            strip_compression_suffix(Path::new("kernel/a.ko.xz")),
            PathBuf::from("kernel/a.ko")
        );
    }

    #[test]
    fn garbage_is_not_a_module() {
        let err = modinfo_depends(b"not an elf", Path::new("x.ko")).unwrap_err();
        assert!(matches!(err, ModuleError::BadModule { .. }));
    }
}
