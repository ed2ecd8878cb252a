//! containerd benchmark: `ctr run --rm IMAGE ID true` through containerd with cloak's shim and
//! with runc's, alternating, median of N each; then the host memory one running cloak pod
//! costs (shim, VMM, vsock and virtio-fs backends), beside runc's shim for the same container.
//!
//! Usage: cloak-bench-containerd [--runs N]   (make bench-containerd sets the env)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use anyhow::{ensure, Context as _};
use cloak_tests::containerd::{image, shim_binary, PrivateContainerd, RUNTIME};
use cloak_tests::pod_starts::ctr_run;
use cloak_tests::VmTestEnv;

const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

fn memory_per_pod(containerd: &PrivateContainerd) -> anyhow::Result<()> {
    let image = image();
    for (runtime, id) in [(RUNTIME, "mem-cloak"), (RUNC_RUNTIME, "mem-runc")] {
        let output = containerd
            .ctr(&[
                "run",
                "-d",
                "--runtime",
                runtime,
                &image,
                id,
                "sleep",
                "1000",
            ])
            .output()?;
        ensure!(
            output.status.success(),
            "{runtime}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Let the guest settle (module loading, page cache) before reading the figures.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let vm_processes = cloak_tests::processes_mentioning(&containerd.run_dir.join("mem-cloak"));
    let shims = cloak_tests::processes_mentioning(&containerd.address);
    cloak_tests::bench::print_pod_memory(&vm_processes, &shims);
    for id in ["mem-cloak", "mem-runc"] {
        let _ = containerd
            .ctr(&["task", "kill", "-s", "SIGKILL", id])
            .output();
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    for id in ["mem-cloak", "mem-runc"] {
        let _ = containerd.ctr(&["task", "rm", id]).output();
        let _ = containerd.ctr(&["container", "rm", id]).output();
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runs = cloak_tests::bench::runs_from_args(5)?;
    let env = VmTestEnv::get("cloak-bench-containerd").context("the guest image is needed")?;
    let shim =
        shim_binary().context("build containerd-shim-cloak-v2 first (cargo build --release)")?;
    let containerd = PrivateContainerd::start(&env, &shim)?;
    let mut cloak = Vec::new();
    let mut runc = Vec::new();
    for run in 0..runs {
        cloak.push(ctr_run(
            &containerd,
            RUNTIME,
            &format!("bench-cloak-{run}"),
        )?);
        runc.push(ctr_run(
            &containerd,
            RUNC_RUNTIME,
            &format!("bench-runc-{run}"),
        )?);
    }
    println!(
        "ctr run --rm {} ID true, {runs} runs each (alternating):",
        image()
    );
    cloak_tests::bench::print_against_baseline(&mut cloak, "runc", &mut runc);
    memory_per_pod(&containerd)?;
    Ok(())
}
