//! Leftover pod directories: a node that rebooted, or a shim that died where containerd never
//! ran its cleanup, leaves pod directories below the run directory (sockets, pid files, a
//! shared-directory mount). Each new pod sweeps them — but only what belongs to no live pod:
//! a pod's shim holds an exclusive lock on its directory's `owner.lock` for the pod's life, no
//! process of a live pod is unaccounted for (every VMM and helper names its pod directory on
//! its command line), and a directory changed in the last moments may be a pod that is being
//! set up right now. Pid files are never trusted after a reboot (pids are reused): the sweep
//! kills nothing, it only removes files.
//!
//! A dead VM's console log is kept for the post-mortem, as everywhere else, and removed with
//! its directory once it is older than `CONSOLE_LOG_RETENTION`.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::host_mounts;
use crate::run_dir::CONSOLE_LOG;

/// The lock a pod's shim holds on its pod directory.
pub const OWNER_LOCK: &str = "owner.lock";
/// A directory changed this recently may be a pod being set up (its lock not yet taken).
pub const SETUP_GRACE: Duration = Duration::from_secs(60);
/// How long a dead pod's console log is kept.
pub const CONSOLE_LOG_RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mount(#[from] host_mounts::MountError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Held by a pod's shim while the pod lives: the exclusive lock on `<pod_dir>/owner.lock`.
/// Released when dropped or when the process dies, whatever way it dies.
#[derive(Debug)]
pub struct PodDirOwner {
    _lock: File,
}

impl PodDirOwner {
    /// Creates `pod_dir` if needed and takes its lock.
    pub fn take(pod_dir: &Path) -> Result<Self, SweepError> {
        std::fs::create_dir_all(pod_dir).map_err(io_error(pod_dir))?;
        let path = pod_dir.join(OWNER_LOCK);
        let lock = File::create(&path).map_err(io_error(&path))?;
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io_error(&path)(std::io::Error::last_os_error()));
        }
        Ok(Self { _lock: lock })
    }
}

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Directories emptied but for their console log.
    pub cleaned: Vec<PathBuf>,
    /// Directories removed whole (nothing but an expired console log was left).
    pub removed: Vec<PathBuf>,
}

/// Sweeps `run_root`'s pod directories that belong to no live pod, `now` being the time the
/// grace and retention periods count from.
pub fn sweep(run_root: &Path, now: SystemTime) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(run_root) else {
        return swept;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) || is_live(&dir, now) {
            continue;
        }
        match sweep_one(&dir, now) {
            Ok(Some(Outcome::Cleaned)) => swept.cleaned.push(dir),
            Ok(Some(Outcome::Removed)) => swept.removed.push(dir),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "sweeping a leftover pod directory")
            }
        }
    }
    for dir in &swept.cleaned {
        tracing::info!(dir = %dir.display(), "leftover pod directory cleaned (console log kept)");
    }
    for dir in &swept.removed {
        tracing::info!(dir = %dir.display(), "leftover pod directory removed");
    }
    swept
}

enum Outcome {
    Cleaned,
    Removed,
}

/// A pod lives in `dir` if its lock is held, a process names it, or it changed too recently
/// to tell.
fn is_live(dir: &Path, now: SystemTime) -> bool {
    lock_is_held(&dir.join(OWNER_LOCK))
        || !processes_mentioning(dir).is_empty()
        || modified(dir).is_some_and(|at| now.duration_since(at).unwrap_or_default() < SETUP_GRACE)
}

fn sweep_one(dir: &Path, now: SystemTime) -> Result<Option<Outcome>, SweepError> {
    let mut left_console = None;
    let mut cleaned_any = false;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))?.flatten() {
        let path = entry.path();
        if entry.file_name() == CONSOLE_LOG {
            left_console = Some(path);
            continue;
        }
        cleaned_any = true;
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            // The shared directory may still be mounted (and have mounts below).
            host_mounts::unmount_and_remove(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    let expired = left_console.as_deref().is_none_or(|log| {
        modified(log)
            .is_some_and(|at| now.duration_since(at).unwrap_or_default() >= CONSOLE_LOG_RETENTION)
    });
    if expired {
        std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
        return Ok(Some(Outcome::Removed));
    }
    Ok(cleaned_any.then_some(Outcome::Cleaned))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(path).ok()?.modified().ok()
}

/// Whether another process holds `lock` (a missing file is no lock).
fn lock_is_held(lock: &Path) -> bool {
    let Ok(file) = File::open(lock) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    // Our probe lock goes with the descriptor.
    !taken
}

/// Processes other than this one whose command line names `dir`: a pod's VMM and helpers take
/// their sockets and files from its directory, which is unique to the pod.
pub fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn leftover(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("shared/rootfs")).expect("mkdir");
        std::fs::write(dir.join("qemu.pid"), "1\n").expect("pid file");
        std::fs::write(dir.join("vsock.sock"), "").expect("socket stand-in");
        std::fs::write(dir.join(CONSOLE_LOG), "[    0.1] boot\n").expect("console");
        dir
    }

    #[test]
    fn a_leftover_loses_all_but_its_console_log_until_that_expires() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = leftover(root.path(), "dead-pod");
        // Right after the reboot: too fresh to tell, nothing touched.
        assert_eq!(sweep(root.path(), SystemTime::now()), Swept::default());
        let later = SystemTime::now() + 2 * SETUP_GRACE;
        assert_eq!(sweep(root.path(), later).cleaned, vec![dir.clone()]);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CONSOLE_LOG)]);
        // Nothing more to do until the console log expires, then the directory goes.
        assert_eq!(sweep(root.path(), later), Swept::default());
        let expired = SystemTime::now() + CONSOLE_LOG_RETENTION + HOUR;
        assert_eq!(sweep(root.path(), expired).removed, vec![dir.clone()]);
        assert!(!dir.exists());
    }

    #[test]
    fn a_pod_whose_lock_is_held_or_whose_process_runs_is_left_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        let locked = leftover(root.path(), "locked-pod");
        let owner = PodDirOwner::take(&locked).expect("lock");
        let running = leftover(root.path(), "running-pod");
        // `; :` keeps the shell from exec'ing sleep, so its command line (naming the
        // directory as $0) stays; until the child has exec'd, its command line is ours.
        let mut process = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 30; :")
            .arg(&running)
            .spawn()
            .expect("sh");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while processes_mentioning(&running).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let later = SystemTime::now() + 2 * SETUP_GRACE;
        assert_eq!(sweep(root.path(), later), Swept::default());
        assert!(locked.join("qemu.pid").exists() && running.join("qemu.pid").exists());
        // Once the lock is released and the process gone, both are leftovers.
        drop(owner);
        let _ = process.kill();
        let _ = process.wait();
        let mut cleaned = sweep(root.path(), later).cleaned;
        cleaned.sort();
        assert_eq!(cleaned, vec![locked, running]);
    }

    #[test]
    fn a_second_owner_of_a_pod_directory_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("pod");
        let _first = PodDirOwner::take(&dir).expect("first lock");
        // flock locks belong to open file descriptions: a second open conflicts.
        assert!(PodDirOwner::take(&dir).is_err());
    }
}
