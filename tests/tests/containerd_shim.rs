//! containerd-shim-cloak-v2 driven by a real containerd through `ctr`: every container runs
//! in a cloak pod VM (software-emulated here), and containerd sees what it sees with runc.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::{Duration, Instant};

use cloak_tests::containerd::{image, user_image, PrivateContainerd, RUNTIME};
use cloak_tests::{vm_slot, VmTestEnv};

/// Runs `body` against a private containerd of its own (one VM test at a time), then checks
/// that the shim left no process, mount, socket or pod directory (console logs of dead VMs
/// aside when `allow_console_logs`).
fn with_containerd(
    test: &str,
    allow_console_logs: bool,
    body: impl FnOnce(&VmTestEnv, &PrivateContainerd),
) {
    let _slot = vm_slot();
    let Some((env, containerd)) = containerd(test) else {
        return;
    };
    body(&env, &containerd);
    assert_eq!(
        containerd.wait_for_no_leftovers(allow_console_logs),
        Vec::<String>::new()
    );
}

fn containerd(test: &str) -> Option<(VmTestEnv, PrivateContainerd)> {
    let env = VmTestEnv::get(test)?;
    if !cloak_tests::tools_on_path(test, &["containerd", "ctr", "virtiofsd"]) {
        return None;
    }
    let shim = cloak_tests::containerd::shim_or_skip(test)?;
    let containerd = PrivateContainerd::start(&env, &shim).expect("private containerd starts");
    Some((env, containerd))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_ran(output: &Output, containerd: &PrivateContainerd) -> String {
    assert!(
        output.status.success(),
        "ctr failed ({}): stdout {:?} stderr {:?}\ncontainerd log:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr),
        containerd.log_tail(60)
    );
    text(&output.stdout)
}

#[test]
fn ctr_run_prints_exits_and_runs_in_the_guest_kernel() {
    with_containerd(
        "ctr_run_prints_exits_and_runs_in_the_guest_kernel",
        false,
        |env, containerd| {
            let output = containerd
                .run(&[], &image(), "hello", &["echo", "hello"])
                .unwrap();
            assert_eq!(assert_ran(&output, containerd), "hello\n");

            let output = containerd
                .run(
                    &[],
                    &image(),
                    "exit3",
                    &["sh", "-c", "echo out; echo err >&2; exit 3"],
                )
                .unwrap();
            assert_eq!(output.status.code(), Some(3), "{output:?}");
            assert_eq!(text(&output.stdout), "out\n");
            assert_eq!(text(&output.stderr), "err\n");

            let output = containerd
                .run(&[], &image(), "uname", &["uname", "-r"])
                .unwrap();
            let release = assert_ran(&output, containerd);
            assert_eq!(release.trim(), env.manifest.kernel.release);
            let host = nix::sys::utsname::uname().unwrap();
            assert_ne!(release.trim(), host.release().to_string_lossy());
        },
    );
}

/// Polls `ctr task ls` until `id`'s status is `status` (or the task is gone, for "GONE").
fn wait_for_task_status(containerd: &PrivateContainerd, id: &str, status: &str) -> String {
    containerd
        .wait_for_task_status(id, status, Duration::from_secs(60))
        .unwrap()
}

fn run_detached(containerd: &PrivateContainerd, id: &str, args: &[&str]) {
    containerd.run_detached(id, args).unwrap();
}

fn remove_stopped(containerd: &PrivateContainerd, id: &str) {
    containerd.remove_stopped(id).unwrap();
}

#[test]
fn exec_ps_pause_resume_metrics_and_kill_on_a_running_container() {
    with_containerd(
        "exec_ps_pause_resume_metrics_and_kill_on_a_running_container",
        false,
        |_env, containerd| {
            let events = containerd.record_events().unwrap();
            run_detached(containerd, "svc", &["sleep", "1000"]);

            let output = containerd
                .ctr(&[
                    "task",
                    "exec",
                    "--exec-id",
                    "e1",
                    "svc",
                    "sh",
                    "-c",
                    "echo in-exec; exit 4",
                ])
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(4), "{output:?}");
            assert_eq!(text(&output.stdout), "in-exec\n");

            let output = containerd
                .ctr(&[
                    "task",
                    "exec",
                    "--exec-id",
                    "e2",
                    "--user",
                    "1000",
                    "--cwd",
                    "/tmp",
                    "svc",
                    "sh",
                    "-c",
                    "id -u; pwd",
                ])
                .output()
                .unwrap();
            assert_eq!(assert_ran(&output, containerd), "1000\n/tmp\n");

            let output = containerd.ctr(&["task", "ps", "svc"]).output().unwrap();
            let listing = assert_ran(&output, containerd);
            let pids: Vec<u32> = listing
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                .collect();
            assert!(
                !pids.is_empty(),
                "ctr task ps lists the container's processes:\n{listing}"
            );

            assert_ran(
                &containerd.ctr(&["task", "pause", "svc"]).output().unwrap(),
                containerd,
            );
            wait_for_task_status(containerd, "svc", "PAUSED");
            assert_ran(
                &containerd.ctr(&["task", "resume", "svc"]).output().unwrap(),
                containerd,
            );
            wait_for_task_status(containerd, "svc", "RUNNING");

            let output = containerd
                .ctr(&["task", "metrics", "svc"])
                .output()
                .unwrap();
            let metrics = assert_ran(&output, containerd);
            let memory_usage: u64 = metrics
                .lines()
                .find(|l| l.trim_start().starts_with("memory.usage"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or_else(|| panic!("no memory.usage in `ctr task metrics`:\n{metrics}"));
            assert!(memory_usage > 0, "{metrics}");

            assert_ran(
                &containerd
                    .ctr(&["task", "kill", "-s", "SIGKILL", "svc"])
                    .output()
                    .unwrap(),
                containerd,
            );
            wait_for_task_status(containerd, "svc", "STOPPED");
            assert_eq!(events.wait_for_exit("svc"), Some(137));
            remove_stopped(containerd, "svc");
            for topic in [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exec-added",
                "/tasks/exec-started",
                "/tasks/paused",
                "/tasks/resumed",
                "/tasks/delete",
            ] {
                assert!(
                    !events.events(topic, "svc").is_empty(),
                    "no {topic} event for svc"
                );
            }
        },
    );
}

#[test]
fn kill_delivers_sigterm_and_sigkill_to_an_attached_run() {
    with_containerd(
        "kill_delivers_sigterm_and_sigkill_to_an_attached_run",
        false,
        |_env, containerd| {
            let image = image();
            let script =
                "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
            let run = containerd
                .ctr(&[
                    "run",
                    "--rm",
                    "--runtime",
                    RUNTIME,
                    &image,
                    "term",
                    "sh",
                    "-c",
                    script,
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            wait_for_task_status(containerd, "term", "RUNNING");
            std::thread::sleep(Duration::from_millis(500));
            assert_ran(
                &containerd.ctr(&["task", "kill", "term"]).output().unwrap(),
                containerd,
            );
            let output = run.wait_with_output().unwrap();
            assert_eq!(output.status.code(), Some(7), "{output:?}");
            assert_eq!(text(&output.stdout), "ready\ngot-term\n");

            let run = containerd
                .ctr(&[
                    "run",
                    "--rm",
                    "--runtime",
                    RUNTIME,
                    &image,
                    "victim",
                    "sleep",
                    "1000",
                ])
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap();
            wait_for_task_status(containerd, "victim", "RUNNING");
            assert_ran(
                &containerd
                    .ctr(&["task", "kill", "-s", "SIGKILL", "victim"])
                    .output()
                    .unwrap(),
                containerd,
            );
            let output = run.wait_with_output().unwrap();
            assert_eq!(output.status.code(), Some(137), "{output:?}");
        },
    );
}

#[test]
fn terminal_and_piped_stdin() {
    with_containerd("terminal_and_piped_stdin", false, |_env, containerd| {
        let image = image();
        let (output, code) = containerd
            .ctr_on_terminal(
                &[
                    "run",
                    "--rm",
                    "-t",
                    "--runtime",
                    RUNTIME,
                    &image,
                    "tty",
                    "sh",
                    "-c",
                    "[ -t 0 ] && [ -t 1 ] && echo is-a-terminal; sleep 1; stty size; exit 5",
                ],
                40,
                100,
            )
            .unwrap();
        assert_eq!(code, Some(5), "{output}");
        assert!(output.contains("is-a-terminal"), "{output:?}");
        // ctr passes its terminal's size on (ResizePty).
        assert!(output.contains("40 100"), "{output:?}");

        let output = containerd
            .ctr_with_input(
                &["run", "--rm", "--runtime", RUNTIME, &image, "cat", "cat"],
                b"hi\n",
            )
            .unwrap();
        assert_eq!(assert_ran(&output, containerd), "hi\n");
    });
}

#[test]
fn env_cwd_and_user_come_from_the_image_and_from_flags() {
    with_containerd(
        "env_cwd_and_user_come_from_the_image_and_from_flags",
        false,
        |_env, containerd| {
            let script = "echo $CLOAK_IMAGE_ENV; pwd; id -u; id -g";
            let output = containerd
                .run(&[], &image(), "image", &["sh", "-c", script])
                .unwrap();
            assert_eq!(
                assert_ran(&output, containerd),
                "from-image\n/home/user\n0\n0\n"
            );

            let output = containerd
                .run(&[], &user_image(), "user", &["sh", "-c", script])
                .unwrap();
            assert_eq!(
                assert_ran(&output, containerd),
                "from-image\n/home/user\n1000\n1000\n"
            );

            let flags = ["--env", "CLOAK_IMAGE_ENV=from-flag", "--cwd", "/tmp"];
            let output = containerd
                .run(&flags, &image(), "flags", &["sh", "-c", script])
                .unwrap();
            assert_eq!(assert_ran(&output, containerd), "from-flag\n/tmp\n0\n0\n");
        },
    );
}

#[test]
fn ten_containers_in_a_row_leave_nothing_behind() {
    with_containerd(
        "ten_containers_in_a_row_leave_nothing_behind",
        false,
        |_env, containerd| {
            for n in 0..10 {
                let id = format!("row{n}");
                let output = containerd
                    .run(&[], &image(), &id, &["sh", "-c", "echo $(hostname)"])
                    .unwrap();
                assert_eq!(assert_ran(&output, containerd), format!("{id}\n"));
            }
            let containers = containerd.ctr(&["container", "ls", "-q"]).output().unwrap();
            assert_eq!(text(&containers.stdout), "");
        },
    );
}

#[test]
fn a_dead_vm_is_reported_exited_and_its_pod_deletes_cleanly() {
    with_containerd(
        "a_dead_vm_is_reported_exited_and_its_pod_deletes_cleanly",
        true,
        |_env, containerd| {
            let events = containerd.record_events().unwrap();
            run_detached(containerd, "doomed", &["sleep", "1000"]);
            let pod_dir = containerd.run_dir.join("doomed");
            let qemu: Vec<i32> =
                cloak_tests::pids_of(&cloak_tests::processes_mentioning(&pod_dir), "qemu-system")
                    .into_iter()
                    .filter_map(|pid| i32::try_from(pid).ok())
                    .collect();
            assert_eq!(qemu.len(), 1, "one QEMU process for the pod");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(qemu[0]),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            wait_for_task_status(containerd, "doomed", "STOPPED");
            assert_eq!(
                events.wait_for_exit("doomed"),
                Some(u64::from(cloak_shim::service::pod::VM_DIED_EXIT_STATUS)),
                "the distinct exit status of a process whose VM died"
            );
            remove_stopped(containerd, "doomed");
            assert!(
                pod_dir.join("console.log").is_file(),
                "the console log is kept for the post-mortem"
            );
        },
    );
}

#[test]
fn a_killed_shim_is_cleaned_up_by_containerd() {
    with_containerd(
        "a_killed_shim_is_cleaned_up_by_containerd",
        true,
        |_env, containerd| {
            run_detached(containerd, "orphan", &["sleep", "1000"]);
            let shims: Vec<i32> = containerd
                .shim_processes()
                .iter()
                .filter(|p| p.contains("-id orphan"))
                .filter_map(|p| p.split(':').next()?.parse().ok())
                .collect();
            assert_eq!(
                shims.len(),
                1,
                "one shim server: {:?}",
                containerd.shim_processes()
            );
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(shims[0]),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let tasks = text(&containerd.ctr(&["task", "ls"]).output().unwrap().stdout);
                let state = tasks
                    .lines()
                    .find(|l| l.starts_with("orphan "))
                    .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned));
                if state.as_deref().is_none_or(|s| s != "RUNNING") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "containerd never noticed the dead shim:\n{tasks}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            // The task may already be gone; the container must delete.
            let _ = containerd.ctr(&["task", "rm", "orphan"]).output().unwrap();
            assert_ran(
                &containerd
                    .ctr(&["container", "rm", "orphan"])
                    .output()
                    .unwrap(),
                containerd,
            );
        },
    );
}

#[test]
fn bad_process_and_bad_configuration_fail_create_and_leave_nothing() {
    with_containerd(
        "bad_process_and_bad_configuration_fail_create_and_leave_nothing",
        false,
        |_env, containerd| {
            let output = containerd
                .run(&[], &image(), "missing", &["/no/such/binary"])
                .unwrap();
            assert!(!output.status.success());
            let message = text(&output.stderr);
            assert!(message.contains("/no/such/binary"), "{message}");
            let _ = containerd.ctr(&["container", "rm", "missing"]).output();
            assert_eq!(
                containerd.wait_for_no_leftovers(false),
                Vec::<String>::new()
            );

            let bad = containerd.dir().join("bad.toml");
            std::fs::write(&bad, "[hypervisor]\nvcpus = \"many\"\n").unwrap();
            let bad_flag = bad.display().to_string();
            let output = containerd
                .run(
                    &["--runtime-config-path", &bad_flag],
                    &image(),
                    "badconfig",
                    &["true"],
                )
                .unwrap();
            assert!(!output.status.success());
            let message = text(&output.stderr);
            assert!(message.contains("bad.toml"), "{message}");
            let _ = containerd.ctr(&["container", "rm", "badconfig"]).output();
        },
    );
}

#[test]
fn containers_of_one_pod_share_one_shim_and_one_vm() {
    with_containerd(
        "containers_of_one_pod_share_one_shim_and_one_vm",
        false,
        |_env, containerd| {
            let annotation = "io.kubernetes.cri.sandbox-id=pod1";
            let image = image();
            let output = containerd
                .ctr(&[
                    "run",
                    "-d",
                    "--runtime",
                    RUNTIME,
                    "--annotation",
                    annotation,
                    &image,
                    "first",
                    "sleep",
                    "1000",
                ])
                .output()
                .unwrap();
            assert_ran(&output, containerd);
            wait_for_task_status(containerd, "first", "RUNNING");
            let output = containerd
                .run(
                    &["--annotation", annotation],
                    &image,
                    "second",
                    &["echo", "joined"],
                )
                .unwrap();
            assert_eq!(assert_ran(&output, containerd), "joined\n");
            let qemus = |c: &PrivateContainerd| {
                cloak_tests::processes_mentioning(&c.run_dir)
                    .into_iter()
                    .filter(|p| p.contains("qemu-system"))
                    .count()
            };
            assert_eq!(
                qemus(containerd),
                1,
                "one VM for the pod\n{}",
                containerd.log_tail(80)
            );
            assert_eq!(
                containerd.shim_processes().len(),
                1,
                "{:?}",
                containerd.shim_processes()
            );
            assert!(
                containerd.run_dir.join("pod1").is_dir(),
                "the pod's directory is named by the sandbox id"
            );

            assert_ran(
                &containerd
                    .ctr(&["task", "kill", "-s", "SIGKILL", "first"])
                    .output()
                    .unwrap(),
                containerd,
            );
            wait_for_task_status(containerd, "first", "STOPPED");
            remove_stopped(containerd, "first");
        },
    );
}

#[test]
fn a_memory_limit_kills_with_an_oom_event() {
    with_containerd(
        "a_memory_limit_kills_with_an_oom_event",
        false,
        |_env, containerd| {
            let events = containerd.record_events().unwrap();
            let limit = (32u64 << 20).to_string();
            let output = containerd
                .run(
                    &["--memory-limit", &limit],
                    &image(),
                    "hog",
                    &["sh", "-c", "tail /dev/zero"],
                )
                .unwrap();
            assert_eq!(output.status.code(), Some(137), "{output:?}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while events.events("/tasks/oom", "hog").is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(
                events.events("/tasks/oom", "hog").len(),
                1,
                "one TaskOOM event"
            );
        },
    );
}
