//! `cloak firmware build`: the OVMF AmdSev firmware SNP pods boot with on the qemu backend,
//! built from Debian's `edk2` source package because Debian ships no AmdSev build (its `ovmf`
//! package is OvmfX64 only: no kernel-hashes table, so `kernel-hashes=on` cannot measure the
//! guest's kernel). Debian 13's package is used: Debian 12's edk2 (2022.11) predates the SEV
//! metadata section for the kernel hashes (type 0x10), without which QEMU cannot measure a
//! kernel into an SNP guest. The source is fetched with `apt-get source` from a `deb-src` entry
//! in a private apt directory (the host's sources stay untouched) and pinned by version and by
//! the SHA-256 of its two tarballs (apt checks them against the signed index too); they are
//! fetched as `--tar-only` and `--diff-only` because the archive mirrors reached here do not
//! always serve the `.dsc` of a point release. The upstream tarball is unpacked afresh into the
//! same path each time, Debian's patches applied in their series order, and the platform built
//! with the host's gcc, nasm, iasl and python3, so two builds give the same bytes.
//!
//! The AmdSev platform embeds GRUB for booting encrypted disks; cloak boots the kernel QEMU
//! hands over (direct kernel boot, measured through the hashes table), so the GRUB binary is
//! an empty placeholder file and GRUB itself is never built.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use sha2::{Digest as _, Sha256};

/// Debian 13's edk2 source package.
const EDK2_VERSION: &str = "2025.02-8+deb13u1";
const EDK2_SUITE: &str = "trixie";
/// The upstream tarball (unpacks to `edk2-2025.02`) and Debian's packaging, with SHA-256.
const EDK2_UPSTREAM: (&str, &str) = (
    "edk2_2025.02.orig.tar.xz",
    "b63b6053d6d89c74d9291f9e96fde1584be99e6fb9c169ba9511505129d6b049",
);
const EDK2_UPSTREAM_DIR: &str = "edk2-2025.02";
const EDK2_DEBIAN: (&str, &str) = (
    "edk2_2025.02-8+deb13u1.debian.tar.xz",
    "e2a7f6fc58640818416a028d6d5e9dfc255697a7cdc60c14566c236df6bd9b08",
);
const DEBIAN_ARCHIVE: &str = "http://deb.debian.org/debian";
const PLATFORM: &str = "OvmfPkg/AmdSev/AmdSevX64.dsc";
/// What the build writes, below the unpacked source.
const BUILT_IMAGE: &str = "Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd";
const GRUB_PLACEHOLDER: &str = "OvmfPkg/AmdSev/Grub/grub.efi";
/// The path the build sees its tree at, whatever the cache directory: edk2 writes the
/// workspace path into the image, so the build runs through this fixed symbolic link to the
/// tree (edk2 takes its workspace from the shell's logical working directory).
fn fixed_workspace() -> PathBuf {
    PathBuf::from(format!("/tmp/cloak-firmware-edk2-{EDK2_VERSION}"))
}
/// Build tools and the Debian package that has each.
const TOOLS: [(&str, &str); 9] = [
    ("gcc", "gcc"),
    ("g++", "g++"),
    ("make", "make"),
    ("nasm", "nasm"),
    ("iasl", "acpica-tools"),
    ("python3", "python3"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("patch", "patch"),
];
const UUID_HEADER: &str = "/usr/include/uuid/uuid.h";

#[derive(Subcommand)]
pub(crate) enum FirmwareCommand {
    /// Build OVMF AmdSev (with the kernel-hashes table) reproducibly from Debian's edk2 source.
    Build(BuildArgs),
}

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// Where to write the firmware image.
    #[arg(long, default_value = "build/firmware/OVMF.amdsev.fd")]
    out: PathBuf,
    /// Downloaded sources and the build tree are kept below <cache-dir>/firmware.
    #[arg(long, env = "CLOAK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Parallel build jobs.
    #[arg(long, default_value_t = 2)]
    jobs: u32,
}

pub(crate) fn run(command: FirmwareCommand) -> anyhow::Result<()> {
    match command {
        FirmwareCommand::Build(args) => build(&args),
    }
}

/// The build, as named steps in order.
fn build(args: &BuildArgs) -> anyhow::Result<()> {
    let work = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::image::default_cache_dir)
        .join("firmware");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // The tools run in other directories: every path they get is absolute.
    let work = work.canonicalize()?;
    let started = Instant::now();
    step("checking the build tools", check_tools)?;
    let downloads = work.join("download");
    step("fetching the edk2 source package", || {
        fetch_source(&work, &downloads)
    })?;
    let source = work.join(format!("edk2-{EDK2_VERSION}"));
    step("unpacking it and applying Debian's patches", || {
        unpack(&downloads, &work, &source)
    })?;
    step("building edk2's BaseTools", || {
        run_logged(
            Command::new("make")
                .args(["-C", "BaseTools"])
                .current_dir(&source),
            &work.join("basetools.log"),
        )
    })?;
    step("building OvmfPkg/AmdSev/AmdSevX64 (RELEASE, GCC5)", || {
        build_platform(&source, &work, args.jobs)
    })?;
    let digest = step("installing the image", || install(&source, &args.out))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "OVMF AmdSev from Debian edk2 {EDK2_VERSION} in {}: sha256 {digest}, built in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

fn step<T>(name: &str, work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    let result = work().with_context(|| format!("firmware build: {name}"));
    if result.is_ok() {
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(step = name, seconds, "firmware build step done");
        let _ = writeln!(std::io::stderr(), "firmware: {name} ({seconds:.1} s)");
    }
    result
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn check_tools() -> anyhow::Result<()> {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    if !Path::new(UUID_HEADER).is_file() {
        missing.push("uuid-dev");
    }
    if !missing.is_empty() {
        bail!(
            "missing build tools: apt-get install {} (scripts/setup-host.sh installs them)",
            missing.join(" ")
        );
    }
    Ok(())
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn pinned(path: &Path, sha256: &str) -> anyhow::Result<bool> {
    Ok(path.is_file() && sha256_of(path)? == sha256)
}

/// The two pinned tarballs in `downloads`, fetched unless already there.
fn fetch_source(work: &Path, downloads: &Path) -> anyhow::Result<()> {
    let wanted = [EDK2_UPSTREAM, EDK2_DEBIAN];
    let mut have = true;
    for (name, sha256) in wanted {
        have &= pinned(&downloads.join(name), sha256)?;
    }
    if have {
        return Ok(());
    }
    let apt = work.join("apt");
    std::fs::create_dir_all(apt.join("lists/partial"))?;
    std::fs::create_dir_all(apt.join("cache/archives/partial"))?;
    std::fs::create_dir_all(apt.join("sources.list.d"))?;
    std::fs::create_dir_all(downloads)?;
    let sources = apt.join("sources.list");
    std::fs::write(
        &sources,
        format!("deb-src {DEBIAN_ARCHIVE} {EDK2_SUITE} main\n"),
    )?;
    let options = [
        format!("Dir::Etc::sourcelist={}", sources.display()),
        format!(
            "Dir::Etc::sourceparts={}",
            apt.join("sources.list.d").display()
        ),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
        "APT::Sandbox::User=root".to_owned(),
    ];
    let apt_get = |extra: &[&str]| -> anyhow::Result<()> {
        let mut command = Command::new("apt-get");
        for option in &options {
            command.args(["-o", option]);
        }
        run_logged(
            command.args(extra).current_dir(downloads),
            &work.join("apt.log"),
        )
    };
    let package = format!("edk2={EDK2_VERSION}");
    apt_get(&["update", "-q"])?;
    apt_get(&["source", "--download-only", "--tar-only", "-q", &package])?;
    apt_get(&["source", "--download-only", "--diff-only", "-q", &package])?;
    for (name, sha256) in wanted {
        let path = downloads.join(name);
        let found = sha256_of(&path)?;
        if found != sha256 {
            bail!("{name} has SHA-256 {found}, pinned {sha256}");
        }
    }
    Ok(())
}

/// A fresh tree at the same path every time (paths end up in build outputs): the upstream
/// tarball, Debian's packaging in `debian/`, Debian's patches applied in series order.
fn unpack(downloads: &Path, work: &Path, source: &Path) -> anyhow::Result<()> {
    for dir in [source.to_owned(), work.join(EDK2_UPSTREAM_DIR)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the old tree {}", dir.display()))?;
        }
    }
    let log = work.join("unpack.log");
    run_logged(
        Command::new("tar")
            .arg("-xf")
            .arg(downloads.join(EDK2_UPSTREAM.0))
            .arg("-C")
            .arg(work),
        &log,
    )?;
    std::fs::rename(work.join(EDK2_UPSTREAM_DIR), source)?;
    run_logged(
        Command::new("tar")
            .arg("-xf")
            .arg(downloads.join(EDK2_DEBIAN.0))
            .arg("-C")
            .arg(source),
        &log,
    )?;
    let series = std::fs::read_to_string(source.join("debian/patches/series"))
        .context("reading debian/patches/series")?;
    for patch in series
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
    {
        let file = std::fs::File::open(source.join("debian/patches").join(patch))
            .with_context(|| format!("opening the patch {patch}"))?;
        run_logged(
            Command::new("patch")
                .args(["-p1", "--forward", "--no-backup-if-mismatch"])
                .stdin(file)
                .current_dir(source),
            &work.join("patch.log"),
        )
        .with_context(|| format!("applying Debian's patch {patch}"))?;
    }
    Ok(())
}

fn build_platform(source: &Path, work: &Path, jobs: u32) -> anyhow::Result<()> {
    let grub = source.join(GRUB_PLACEHOLDER);
    std::fs::write(&grub, b"").with_context(|| format!("writing {}", grub.display()))?;
    let workspace = fixed_workspace();
    match std::fs::symlink_metadata(&workspace) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&workspace)?,
        Ok(_) => bail!(
            "{} exists and is not cloak's link: remove it",
            workspace.display()
        ),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(source, &workspace)
        .with_context(|| format!("linking {} to {}", workspace.display(), source.display()))?;
    let built = build_in(&workspace, work, jobs);
    let _ = std::fs::remove_file(&workspace);
    built
}

fn build_in(workspace: &Path, work: &Path, jobs: u32) -> anyhow::Result<()> {
    let script = format!(
        "set -e; . ./edksetup.sh >/dev/null; build -a X64 -t GCC5 -b RELEASE -p {PLATFORM} -n {jobs}"
    );
    let mut command = Command::new("bash");
    command
        .args(["-c", &script])
        .current_dir(workspace)
        .env("PWD", workspace)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("PYTHON3_ENABLE", "TRUE");
    // edk2 takes its workspace from these when set: the tree being built, never another.
    for variable in [
        "WORKSPACE",
        "EDK_TOOLS_PATH",
        "CONF_PATH",
        "PACKAGES_PATH",
        "EFI_SOURCE",
    ] {
        command.env_remove(variable);
    }
    run_logged(&mut command, &work.join("build.log"))
}

fn install(source: &Path, out: &Path) -> anyhow::Result<String> {
    let built = source.join(BUILT_IMAGE);
    if !cloak_launch::ovmf::has_kernel_hashes_table(&built)? {
        bail!(
            "{} has no SNP kernel-hashes section: not an AmdSev build",
            built.display()
        );
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let partial = out.with_extension("partial");
    std::fs::copy(&built, &partial)
        .with_context(|| format!("copying {} to {}", built.display(), partial.display()))?;
    std::fs::rename(&partial, out)?;
    sha256_of(out)
}

/// Runs `command` with its output in `log`; on failure says where, with the log's tail.
fn run_logged(command: &mut Command, log: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("starting {program}"))?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    bail!(
        "{program} failed ({status}); its output is in {}:\n{}",
        log.display(),
        tail.join("\n")
    )
}
