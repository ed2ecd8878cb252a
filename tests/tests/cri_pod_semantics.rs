//! What a pod's containers see, through the CRI plugin exactly as the kubelet asks for it,
//! with runc's result as the expected one: each scenario runs in a runc pod and then in a cloak
//! pod of the same private containerd, and the two must agree (and match what Kubernetes
//! documents). Network sysctls in the sandbox spec (containerd 2.x adds two to every pod),
//! signal dispositions, seccomp in exec'd processes, the pod's IPC, UTS and PID namespaces, pod
//! sysctls, and read-only volumes with writable mounts below them. `make test` runs this file
//! against Debian's containerd 1.6 and again against containerd 2.x.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::collections::HashMap;
use std::path::Path;

use cloak_tests::containerd::image;
use cloak_tests::cri::{container_config, CriClient, PodSpec};
use cloak_tests::cri_compare::{on_runc_and_cloak, start};
use cloak_tests::skip;
use k8s_cri::v1::{ContainerConfig, Mount, SecurityProfile};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn sleeper(cri: &mut CriClient, pod: &PodSpec, pod_id: &str, name: &str) -> String {
    start(
        cri,
        pod,
        pod_id,
        container_config(name, &image(), &["sleep", "3600"]),
    )
    .await
}

/// ExecSync; (exit code, stdout, stderr).
async fn exec(cri: &mut CriClient, id: &str, command: &[&str]) -> (i32, String, String) {
    let out = cri.exec_sync(id, command).await.unwrap();
    (out.exit_code, text(&out.stdout), text(&out.stderr))
}

type Exec = (i32, String, String);

/// Runs a runc pod and a cloak pod with `sysctls` and reads them back in a container of each.
fn sysctls_read_back(test: &str, sysctls: &[(&str, &str)]) -> Option<(Exec, Exec)> {
    let paths: Vec<String> = sysctls
        .iter()
        .map(|(name, _)| format!("/proc/sys/{}", name.replace('.', "/")))
        .collect();
    on_runc_and_cloak(
        test,
        |pod| {
            pod.sysctls = sysctls
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect::<HashMap<_, _>>();
        },
        async |cri, pod, pod_id, _| {
            let id = sleeper(cri, pod, pod_id, "main").await;
            let mut command = vec!["cat"];
            command.extend(paths.iter().map(String::as_str));
            exec(cri, &id, &command).await
        },
    )
}

#[test]
fn a_pod_whose_sandbox_spec_has_network_sysctls_runs_and_has_them() {
    // The two sysctls containerd 2.x's CRI plugin adds to every sandbox (with these values).
    let Some((runc, cloak)) = sysctls_read_back(
        "a_pod_whose_sandbox_spec_has_network_sysctls_runs_and_has_them",
        &[
            ("net.ipv4.ip_unprivileged_port_start", "0"),
            ("net.ipv4.ping_group_range", "0 2147483647"),
        ],
    ) else {
        return;
    };
    assert_eq!(
        runc.1.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "2147483647"]
    );
    assert_eq!(cloak, runc);
}

/// SigBlk and SigIgn of a `grep -E '^Sig(Ign|Blk)' /proc/PID/status`, without signals 32
/// and 33: glibc reserves them for itself (no program can see or change them through libc),
/// and runc 1.1's init leaves 32 ignored where later runc versions do not.
fn signal_masks(status: &str) -> [u64; 2] {
    const GLIBC_RESERVED: u64 = 0b11 << 31;
    let mut masks = [u64::MAX; 2];
    for line in status.lines() {
        let (name, hex) = line.split_once(":\t").unwrap_or_default();
        let slot = match name {
            "SigBlk" => 0,
            "SigIgn" => 1,
            _ => continue,
        };
        masks[slot] = u64::from_str_radix(hex.trim(), 16).unwrap() & !GLIBC_RESERVED;
    }
    masks
}

#[test]
fn signal_dispositions_are_the_defaults_and_early_closing_pipes_end() {
    let test = "signal_dispositions_are_the_defaults_and_early_closing_pipes_end";
    let Some((runc, cloak)) = on_runc_and_cloak(
        test,
        |_| {},
        async |cri, pod, pod_id, _| {
            let id = sleeper(cri, pod, pod_id, "main").await;
            let signals = "^Sig(Ign|Blk)";
            // PID 1 of the container's PID namespace is its init (`sleep`); grep reads its own.
            let init = exec(cri, &id, &["grep", "-E", signals, "/proc/1/status"]).await;
            let execd = exec(cri, &id, &["grep", "-E", signals, "/proc/self/status"]).await;
            // `yes` is killed by SIGPIPE when `head` is done; with SIGPIPE ignored it spins on
            // EPIPE forever and ExecSync times out.
            let mut pipes = Vec::new();
            for _ in 0..50 {
                let (code, stdout, _) =
                    exec(cri, &id, &["sh", "-c", "yes cloak | head -c 1048576"]).await;
                pipes.push((code, stdout.len()));
            }
            (init, execd, pipes)
        },
    ) else {
        return;
    };
    let (init, execd, pipes) = &runc;
    eprintln!(
        "runc: init {init:?}, exec'd {execd:?}; cloak: init {:?}, exec'd {:?}",
        cloak.0, cloak.1
    );
    for (what, runc, cloak) in [("init", init, &cloak.0), ("exec'd", execd, &cloak.1)] {
        let (runc, cloak) = (signal_masks(&runc.1), signal_masks(&cloak.1));
        assert_eq!(runc, [0, 0], "runc's {what}");
        assert_eq!(cloak, runc, "cloak's {what} (SigBlk, SigIgn)");
    }
    assert!(pipes.iter().all(|&p| p == (0, 1 << 20)), "runc: {pipes:?}");
    assert_eq!(
        &cloak.2, pipes,
        "50 pipelines, each exit 0 with exactly 1 MiB"
    );
}

/// A Localhost seccomp profile that allows everything but sethostname and chmod.
fn write_deny_profile(dir: &Path) -> String {
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            { "names": ["sethostname"], "action": "SCMP_ACT_ERRNO" },
            { "names": ["chmod", "fchmod", "fchmodat"], "action": "SCMP_ACT_ERRNO" }
        ]
    });
    let path = dir.join("deny-sethostname-chmod.json");
    std::fs::write(&path, serde_json::to_vec(&profile).unwrap()).unwrap();
    path.display().to_string()
}

fn with_seccomp(
    mut config: ContainerConfig,
    profile: &str,
    add_capabilities: &[&str],
) -> ContainerConfig {
    let context = config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .get_or_insert_with(Default::default);
    context.seccomp = Some(SecurityProfile {
        profile_type: k8s_cri::v1::security_profile::ProfileType::Localhost as i32,
        localhost_ref: profile.into(),
    });
    context.capabilities = Some(k8s_cri::v1::Capability {
        add_capabilities: add_capabilities.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    });
    config
}

#[test]
fn exec_d_processes_run_under_the_container_s_seccomp_filter() {
    let test = "exec_d_processes_run_under_the_container_s_seccomp_filter";
    let Some((runc, cloak)) = on_runc_and_cloak(
        test,
        |_| {},
        async |cri, pod, pod_id, containerd| {
            let profile = write_deny_profile(containerd.dir());
            // With CAP_SYS_ADMIN `hostname x` would succeed but for the filter; the init records
            // what its own attempt gave.
            let admin = start(
                cri,
                pod,
                pod_id,
                with_seccomp(
                    container_config(
                        "admin",
                        &image(),
                        &[
                            "sh",
                            "-c",
                            "hostname init-x 2>/tmp/err; echo $? >/tmp/rc; exec sleep 3600",
                        ],
                    ),
                    &profile,
                    &["SYS_ADMIN"],
                ),
            )
            .await;
            // Without CAP_SYS_ADMIN and without no_new_privileges (the CRI default), installing
            // the filter needs care; root owns / so chmod would succeed but for the filter.
            let plain = start(
                cri,
                pod,
                pod_id,
                with_seccomp(
                    container_config("plain", &image(), &["sleep", "3600"]),
                    &profile,
                    &[],
                ),
            )
            .await;
            let init = exec(cri, &admin, &["cat", "/tmp/rc", "/tmp/err"]).await;
            let hostname = exec(cri, &admin, &["hostname", "exec-x"]).await;
            let chmod = exec(
                cri,
                &plain,
                &["sh", "-c", "touch /tmp/f && chmod 400 /tmp/f"],
            )
            .await;
            let mode = exec(cri, &plain, &["stat", "-c", "%a", "/tmp/f"]).await;
            let filtered = exec(cri, &plain, &["grep", "^Seccomp:", "/proc/self/status"]).await;
            // Capabilities and no_new_privileges of an exec'd process, as runc applies them
            // from the exec's process spec. (Not rlimits: the CRI sets none, and unset limits
            // are inherited from the runtime: containerd's on the host, the agent's in the VM.)
            let capabilities = exec(
                cri,
                &plain,
                &["grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"],
            )
            .await;
            (init, hostname, chmod, mode, filtered, capabilities)
        },
    ) else {
        return;
    };
    let (init, hostname, chmod, mode, filtered, capabilities) = &runc;
    assert!(
        init.1.starts_with("1\n") && init.1.contains("Operation not permitted"),
        "{init:?}"
    );
    assert_ne!(hostname.0, 0);
    assert!(
        hostname.2.contains("Operation not permitted"),
        "{hostname:?}"
    );
    assert_ne!(chmod.0, 0, "{chmod:?}");
    assert_eq!(mode.1.trim(), "644", "the chmod did not happen");
    assert_eq!(filtered.1, "Seccomp:\t2\n");
    assert_eq!(init, &cloak.0, "the init's hostname");
    assert_eq!(hostname.0, cloak.1 .0, "exec'd hostname: {:?}", cloak.1);
    assert!(
        cloak.1 .2.contains("Operation not permitted"),
        "{:?}",
        cloak.1
    );
    assert_eq!(chmod.0, cloak.2 .0, "exec'd chmod: {:?}", cloak.2);
    assert_eq!(mode, &cloak.3);
    assert_eq!(filtered, &cloak.4, "the exec'd process is filtered");
    // The capabilities lent to install the filter are gone before the payload runs.
    assert!(capabilities.1.contains("CapEff:"), "{capabilities:?}");
    assert!(capabilities.1.contains("NoNewPrivs:"), "{capabilities:?}");
    assert_eq!(capabilities, &cloak.5, "capabilities and no_new_privileges");
}

/// Namespace identity of a container, as `readlink /proc/self/ns/<kind>` shows it.
async fn namespace(cri: &mut CriClient, id: &str, kind: &str) -> String {
    exec(cri, id, &["readlink", &format!("/proc/self/ns/{kind}")])
        .await
        .1
}

#[test]
fn the_containers_of_a_pod_share_its_ipc_and_uts_namespaces() {
    let test = "the_containers_of_a_pod_share_its_ipc_and_uts_namespaces";
    if cloak_tests::rootfs::shm_probe_binary().is_none() {
        skip(
            test,
            "cloak-shm-probe is not built (make test builds it with the guest binaries)",
        );
        return;
    }
    let Some((runc, cloak)) = on_runc_and_cloak(
        test,
        |_| {},
        async |cri, pod, pod_id, _| {
            let a = sleeper(cri, pod, pod_id, "a").await;
            let b = sleeper(cri, pod, pod_id, "b").await;
            let probe = format!("/bin/{}", cloak_tests::rootfs::SHM_PROBE);
            let created = exec(cri, &a, &[&probe, "create", "4242", "segment-of-a"]).await;
            let read = exec(cri, &b, &[&probe, "read", "4242"]).await;
            let mut same = Vec::new();
            for kind in ["ipc", "uts", "pid", "mnt"] {
                same.push((
                    kind,
                    namespace(cri, &a, kind).await == namespace(cri, &b, kind).await,
                ));
            }
            let hostnames = (
                exec(cri, &a, &["hostname"]).await.1,
                exec(cri, &b, &["hostname"]).await.1,
            );
            // Without shareProcessNamespace, b does not see a's sleep.
            let b_sees = exec(cri, &b, &["ps", "-o", "pid,args"]).await.1;
            (
                created.0,
                read,
                same,
                hostnames.0 == hostnames.1,
                b_sees.matches("sleep 3600").count(),
            )
        },
    ) else {
        return;
    };
    assert_eq!(runc.0, 0);
    assert_eq!(runc.1, (0, "segment-of-a\n".to_owned(), String::new()));
    assert_eq!(
        runc.2,
        [("ipc", true), ("uts", true), ("pid", false), ("mnt", false)]
    );
    assert!(runc.3);
    assert_eq!(runc.4, 1, "only its own sleep");
    assert_eq!(cloak, runc);
}

#[test]
fn a_pod_that_shares_its_process_namespace_sees_all_its_processes() {
    let test = "a_pod_that_shares_its_process_namespace_sees_all_its_processes";
    let Some((runc, cloak)) = on_runc_and_cloak(
        test,
        |pod| pod.share_pid = true,
        async |cri, pod, pod_id, _| {
            let a = start(
                cri,
                pod,
                pod_id,
                container_config("a", &image(), &["sleep", "1234"]),
            )
            .await;
            let b = sleeper(cri, pod, pod_id, "b").await;
            let seen_by_b = exec(cri, &b, &["ps", "-o", "args"]).await.1;
            let same_pid = namespace(cri, &a, "pid").await == namespace(cri, &b, "pid").await;
            (
                seen_by_b.lines().any(|l| l.trim() == "sleep 1234"),
                same_pid,
            )
        },
    ) else {
        return;
    };
    assert_eq!(runc, (true, true));
    assert_eq!(cloak, runc);
}

#[test]
fn pod_sysctls_are_seen_by_its_containers() {
    let Some((runc, cloak)) = sysctls_read_back(
        "pod_sysctls_are_seen_by_its_containers",
        &[("kernel.shm_rmid_forced", "1"), ("fs.mqueue.msg_max", "20")],
    ) else {
        return;
    };
    assert_eq!(runc, (0, "1\n20\n".to_owned(), String::new()));
    assert_eq!(cloak, runc);
}

/// A host directory with a writable tmpfs mounted below it; unmounted on drop.
struct VolumeWithSubmount {
    dir: std::path::PathBuf,
}

impl VolumeWithSubmount {
    fn new(parent: &Path, name: &str) -> Self {
        let dir = parent.join(name);
        std::fs::create_dir_all(dir.join("scratch")).unwrap();
        std::fs::write(dir.join("present"), "host file\n").unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir.join("scratch"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        Self { dir }
    }
}

impl Drop for VolumeWithSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir.join("scratch"), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_read_only_volume_refuses_writes_but_a_writable_mount_below_it_takes_them() {
    let test = "a_read_only_volume_refuses_writes_but_a_writable_mount_below_it_takes_them";
    let Some((runc, cloak)) = on_runc_and_cloak(
        test,
        |_| {},
        async |cri, pod, pod_id, containerd| {
            let volume = VolumeWithSubmount::new(containerd.dir(), &format!("volume-{}", pod.name));
            let mut config = container_config("main", &image(), &["sleep", "3600"]);
            config.mounts = vec![Mount {
                container_path: "/data".into(),
                host_path: volume.dir.display().to_string(),
                readonly: true,
                ..Default::default()
            }];
            let id = start(cri, pod, pod_id, config).await;
            let read = exec(cri, &id, &["cat", "/data/present"]).await;
            let top = exec(cri, &id, &["touch", "/data/new"]).await;
            let below = exec(
                cri,
                &id,
                &[
                    "sh",
                    "-c",
                    "echo written > /data/scratch/new && cat /data/scratch/new",
                ],
            )
            .await;
            let on_host =
                std::fs::read_to_string(volume.dir.join("scratch/new")).unwrap_or_default();
            cri.stop_container(&id, 0).await.unwrap();
            cri.remove_container(&id).await.unwrap();
            (
                read,
                top.0 != 0,
                top.2.contains("Read-only file system"),
                below,
                on_host,
            )
        },
    ) else {
        return;
    };
    assert_eq!(runc.0, (0, "host file\n".to_owned(), String::new()));
    assert!(
        runc.1 && runc.2,
        "runc refuses the write to the read-only volume"
    );
    assert_eq!(runc.3, (0, "written\n".to_owned(), String::new()));
    assert_eq!(runc.4, "written\n");
    assert_eq!(cloak, runc);
}
