//! A container's cgroup v2 directory: statistics, resource updates, member processes and the
//! OOM-kill counter. The files are read and written directly; their formats are the kernel's
//! (Documentation/admin-guide/cgroup-v2.rst).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cloak_protocol::agent::{CpuStats, IoStats, MemoryStats, PidsStats, StatsContainerResponse};
use oci_spec::runtime::LinuxResources;

pub(super) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The unified-hierarchy directory of cgroup path `relative` (e.g. `/cloak/c1`).
pub(super) fn directory(relative: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(relative.trim_start_matches('/'))
}

/// Lets child cgroups of the root and of `/cloak` use the controllers the containers need.
pub(super) fn enable_controllers(parent: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    for dir in [Path::new(CGROUP_ROOT), parent] {
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<String> = available
            .split_whitespace()
            .filter(|c| matches!(*c, "cpu" | "memory" | "pids" | "io" | "cpuset"))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "))
                .with_context(|| format!("enabling controllers in {}", dir.display()))?;
        }
    }
    Ok(())
}

/// `key value` lines (cpu.stat, memory.stat, memory.events) as a lookup.
fn flat_keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// A single-value file; "max" (no limit) reads as u64::MAX.
fn single_value(dir: &Path, file: &str) -> u64 {
    let text = read(dir, file);
    match text.trim() {
        "max" => u64::MAX,
        value => value.parse().unwrap_or(0),
    }
}

pub(super) fn stats(dir: &Path) -> StatsContainerResponse {
    let cpu = read(dir, "cpu.stat");
    let memory_stat = read(dir, "memory.stat");
    let mut io = IoStats::default();
    // io.stat: "<maj>:<min> rbytes=.. wbytes=.. rios=.. wios=.. ..." per device.
    for line in read(dir, "io.stat").lines() {
        for field in line.split_whitespace().skip(1) {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let value: u64 = value.parse().unwrap_or(0);
            match key {
                "rbytes" => io.read_bytes += value,
                "wbytes" => io.write_bytes += value,
                "rios" => io.read_ops += value,
                "wios" => io.write_ops += value,
                _ => {}
            }
        }
    }
    StatsContainerResponse {
        cpu: Some(CpuStats {
            usage_usec: flat_keyed(&cpu, "usage_usec"),
            user_usec: flat_keyed(&cpu, "user_usec"),
            system_usec: flat_keyed(&cpu, "system_usec"),
            throttled_usec: flat_keyed(&cpu, "throttled_usec"),
            nr_throttled: flat_keyed(&cpu, "nr_throttled"),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStats {
            usage_bytes: single_value(dir, "memory.current"),
            limit_bytes: single_value(dir, "memory.max"),
            max_usage_bytes: single_value(dir, "memory.peak"),
            oom_kill_count: oom_kill_count(dir),
            anon_bytes: flat_keyed(&memory_stat, "anon"),
            file_bytes: flat_keyed(&memory_stat, "file"),
            ..Default::default()
        })
        .into(),
        pids: Some(PidsStats {
            current: single_value(dir, "pids.current"),
            limit: single_value(dir, "pids.max"),
            ..Default::default()
        })
        .into(),
        io: Some(io).into(),
        ..Default::default()
    }
}

pub(super) fn oom_kill_count(dir: &Path) -> u64 {
    flat_keyed(&read(dir, "memory.events"), "oom_kill")
}

/// Pids of every process in the cgroup.
pub(super) fn member_pids(dir: &Path) -> Vec<i32> {
    read(dir, "cgroup.procs")
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Converts OCI cpu shares (2..262144) to a cgroup v2 weight (1..10000), as runc does.
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// The cgroup file writes that apply `resources` (only what it sets).
pub(super) fn resource_writes(resources: &LinuxResources) -> Vec<(&'static str, String)> {
    let mut writes = Vec::new();
    if let Some(memory) = resources.memory() {
        if let Some(limit) = memory.limit() {
            writes.push((
                "memory.max",
                if limit < 0 {
                    "max".to_owned()
                } else {
                    limit.to_string()
                },
            ));
        }
        if let Some(reservation) = memory.reservation() {
            writes.push(("memory.low", reservation.max(0).to_string()));
        }
    }
    if let Some(cpu) = resources.cpu() {
        if let Some(shares) = cpu.shares() {
            if shares > 0 {
                writes.push(("cpu.weight", shares_to_weight(shares).to_string()));
            }
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let quota = match cpu.quota() {
                Some(quota) if quota > 0 => quota.to_string(),
                _ => "max".to_owned(),
            };
            writes.push((
                "cpu.max",
                format!("{quota} {}", cpu.period().unwrap_or(100_000)),
            ));
        }
        if let Some(cpus) = cpu.cpus() {
            writes.push(("cpuset.cpus", cpus.clone()));
        }
    }
    if let Some(pids) = resources.pids() {
        let limit = pids.limit();
        writes.push((
            "pids.max",
            if limit <= 0 {
                "max".to_owned()
            } else {
                limit.to_string()
            },
        ));
    }
    writes
}

pub(super) fn apply(dir: &Path, resources: &LinuxResources) -> anyhow::Result<()> {
    for (file, value) in resource_writes(resources) {
        std::fs::write(dir.join(file), &value)
            .with_context(|| format!("writing {value:?} to {file}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stats_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_throttled 2\nthrottled_usec 30\n"),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.peak", "8192\n"),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            ("memory.stat", "anon 1024\nfile 2048\n"),
            ("pids.current", "3\n"),
            ("io.stat", "254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n254:16 rbytes=5 wbytes=0 rios=1 wios=0\n"),
            ("cgroup.procs", "12\n15\n"),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let stats = stats(dir.path());
        assert_eq!(stats.cpu.usage_usec, 1500);
        assert_eq!(stats.cpu.nr_throttled, 2);
        assert_eq!(stats.memory.usage_bytes, 4096);
        assert_eq!(stats.memory.limit_bytes, u64::MAX);
        assert_eq!(stats.memory.oom_kill_count, 1);
        assert_eq!(stats.memory.file_bytes, 2048);
        assert_eq!(stats.pids.current, 3);
        assert_eq!(stats.pids.limit, 0, "absent file");
        assert_eq!(stats.io.read_bytes, 15);
        assert_eq!(stats.io.write_ops, 2);
        assert_eq!(member_pids(dir.path()), vec![12, 15]);
    }

    #[test]
    fn resources_map_to_cgroup_v2_files() {
        let resources: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":33554432},"cpu":{"shares":1024,"quota":50000,"period":100000},"pids":{"limit":64}}"#,
        )
        .unwrap();
        let writes = resource_writes(&resources);
        assert!(writes.contains(&("memory.max", "33554432".to_owned())));
        assert!(writes.contains(&("cpu.weight", "39".to_owned())));
        assert!(writes.contains(&("cpu.max", "50000 100000".to_owned())));
        assert!(writes.contains(&("pids.max", "64".to_owned())));
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
