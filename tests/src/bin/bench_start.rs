//! Start-overhead benchmark: what a pod start costs beyond the guest's own boot. Each round
//! runs, one after the other so host load falls on all alike:
//! - the floor: the pod VM booted directly (QEMU launch → agent Check), then shut down;
//! - `ctr run --rm IMAGE ID true` through containerd and cloak's shim;
//! - CRI RunPodSandbox → CreateContainer → StartContainer (first container running).
//!
//! It prints the medians, the ratios to the floor, and the median of every phase of the
//! pods' start timelines (the shim logs them at debug level into containerd's log), so a
//! regression names its phase.
//!
//! Usage: cloak-bench-start [--runs N]   (make bench-start sets the env)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::collections::BTreeMap;
use std::path::Path;

use cloak_host::phase_timeline::{parse_phases, START_MESSAGE, STOP_MESSAGE};
use cloak_tests::bench::{join, median, runs_from_args};
use cloak_tests::containerd::{PrivateContainerd, RUNTIME};
use cloak_tests::cri::{CriClient, PodSpec, RUNTIME_HANDLER};
use cloak_tests::pod_starts::{boot_floor, cri_first_container, ctr_run};
use cloak_tests::VmTestEnv;

/// QEMU launch → agent Check answered, the VM then shut down (not timed).
async fn floor(env: &VmTestEnv, run_root: &Path, run: usize) -> anyhow::Result<f64> {
    let (ms, vm) = boot_floor(env, run_root, &format!("floor-{run}")).await?;
    vm.shutdown().await;
    Ok(ms)
}

/// The timelines logged under `message` in containerd's log, by pod id.
fn timelines(
    containerd: &PrivateContainerd,
    message: &str,
) -> BTreeMap<String, Vec<(String, u64)>> {
    let log = std::fs::read_to_string(containerd.dir().join("containerd.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| {
            let phases = parse_phases(line, message)?;
            let (_, rest) = line.split_once("pod=\"")?;
            let (pod, _) = rest.split_once('"')?;
            Some((pod.to_owned(), phases))
        })
        .collect()
}

/// Each phase's median over `pods`' timelines, in the order the phases happen.
fn print_phases(title: &str, all: &BTreeMap<String, Vec<(String, u64)>>, pods: &[String]) {
    let mut order: Vec<String> = Vec::new();
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for phases in pods.iter().filter_map(|pod| all.get(pod)) {
        for (name, ms) in phases {
            if !order.contains(name) {
                order.push(name.clone());
            }
            times.entry(name.clone()).or_default().push(*ms as f64);
        }
    }
    let found = pods.iter().filter(|pod| all.contains_key(*pod)).count();
    println!(
        "  phases of {title} ({found} of {} timelines found), median ms:",
        pods.len()
    );
    let mut sum = 0.0;
    for name in &order {
        let values = times
            .get_mut(name)
            .map(Vec::as_mut_slice)
            .unwrap_or_default();
        let middle = median(values);
        sum += middle;
        println!("    {name:<18} {middle:>7.0}   (runs: {})", join(values));
    }
    println!("    {:<18} {sum:>7.0}", "sum of medians");
}

async fn run(env: &VmTestEnv, containerd: &PrivateContainerd, runs: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let mut cri = CriClient::connect(&containerd.address).await?;
    let (mut floors, mut ctrs, mut cris) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ctr_ids, mut cri_ids) = (Vec::new(), Vec::new());
    // One of each first, not counted: caches (images, page cache of the guest files) warm.
    floor(env, work.path(), 999).await?;
    ctr_run(containerd, RUNTIME, "warm-up")?;
    let spec = PodSpec::in_containerd(containerd, "warm-up", RUNTIME_HANDLER)?;
    let (_, pod) = cri_first_container(&mut cri, &spec).await?;
    cri.remove_pod(&pod).await?;
    for run in 0..runs {
        floors.push(floor(env, work.path(), run).await?);
        let id = format!("start-{run}");
        ctrs.push(ctr_run(containerd, RUNTIME, &id)?);
        ctr_ids.push(id);
        let spec = PodSpec::in_containerd(containerd, &format!("start-{run}"), RUNTIME_HANDLER)?;
        let (ms, pod) = cri_first_container(&mut cri, &spec).await?;
        cris.push(ms);
        cri.remove_pod(&pod).await?;
        cri_ids.push(pod);
    }
    let ctr_runs = ctrs.clone();
    let floor_median = median(&mut floors);
    println!("pod start against the boot floor, {runs} rounds (floor, ctr, CRI alternating):");
    println!(
        "  floor: QEMU launch -> agent Check      median {floor_median:>6.0} ms (runs: {})",
        join(&floors)
    );
    for (name, values) in [
        ("ctr run --rm IMAGE ID true", &mut ctrs),
        ("CRI RunPodSandbox -> running", &mut cris),
    ] {
        let middle = median(values);
        println!(
            "  {name:<30} median {middle:>6.0} ms, ratio to floor {:.3} (runs: {})",
            middle / floor_median,
            join(values)
        );
    }
    let starts = timelines(containerd, START_MESSAGE);
    print_phases("ctr run pods' starts", &starts, &ctr_ids);
    print_phases("CRI pods' starts", &starts, &cri_ids);
    let stops = timelines(containerd, STOP_MESSAGE);
    print_phases(
        "ctr run pods' stops (inside ctr run --rm)",
        &stops,
        &ctr_ids,
    );
    // What neither timeline covers: ctr and containerd (snapshot, task records), the shim's
    // own start, the container's run and exit report, the Delete before the VM stops.
    let sum = |timeline: Option<&Vec<(String, u64)>>| {
        timeline.map_or(0.0, |phases| phases.iter().map(|(_, ms)| *ms as f64).sum())
    };
    let mut outside: Vec<f64> = ctr_ids
        .iter()
        .zip(&ctr_runs)
        .map(|(id, total)| total - sum(starts.get(id)) - sum(stops.get(id)))
        .collect();
    println!(
        "  ctr run --rm outside both timelines: median {:.0} ms (runs: {})",
        median(&mut outside),
        join(&outside)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runs = runs_from_args(5)?;
    let (env, containerd) = cloak_tests::containerd::cri_containerd_for("cloak-bench-start")?;
    tokio::runtime::Runtime::new()?.block_on(run(&env, &containerd, runs))
}
