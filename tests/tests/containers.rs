//! Containers in the guest, driven over the agent API with a real VM: stdio, exit codes,
//! signals, exec, spec fields, readonly rootfs, stdin, tty, OOM, pause/resume, stats,
//! networking between containers, and bad input.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::time::Duration;

use cloak_tests::pod::{busybox_spec, ctx, read_all, with_pod, Streams};

#[test]
fn stdout_stderr_and_exit_codes() {
    with_pod("stdout_stderr_and_exit_codes", async |pod| {
        let spec = busybox_spec(&["sh", "-c", "echo out-line; echo err-line >&2; exit 3"]);
        let output = pod.run("echo", &spec, None).await.unwrap();
        assert_eq!(output.stdout_text(), "out-line\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "err-line\n");
        assert_eq!(output.exit_status, 3);

        let output = pod
            .run("uname", &busybox_spec(&["uname", "-n"]), None)
            .await
            .unwrap();
        assert_eq!(output.stdout_text(), "cloak-test\n", "the spec's hostname");
        assert_eq!(output.exit_status, 0);
    });
}

/// Bytes that arrive on `stream` within `window`.
async fn bytes_within(stream: &mut tokio::net::UnixStream, window: Duration) -> usize {
    let mut buffer = vec![0u8; 4096];
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(read)) =
        tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(stream, &mut buffer)).await
    {
        if read == 0 {
            break;
        }
        total += read;
    }
    total
}

fn rpc_code(err: &anyhow::Error) -> Option<ttrpc::Code> {
    match err.downcast_ref::<ttrpc::Error>() {
        Some(ttrpc::Error::RpcStatus(status)) => status.code.enum_value().ok(),
        _ => None,
    }
}

fn with_user(
    mut spec: oci_spec::runtime::Spec,
    uid: u32,
    gid: u32,
    extra: Vec<u32>,
) -> oci_spec::runtime::Spec {
    let mut process = spec.process().clone().unwrap();
    let user = oci_spec::runtime::UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .additional_gids(extra)
        .build()
        .unwrap();
    process.set_user(user);
    spec.set_process(Some(process));
    spec
}

#[test]
fn spec_fields_stdin_and_readonly_rootfs() {
    with_pod("spec_fields_stdin_and_readonly_rootfs", async |pod| {
        // env, cwd, uid, gid and additional groups come from the spec.
        let mut spec = with_user(
            busybox_spec(&["sh", "-c", "echo $GREETING; pwd; id -u; id -g; id -G"]),
            1000,
            1000,
            vec![2000],
        );
        let mut process = spec.process().clone().unwrap();
        process.set_env(Some(vec![
            "PATH=/bin:/usr/bin".into(),
            "GREETING=hello from env".into(),
        ]));
        process.set_cwd("/home/user".into());
        spec.set_process(Some(process));
        let output = pod.run("spec-fields", &spec, None).await.unwrap();
        assert_eq!(
            output.stdout_text(),
            "hello from env\n/home/user\n1000\n1000\n1000 2000\n"
        );
        assert_eq!(output.exit_status, 0);

        // stdin piped to cat comes back byte for byte, EOF included.
        let input: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let output = pod
            .run("cat", &busybox_spec(&["cat"]), Some(&input))
            .await
            .unwrap();
        assert_eq!(output.exit_status, 0);
        assert!(
            output.stdout == input,
            "cat returned {} bytes of {}",
            output.stdout.len(),
            input.len()
        );

        // A readonly rootfs refuses writes; /tmp from the spec's mounts does not matter here.
        let mut spec = busybox_spec(&["sh", "-c", "echo x > /written && echo wrote"]);
        let mut root = spec.root().clone().unwrap();
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
        let output = pod.run("readonly", &spec, None).await.unwrap();
        assert_ne!(output.exit_status, 0);
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("Read-only file system"),
            "{output:?}"
        );
        // The same write succeeds on a writable rootfs (into the in-memory overlay).
        let output = pod
            .run(
                "writable",
                &busybox_spec(&["sh", "-c", "echo x > /written && echo wrote"]),
                None,
            )
            .await
            .unwrap();
        assert_eq!(output.stdout_text(), "wrote\n");
        assert!(
            !pod.shared.path().join("rootfs-busybox/written").exists(),
            "the host copy stays untouched"
        );
    });
}

#[test]
fn signals_exec_and_ps() {
    with_pod("signals_exec_and_ps", async |pod| {
        let streams = pod
            .create(
                "sleeper",
                &busybox_spec(&["sleep", "1000"]),
                Streams::default(),
            )
            .await
            .unwrap();
        pod.start("sleeper").await.unwrap();

        // ps inside the running container shows its processes.
        let ps = pod
            .exec(
                "sleeper",
                "ps",
                &["ps", "-o", "pid,args"],
                Streams::default(),
            )
            .await
            .unwrap();
        let (out, _) = ps.collect().await.unwrap();
        assert_eq!(pod.wait("sleeper", "ps").await.unwrap().exit_status, 0);
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.lines()
                .any(|l| l.trim().starts_with("1 ") && l.contains("sleep 1000")),
            "{out}"
        );
        assert!(out.contains("ps -o pid,args"), "{out}");

        // SIGTERM to a sleep gives 143 (an exec: PID 1 of a namespace ignores SIGTERM).
        let exec = pod
            .exec("sleeper", "sleep2", &["sleep", "1000"], Streams::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        pod.signal("sleeper", "sleep2", libc::SIGTERM)
            .await
            .unwrap();
        assert_eq!(
            pod.wait("sleeper", "sleep2").await.unwrap().exit_status,
            143
        );
        drop(exec);

        // ListProcesses sees the init and names no finished exec.
        let listed = pod
            .agent()
            .list_processes(
                ctx(),
                &cloak_protocol::agent::ContainerRequest {
                    container_id: "sleeper".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(listed.processes.len(), 1, "{listed:?}");
        assert_eq!(listed.processes[0].command, vec!["sleep", "1000"]);

        // SIGKILL ends the init: 137, and its (empty) output stream is closed.
        pod.signal("sleeper", "", libc::SIGKILL).await.unwrap();
        assert_eq!(pod.wait("sleeper", "").await.unwrap().exit_status, 137);
        let (out, err) = streams.collect().await.unwrap();
        assert!(out.is_empty() && err.is_empty());

        // Exec into the stopped container is refused.
        let err = pod
            .exec("sleeper", "late", &["true"], Streams::default())
            .await
            .err()
            .unwrap();
        assert_eq!(
            rpc_code(&err),
            Some(ttrpc::Code::FAILED_PRECONDITION),
            "{err:#}"
        );
        // Signalling it again says it is gone.
        let err = pod
            .signal("sleeper", "", libc::SIGTERM)
            .await
            .err()
            .unwrap();
        assert_eq!(rpc_code(&err), Some(ttrpc::Code::NOT_FOUND), "{err:#}");
        pod.remove("sleeper").await.unwrap();
    });
}

#[test]
fn tty_sees_a_terminal_and_its_window_size() {
    with_pod("tty_sees_a_terminal_and_its_window_size", async |pod| {
        let mut spec = busybox_spec(&[
            "sh",
            "-c",
            "sleep 1; test -t 0 && echo is-a-tty; stty size; sleep 3",
        ]);
        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(true));
        spec.set_process(Some(process));
        // A CRI-sized id (64 hex characters): the console socket's path must still fit the
        // 108 bytes of a Unix socket address.
        let id = "7e1e".repeat(16);
        let streams = pod
            .create(
                &id,
                &spec,
                Streams {
                    stdin: false,
                    terminal: true,
                },
            )
            .await
            .unwrap();
        pod.start(&id).await.unwrap();
        let resize = cloak_protocol::agent::TtyWinResizeRequest {
            container_id: id.clone(),
            rows: 40,
            columns: 100,
            ..Default::default()
        };
        pod.agent().tty_win_resize(ctx(), &resize).await.unwrap();
        // An exec with a terminal and a CRI-sized exec id: its console socket (the path was
        // 164 bytes below the container's directory) must bind too.
        let exec_id = "e0ec".repeat(16);
        let exec = pod
            .exec(
                &id,
                &exec_id,
                &["sh", "-c", "test -t 0 && echo exec-tty"],
                Streams {
                    stdin: false,
                    terminal: true,
                },
            )
            .await
            .unwrap();
        let exec_out = read_all(exec.stdout).await.unwrap();
        assert!(
            String::from_utf8_lossy(&exec_out).contains("exec-tty\r\n"),
            "{exec_out:?}"
        );
        assert_eq!(pod.wait(&id, &exec_id).await.unwrap().exit_status, 0);
        let out = read_all(streams.stdout).await.unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("is-a-tty"), "{out:?}");
        assert!(out.contains("40 100"), "{out:?}");
        // A terminal turns \n into \r\n: proof the output went through a pty.
        assert!(out.contains("is-a-tty\r\n"), "{out:?}");
        assert_eq!(pod.wait(&id, "").await.unwrap().exit_status, 0);
        pod.remove(&id).await.unwrap();
    });
}

#[test]
fn oom_pause_resume_and_stats() {
    with_pod("oom_pause_resume_and_stats", async |pod| {
        // A memory limit exceeded: the kernel kills the container and the agent reports it.
        let mut spec = busybox_spec(&["tail", "/dev/zero"]);
        let mut linux = spec.linux().clone().unwrap();
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":33554432}}"#).unwrap();
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        let oom_request = cloak_protocol::agent::GetOOMEventRequest::default();
        let oom = pod
            .agent()
            .get_oom_event(ttrpc::context::with_timeout(0), &oom_request);
        let run = pod.run("hog", &spec, None);
        let (oom, run) = tokio::join!(tokio::time::timeout(Duration::from_secs(60), oom), run);
        assert_eq!(run.unwrap().exit_status, 137);
        assert_eq!(
            oom.expect("an OOM event within 60 s").unwrap().container_id,
            "hog"
        );

        // Pause stops progress, resume restarts it.
        let counter = busybox_spec(&[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i; usleep 50000; done",
        ]);
        let streams = pod
            .create("counter", &counter, Streams::default())
            .await
            .unwrap();
        pod.start("counter").await.unwrap();
        let mut stdout = streams.stdout;
        assert!(
            bytes_within(&mut stdout, Duration::from_secs(1)).await > 0,
            "counter is running"
        );
        let request = cloak_protocol::agent::ContainerRequest {
            container_id: "counter".into(),
            ..Default::default()
        };
        pod.agent().pause_container(ctx(), &request).await.unwrap();
        // Output already in flight may still arrive; then silence.
        bytes_within(&mut stdout, Duration::from_millis(300)).await;
        assert_eq!(
            bytes_within(&mut stdout, Duration::from_secs(1)).await,
            0,
            "paused container made progress"
        );
        pod.agent().resume_container(ctx(), &request).await.unwrap();
        assert!(
            bytes_within(&mut stdout, Duration::from_secs(2)).await > 0,
            "resumed container makes progress"
        );

        // Stats report memory and CPU use.
        let stats = pod.agent().stats_container(ctx(), &request).await.unwrap();
        assert!(stats.memory.usage_bytes > 0, "{stats:?}");
        assert!(stats.cpu.usage_usec > 0, "{stats:?}");
        assert!(stats.pids.current >= 1, "{stats:?}");

        // UpdateContainer changes the limit the container runs under.
        let update = cloak_protocol::agent::UpdateContainerRequest {
            container_id: "counter".into(),
            resources_json: br#"{"memory":{"limit":67108864}}"#.to_vec(),
            ..Default::default()
        };
        pod.agent().update_container(ctx(), &update).await.unwrap();
        let stats = pod.agent().stats_container(ctx(), &request).await.unwrap();
        assert_eq!(stats.memory.limit_bytes, 67_108_864);
        pod.remove("counter").await.unwrap();
    });
}

#[test]
fn output_written_before_exit_is_never_lost() {
    with_pod("output_written_before_exit_is_never_lost", async |pod| {
        use sha2::Digest as _;
        let spec = busybox_spec(&[
            "sh",
            "-c",
            "head -c 1048576 /dev/urandom > /tmp/data; sha256sum /tmp/data >&2; cat /tmp/data",
        ]);
        for run in 0..20 {
            let output = pod.run(&format!("burst-{run}"), &spec, None).await.unwrap();
            assert_eq!(
                output.exit_status,
                0,
                "run {run}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(output.stdout.len(), 1_048_576, "run {run}: lost output");
            let expected = String::from_utf8_lossy(&output.stderr);
            let actual = hex::encode(sha2::Sha256::digest(&output.stdout));
            assert!(
                expected.starts_with(&actual),
                "run {run}: checksum {actual} vs {expected}"
            );
        }
    });
}

#[test]
fn containers_of_a_pod_share_localhost() {
    with_pod("containers_of_a_pod_share_localhost", async |pod| {
        let server = pod
            .create(
                "web",
                &busybox_spec(&["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"]),
                Streams::default(),
            )
            .await
            .unwrap();
        pod.start("web").await.unwrap();
        let client = busybox_spec(&[
            "sh",
            "-c",
            "for i in $(seq 1 50); do wget -q -O - http://127.0.0.1:8080/index.html && exit 0; usleep 100000; done; exit 1",
        ]);
        let output = pod.run("client", &client, None).await.unwrap();
        assert_eq!(output.stdout_text(), "hello from cloak\n", "{output:?}");
        assert_eq!(output.exit_status, 0);
        pod.remove("web").await.unwrap();
        drop(server);
    });
}

#[test]
fn bad_input_is_rejected_and_leaves_nothing_behind() {
    with_pod(
        "bad_input_is_rejected_and_leaves_nothing_behind",
        async |pod| {
            // A VM without a TEE has no attestation report to give, and says why.
            let ask = |report_data: Vec<u8>| {
                let request = cloak_protocol::agent::AttestationReportRequest {
                    report_data,
                    ..Default::default()
                };
                async move {
                    pod.agent()
                        .get_attestation_report(pod.vm().agent().context(), &request)
                        .await
                }
            };
            match ask(vec![0; 64]).await {
                Err(ttrpc::Error::RpcStatus(status)) => {
                    assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION);
                    assert!(status.message().contains("no TEE"), "{}", status.message());
                }
                other => panic!("a report from a VM without a TEE: {other:?}"),
            }
            match ask(vec![0; 65]).await {
                Err(ttrpc::Error::RpcStatus(status)) => {
                    assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT)
                }
                other => panic!("65 bytes of REPORT_DATA accepted: {other:?}"),
            }
            let request = |id: &str, spec_json: Vec<u8>, rootfs: &str| {
                cloak_protocol::agent::CreateContainerRequest {
                    container_id: id.into(),
                    oci_spec_json: spec_json,
                    rootfs: Some(cloak_protocol::agent::Storage {
                        driver: "bind".into(),
                        source: rootfs.into(),
                        overlay_in_memory: true,
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                }
            };
            let rootfs = "/run/cloak/shared/rootfs-busybox";
            let good = serde_json::to_vec(&busybox_spec(&["true"])).unwrap();
            let code_of = |result: ttrpc::Result<cloak_protocol::agent::Empty>| match result {
                Err(ttrpc::Error::RpcStatus(status)) => {
                    (status.code.enum_value().ok(), status.message)
                }
                other => panic!("expected an error status, got {other:?}"),
            };

            let (code, message) = code_of(
                pod.agent()
                    .create_container(ctx(), &request("bad", b"{not json".to_vec(), rootfs))
                    .await,
            );
            assert_eq!(code, Some(ttrpc::Code::INVALID_ARGUMENT), "{message}");
            assert!(message.contains("invalid OCI spec"), "{message}");

            let (code, message) = code_of(
                pod.agent()
                    .create_container(
                        ctx(),
                        &request("bad", good.clone(), "/run/cloak/shared/missing"),
                    )
                    .await,
            );
            assert_eq!(code, Some(ttrpc::Code::NOT_FOUND), "{message}");
            assert!(message.contains("does not exist"), "{message}");

            let missing_command = serde_json::to_vec(&busybox_spec(&["no-such-command"])).unwrap();
            let (code, message) = code_of(
                pod.agent()
                    .create_container(ctx(), &request("bad", missing_command, rootfs))
                    .await,
            );
            assert_eq!(code, Some(ttrpc::Code::NOT_FOUND), "{message}");
            assert!(message.contains("executable file not found"), "{message}");

            let (code, message) = code_of(
                pod.agent()
                    .create_container(ctx(), &request("bad/id", good.clone(), rootfs))
                    .await,
            );
            assert_eq!(code, Some(ttrpc::Code::INVALID_ARGUMENT), "{message}");

            // A duplicate id is refused while the first container exists.
            pod.agent()
                .create_container(ctx(), &request("dup", good.clone(), rootfs))
                .await
                .unwrap();
            let (code, message) = code_of(
                pod.agent()
                    .create_container(ctx(), &request("dup", good.clone(), rootfs))
                    .await,
            );
            assert_eq!(code, Some(ttrpc::Code::ALREADY_EXISTS), "{message}");
            pod.remove("dup").await.unwrap();

            // Nothing of the failed attempts is left: the id is free, and the guest's bundle and
            // state directories hold only the container looking at them.
            let mut inspector = busybox_spec(&[
                "sh",
                "-c",
                "ls /bundles; ls /state; grep cloak /proc/mounts",
            ]);
            let mut mounts = inspector.mounts().clone().unwrap();
            for (guest, inside) in [
                ("/run/cloak/containers", "/bundles"),
                ("/run/cloak/libcontainer", "/state"),
            ] {
                mounts.push(
                    oci_spec::runtime::MountBuilder::default()
                        .destination(inside)
                        .source(guest)
                        .typ("bind")
                        .options(vec!["rbind".to_owned(), "ro".to_owned()])
                        .build()
                        .unwrap(),
                );
            }
            inspector.set_mounts(Some(mounts));
            let output = pod.run("bad", &inspector, None).await.unwrap();
            let text = output.stdout_text();
            assert!(
                text.starts_with("bad\nbad\n"),
                "leftover bundle or state: {text}"
            );
            let mounts: Vec<&str> = text.lines().skip(2).collect();
            assert!(
                !mounts.is_empty(),
                "the inspector sees its own rootfs mount"
            );
            for mount in mounts {
                assert!(
                    !mount.contains("containers/") || mount.contains("containers/bad/"),
                    "leftover mount: {mount}"
                );
            }
        },
    );
}

#[test]
fn isolation_follows_the_spec() {
    with_pod("isolation_follows_the_spec", async |pod| {
        let script = "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; ulimit -n; \
                      echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo sys-writable || echo sys-readonly; \
                      [ -s /proc/kcore ] && echo kcore-visible || echo kcore-masked; \
                      ls /dev/null /dev/zero /dev/urandom >/dev/null && echo devices-ok; \
                      mkdir /blocked 2>/dev/null && echo mkdir-allowed || echo mkdir-denied; \
                      hostname";
        let mut spec = busybox_spec(&["sh", "-c", script]);
        let mut process = spec.process().clone().unwrap();
        // No capabilities at all, no new privileges, a file limit of 123.
        let no_caps: oci_spec::runtime::LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":[],"effective":[],"permitted":[],"inheritable":[],"ambient":[]}"#,
        )
        .unwrap();
        process.set_capabilities(Some(no_caps));
        process.set_no_new_privileges(Some(true));
        let rlimits: Vec<oci_spec::runtime::PosixRlimit> =
            serde_json::from_str(r#"[{"type":"RLIMIT_NOFILE","hard":123,"soft":123}]"#).unwrap();
        process.set_rlimits(Some(rlimits));
        spec.set_process(Some(process));
        // A seccomp profile that refuses mkdir/mkdirat with EPERM and allows the rest.
        let mut linux = spec.linux().clone().unwrap();
        let seccomp: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap();
        linux.set_seccomp(Some(seccomp));
        spec.set_linux(Some(linux));

        let output = pod.run("isolated", &spec, None).await.unwrap();
        let text = output.stdout_text();
        assert_eq!(output.exit_status, 0, "{output:?}");
        assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
        assert!(text.contains("NoNewPrivs:\t1"), "{text}");
        assert!(text.contains("\n123\n"), "{text}");
        assert!(text.contains("sys-readonly"), "{text}");
        assert!(text.contains("kcore-masked"), "{text}");
        assert!(text.contains("devices-ok"), "{text}");
        assert!(text.contains("mkdir-denied"), "{text}");
        assert!(text.trim_end().ends_with("cloak-test"), "{text}");

        // Without the profile the same mkdir works: the denial came from seccomp.
        let output = pod
            .run(
                "unconfined",
                &busybox_spec(&["sh", "-c", "mkdir /blocked && echo mkdir-allowed"]),
                None,
            )
            .await
            .unwrap();
        assert_eq!(output.stdout_text(), "mkdir-allowed\n", "{output:?}");
    });
}
