//! Pods in parallel through the CRI plugin, as a node starts them after a deployment scales:
//! three pods at once (this host has two cores and emulates the guests, so three is the load
//! it can carry), each with two containers, all running, an exec answered in each, all
//! removed — five rounds. No lock may be held across a VM boot that makes one pod's
//! RunPodSandbox wait for another's: all three are sent at once, so they must also end close
//! together. Each takes longer than a solo RunPodSandbox (timed first) by the CPU the three
//! share, but pods serialised on a lock would end a whole boot apart.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test fails loudly by design

use std::time::{Duration, Instant};

use cloak_tests::containerd::{image, PrivateContainerd};
use cloak_tests::cri::{cni_netns, cri_test_env, CriClient, PodSpec, RUNTIME_HANDLER};

const PODS: usize = 3;
const ROUNDS: usize = 5;
/// Pods serialised on a boot lock end (at least) one solo boot apart, so the first and last
/// of three two solo boots apart; started together and sharing the CPU, they end together.
const END_SPREAD_OVER_SOLO: f64 = 0.5;

/// When one pod's RunPodSandbox started and ended, from the round's start.
#[derive(Debug, Clone, Copy)]
struct PodTiming {
    run_started: Duration,
    run_ended: Duration,
}

/// One pod: RunPodSandbox (timed), two containers created and started, `echo` exec'd in
/// each, the pod removed.
async fn one_pod(
    mut cri: CriClient,
    spec: PodSpec,
    round_start: Instant,
) -> anyhow::Result<PodTiming> {
    let run_started = round_start.elapsed();
    let pod_id = cri.run_pod(&spec).await?;
    let run_ended = round_start.elapsed();
    let mut containers = Vec::new();
    for name in ["first", "second"] {
        let id = cri
            .create_container(&pod_id, &spec, name, &image(), &["sleep", "3600"])
            .await?;
        cri.start_container(&id).await?;
        containers.push((name, id));
    }
    for (name, id) in &containers {
        let said = format!("{}-{name}", spec.name);
        let exec = cri.exec_sync(id, &["echo", &said]).await?;
        anyhow::ensure!(
            exec.exit_code == 0 && String::from_utf8_lossy(&exec.stdout).trim() == said,
            "exec in {said}: exit {} stdout {:?}",
            exec.exit_code,
            String::from_utf8_lossy(&exec.stdout)
        );
    }
    cri.remove_pod(&pod_id).await?;
    Ok(PodTiming {
        run_started,
        run_ended,
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[test]
fn three_pods_at_once_with_two_containers_each_five_rounds() {
    let test = "three_pods_at_once_with_two_containers_each_five_rounds";
    let Some((env, shim)) = cri_test_env(test) else {
        return;
    };
    let _slot = cloak_tests::vm_slot();
    let containerd = PrivateContainerd::start_with_cri(&env, &shim).unwrap();
    let netns_before = cni_netns();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cri = CriClient::connect(&containerd.address).await.unwrap();
        let spec = |name: &str| PodSpec::in_containerd(&containerd, name, RUNTIME_HANDLER).unwrap();
        let solo = one_pod(cri.clone(), spec("solo"), Instant::now())
            .await
            .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));
        let solo_ms = ms(solo.run_ended - solo.run_started);
        eprintln!("solo RunPodSandbox: {solo_ms:.0} ms");
        for round in 0..ROUNDS {
            let round_start = Instant::now();
            let pods = (0..PODS).map(|pod| {
                let spec = spec(&format!("round{round}-pod{pod}"));
                tokio::spawn(one_pod(cri.clone(), spec, round_start))
            });
            let mut timings = Vec::new();
            for pod in futures::future::join_all(pods).await {
                timings.push(
                    pod.unwrap()
                        .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(60))),
                );
            }
            let runs: Vec<String> = timings
                .iter()
                .map(|t| {
                    format!(
                        "{:.0}..{:.0} ({:.0})",
                        ms(t.run_started),
                        ms(t.run_ended),
                        ms(t.run_ended - t.run_started)
                    )
                })
                .collect();
            let last_end = timings.iter().map(|t| t.run_ended).max().unwrap();
            let first_end = timings.iter().map(|t| t.run_ended).min().unwrap();
            let spread = ms(last_end - first_end);
            eprintln!(
                "round {round}: RunPodSandbox ms {}; ends {spread:.0} ms apart ({:.2} x solo); last ended at {:.2} x solo; round {:.0} ms",
                runs.join(", "),
                spread / solo_ms,
                ms(last_end) / solo_ms,
                ms(round_start.elapsed())
            );
            assert!(
                spread < END_SPREAD_OVER_SOLO * solo_ms,
                "round {round}: the pods' RunPodSandbox waited on each other: {runs:?}, solo {solo_ms:.0} ms"
            );
        }
    });
    cloak_tests::cri::assert_pods_left_nothing(&containerd, &netns_before);
}
