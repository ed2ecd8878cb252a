//! Verified layers benchmark, in one run:
//! 1. layer conversion (tar → erofs + dm-verity tree, `cloak-layers`) in MiB/s;
//! 2. in pod VMs, for the same files (busybox plus a 64 MiB file) from verified layer images
//!    and from the host-shared directory (virtio-fs): container start (CreateContainer and
//!    StartContainer until running) and a cold sequential read of the 64 MiB file in the
//!    container, in MiB/s (one fresh pod per path and round, so no page cache carries over).
//!
//! Medians of N rounds. Usage: cloak-bench-layers [--runs N]   (make bench-layers)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use cloak_protocol::agent::Storage;
use cloak_tests::bench::{median, runs_from_args};
use cloak_tests::pod::{busybox_spec, Streams, TestPod, BUSYBOX_ROOTFS};
use cloak_tests::{vm_slot, VmTestEnv};

const BIG_MIB: usize = 64;

fn rootfs_with_big_file(dir: &Path) -> anyhow::Result<()> {
    cloak_tests::rootfs::build_busybox_rootfs(dir)?;
    let big: Vec<u8> = (0..BIG_MIB << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big"), big)?;
    Ok(())
}

fn convert(tar: &[u8], out: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(out.parent().context("a parent")?)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)?;
    Ok(cloak_layers::convert(tar, &mut file)?.verity.root_hex())
}

/// Seconds `args` takes as an exec in container `id`, less an empty exec's.
async fn exec_seconds(pod: &TestPod, id: &str, args: &[&str]) -> f64 {
    let time = |exec: &'static str, args: Vec<String>| async move {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let (status, output) = pod.run_exec(id, exec, &words).await;
        assert_eq!(status, 0, "{output}");
        started.elapsed().as_secs_f64()
    };
    let baseline = time("empty", vec!["true".into()]).await;
    let measured = time("read", args.iter().map(|a| (*a).to_owned()).collect()).await;
    (measured - baseline).max(1e-6)
}

/// One fresh pod: the container's start in ms and the cold read in MiB/s.
async fn round(env: &VmTestEnv, layered: bool, tar: &[u8]) -> anyhow::Result<(f64, f64)> {
    let pod = TestPod::boot(env).await?;
    let spec = busybox_spec(&["sleep", "600"]);
    let layer = if layered {
        let hash = convert(tar, &pod.shared.path().join("bench/layers/0.img"))?;
        Some(Storage {
            driver: "erofs-verity".into(),
            source: "/run/cloak/shared/bench/layers/0.img".into(),
            verity_root_hash: hash,
            ..Default::default()
        })
    } else {
        rootfs_with_big_file(&pod.shared.path().join(BUSYBOX_ROOTFS))?;
        None
    };
    let started = Instant::now();
    let streams = match layer {
        Some(layer) => {
            let rootfs = Storage {
                driver: "layers".into(),
                ..Default::default()
            };
            pod.create_with_storages("bench", &spec, Streams::default(), rootfs, vec![layer])
                .await?
        }
        None => pod.create("bench", &spec, Streams::default()).await?,
    };
    pod.start("bench").await?;
    let start_ms = started.elapsed().as_secs_f64() * 1e3;
    let seconds = exec_seconds(&pod, "bench", &["sh", "-c", "cat /big > /dev/null"]).await;
    drop(streams);
    pod.signal("bench", "", 9).await?;
    pod.wait("bench", "").await?;
    pod.remove("bench").await?;
    pod.shutdown().await?;
    Ok((start_ms, BIG_MIB as f64 / seconds))
}

fn main() -> anyhow::Result<()> {
    let runs = runs_from_args(3)?;
    let dir = tempfile::tempdir()?;
    rootfs_with_big_file(&dir.path().join("rootfs"))?;
    let tar = cloak_tests::oci_image::layer_tar(&dir.path().join("rootfs"))?;
    let mib = tar.len() as f64 / (1024.0 * 1024.0);
    let mut rates = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        convert(&tar, &dir.path().join("layer.img"))?;
        rates.push(mib / started.elapsed().as_secs_f64());
    }
    println!(
        "layer conversion: {mib:.1} MiB layer, median {:.0} MiB/s over {runs} runs (host CPU)",
        median(&mut rates)
    );
    let Some(env) = VmTestEnv::get("cloak-bench-layers") else {
        println!("in the guest: skipped (no guest image; run make image first)");
        return Ok(());
    };
    let _slot = vm_slot();
    let runtime = tokio::runtime::Runtime::new()?;
    let mut starts = [Vec::new(), Vec::new()];
    let mut reads = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (slot, layered) in [(0, true), (1, false)] {
            let (start, read) = runtime.block_on(round(&env, layered, &tar))?;
            starts[slot].push(start);
            reads[slot].push(read);
        }
    }
    let [layered_start, shared_start] = starts.each_mut().map(|v| median(v));
    let [layered_read, shared_read] = reads.each_mut().map(|v| median(v));
    println!("in the guest ({runs} fresh pods per path, medians):");
    println!(
        "  container start: verified layers {layered_start:.0} ms, virtio-fs {shared_start:.0} ms, ratio {:.2}",
        layered_start / shared_start
    );
    println!(
        "  cold read of {BIG_MIB} MiB: verified layers {layered_read:.0} MiB/s, virtio-fs {shared_read:.0} MiB/s, ratio {:.2}",
        layered_read / shared_read
    );
    Ok(())
}
