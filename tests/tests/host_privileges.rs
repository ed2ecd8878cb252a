//! What a guest that escapes into its VMM or a helper daemon finds there: QEMU under its
//! seccomp sandbox with only CAP_NET_ADMIN (to attach the pod's tap), vhost-device-vsock with
//! no capability at all, virtiofsd under its own namespace sandbox and seccomp filter. Read
//! from the kernel's view of the running processes of a CRI pod, not from cloak's settings.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test fails loudly by design

use cloak_host::hypervisor::privileges::{effective_capabilities, seccomp_mode, CAP_NET_ADMIN};
use cloak_tests::containerd::{image, PrivateContainerd};
use cloak_tests::cri::{cri_test_env, CriClient, PodSpec, RUNTIME_HANDLER};

/// Seccomp mode 2: a filter is installed.
const SECCOMP_FILTER: u32 = 2;

/// (pid, program) of every process of the pods below `run_dir`.
fn pod_processes(run_dir: &std::path::Path) -> Vec<(u32, String)> {
    cloak_tests::processes_mentioning(run_dir)
        .iter()
        .filter_map(|line| cloak_tests::pid_and_program(line))
        .collect()
}

#[test]
fn vmm_and_helpers_run_sandboxed_with_least_capabilities() {
    let test = "vmm_and_helpers_run_sandboxed_with_least_capabilities";
    let Some((env, shim)) = cri_test_env(test) else {
        return;
    };
    let _slot = cloak_tests::vm_slot();
    let containerd = PrivateContainerd::start_with_cri(&env, &shim).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let pod = PodSpec::in_containerd(&containerd, "confined", RUNTIME_HANDLER).unwrap();
        let pod_id = cri.run_pod(&pod).await.unwrap();
        let container = cri
            .create_container(&pod_id, &pod, "main", &image(), &["sleep", "3600"])
            .await
            .unwrap();
        cri.start_container(&container).await.unwrap();

        let processes = pod_processes(&containerd.run_dir);
        eprintln!("{processes:?}");
        let of = |program: &str| -> Vec<u32> {
            processes
                .iter()
                .filter(|(_, name)| name.starts_with(program))
                .map(|(pid, _)| *pid)
                .collect()
        };
        let qemu = of("qemu-system");
        assert_eq!(qemu.len(), 1, "{processes:?}");
        assert_eq!(
            seccomp_mode(qemu[0]),
            Some(SECCOMP_FILTER),
            "QEMU runs under -sandbox"
        );
        assert_eq!(
            effective_capabilities(qemu[0]),
            Some(1 << CAP_NET_ADMIN),
            "QEMU keeps CAP_NET_ADMIN only"
        );
        let vsock = of("vhost-device-vsock");
        assert_eq!(vsock.len(), 1, "{processes:?}");
        assert_eq!(effective_capabilities(vsock[0]), Some(0));
        // virtiofsd's namespace sandbox: a parent that only waits, and the serving child in
        // a mount namespace of its own under a seccomp filter.
        let serving: Vec<u32> = of("virtiofsd")
            .into_iter()
            .filter(|pid| seccomp_mode(*pid) == Some(SECCOMP_FILTER))
            .collect();
        assert_eq!(serving.len(), 1, "one filtered virtiofsd: {processes:?}");
        let mount_ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
        assert_ne!(
            mount_ns(&serving[0].to_string()),
            mount_ns("self"),
            "virtiofsd serves from a mount namespace of its own"
        );
        // The confined pod still does its work.
        let exec = cri
            .exec_sync(&container, &["echo", "confined"])
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "confined");
        cri.remove_pod(&pod_id).await.unwrap();
    });
    assert_eq!(
        containerd.wait_for_no_leftovers(false),
        Vec::<String>::new()
    );
}
