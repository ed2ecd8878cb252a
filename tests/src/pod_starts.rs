//! The timed pod starts the benchmarks compare, each in one place so every benchmark times
//! the same thing: the boot floor (QEMU launch → agent Check through `PodVm` directly), a
//! `ctr run --rm`, and a CRI pod to its first running container.

use std::path::Path;
use std::time::Instant;

use anyhow::ensure;
use cloak_host::pod_vm::vm_config_for;
use cloak_host::PodVm;

use crate::containerd::{image, PrivateContainerd};
use crate::cri::{CriClient, PodSpec};
use crate::VmTestEnv;

/// Boots a pod VM with the agent and nothing else: the milliseconds from launch to the
/// agent's Check answered, and the VM (the caller shuts it down).
pub async fn boot_floor(
    env: &VmTestEnv,
    run_root: &Path,
    id: &str,
) -> anyhow::Result<(f64, PodVm)> {
    let config = env.configuration(run_root);
    let vm_config = vm_config_for(&config, &env.manifest, id);
    let started = Instant::now();
    let vm = PodVm::boot(
        cloak_host::hypervisor::from_config(&config.hypervisor).as_ref(),
        vm_config,
        config.boot_timeout(),
        config.request_timeout(),
    )
    .await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, vm))
}

/// `ctr run --rm --runtime RUNTIME IMAGE ID true`: its milliseconds.
pub fn ctr_run(containerd: &PrivateContainerd, runtime: &str, id: &str) -> anyhow::Result<f64> {
    let image = image();
    let started = Instant::now();
    let output = containerd
        .ctr(&["run", "--rm", "--runtime", runtime, &image, id, "true"])
        .output()?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        output.status.success(),
        "{runtime}: ctr run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(ms)
}

/// RunPodSandbox → CreateContainer → StartContainer of a `sleep` container: the
/// milliseconds until it runs and the pod's id (left running).
pub async fn cri_first_container(
    cri: &mut CriClient,
    spec: &PodSpec,
) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let pod_id = cri.run_pod(spec).await?;
    let container = cri
        .create_container(&pod_id, spec, "main", &image(), &["sleep", "3600"])
        .await?;
    cri.start_container(&container).await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, pod_id))
}
