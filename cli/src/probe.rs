//! `cloak probe`: the smallest end-to-end check of a node — boot a pod VM, ask the agent who
//! it is, power it off, and say how long each part took. With `--snp-rehearsal` it boots the
//! `tee = "snp"` QEMU launch minus its SEV parts (host/src/hypervisor/snp_rehearsal.rs), the
//! firmware path checked on a host without SNP.

use std::io::Write;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use cloak_host::config::Configuration;

use crate::runtime_args::RuntimeArgs;

#[derive(Args)]
pub(crate) struct ProbeArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Boot the qemu backend's SNP launch without its SEV parts (q35, the configured OVMF
    /// AmdSev firmware, direct kernel boot): proves the firmware path where SNP is absent.
    /// Not confidential.
    #[arg(long)]
    snp_rehearsal: bool,
}

pub(crate) fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let config = args.runtime.configuration()?;
    let runtime = tokio::runtime::Runtime::new().context("creating the async runtime")?;
    runtime.block_on(probe(config, args.snp_rehearsal))
}

async fn probe(config: Configuration, snp_rehearsal: bool) -> anyhow::Result<()> {
    let manifest = cloak_image::Manifest::load(&config.guest.image_dir)?;
    let id = format!("probe-{}", std::process::id());
    let vm_config = cloak_host::pod_vm::vm_config_for(&config, &manifest, &id);
    let hypervisor: Box<dyn cloak_host::Hypervisor> = if snp_rehearsal {
        if config.hypervisor.kind != cloak_host::config::HypervisorKind::Qemu {
            anyhow::bail!("--snp-rehearsal rehearses the qemu backend's SNP launch: set hypervisor.kind = \"qemu\"");
        }
        let rehearsal =
            cloak_host::hypervisor::snp_rehearsal::SnpRehearsal::new(config.hypervisor.clone());
        let plan = rehearsal.plan(&vm_config)?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "SNP rehearsal (not confidential): qemu {}",
            plan.args.join(" ")
        )?;
        for part in &plan.removed {
            writeln!(out, "left out of the tee = \"snp\" launch: {part}")?;
        }
        if let Some(added) = &plan.added {
            writeln!(out, "put in its stead: {added}")?;
        }
        Box::new(rehearsal)
    } else {
        cloak_host::hypervisor::from_config(&config.hypervisor)
    };
    let started = Instant::now();
    let vm = cloak_host::PodVm::boot(
        hypervisor.as_ref(),
        vm_config.clone(),
        config.boot_timeout(),
        config.request_timeout(),
    )
    .await?;
    let boot_ms = started.elapsed().as_millis();
    let details = vm.agent().guest_details().await;
    let (protocol, agent_version) = vm.agent().version().await?;
    let run_dir = vm.run_dir().to_owned();
    vm.shutdown().await;
    let details = details?;
    let _ = std::fs::remove_dir_all(&run_dir);

    let mut out = std::io::stdout().lock();
    writeln!(out, "pod VM booted and answered in {boot_ms} ms")?;
    writeln!(out, "guest kernel:   {}", details.kernel_release)?;
    writeln!(out, "agent:          {agent_version} (protocol {protocol})")?;
    writeln!(out, "vCPUs:          {}", details.online_vcpus)?;
    writeln!(
        out,
        "memory:         {} MiB",
        details.memory_total_bytes >> 20
    )?;
    writeln!(
        out,
        "TEE:            {:?}",
        details.tee.enum_value_or_default()
    )?;
    writeln!(
        out,
        "agent ready at: {} ms after kernel start",
        details.agent_ready_ms
    )?;
    writeln!(out, "modules:        {}", details.loaded_modules.join(" "))?;
    Ok(())
}
