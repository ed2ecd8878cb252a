//! `cloak image build`: the steps from a pinned Debian kernel package and an agent binary to
//! `vmlinuz`, `initrd.img` and `manifest.json`. Every output is a pure function of the inputs:
//! sorted archive entries, fixed timestamps and owners, and a gzip header without a date.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};

use crate::cpio::{Archive, EntryKind};
use crate::deb::{self, DebError};
use crate::download::{self, DownloadError};
use crate::hashing::sha256_hex;
use crate::kmod::{ModuleError, ModuleIndex};
use crate::manifest::{InitrdInfo, KernelInfo, Manifest, FORMAT_VERSION, MANIFEST_FILE};
use crate::pin::ImageConfig;
use crate::progress::Progress;

pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";
/// Where the agent finds its module list (one `name path` per line, in load order).
pub const MODULE_LIST_PATH: &str = "etc/cloak/modules";

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub config: ImageConfig,
    /// The binary installed as `/init` (cloak-agent, or a test init).
    pub init_binary: PathBuf,
    pub out_dir: PathBuf,
    /// Downloads and unpacked kernels are kept here between builds.
    pub cache_dir: PathBuf,
    /// Timestamp stamped on every initrd entry (SOURCE_DATE_EPOCH).
    pub source_date_epoch: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: expected exactly one kernel release under lib/modules, found {found:?}")]
    KernelLayout { path: String, found: Vec<String> },
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Builds the image into `options.out_dir` and returns its manifest.
pub fn build_image(options: &BuildOptions) -> Result<Manifest, BuildError> {
    let mut progress = Progress::new(5);
    let pin = &options.config.kernel;

    progress.step(&format!("fetching {}={}", pin.package, pin.version));
    let deb_path = download::fetch_kernel_deb(pin, &options.cache_dir)?;

    progress.step("unpacking kernel and modules");
    let unpacked = unpack_kernel(&deb_path, &options.cache_dir, &pin.package, &pin.version)?;
    let release = kernel_release(&unpacked)?;
    let modules_root = unpacked.join("lib/modules").join(&release);

    progress.step("resolving kernel modules");
    let index = ModuleIndex::scan(&modules_root)?;
    let modules = index.resolve(&options.config.modules.load)?;

    progress.step("writing the initrd");
    let init = std::fs::read(&options.init_binary)
        .map_err(io_error("reading the init binary", &options.init_binary))?;
    let init_sha256 = sha256_hex(&init);
    let mut archive = base_archive(init);
    let mut module_list = String::from("# name path-below-/lib/modules, in load order\n");
    for module in &modules {
        let relative = Path::new(&release).join(&module.relative_path);
        let relative = relative.to_string_lossy();
        archive.add_file(
            &format!("lib/modules/{relative}"),
            0o644,
            module.contents.clone(),
        );
        module_list.push_str(&format!("{} {relative}\n", module.name));
    }
    archive.add_file(MODULE_LIST_PATH, 0o644, module_list.into_bytes());
    let initrd = compress(&archive, options.source_date_epoch)
        .map_err(io_error("compressing the initrd for", &options.out_dir))?;

    progress.step("writing kernel, initrd and manifest");
    std::fs::create_dir_all(&options.out_dir).map_err(io_error("creating", &options.out_dir))?;
    let kernel_source = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    let kernel = std::fs::read(&kernel_source).map_err(io_error("reading", &kernel_source))?;
    write_atomically(&options.out_dir.join(KERNEL_FILE), &kernel)?;
    write_atomically(&options.out_dir.join(INITRD_FILE), &initrd)?;

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        kernel: KernelInfo {
            file: KERNEL_FILE.to_owned(),
            sha256: sha256_hex(&kernel),
            release,
            package: pin.package.clone(),
            package_version: pin.version.clone(),
        },
        initrd: InitrdInfo {
            file: INITRD_FILE.to_owned(),
            sha256: sha256_hex(&initrd),
            size: initrd.len() as u64,
            compression: "gzip".to_owned(),
            init_sha256,
        },
        cmdline: options.config.cmdline.default.clone(),
        modules: modules.iter().map(|module| module.name.clone()).collect(),
    };
    write_atomically(
        &options.out_dir.join(MANIFEST_FILE),
        manifest.to_json().as_bytes(),
    )?;
    tracing::info!(
        out = %options.out_dir.display(),
        kernel = %manifest.kernel.release,
        initrd_bytes = manifest.initrd.size,
        modules = manifest.modules.len(),
        "guest image built"
    );
    Ok(manifest)
}

/// The skeleton every initrd has: `/init`, the console node the kernel opens for it, and the
/// mount points PID 1 uses.
fn base_archive(init: Vec<u8>) -> Archive {
    let mut archive = Archive::new();
    archive.add_file("init", 0o755, init);
    archive.add(
        "dev/console",
        0o600,
        EntryKind::CharDevice { major: 5, minor: 1 },
    );
    archive.add(
        "dev/null",
        0o666,
        EntryKind::CharDevice { major: 1, minor: 3 },
    );
    for dir in ["proc", "sys", "run", "tmp", "etc", "mnt", "root"] {
        archive.add_dir(dir, 0o755);
    }
    archive
}

fn compress(archive: &Archive, mtime: u32) -> std::io::Result<Vec<u8>> {
    // No file name and a zero date in the gzip header: only the contents decide the bytes.
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    archive.write_newc(mtime, &mut encoder)?;
    encoder.finish()
}

/// Unpacks `boot/` and `lib/modules/` of the package once into the cache.
fn unpack_kernel(
    deb_path: &Path,
    cache_dir: &Path,
    package: &str,
    version: &str,
) -> Result<PathBuf, BuildError> {
    let dest = cache_dir
        .join("kernels")
        .join(format!("{package}_{}", version.replace(':', "%3a")));
    let complete_marker = dest.join(".complete");
    if complete_marker.exists() {
        return Ok(dest);
    }
    let staging = dest.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    deb::extract_data(deb_path, &staging, &["boot/", "lib/modules/"])?;
    std::fs::write(staging.join(".complete"), b"")
        .map_err(io_error("marking complete", &staging))?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&staging, &dest).map_err(io_error("moving into place", &dest))?;
    Ok(dest)
}

fn kernel_release(unpacked: &Path) -> Result<String, BuildError> {
    let modules = unpacked.join("lib/modules");
    let mut found: Vec<String> = std::fs::read_dir(&modules)
        .map_err(io_error("listing", &modules))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    match found.as_slice() {
        [release] => Ok(release.clone()),
        _ => Err(BuildError::KernelLayout {
            path: modules.display().to_string(),
            found,
        }),
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), BuildError> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io_error("creating", &temporary))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error("renaming into", path))
}
