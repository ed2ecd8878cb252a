//! Key-release benchmark: StartContainer of a container with one sealed env var in a CRI pod
//! of the simulated TEE (the guest attests to a `cloak kbs serve` broker and fetches one
//! resource before the container runs) against the same container with the value in plain
//! text, in pods with the same init-data, alternating, median of N each.
//!
//! Usage: cloak-bench-kbs [--runs N]   (make bench-kbs sets the env)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::time::Instant;

use anyhow::Context as _;
use cloak_host::config::TeeKind;
use cloak_tests::containerd::{image, shim_binary, PrivateContainerd};
use cloak_tests::cri::{container_config, CriClient, PodSpec, RUNTIME_HANDLER};
use cloak_tests::kbs::{free_port, init_data_for, sealed, start_broker};
use cloak_tests::VmTestEnv;
use k8s_cri::v1::KeyValue;

async fn start_ms(
    cri: &mut CriClient,
    containerd: &PrivateContainerd,
    name: &str,
    annotation: &str,
    value: &str,
) -> anyhow::Result<f64> {
    let log_directory = containerd.dir().join("pod-logs").join(name);
    std::fs::create_dir_all(&log_directory)?;
    let mut pod = PodSpec::new(name, RUNTIME_HANDLER, log_directory);
    pod.annotations
        .insert("io.cloak.init-data".into(), annotation.to_owned());
    let pod_id = cri.run_pod(&pod).await?;
    let mut config = container_config("app", &image(), &["sleep", "3600"]);
    config.envs.push(KeyValue {
        key: "SECRET".into(),
        value: value.to_owned(),
    });
    let container = cri.create_container_with(&pod_id, &pod, config).await?;
    let started = Instant::now();
    cri.start_container(&container).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    cri.remove_pod(&pod_id).await?;
    Ok(ms)
}

fn main() -> anyhow::Result<()> {
    let runs = cloak_tests::bench::runs_from_args(5)?;
    let env = VmTestEnv::get("cloak-bench-kbs").context("the guest image is needed")?;
    if let Some(reason) = cloak_tests::cri::cri_unavailable() {
        anyhow::bail!("{reason}");
    }
    let shim =
        shim_binary().context("build containerd-shim-cloak-v2 first (cargo build --release)")?;
    let cloak = cloak_tests::workspace_binary("cloak", "CLOAK_BIN").context("build cloak first")?;
    let containerd = PrivateContainerd::start_with_cri_configured(&env, &shim, &|config| {
        config.hypervisor.tee = TeeKind::Sim;
    })?;
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("resources/default/secret");
    std::fs::create_dir_all(&store)?;
    std::fs::write(store.join("env"), "a benchmark secret")?;
    let port = free_port()?;
    // One resource per container: no init-data resource files.
    let init_data = init_data_for(port, "bench")
        .replace("\"cloak.secrets\" = \"kbs:///default/secret/config\"\n", "");
    let init_data_file = dir.path().join("init-data.toml");
    std::fs::write(&init_data_file, &init_data)?;
    let _broker = start_broker(
        &cloak,
        &dir.path().join("resources"),
        &env.guest_dir.join("reference-values.json"),
        &init_data_file,
        port,
    )?;
    let annotation = cloak_init_data::encode_annotation(init_data.as_bytes())?;
    let sealed_value = sealed(&cloak, "kbs:///default/secret/env")?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await?;
        let (mut with_secret, mut plain) = (Vec::new(), Vec::new());
        for run in 0..runs {
            with_secret.push(
                start_ms(&mut cri, &containerd, &format!("sealed-{run}"), &annotation, &sealed_value)
                    .await?,
            );
            plain.push(
                start_ms(&mut cri, &containerd, &format!("plain-{run}"), &annotation, "a benchmark secret")
                    .await?,
            );
        }
        println!("StartContainer with one sealed env var (attestation + one resource) vs plain, {runs} runs each (alternating):");
        cloak_tests::bench::print_against_baseline(&mut with_secret, "plain", &mut plain);
        Ok(())
    })
}
