//! Shared helpers of cloak's integration tests and benchmarks: where the built artifacts are,
//! skipping (with the reason printed) when they or the host tools are missing, and making that
//! skip a failure where the suite is required to run everything (`CLOAK_REQUIRE_VM_TESTS=1`,
//! set by `make test` and CI).

pub mod bench;
pub mod containerd;
pub mod cri;
pub mod cri_compare;
pub mod cri_stream;
pub mod kbs;
pub mod leaks;
pub mod oci_image;
pub mod pod;
pub mod pod_starts;
pub mod rootfs;
pub mod soak;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cloak_host::config::Configuration;

/// Environment variables the Makefile sets for the suite.
pub const ENV_GUEST_DIR: &str = "CLOAK_GUEST_DIR";
pub const ENV_AGENT_BIN: &str = "CLOAK_AGENT_BIN";
pub const ENV_FLOOR_INIT_BIN: &str = "CLOAK_FLOOR_INIT_BIN";
pub const ENV_REQUIRE: &str = "CLOAK_REQUIRE_VM_TESTS";

/// Repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the repository")
        .to_owned()
}

pub fn image_config() -> cloak_image::ImageConfig {
    cloak_image::ImageConfig::load(&repo_root().join("configs/guest-image.toml"))
        .expect("configs/guest-image.toml parses")
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("CLOAK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

fn required() -> bool {
    std::env::var(ENV_REQUIRE).is_ok_and(|value| value == "1")
}

/// Prints why a test that needs hardware this host lacks (VMX/SVM, SEV-SNP) does not run.
/// Never a failure, not even where the suite must run everything: no setup step can add a
/// CPU feature. Such a test has a second path that proves its logic here.
pub fn skip_without_hardware(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: needs hardware this host lacks: {reason}");
}

/// Prints why a test does not run; fails instead where the suite must run everything.
pub fn skip(test: &str, reason: &str) {
    assert!(
        !required(),
        "{test}: cannot run ({reason}) but {ENV_REQUIRE}=1 requires it"
    );
    eprintln!("SKIPPED {test}: {reason}");
}

fn file_from_env(variable: &str) -> Result<PathBuf, String> {
    let value = std::env::var_os(variable)
        .ok_or_else(|| format!("{variable} is not set (run the suite with `make test`)"))?;
    let path = PathBuf::from(value);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{variable}={} does not exist", path.display()))
    }
}

/// What a VM test needs: the built guest image and the host tools of the qemu backend.
pub struct VmTestEnv {
    pub guest_dir: PathBuf,
    pub manifest: cloak_image::Manifest,
}

impl VmTestEnv {
    /// `None` (after printing why) when the test cannot run here.
    pub fn get(test: &str) -> Option<Self> {
        let guest_dir = match file_from_env(ENV_GUEST_DIR) {
            Ok(dir) => dir,
            Err(reason) => {
                skip(test, &reason);
                return None;
            }
        };
        for tool in ["qemu-system-x86_64", "vhost-device-vsock"] {
            if !on_path(tool) {
                skip(
                    test,
                    &format!("{tool} is not on PATH (scripts/setup-host.sh installs it)"),
                );
                return None;
            }
        }
        let manifest =
            cloak_image::Manifest::load(&guest_dir).expect("the guest image manifest loads");
        Some(Self {
            guest_dir,
            manifest,
        })
    }

    /// A configuration that boots this image with its run directory under `run_root`.
    pub fn configuration(&self, run_root: &Path) -> Configuration {
        let mut config = Configuration::default();
        config.guest.image_dir = self.guest_dir.clone();
        config.runtime.run_dir = run_root.to_owned();
        config.layers.cache_dir = run_root.join("layer-cache");
        config.agent.boot_timeout_secs = boot_timeout().as_secs();
        config
    }
}

/// The agent (or another init) binary for building test images.
pub fn init_binary(test: &str, variable: &str) -> Option<PathBuf> {
    match file_from_env(variable) {
        Ok(path) => Some(path),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// Generous: a 2-core host under load boots a TCG guest far slower than the ~4 s it takes idle.
pub fn boot_timeout() -> Duration {
    Duration::from_secs(90)
}

/// VMs under software emulation saturate this machine's 2 cores: one VM test at a time.
pub fn vm_slot() -> MutexGuard<'static, ()> {
    static SLOT: Mutex<()> = Mutex::new(());
    SLOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A binary of this workspace that cargo built beside the running test or benchmark
/// (`target/release/<name>`), unless the environment variable `variable` names one.
pub fn workspace_binary(name: &str, variable: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    if dir.ends_with("deps") {
        dir = dir.parent()?;
    }
    let candidate = dir.join(name);
    candidate.is_file().then_some(candidate)
}

/// True when every tool is on PATH; otherwise says which is missing and that
/// scripts/setup-host.sh installs it.
pub fn tools_on_path(test: &str, tools: &[&str]) -> bool {
    match tools.iter().find(|tool| !on_path(tool)) {
        Some(tool) => {
            skip(
                test,
                &format!("{tool} is not on PATH (scripts/setup-host.sh installs it)"),
            );
            false
        }
        None => true,
    }
}

/// The built `cloak` command, or `None` after saying why `test` cannot run.
pub fn cloak_binary(test: &str) -> Option<PathBuf> {
    let found = workspace_binary("cloak", "CLOAK_BIN");
    if found.is_none() {
        skip(
            test,
            "the cloak binary is not built (cargo build --release -p cloak)",
        );
    }
    found
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A line of `processes_mentioning` (`pid: command line`): the pid and the file name of the
/// executable.
pub fn pid_and_program(line: &str) -> Option<(u32, String)> {
    let (pid, command) = line.split_once(": ")?;
    let executable = command.split_whitespace().next()?;
    let name = Path::new(executable).file_name()?.to_string_lossy();
    Some((pid.parse().ok()?, name.into_owned()))
}

/// The pids among `lines` (as `processes_mentioning` gives them) whose executable's file name
/// starts with `program` (`""`: every line's).
pub fn pids_of(lines: &[String], program: &str) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|line| pid_and_program(line))
        .filter(|(_, name)| name.starts_with(program))
        .map(|(pid, _)| pid)
        .collect()
}

/// Host processes whose command line mentions `needle` (a test's private directory).
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(&needle)
                .then(|| format!("{}: {}", entry.file_name().to_string_lossy(), text.trim()))
        })
        .collect()
}

/// Unix sockets left anywhere below `dir`.
pub fn sockets_below(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_socket() {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Builds a guest image with `init` as /init into `out`, using the shared download cache.
pub fn build_image_with_init(
    init: &Path,
    out: &Path,
    adjust: impl FnOnce(&mut cloak_image::ImageConfig),
) -> cloak_image::Manifest {
    let mut config = image_config();
    adjust(&mut config);
    cloak_image::build_image(&cloak_image::BuildOptions {
        config,
        init_binary: init.to_owned(),
        out_dir: out.to_owned(),
        cache_dir: cache_dir(),
        source_date_epoch: 0,
    })
    .expect("guest image builds")
}

/// The initrd with one byte changed: one hex digit of the `tmp` directory's cpio mtime, so
/// the guest still boots the same way.
pub fn initrd_with_one_changed_byte(original: &Path, out: &Path) {
    use std::io::{Read as _, Write as _};
    let mut archive = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(original).expect("the initrd"))
        .read_to_end(&mut archive)
        .expect("a gzip initrd");
    const HEADER: usize = 110;
    const MTIME: usize = 6 + 5 * 8;
    let name = archive
        .windows(4)
        .enumerate()
        .position(|(at, window)| {
            window == b"tmp\0"
                && at >= HEADER
                && &archive[at - HEADER..at - HEADER + 6] == b"070701"
        })
        .expect("the initrd has a tmp directory entry");
    let digit = name - HEADER + MTIME + 7;
    archive[digit] = if archive[digit] == b'1' { b'2' } else { b'1' };
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(out).expect("the changed initrd"),
        Default::default(),
    );
    encoder.write_all(&archive).expect("writing the initrd");
    encoder.finish().expect("writing the initrd");
}
