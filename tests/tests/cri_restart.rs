//! containerd restarted under running pods, as a node upgrade or a crashed containerd does:
//! the pods' shims and VMs keep running without it, and the containerd that comes back finds
//! them — `ctr task ls` and the CRI show them running, exec works, the containers' logs keep
//! flowing (the shim kept their output while nobody read it), and deleting them cleans up.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test fails loudly by design

use std::time::Duration;

use cloak_tests::containerd::{image, PrivateContainerd};
use cloak_tests::cri::{cni_netns, cri_test_env, CriClient, PodSpec, RUNTIME_HANDLER};
use k8s_cri::v1::ContainerState;

/// Prints a numbered line every 200 ms.
const TICKER: &str = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";

fn log_lines(pod: &PodSpec) -> usize {
    std::fs::read_to_string(pod.log_directory.join("ticker.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn containerd_restarted_while_two_pods_run_finds_them_serving() {
    let test = "containerd_restarted_while_two_pods_run_finds_them_serving";
    let Some((env, shim)) = cri_test_env(test) else {
        return;
    };
    let _slot = cloak_tests::vm_slot();
    let mut containerd = PrivateContainerd::start_with_cri(&env, &shim).unwrap();
    let netns_before = cni_netns();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pods: Vec<PodSpec> = ["first", "second"]
        .iter()
        .map(|name| PodSpec::in_containerd(&containerd, name, RUNTIME_HANDLER).unwrap())
        .collect();
    let started: Vec<(String, String)> = runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let mut started = Vec::new();
        for pod in &pods {
            let pod_id = cri.run_pod(pod).await.unwrap();
            let container = cri
                .create_container(&pod_id, pod, "ticker", &image(), &["sh", "-c", TICKER])
                .await
                .unwrap();
            cri.start_container(&container).await.unwrap();
            started.push((pod_id, container));
        }
        started
    });
    let shims_before = containerd.shim_processes();
    containerd.restart().unwrap();
    assert_eq!(
        containerd.shim_processes(),
        shims_before,
        "the shims outlived containerd"
    );

    let tasks = containerd
        .ctr_in("k8s.io", &["task", "ls"])
        .output()
        .unwrap();
    let tasks = String::from_utf8_lossy(&tasks.stdout).into_owned();
    for (_, container) in &started {
        let line = tasks
            .lines()
            .find(|line| line.starts_with(container.as_str()))
            .unwrap_or_else(|| panic!("{container} not in `ctr task ls`:\n{tasks}"));
        assert_eq!(line.split_whitespace().nth(2), Some("RUNNING"), "{line}");
    }
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        for (pod, (pod_id, container)) in pods.iter().zip(&started) {
            let status = cri.container_status(container).await.unwrap();
            assert_eq!(status.state, ContainerState::ContainerRunning as i32);
            let exec = cri
                .exec_sync(container, &["echo", &pod.name])
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), pod.name);
            // The log keeps growing under the new containerd.
            let before = log_lines(pod);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = log_lines(pod);
            eprintln!(
                "{}: {before} log lines, {after} two seconds later",
                pod.name
            );
            assert!(
                after > before,
                "{}'s log stopped after the restart",
                pod.name
            );
            cri.remove_pod(pod_id).await.unwrap();
        }
    });
    cloak_tests::cri::assert_pods_left_nothing(&containerd, &netns_before);
}
