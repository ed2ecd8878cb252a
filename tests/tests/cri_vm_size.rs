//! A pod's VM is as big as the pod asks for: the kubelet sends the sum of the containers'
//! limits in the sandbox config, containerd passes it on as sandbox annotations, and the shim
//! sizes the VM from them (`host/src/pod_size.rs`). The workload is runc's: a container
//! limited to 1 GiB holds 900 MiB, and is not OOM-killed, on runc and on cloak alike.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use cloak_tests::containerd::image;
use cloak_tests::cri::container_config;
use cloak_tests::cri_compare::{on_runc_and_cloak, start};
use k8s_cri::v1::LinuxContainerResources;

const GIB: i64 = 1 << 30;

fn limited_to(bytes: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        memory_limit_in_bytes: bytes,
        ..Default::default()
    }
}

/// MemTotal of /proc/meminfo in MiB.
fn mem_total_mib(meminfo: &str) -> u64 {
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .unwrap_or_else(|| panic!("no MemTotal in {meminfo:?}"));
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024
}

#[test]
fn a_container_limited_to_one_gib_holds_900_mib() {
    let Some((runc, cloak)) = on_runc_and_cloak(
        "a_container_limited_to_one_gib_holds_900_mib",
        |pod| pod.resources = Some(limited_to(GIB)),
        async |cri, pod, pod_id, _| {
            let mut config = container_config("hog", &image(), &["sleep", "3600"]);
            config.linux.as_mut().unwrap().resources = Some(limited_to(GIB));
            let id = start(cri, pod, pod_id, config).await;
            // dd reads one 900 MiB block into its buffer: 900 MiB of anonymous memory, all of
            // it touched, charged to the container's cgroup (emulated guests take a while).
            let hog = cri
                .exec_sync_within(
                    &id,
                    &["dd", "if=/dev/zero", "of=/dev/null", "bs=900M", "count=1"],
                    300,
                )
                .await
                .unwrap();
            let meminfo = cri.exec_sync(&id, &["cat", "/proc/meminfo"]).await.unwrap();
            (
                hog.exit_code,
                String::from_utf8_lossy(&hog.stderr)
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned(),
                mem_total_mib(&String::from_utf8_lossy(&meminfo.stdout)),
            )
        },
    ) else {
        return;
    };
    let expected = (0, "1+0 records out".to_owned());
    assert_eq!(
        (runc.0, runc.1.clone()),
        expected,
        "runc: the expected behaviour"
    );
    assert_eq!(
        (cloak.0, cloak.1.clone()),
        expected,
        "cloak holds it as runc does"
    );
    // The VM has the configured 512 MiB plus the pod's 1 GiB: its kernel shows that much,
    // less what the kernel keeps for itself (a few percent), and more than 1 GiB.
    let total = cloak.2;
    assert!(
        (1400..=1536).contains(&total),
        "the pod VM's MemTotal is {total} MiB, not 512 + 1024 MiB"
    );
}
