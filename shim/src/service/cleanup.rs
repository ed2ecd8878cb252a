//! `containerd-shim-cloak-v2 delete`: containerd runs it in a container's bundle after the
//! shim serving it died. With the shim gone its whole pod is dead: every host process of the
//! pod VM is killed, the pod's mounts are undone and its sockets removed. The console log
//! stays for the post-mortem.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::api::DeleteResponse;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::bundle::PodRecord;
use super::events::timestamp;
use cloak_host::host_mounts;

/// What containerd is told about the container of a dead shim: killed.
const DEAD_SHIM_EXIT_STATUS: u32 = 128 + libc::SIGKILL as u32;

pub fn after_dead_shim(bundle: &Path, container_id: &str) -> DeleteResponse {
    // containerd also runs `delete` when it merely closed its connection for one container
    // of a pod whose shim still serves the others: then there is nothing to clean.
    if shim_serves(bundle) {
        tracing::info!(container = %container_id, "the pod's shim still serves: nothing to clean");
    } else {
        match PodRecord::read(bundle) {
            Ok(Some(record)) => clean_pod(&record),
            Ok(None) => tracing::info!(container = %container_id, "no pod recorded in the bundle"),
            Err(err) => {
                tracing::warn!(container = %container_id, error = %err, "reading the pod record")
            }
        }
        remove_shim_socket(bundle);
    }
    DeleteResponse {
        pid: 0,
        exit_status: DEAD_SHIM_EXIT_STATUS,
        exited_at: Some(timestamp(SystemTime::now())).into(),
        ..Default::default()
    }
}

/// The `delete` action: cleans up and writes the DeleteResponse containerd reads.
pub fn run_delete(flags: &containerd_shim::Flags) -> anyhow::Result<()> {
    use containerd_shim::protos::protobuf::Message;
    use std::io::Write;
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir()?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let response = after_dead_shim(&bundle, &flags.id);
    let mut stdout = std::io::stdout();
    stdout.write_all(&response.write_to_bytes()?)?;
    stdout.flush()?;
    Ok(())
}

fn clean_pod(record: &PodRecord) {
    let pids = cloak_host::run_dir_sweep::processes_mentioning(&record.pod_dir);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(err) = host_mounts::unmount_and_remove(&record.shared_dir()) {
        tracing::warn!(pod = %record.pod_id, error = %err, "removing the shared directory");
    }
    keep_only_console_log(&record.pod_dir);
}

fn keep_only_console_log(pod_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(pod_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|name| name == cloak_host::run_dir::CONSOLE_LOG)
        {
            continue;
        }
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

/// The shim's own socket, named in the bundle's `address` file.
fn shim_socket(bundle: &Path) -> Option<PathBuf> {
    let address = std::fs::read_to_string(bundle.join("address")).ok()?;
    let path = PathBuf::from(super::server::socket_path(address.trim()));
    path.is_absolute().then_some(path)
}

fn shim_serves(bundle: &Path) -> bool {
    shim_socket(bundle).is_some_and(|path| std::os::unix::net::UnixStream::connect(path).is_ok())
}

fn remove_shim_socket(bundle: &Path) {
    if let Some(path) = shim_socket(bundle) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_found_by_their_pod_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pod_dir = dir.path().join("pod-x");
        // The trailing `:` keeps the shell from replacing itself with sleep, so its own
        // command line (which names the directory as $0) stays.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 30; :")
            .arg(&pod_dir)
            .spawn()
            .expect("sh");
        // Until the child has exec'd, its command line is still ours.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = cloak_host::run_dir_sweep::processes_mentioning(&pod_dir);
        while found.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            found = cloak_host::run_dir_sweep::processes_mentioning(&pod_dir);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
        assert!(
            cloak_host::run_dir_sweep::processes_mentioning(&dir.path().join("other")).is_empty()
        );
    }

    #[test]
    fn a_bundle_without_a_record_still_answers() {
        let bundle = tempfile::tempdir().expect("temp dir");
        let response = after_dead_shim(bundle.path(), "c");
        assert_eq!(response.exit_status, 137);
        assert!(response.exited_at.is_some());
    }

    #[test]
    fn a_live_shim_keeps_its_pod() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).expect("mkdir");
        let socket = dir.path().join("shim.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        std::fs::write(
            bundle.join("address"),
            format!("unix://{}", socket.display()),
        )
        .expect("address");
        let record = PodRecord::new("pod", &dir.path().join("run"));
        std::fs::create_dir_all(record.shared_dir()).expect("mkdir");
        std::fs::write(record.pod_dir.join("vsock.sock"), "").expect("write");
        record.write(&bundle).expect("record");
        after_dead_shim(&bundle, "c");
        assert!(
            record.pod_dir.join("vsock.sock").exists(),
            "a serving pod is left alone"
        );
        assert!(socket.exists());
        drop(listener);
        after_dead_shim(&bundle, "c");
        assert!(
            !record.pod_dir.join("vsock.sock").exists(),
            "a dead shim's pod is cleaned"
        );
        assert!(!record.shared_dir().exists());
        assert!(!socket.exists());
    }

    #[test]
    fn only_the_console_log_survives() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("console.log"), "boot").expect("write");
        std::fs::write(dir.path().join("qemu.pid"), "1").expect("write");
        std::fs::create_dir(dir.path().join("shared")).expect("mkdir");
        keep_only_console_log(dir.path());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("console.log")]);
    }
}
