//! Container benchmark: in-guest container create+start+wait latency for `true` (median of 20,
//! measured from the host over the agent API) and stdout throughput for 256 MiB written by a
//! container, beside runc running the same busybox rootfs on the host in the same run.
//!
//! Usage: cloak-bench-containers [--runs N] [--mib M]   (make bench-containers sets the env)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context as _};
use cloak_tests::bench::{join, median};
use cloak_tests::pod::{busybox_spec, Streams, TestPod};
use cloak_tests::VmTestEnv;
use tokio::io::AsyncReadExt;

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    std::env::args()
        .skip_while(|arg| arg != name)
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .with_context(|| format!("{name} takes a number"))
        .map(|value| value.unwrap_or(default))
}

/// Bytes read from `stream` until EOF.
async fn count_stream(mut stream: tokio::net::UnixStream) -> anyhow::Result<u64> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(total);
        }
        total += read as u64;
    }
}

async fn cloak_latency(pod: &TestPod, runs: usize) -> anyhow::Result<Vec<f64>> {
    let spec = busybox_spec(&["true"]);
    let mut samples = Vec::new();
    for run in 0..runs {
        let id = format!("true-{run}");
        let started = Instant::now();
        let streams = pod.create(&id, &spec, Streams::default()).await?;
        pod.start(&id).await?;
        let exit = pod.wait(&id, "").await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(exit.exit_status == 0, "true exited {}", exit.exit_status);
        drop(streams);
        pod.remove(&id).await?;
    }
    Ok(samples)
}

async fn cloak_throughput(pod: &TestPod, bytes: u64) -> anyhow::Result<f64> {
    let command = format!("head -c {bytes} /dev/zero");
    let spec = busybox_spec(&["sh", "-c", &command]);
    let streams = pod.create("flood", &spec, Streams::default()).await?;
    let started = Instant::now();
    pod.start("flood").await?;
    let received = count_stream(streams.stdout).await?;
    let seconds = started.elapsed().as_secs_f64();
    pod.wait("flood", "").await?;
    pod.remove("flood").await?;
    ensure!(received == bytes, "received {received} of {bytes} bytes");
    Ok(bytes as f64 / seconds / 1e6)
}

/// A runc bundle with the same busybox rootfs and spec shape.
fn runc_bundle(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let rootfs = dir.join("rootfs");
    if !rootfs.exists() {
        cloak_tests::rootfs::build_busybox_rootfs(&rootfs)?;
    }
    let mut spec = busybox_spec(args);
    let mut root = spec.root().clone().context("spec root")?;
    root.set_path(rootfs);
    spec.set_root(Some(root));
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

fn runc(state: &Path, bundle: &Path, id: &str) -> Command {
    let mut command = Command::new("runc");
    command
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id);
    command
}

fn runc_latency(work: &Path, runs: usize) -> anyhow::Result<Vec<f64>> {
    let bundle = work.join("runc-true");
    std::fs::create_dir_all(&bundle)?;
    runc_bundle(&bundle, &["true"])?;
    let mut samples = Vec::new();
    for run in 0..runs {
        let started = Instant::now();
        let status = runc(
            &work.join("runc-state"),
            &bundle,
            &format!("bench-true-{run}"),
        )
        .stdin(Stdio::null())
        .status()
        .context("running runc")?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(status.success(), "runc run true: {status}");
    }
    Ok(samples)
}

fn runc_throughput(work: &Path, bytes: u64) -> anyhow::Result<f64> {
    let bundle = work.join("runc-flood");
    std::fs::create_dir_all(&bundle)?;
    let command = format!("head -c {bytes} /dev/zero");
    runc_bundle(&bundle, &["sh", "-c", &command])?;
    let started = Instant::now();
    let mut child = runc(&work.join("runc-state"), &bundle, "bench-flood")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("running runc")?;
    let mut stdout = child.stdout.take().context("runc stdout")?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    loop {
        let read = stdout.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        received += read as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    ensure!(child.wait()?.success(), "runc flood failed");
    ensure!(
        received == bytes,
        "runc: received {received} of {bytes} bytes"
    );
    Ok(bytes as f64 / seconds / 1e6)
}

fn main() -> anyhow::Result<()> {
    let runs = arg("--runs", 20)?;
    let mib = arg("--mib", 256)? as u64;
    let bytes = mib << 20;
    let env = VmTestEnv::get("bench-containers")
        .context("the benchmark needs the guest image and QEMU")?;
    let work = tempfile::tempdir()?;

    let runc_ms = runc_latency(work.path(), runs)?;
    let runc_mbps = runc_throughput(work.path(), bytes)?;

    let runtime = tokio::runtime::Runtime::new()?;
    let (cloak_ms, cloak_mbps) = runtime.block_on(async {
        let pod = TestPod::boot(&env).await?;
        let result = async {
            let latency = cloak_latency(&pod, runs).await?;
            let throughput = cloak_throughput(&pod, bytes).await?;
            Ok::<_, anyhow::Error>((latency, throughput))
        }
        .await;
        pod.shutdown().await?;
        result
    })?;

    let (mut cloak_sorted, mut runc_sorted) = (cloak_ms.clone(), runc_ms.clone());
    let cloak_median = median(&mut cloak_sorted);
    let runc_median = median(&mut runc_sorted);
    println!("container benchmark: {runs} runs of `true`, {mib} MiB of stdout");
    println!("  cloak (in guest, over the agent API): create+start+wait median {cloak_median:.1} ms (runs: {})", join(&cloak_ms));
    println!(
        "  runc (host):                          run median {runc_median:.1} ms (runs: {})",
        join(&runc_ms)
    );
    println!(
        "  latency ratio cloak/runc: {:.1}",
        cloak_median / runc_median
    );
    println!(
        "  stdout throughput: cloak {cloak_mbps:.1} MB/s, runc {runc_mbps:.1} MB/s, ratio {:.3}",
        cloak_mbps / runc_mbps
    );
    Ok(())
}
