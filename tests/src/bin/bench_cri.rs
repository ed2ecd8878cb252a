//! CRI benchmark, the kubelet's view: RunPodSandbox, CreateContainer and StartContainer until
//! the first container runs, through containerd's CRI plugin with runtime handler `cloak` and
//! with runc, alternating, median of N each; then the host memory one running cloak pod costs
//! (shim, VMM, vsock and virtio-fs backends) — the pod overhead a RuntimeClass should declare.
//!
//! Usage: cloak-bench-cri [--runs N]   (make bench-cri sets the env)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::time::Duration;

use cloak_tests::containerd::PrivateContainerd;
use cloak_tests::cri::{CriClient, PodSpec, RUNTIME_HANDLER};
use cloak_tests::pod_starts::cri_first_container;

fn print_pod_overhead(containerd: &PrivateContainerd, cloak_pod: &str) {
    let pod_dir = containerd
        .run_dir
        .join(cloak_host::run_dir::pod_dir_name(cloak_pod));
    let vm_processes = cloak_tests::processes_mentioning(&pod_dir);
    let shims = cloak_tests::processes_mentioning(&containerd.address);
    let total_mib = cloak_tests::bench::print_pod_memory(&vm_processes, &shims);
    // Rounded up to 32 MiB with a quarter for growth: what RuntimeClass overhead.podFixed
    // should say.
    let declared = ((total_mib * 1.25) / 32.0).ceil() * 32.0;
    println!("  RuntimeClass overhead.podFixed.memory: {declared:.0}Mi (measured {total_mib:.0} MiB + 25 %)");
}

async fn run(containerd: &PrivateContainerd, runs: usize) -> anyhow::Result<()> {
    let mut cri = CriClient::connect(&containerd.address).await?;
    let mut cloak = Vec::new();
    let mut runc = Vec::new();
    for run in 0..runs {
        for (handler, times) in [(RUNTIME_HANDLER, &mut cloak), ("", &mut runc)] {
            let name = format!(
                "bench-{}-{run}",
                if handler.is_empty() { "runc" } else { handler }
            );
            let spec = PodSpec::in_containerd(containerd, &name, handler)?;
            let (ms, pod_id) = cri_first_container(&mut cri, &spec).await?;
            times.push(ms);
            cri.remove_pod(&pod_id).await?;
        }
    }
    println!("RunPodSandbox + CreateContainer + StartContainer (first container running), {runs} runs each (alternating):");
    cloak_tests::bench::print_against_baseline(&mut cloak, "runc", &mut runc);

    let cloak_spec = PodSpec::in_containerd(containerd, "mem-cloak", RUNTIME_HANDLER)?;
    let runc_spec = PodSpec::in_containerd(containerd, "mem-runc", "")?;
    let (_, cloak_pod) = cri_first_container(&mut cri, &cloak_spec).await?;
    let (_, runc_pod) = cri_first_container(&mut cri, &runc_spec).await?;
    // Let the guest settle (module loading, page cache) before reading the figures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    print_pod_overhead(containerd, &cloak_pod);
    cri.remove_pod(&cloak_pod).await?;
    cri.remove_pod(&runc_pod).await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runs = cloak_tests::bench::runs_from_args(5)?;
    let (_env, containerd) = cloak_tests::containerd::cri_containerd_for("cloak-bench-cri")?;
    tokio::runtime::Runtime::new()?.block_on(run(&containerd, runs))
}
