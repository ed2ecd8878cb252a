//! The soak: many `ctr run --rm` cycles and many CRI pod create/exec/delete cycles through one
//! containerd, with a leak census (`crate::leaks`) before, while a pod runs, and after. Shared
//! by `cloak-soak` (`make soak`, long) and the suite's short soak test, so the figures of the
//! closing note and the assertions of the suite come from the same code.
//!
//! The baseline census is taken after one warm-up cycle of each kind: what containerd sets up
//! once on first use (its CRI image cache, a runtime's first shim binary lookup) is not a leak.
//! The census while a pod runs must see that pod's tap in its network namespace — it proves
//! the census looks where a pod's things live, so "nothing left after" means something.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::containerd::{image, PrivateContainerd};
use crate::cri::{CriClient, PodSpec, RUNTIME_HANDLER};
use crate::leaks::{Census, Growth, Scope};

/// How much containerd's resident memory may grow over a soak: Go's heap settles at a size
/// of its own choosing, which is not a count of anything left behind.
pub const CONTAINERD_RSS_SLACK_KIB: u64 = 16 * 1024;

/// What a soak saw: the three censuses and how long each cycle took.
#[derive(Debug)]
pub struct SoakReport {
    pub cycles: usize,
    pub before: Census,
    /// Taken while one CRI pod (with one container) runs.
    pub during_pod: Census,
    pub after: Census,
    pub ctr_cycle_ms: Vec<f64>,
    pub cri_cycle_ms: Vec<f64>,
}

impl SoakReport {
    /// What grew from the baseline to the end.
    pub fn growth(&self) -> Vec<Growth> {
        self.after
            .growth_since(&self.before, CONTAINERD_RSS_SLACK_KIB)
    }

    /// The table: every count before, while a pod ran, after; then the cycle times.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<36} {:>10} {:>10} {:>10}\n",
            "count", "before", "pod up", "after"
        );
        for (what, before) in &self.before.counts {
            let count = |census: &Census| census.counts.get(what).copied().unwrap_or(0);
            out.push_str(&format!(
                "{what:<36} {before:>10} {:>10} {:>10}\n",
                count(&self.during_pod),
                count(&self.after)
            ));
        }
        for (name, times) in [
            ("ctr run --rm", &self.ctr_cycle_ms),
            ("CRI pod", &self.cri_cycle_ms),
        ] {
            let mut sorted = times.clone();
            out.push_str(&format!(
                "{name} cycles: {}, median {:.0} ms\n",
                times.len(),
                crate::bench::median(&mut sorted)
            ));
        }
        out
    }
}

/// Runs `cycles` of each kind (after one warm-up of each) through `containerd`, which must
/// have its CRI plugin.
pub async fn soak(containerd: &PrivateContainerd, cycles: usize) -> anyhow::Result<SoakReport> {
    let scope = Scope {
        containerd_pid: Some(containerd.pid()),
        run_dir: Some(containerd.run_dir.clone()),
    };
    let mut cri = CriClient::connect(&containerd.address).await?;
    ctr_cycle(containerd, "soak-warm-up")?;
    cri_cycle(containerd, &mut cri, "soak-warm-up", None).await?;
    settle(containerd).await;
    let before = Census::take(&scope);

    let mut ctr_cycle_ms = Vec::with_capacity(cycles);
    let mut cri_cycle_ms = Vec::with_capacity(cycles);
    let mut during_pod = None;
    for cycle in 0..cycles {
        let started = Instant::now();
        ctr_cycle(containerd, &format!("soak-ctr-{cycle}"))?;
        ctr_cycle_ms.push(started.elapsed().as_secs_f64() * 1000.0);

        let started = Instant::now();
        let census_now = during_pod.is_none().then_some(&scope);
        let census = cri_cycle(
            containerd,
            &mut cri,
            &format!("soak-pod-{cycle}"),
            census_now,
        )
        .await
        .with_context(|| format!("CRI cycle {cycle}"))?;
        cri_cycle_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        during_pod = during_pod.or(census);
        tracing::info!(cycle, "soak cycle done");
    }
    let during_pod = during_pod.unwrap_or_default();
    let after = settled_census(containerd, &scope, &before).await;
    Ok(SoakReport {
        cycles,
        before,
        during_pod,
        after,
        ctr_cycle_ms,
        cri_cycle_ms,
    })
}

/// `ctr run --rm` of a container that prints its name; fails unless it printed it.
fn ctr_cycle(containerd: &PrivateContainerd, id: &str) -> anyhow::Result<()> {
    let output = containerd.run(&[], &image(), id, &["echo", id])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || stdout.trim() != id {
        bail!(
            "ctr run {id}: {} stdout {stdout:?} stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// One pod: RunPodSandbox, a container started, an exec answered, the pod stopped and
/// removed. With `census`, a census taken while the container runs.
async fn cri_cycle(
    containerd: &PrivateContainerd,
    cri: &mut CriClient,
    name: &str,
    census: Option<&Scope>,
) -> anyhow::Result<Option<Census>> {
    let spec = PodSpec::in_containerd(containerd, name, RUNTIME_HANDLER)?;
    let pod_id = cri.run_pod(&spec).await?;
    let container = cri
        .create_container(&pod_id, &spec, "main", &image(), &["sleep", "3600"])
        .await?;
    cri.start_container(&container).await?;
    let exec = cri.exec_sync(&container, &["echo", name]).await?;
    if exec.exit_code != 0 || String::from_utf8_lossy(&exec.stdout).trim() != name {
        bail!(
            "exec in {name}: exit {} stdout {:?}",
            exec.exit_code,
            exec.stdout
        );
    }
    let taken = census.map(Census::take);
    cri.remove_pod(&pod_id).await?;
    std::fs::remove_dir_all(&spec.log_directory)?;
    Ok(taken)
}

/// Waits (bounded) for containerd's asynchronous cleanup of the last task.
async fn settle(containerd: &PrivateContainerd) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !containerd.leftovers(false).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The census after the soak, retaken for a while if something still grew: a shim exits a
/// moment after its last task is deleted.
async fn settled_census(containerd: &PrivateContainerd, scope: &Scope, before: &Census) -> Census {
    settle(containerd).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let census = Census::take(scope);
        if census
            .growth_since(before, CONTAINERD_RSS_SLACK_KIB)
            .is_empty()
            || Instant::now() > deadline
        {
            return census;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
