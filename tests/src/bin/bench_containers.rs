//! Container benchmark: in-guest container create+start+wait latency for `true` (median of 20,
//! measured from the host over the agent API) and stdout throughput for 256 MiB written by a
//! container, beside runc running the same busybox rootfs on the host in the same run — and
//! beside the floor of the same guest: a container writing the same bytes to a raw vsock
//! stream to the host, no pipe, agent or stdio stream between. Both are written by the same
//! producer (`cloak-vsock-flood`, 16 KiB writes from one buffer; to stdout with port `-`), not
//! by busybox `head -c`, which is itself the limit in an emulated guest (measured 5-8 MB/s
//! against 20-25 for the same bytes from this producer). The emulated guest limits both; the
//! stdout path is judged by its ratio to that floor.
//!
//! Usage: cloak-bench-containers [--runs N] [--mib M] [--rounds R]
//! (make bench-containers sets the env)

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

async fn cloak_throughput(pod: &TestPod, bytes: u64, round: usize) -> anyhow::Result<f64> {
    let count = bytes.to_string();
    let spec = busybox_spec(&[cloak_tests::rootfs::VSOCK_FLOOD, "-", &count]);
    let id = format!("flood-{round}");
    let streams = pod.create(&id, &spec, Streams::default()).await?;
    let started = Instant::now();
    pod.start(&id).await?;
    let received = count_stream(streams.stdout).await?;
    let seconds = started.elapsed().as_secs_f64();
    pod.wait(&id, "").await?;
    pod.remove(&id).await?;
    ensure!(received == bytes, "received {received} of {bytes} bytes");
    Ok(bytes as f64 / seconds / 1e6)
}

/// The vsock port the floor container writes to (a host listener at `<vsock socket>_PORT`).
const FLOOR_PORT: u32 = 5000;

/// The same bytes from a container to the host over a raw vsock stream: MB/s.
async fn vsock_floor(pod: &TestPod, bytes: u64, round: usize) -> anyhow::Result<f64> {
    let socket = cloak_host::run_dir::host_port_socket(pod.vm().run_dir(), FLOOR_PORT);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let id = format!("vsock-floor-{round}");
    let (port, count) = (FLOOR_PORT.to_string(), bytes.to_string());
    let spec = busybox_spec(&[cloak_tests::rootfs::VSOCK_FLOOD, &port, &count]);
    let streams = pod.create(&id, &spec, Streams::default()).await?;
    let started = Instant::now();
    pod.start(&id).await?;
    let (stream, _) = tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept())
        .await
        .context("the floor container did not connect (is cloak-vsock-flood in the rootfs?)")??;
    let received = count_stream(stream).await?;
    let seconds = started.elapsed().as_secs_f64();
    let exit = pod.wait(&id, "").await?;
    drop(streams);
    pod.remove(&id).await?;
    let _ = std::fs::remove_file(&socket);
    ensure!(
        exit.exit_status == 0,
        "cloak-vsock-flood exited {}",
        exit.exit_status
    );
    ensure!(
        received == bytes,
        "floor: received {received} of {bytes} bytes"
    );
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
    let count = bytes.to_string();
    runc_bundle(&bundle, &[cloak_tests::rootfs::VSOCK_FLOOD, "-", &count])?;
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
    let rounds = arg("--rounds", 3)?;
    let bytes = mib << 20;
    let env = VmTestEnv::get("bench-containers")
        .context("the benchmark needs the guest image and QEMU")?;
    let work = tempfile::tempdir()?;

    let runc_ms = runc_latency(work.path(), runs)?;
    let runc_mbps = runc_throughput(work.path(), bytes)?;

    let runtime = tokio::runtime::Runtime::new()?;
    let (cloak_ms, mut stdout_mbps, mut floor_mbps) = runtime.block_on(async {
        let pod = TestPod::boot(&env).await?;
        let result = async {
            let latency = cloak_latency(&pod, runs).await?;
            let (mut stdout, mut floor) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                stdout.push(cloak_throughput(&pod, bytes, round).await?);
                floor.push(vsock_floor(&pod, bytes, round).await?);
            }
            Ok::<_, anyhow::Error>((latency, stdout, floor))
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
    let cloak_mbps = median(&mut stdout_mbps);
    let floor = median(&mut floor_mbps);
    println!(
        "  stdout throughput ({rounds} rounds, alternating): cloak stdout median {cloak_mbps:.1} MB/s (runs: {}), raw vsock floor in the same guest {floor:.1} MB/s (runs: {})",
        join(&stdout_mbps),
        join(&floor_mbps)
    );
    println!(
        "  stdout / vsock floor: {:.3}; against runc on the host ({runc_mbps:.1} MB/s): {:.3}",
        cloak_mbps / floor,
        cloak_mbps / runc_mbps
    );
    Ok(())
}
