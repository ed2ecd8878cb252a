//! The Kubernetes path without Kubernetes: a private containerd with its CRI plugin (cloak as
//! runtime handler `cloak`, a CNI bridge network, a locally built pause image), driven by a
//! CRI client exactly as the kubelet drives it.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::collections::HashMap;
use std::time::Duration;

use cloak_tests::containerd::{image, shim_binary, PrivateContainerd};
use cloak_tests::cri::{cni_netns, cri_unavailable, CriClient, PodSpec, RUNTIME_HANDLER};
use cloak_tests::{skip, vm_slot, VmTestEnv};

fn cri_containerd(test: &str) -> Option<(VmTestEnv, PrivateContainerd)> {
    let env = VmTestEnv::get(test)?;
    for tool in ["containerd", "ctr", "virtiofsd", "ip"] {
        if !cloak_tests::on_path(tool) {
            skip(
                test,
                &format!("{tool} is not on PATH (scripts/setup-host.sh installs it)"),
            );
            return None;
        }
    }
    if let Some(reason) = cri_unavailable() {
        skip(test, &reason);
        return None;
    }
    let Some(shim) = shim_binary() else {
        skip(
            test,
            "containerd-shim-cloak-v2 is not built (cargo build --release)",
        );
        return None;
    };
    let containerd =
        PrivateContainerd::start_with_cri(&env, &shim).expect("private containerd starts");
    Some((env, containerd))
}

fn pod_spec(containerd: &PrivateContainerd, name: &str) -> PodSpec {
    let log_directory = containerd.dir().join("pod-logs").join(name);
    std::fs::create_dir_all(&log_directory).unwrap();
    PodSpec {
        name: name.into(),
        runtime_handler: RUNTIME_HANDLER.into(),
        log_directory,
        annotations: HashMap::new(),
    }
}

/// QEMU processes of cloak pods under this containerd.
fn pod_vms(containerd: &PrivateContainerd) -> Vec<String> {
    cloak_tests::processes_mentioning(&containerd.run_dir)
        .into_iter()
        .filter(|p| p.contains("qemu-system"))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_pod_with_two_containers_runs_in_one_vm_and_leaves_nothing() {
    let test = "a_pod_with_two_containers_runs_in_one_vm_and_leaves_nothing";
    let _slot = vm_slot();
    let Some((_env, containerd)) = cri_containerd(test) else {
        return;
    };
    let netns_before = cni_netns();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let pod = pod_spec(&containerd, "two");
        let pod_id = cri
            .run_pod(&pod)
            .await
            .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));
        let sleeper = cri
            .create_container(&pod_id, &pod, "sleeper", &image(), &["sleep", "3600"])
            .await
            .unwrap();
        let trapper = cri
            .create_container(
                &pod_id,
                &pod,
                "trapper",
                &image(),
                &["sh", "-c", "trap 'exit 7' TERM; sleep 3600 & wait"],
            )
            .await
            .unwrap();
        cri.start_container(&sleeper).await.unwrap();
        cri.start_container(&trapper).await.unwrap();
        assert_eq!(pod_vms(&containerd).len(), 1, "one VM for the pod");

        for (id, name) in [(&sleeper, "sleeper"), (&trapper, "trapper")] {
            let out = cri
                .exec_sync(id, &["sh", "-c", "echo in-$(hostname); exit 3"])
                .await
                .unwrap();
            assert_eq!(out.exit_code, 3, "{name}: {}", text(&out.stderr));
            assert_eq!(text(&out.stdout), "in-two\n", "{name}");
        }
        // Both containers see each other's processes only through the pod VM: one kernel.
        let sleeper_kernel = cri.exec_sync(&sleeper, &["uname", "-r"]).await.unwrap();
        let trapper_kernel = cri.exec_sync(&trapper, &["uname", "-r"]).await.unwrap();
        assert_eq!(sleeper_kernel.stdout, trapper_kernel.stdout);
        assert_ne!(
            text(&sleeper_kernel.stdout).trim(),
            nix::sys::utsname::uname()
                .unwrap()
                .release()
                .to_string_lossy(),
            "containers run on the guest kernel"
        );

        cri.stop_container(&trapper, 10).await.unwrap();
        assert_eq!(
            cri.wait_for_exit(&trapper, Duration::from_secs(30))
                .await
                .unwrap(),
            7
        );
        // `sleep` as PID 1 ignores SIGTERM: StopContainer kills it after the grace period.
        cri.stop_container(&sleeper, 2).await.unwrap();
        assert_eq!(
            cri.wait_for_exit(&sleeper, Duration::from_secs(30))
                .await
                .unwrap(),
            137
        );
        cri.remove_pod(&pod_id).await.unwrap();
    });
    assert_eq!(
        containerd.wait_for_no_leftovers(false),
        Vec::<String>::new()
    );
    assert_eq!(cni_netns(), netns_before, "the pod's network namespace is gone");
}
