//! With `tee = "none"` the pages a guest frees go back to the host (QEMU's virtio-balloon with
//! free page reporting), so a pod VM's host memory follows what the guest uses, not the most
//! it ever used. A container fills 192 MiB of its in-memory rootfs, then removes the file;
//! the oracle is the host kernel's count of the VM's resident guest RAM (QEMU's RssShmem: the
//! memfd behind guest memory), not anything cloak reports.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt as _;

use cloak_tests::bench::rss_kib;
use cloak_tests::pod::{busybox_spec, with_pod, Streams};
use cloak_tests::{pids_of, processes_mentioning};

const FILL_MIB: u64 = 192;

/// QEMU's resident guest RAM, MiB.
fn guest_ram_mib(qemu: u32) -> u64 {
    rss_kib(qemu).1 / 1024
}

#[test]
fn pages_a_container_frees_go_back_to_the_host() {
    with_pod("pages_a_container_frees_go_back_to_the_host", async |pod| {
        let qemu = pids_of(&processes_mentioning(pod.run_root.path()), "qemu-system");
        assert_eq!(qemu.len(), 1, "one QEMU for the pod");
        let qemu = qemu[0];
        let script = format!(
            "dd if=/dev/zero of=/tmp/fill bs=1M count={FILL_MIB} 2>/dev/null && echo filled \
             && sleep 3 && rm /tmp/fill && echo freed && sleep 60"
        );
        let streams = pod
            .create(
                "filler",
                &busybox_spec(&["sh", "-c", &script]),
                Streams::default(),
            )
            .await
            .unwrap();
        pod.start("filler").await.unwrap();
        let mut lines = tokio::io::BufReader::new(streams.stdout).lines();
        let mut next_line = async || {
            tokio::time::timeout(Duration::from_secs(120), lines.next_line())
                .await
                .expect("the container writes its line in time")
                .unwrap()
                .unwrap_or_default()
        };
        assert_eq!(next_line().await, "filled");
        let peak = guest_ram_mib(qemu);
        assert_eq!(next_line().await, "freed");
        // Reporting runs a couple of seconds after pages are freed, in 2 MiB blocks.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut now = guest_ram_mib(qemu);
        while now + FILL_MIB / 2 > peak && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            now = guest_ram_mib(qemu);
        }
        eprintln!("guest RAM resident on the host: {peak} MiB filled, {now} MiB after the free");
        assert!(
            now + FILL_MIB / 2 <= peak,
            "the freed {FILL_MIB} MiB stayed resident: {peak} MiB filled, {now} MiB 30 s after"
        );
        pod.signal("filler", "", 9).await.unwrap();
        let _ = pod.wait("filler", "").await;
        pod.remove("filler").await.unwrap();
    });
}
