//! Scale benchmark: 1, 2 and 3 cloak pods started at once through containerd's CRI plugin
//! (RunPodSandbox → first container running, each pod on its own task), with each pod's start
//! time and the host memory of all of them once they run, against the single-pod figures of
//! the same run: the cost curve as pods grow. A lock or serial step in the shim or agent
//! would show as start times that grow by whole boots; CPU contention (this host has 2 cores
//! and emulates every guest's vCPUs) shows as a smoother rise.
//!
//! Usage: cloak-bench-scale [--max-pods N]   (make bench-scale sets the env)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::time::{Duration, Instant};

use cloak_tests::pod_starts::cri_first_container;

use cloak_tests::bench::{join, median, number_from_args, pss_kib, rss_kib};
use cloak_tests::containerd::PrivateContainerd;
use cloak_tests::cri::{CriClient, PodSpec, RUNTIME_HANDLER};

async fn start_pod(mut cri: CriClient, spec: PodSpec) -> anyhow::Result<(f64, String)> {
    cri_first_container(&mut cri, &spec).await
}

/// (RSS, PSS) in KiB of every host process of `pods`: their shims and VM processes.
fn pods_memory(containerd: &PrivateContainerd, pods: &[String]) -> (u64, u64) {
    let shims = cloak_tests::processes_mentioning(&containerd.address);
    let mut pids: Vec<u32> = Vec::new();
    for pod in pods {
        let pod_dir = containerd
            .run_dir
            .join(cloak_host::run_dir::pod_dir_name(pod));
        pids.extend(cloak_tests::pids_of(
            &cloak_tests::processes_mentioning(&pod_dir),
            "",
        ));
        let needle = format!("-id {pod} ");
        let own: Vec<String> = shims
            .iter()
            .filter(|s| s.contains(&needle))
            .cloned()
            .collect();
        pids.extend(cloak_tests::pids_of(&own, "containerd-shim-cloak-v2"));
    }
    pids.iter()
        .map(|pid| (rss_kib(*pid).0, pss_kib(*pid)))
        .fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1))
}

async fn run(containerd: &PrivateContainerd, max_pods: usize) -> anyhow::Result<()> {
    let cri = CriClient::connect(&containerd.address).await?;
    // One pod first, not counted: images and the guest files' page cache warm.
    let spec = PodSpec::in_containerd(containerd, "warm-up", RUNTIME_HANDLER)?;
    let (_, pod) = start_pod(cri.clone(), spec).await?;
    cri.clone().remove_pod(&pod).await?;

    let mut single: Option<(f64, f64, f64)> = None;
    println!("pods started at once through the CRI (RunPodSandbox -> first container running):");
    println!("  pods  start per pod (median, runs)          ratio   host RSS total  PSS total  PSS per pod  ratio");
    for pods in 1..=max_pods {
        let round = Instant::now();
        let tasks: Vec<_> = (0..pods)
            .map(|index| {
                let spec = PodSpec::in_containerd(
                    containerd,
                    &format!("scale-{pods}-{index}"),
                    RUNTIME_HANDLER,
                );
                let cri = cri.clone();
                tokio::spawn(async move { start_pod(cri, spec?).await })
            })
            .collect();
        let mut times = Vec::new();
        let mut ids = Vec::new();
        for task in tasks {
            let (ms, id) = task.await??;
            times.push(ms);
            ids.push(id);
        }
        let all_running = round.elapsed().as_secs_f64() * 1000.0;
        // Let the guests settle (module loading, page cache) before reading the figures.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss, pss) = pods_memory(containerd, &ids);
        let start = median(&mut times.clone());
        let (rss_mib, pss_mib) = (rss as f64 / 1024.0, pss as f64 / 1024.0);
        let per_pod = pss_mib / pods as f64;
        let (start_1, _, per_pod_1) = *single.get_or_insert((start, pss_mib, per_pod));
        println!(
            "  {pods:>4}  {start:>7.0} ms ({:<24})  {:>5.2}   {rss_mib:>10.0} MiB  {pss_mib:>5.0} MiB  {per_pod:>7.0} MiB  {:>5.2}",
            join(&times),
            start / start_1,
            per_pod / per_pod_1
        );
        println!("        all {pods} running after {all_running:.0} ms");
        for id in &ids {
            cri.clone().remove_pod(id).await?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let max_pods = number_from_args("--max-pods", 3)?;
    let (_env, containerd) = cloak_tests::containerd::cri_containerd_for("cloak-bench-scale")?;
    tokio::runtime::Runtime::new()?.block_on(run(&containerd, max_pods))
}
