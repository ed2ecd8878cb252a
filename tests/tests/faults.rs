//! Faults a node sees, each with what must hold afterwards: the task's exit is reported (with
//! the distinct status of a process whose VM died), nothing of the pod is left but its console
//! log, and the node keeps serving new pods. The VMM killed while Create boots the pod, the
//! shim killed while Create boots and while an exec runs, each helper daemon killed, a guest
//! that hangs (stopped, so its agent answers nothing), and pod directories a reboot left
//! behind. containerd restarting under running pods is in `cri_restart.rs`.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test fails loudly by design

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloak_shim::service::pod::VM_DIED_EXIT_STATUS;
use cloak_tests::containerd::{image, PrivateContainerd, RUNTIME};
use cloak_tests::VmTestEnv;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn containerd(
    test: &str,
    adjust: &dyn Fn(&mut cloak_host::Configuration),
) -> Option<PrivateContainerd> {
    let (env, shim): (VmTestEnv, PathBuf) = cloak_tests::cri::cri_test_env(test)?;
    Some(PrivateContainerd::start_with_cri_configured(&env, &shim, adjust).unwrap())
}

/// Pids of processes naming `pod_dir` whose command line contains `program`.
fn pids_of(pod_dir: &Path, program: &str) -> Vec<i32> {
    cloak_tests::pids_of(&cloak_tests::processes_mentioning(pod_dir), program)
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// Waits until a process `program` of `pod_dir` runs; its pid.
fn wait_for_process(pod_dir: &Path, program: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = pids_of(pod_dir, program).first() {
            return *pid;
        }
        assert!(
            Instant::now() < deadline,
            "no {program} of {}",
            pod_dir.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: i32, signal: Signal) {
    kill(Pid::from_raw(pid), signal).unwrap();
}

/// The shim server serving container `id`.
fn shim_of(containerd: &PrivateContainerd, id: &str) -> i32 {
    let needle = format!("-id {id} ");
    let shims: Vec<String> = containerd
        .shim_processes()
        .into_iter()
        .filter(|p| p.contains(&needle))
        .collect();
    let shims: Vec<i32> = cloak_tests::pids_of(&shims, "")
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect();
    assert_eq!(shims.len(), 1, "{:?}", containerd.shim_processes());
    shims[0]
}

/// `ctr run -d` started in the background (the Create it makes boots the pod VM).
fn start_run(containerd: &PrivateContainerd, id: &str) -> Child {
    containerd
        .ctr(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            &image(),
            id,
            "sleep",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// After a fault: nothing left but console logs, and a new pod runs and prints.
fn assert_clean_and_serving(containerd: &PrivateContainerd, leftover_ids: &[&str]) {
    for id in leftover_ids {
        // The task may be gone already; the container record must go.
        let _ = containerd.ctr(&["task", "rm", "-f", id]).output();
        let _ = containerd.ctr(&["container", "rm", id]).output();
    }
    assert_eq!(
        containerd.wait_for_no_leftovers(true),
        Vec::<String>::new(),
        "{}",
        containerd.log_tail(40)
    );
    let output = containerd
        .run(&[], &image(), "after-the-fault", &["echo", "still serving"])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "still serving",
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        containerd.log_tail(40)
    );
}

#[test]
fn the_vmm_killed_while_create_boots_the_pod_fails_create_cleanly() {
    let _slot = cloak_tests::vm_slot();
    let Some(containerd) = containerd(
        "the_vmm_killed_while_create_boots_the_pod_fails_create_cleanly",
        &|_| {},
    ) else {
        return;
    };
    let ctr = start_run(&containerd, "victim");
    let qemu = wait_for_process(&containerd.run_dir.join("victim"), "qemu-system");
    signal(qemu, Signal::SIGKILL);
    let output = ctr.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "create succeeded with its VM killed"
    );
    assert!(
        stderr.contains("killed by signal 9"),
        "the error says how the VM ended: {stderr}"
    );
    assert_clean_and_serving(&containerd, &["victim"]);
}

/// The kubelet's path: the pod VM runs (RunPodSandbox booted it) and CreateContainer is in
/// flight when the VMM dies. Whichever comes first, the create fails or the container is
/// reported exited; the pod then stops and is removed with nothing left.
#[test]
fn the_vmm_killed_during_a_cri_create_container_leaves_a_removable_pod() {
    use cloak_tests::cri::{CriClient, PodSpec, RUNTIME_HANDLER};
    let _slot = cloak_tests::vm_slot();
    let Some(containerd) = containerd(
        "the_vmm_killed_during_a_cri_create_container_leaves_a_removable_pod",
        &|_| {},
    ) else {
        return;
    };
    let netns_before = cloak_tests::cri::cni_netns();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let pod = PodSpec::in_containerd(&containerd, "doomed", RUNTIME_HANDLER).unwrap();
        let pod_id = cri.run_pod(&pod).await.unwrap();
        let pod_dir = containerd
            .run_dir
            .join(cloak_host::run_dir::pod_dir_name(&pod_id));
        let qemu = wait_for_process(&pod_dir, "qemu-system");
        let mut creator = cri.clone();
        let create = {
            let pod = pod.clone();
            let pod_id = pod_id.clone();
            tokio::spawn(async move {
                creator
                    .create_container(&pod_id, &pod, "main", &image(), &["sleep", "3600"])
                    .await
            })
        };
        // containerd prepares the snapshot first; the shim's Create follows within moments.
        tokio::time::sleep(Duration::from_millis(50)).await;
        signal(qemu, Signal::SIGKILL);
        match create.await.unwrap() {
            Err(err) => eprintln!("CreateContainer failed: {err:#}"),
            Ok(container) => {
                // Created before the VM died: it cannot start, or it is reported exited.
                if cri.start_container(&container).await.is_ok() {
                    let code = cri
                        .wait_for_exit(&container, Duration::from_secs(30))
                        .await
                        .unwrap();
                    assert_eq!(code, VM_DIED_EXIT_STATUS as i32);
                }
            }
        }
        cri.remove_pod(&pod_id).await.unwrap();
    });
    cloak_tests::cri::assert_pods_left_nothing_but_console_logs(&containerd, &netns_before);
    assert_clean_and_serving(&containerd, &[]);
}

#[test]
fn the_shim_killed_while_create_boots_the_pod_leaves_nothing() {
    let _slot = cloak_tests::vm_slot();
    let Some(containerd) = containerd(
        "the_shim_killed_while_create_boots_the_pod_leaves_nothing",
        &|_| {},
    ) else {
        return;
    };
    let ctr = start_run(&containerd, "victim");
    let pod_dir = containerd.run_dir.join("victim");
    wait_for_process(&pod_dir, "qemu-system");
    signal(shim_of(&containerd, "victim"), Signal::SIGKILL);
    let output = ctr.wait_with_output().unwrap();
    assert!(
        !output.status.success(),
        "create succeeded with its shim killed"
    );
    // containerd's cleanup (`shim delete`) kills the orphaned VM and its helpers.
    assert_clean_and_serving(&containerd, &["victim"]);
    assert!(pids_of(&pod_dir, "").is_empty());
}

#[test]
fn the_shim_killed_during_an_exec_ends_the_exec_and_leaves_nothing() {
    let _slot = cloak_tests::vm_slot();
    let Some(containerd) = containerd(
        "the_shim_killed_during_an_exec_ends_the_exec_and_leaves_nothing",
        &|_| {},
    ) else {
        return;
    };
    containerd.run_detached("host", &["sleep", "1000"]).unwrap();
    let mut exec = containerd
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "long",
            "host",
            "sh",
            "-c",
            "echo started; sleep 1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The exec runs once it printed.
    let mut stdout = exec.stdout.take().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"started\n");
    signal(shim_of(&containerd, "host"), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = exec.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ctr task exec still waits on a dead shim"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !status.success(),
        "the exec of a dead shim reported success"
    );
    assert_clean_and_serving(&containerd, &["host"]);
}

/// Kills `program` (a helper daemon) of a running pod: the pod is reported dead.
fn kill_helper_and_expect_pod_death(test: &str, program: &str) {
    let _slot = cloak_tests::vm_slot();
    let Some(containerd) = containerd(test, &|_| {}) else {
        return;
    };
    let events = containerd.record_events().unwrap();
    containerd
        .run_detached("served", &["sleep", "1000"])
        .unwrap();
    let pod_dir = containerd.run_dir.join("served");
    let helpers = pids_of(&pod_dir, program);
    assert!(!helpers.is_empty(), "no {program} for the pod");
    for pid in helpers {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    containerd
        .wait_for_task_status("served", "STOPPED", Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        events.wait_for_exit("served"),
        Some(u64::from(VM_DIED_EXIT_STATUS))
    );
    containerd.remove_stopped("served").unwrap();
    assert!(
        pod_dir.join("console.log").is_file(),
        "the console log is kept"
    );
    assert_clean_and_serving(&containerd, &[]);
}

#[test]
fn a_killed_vsock_backend_ends_its_pod() {
    kill_helper_and_expect_pod_death("a_killed_vsock_backend_ends_its_pod", "vhost-device-vsock");
}

#[test]
fn a_killed_virtiofsd_ends_its_pod() {
    kill_helper_and_expect_pod_death("a_killed_virtiofsd_ends_its_pod", "virtiofsd");
}

#[test]
fn a_guest_that_stops_answering_is_declared_dead() {
    let _slot = cloak_tests::vm_slot();
    let Some(containerd) = containerd("a_guest_that_stops_answering_is_declared_dead", &|config| {
        config.agent.liveness_interval_secs = 1;
        config.agent.liveness_misses = 3;
    }) else {
        return;
    };
    let events = containerd.record_events().unwrap();
    containerd.run_detached("hung", &["sleep", "1000"]).unwrap();
    let pod_dir = containerd.run_dir.join("hung");
    // A stopped VMM runs no guest code: the agent answers nothing, as in a guest kernel hang.
    let qemu = wait_for_process(&pod_dir, "qemu-system");
    let stopped = Instant::now();
    signal(qemu, Signal::SIGSTOP);
    containerd
        .wait_for_task_status("hung", "STOPPED", Duration::from_secs(30))
        .unwrap();
    eprintln!(
        "declared dead {:.1} s after the guest stopped",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(
        events.wait_for_exit("hung"),
        Some(u64::from(VM_DIED_EXIT_STATUS))
    );
    assert!(
        containerd
            .log_tail(400)
            .contains("the agent stopped answering"),
        "the shim says why it killed the pod"
    );
    containerd.remove_stopped("hung").unwrap();
    assert!(
        pod_dir.join("console.log").is_file(),
        "the console log is kept"
    );
    assert_clean_and_serving(&containerd, &[]);
}

/// `touch -d` on `path`: a modification time in the past.
fn age(path: &Path, ago: &str) {
    let status = Command::new("touch")
        .args(["-h", "-d", ago])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_next_pod_sweeps_leftover_pod_directories_and_only_those() {
    let _slot = cloak_tests::vm_slot();
    let Some(containerd) = containerd(
        "the_next_pod_sweeps_leftover_pod_directories_and_only_those",
        &|_| {},
    ) else {
        return;
    };
    containerd.run_detached("live", &["sleep", "1000"]).unwrap();
    let live_dir = containerd.run_dir.join("live");
    // Age the live pod's directory too: its lock and its processes must protect it.
    age(&live_dir, "2 hours ago");

    // What a reboot leaves: a pod directory with sockets, pid files (naming a pid that now
    // belongs to someone else), a mounted shared directory, a console log.
    let stale = containerd.run_dir.join("rebooted");
    std::fs::create_dir_all(stale.join("shared")).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "leftover"])
        .arg(stale.join("shared"))
        .status()
        .unwrap();
    assert!(mounted.success());
    std::fs::write(stale.join("qemu.pid"), format!("{}\n", std::process::id())).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(stale.join("vsock.sock")).unwrap();
    std::fs::write(stale.join("console.log"), "[    0.1] the last boot\n").unwrap();
    age(&stale.join("console.log"), "2 hours ago");
    age(&stale, "2 hours ago");
    // A dead pod's console log kept for two days: past its retention.
    let expired = containerd.run_dir.join("long-dead");
    std::fs::create_dir_all(&expired).unwrap();
    std::fs::write(expired.join("console.log"), "old\n").unwrap();
    age(&expired.join("console.log"), "2 days ago");
    age(&expired, "2 days ago");

    let output = containerd
        .run(&[], &image(), "next", &["echo", "swept"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "swept");

    let left: Vec<String> = std::fs::read_dir(&stale)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["console.log".to_owned()],
        "only the console log stays"
    );
    assert!(cloak_host::host_mounts::mounts_below(&stale).is_empty());
    assert!(
        !expired.exists(),
        "an expired console log goes with its directory"
    );
    // The live pod lost nothing and still answers.
    assert!(live_dir.join("vsock.sock").exists());
    let exec = containerd
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "check",
            "live",
            "echo",
            "alive",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "alive");
    let killed = containerd
        .ctr(&["task", "kill", "-s", "SIGKILL", "live"])
        .output()
        .unwrap();
    assert!(killed.status.success());
    containerd
        .wait_for_task_status("live", "STOPPED", Duration::from_secs(30))
        .unwrap();
    containerd.remove_stopped("live").unwrap();
    std::fs::remove_dir_all(&stale).unwrap();
    assert_clean_and_serving(&containerd, &[]);
}
