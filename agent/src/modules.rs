//! Kernel modules listed by the guest image, loaded in the order the image builder resolved
//! (dependencies first). Module files are stored decompressed, so `finit_module` takes them as
//! they are and the agent needs no decompressor.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::kmod::{finit_module, ModuleInitFlags};

/// Written by the image builder: one `name relative/path.ko` per line, in load order.
pub(crate) const MODULE_LIST: &str = "/etc/cloak/modules";
const MODULE_ROOT: &str = "/lib/modules";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleEntry {
    pub name: String,
    pub path: PathBuf,
}

/// Parses the module list; blank lines and `#` comments are skipped.
pub(crate) fn parse_module_list(text: &str) -> Vec<ModuleEntry> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (name, path) = line.split_once(char::is_whitespace)?;
            Some(ModuleEntry {
                name: name.to_owned(),
                path: Path::new(MODULE_ROOT).join(path.trim()),
            })
        })
        .collect()
}

/// Loads every listed module; returns the names that are loaded afterwards. A module that fails
/// to load is logged and skipped: some are expected to refuse (sev-guest without SNP), and a
/// missing essential one (vsock) shows up as a clear error when the agent binds its socket.
pub(crate) fn load_listed_modules(list: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(err) => {
            tracing::warn!(list = %list.display(), error = %err, "no module list, loading none");
            return Vec::new();
        }
    };
    let started = std::time::Instant::now();
    let mut loaded = Vec::new();
    for entry in parse_module_list(&text) {
        match load_module(&entry.path) {
            Ok(()) => loaded.push(entry.name),
            Err(nix::errno::Errno::EEXIST) => loaded.push(entry.name),
            Err(errno) => {
                tracing::warn!(module = %entry.name, error = %errno, "module did not load")
            }
        }
    }
    tracing::info!(
        count = loaded.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "kernel modules loaded"
    );
    loaded
}

fn load_module(path: &Path) -> Result<(), nix::errno::Errno> {
    let file = std::fs::File::open(path)
        .map_err(|err| nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(libc::ENOENT)))?;
    let no_params = CString::default();
    finit_module(&file, &no_params, ModuleInitFlags::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_keeps_order_and_skips_comments() {
        let entries = parse_module_list(
            "# load order\nvsock kernel/net/vmw_vsock/vsock.ko\n\n virtio_mmio  kernel/drivers/virtio/virtio_mmio.ko \n",
        );
        assert_eq!(
            entries,
            vec![
                ModuleEntry {
                    name: "vsock".into(),
                    path: PathBuf::from("/lib/modules/kernel/net/vmw_vsock/vsock.ko"),
                },
                ModuleEntry {
                    name: "virtio_mmio".into(),
                    path: PathBuf::from("/lib/modules/kernel/drivers/virtio/virtio_mmio.ko"),
                },
            ]
        );
    }

    #[test]
    fn missing_list_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_listed_modules(&dir.path().join("absent")).is_empty());
    }
}
