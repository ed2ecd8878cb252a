//! Boot benchmark: QEMU launch -> agent Check answered, against the floor of the same kernel
//! booting a trivial static init that only loads the modules and answers on vsock port 1024.
//! Runs alternate between the two so host load affects both alike; prints medians and ratios.
//!
//! Usage: cloak-bench-boot [--runs N]   (make bench-boot sets the environment)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloak_host::hybrid_vsock;
use cloak_host::hypervisor;
use cloak_host::pod_vm::vm_config_for;
use cloak_tests::bench::{join, median, runs_from_args};
use cloak_tests::{build_image_with_init, VmTestEnv, ENV_FLOOR_INIT_BIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct AgentBoot {
    total_ms: f64,
    agent_ready_ms: f64,
}

async fn boot_agent(env: &VmTestEnv, run_root: &Path, run: usize) -> anyhow::Result<AgentBoot> {
    let (total_ms, vm) =
        cloak_tests::pod_starts::boot_floor(env, run_root, &format!("bench-agent-{run}")).await?;
    let details = vm.agent().guest_details().await?;
    vm.shutdown().await;
    Ok(AgentBoot {
        total_ms,
        agent_ready_ms: details.agent_ready_ms as f64,
    })
}

async fn boot_floor(
    env: &VmTestEnv,
    floor_dir: &Path,
    run_root: &Path,
    run: usize,
) -> anyhow::Result<f64> {
    let mut config = env.configuration(run_root);
    config.guest.image_dir = floor_dir.to_owned();
    let manifest = cloak_image::Manifest::load(floor_dir)?;
    let vm_config = vm_config_for(&config, &manifest, &format!("bench-floor-{run}"));
    let backend = hypervisor::from_config(&config.hypervisor);
    let started = Instant::now();
    let mut vm = backend.launch(&vm_config).await?;
    let result = async {
        vm.wait_for_agent(started + config.boot_timeout()).await?;
        let mut stream =
            hybrid_vsock::connect(&vm_config.vsock_socket(), cloak_protocol::AGENT_VSOCK_PORT)
                .await?;
        stream.write_all(b"ping\n").await?;
        let mut answer = [0u8; 5];
        stream.read_exact(&mut answer).await?;
        anyhow::ensure!(&answer == b"ping\n", "floor init answered {answer:?}");
        Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64() * 1000.0)
    }
    .await;
    vm.stop().await;
    result
}

fn main() -> anyhow::Result<()> {
    let runs = runs_from_args(5)?;
    let env =
        VmTestEnv::get("bench-boot").context("the benchmark needs the guest image and QEMU")?;
    let floor_init = std::env::var_os(ENV_FLOOR_INIT_BIN)
        .context("CLOAK_FLOOR_INIT_BIN is not set (run `make bench-boot`)")?;
    let work = tempfile::tempdir()?;
    let floor_dir = work.path().join("floor-image");
    let floor_manifest = build_image_with_init(Path::new(&floor_init), &floor_dir, |_| {});
    let runtime = tokio::runtime::Runtime::new()?;

    let mut agent_ms = Vec::new();
    let mut agent_ready_ms = Vec::new();
    let mut floor_ms = Vec::new();
    for run in 0..runs {
        let boot = runtime.block_on(boot_agent(&env, work.path(), run))?;
        agent_ms.push(boot.total_ms);
        agent_ready_ms.push(boot.agent_ready_ms);
        floor_ms.push(runtime.block_on(boot_floor(&env, &floor_dir, work.path(), run))?);
        std::thread::sleep(Duration::from_millis(200));
    }
    let agent = median(&mut agent_ms);
    let floor = median(&mut floor_ms);
    let in_guest = median(&mut agent_ready_ms);
    println!(
        "boot benchmark: {runs} runs each, kernel {}",
        env.manifest.kernel.release
    );
    println!(
        "  cloak-agent: QEMU launch -> Check answered, median {agent:.0} ms (runs: {})",
        join(&agent_ms)
    );
    println!(
        "  floor init:  QEMU launch -> vsock echo,    median {floor:.0} ms (runs: {})",
        join(&floor_ms)
    );
    println!(
        "  ratio agent/floor: {:.3} (agent's own cost {:.0} ms)",
        agent / floor,
        agent - floor
    );
    println!("  agent serving at (guest clock, kernel start -> ttrpc up): median {in_guest:.0} ms");
    println!(
        "  initrd: agent image {} bytes, floor image {} bytes",
        env.manifest.initrd.size, floor_manifest.initrd.size
    );
    Ok(())
}
