//! The agent's cgroup statistics in containerd's cgroup v2 metrics type, which `ctr task
//! metrics` and the CRI plugin decode by its type URL.

use cloak_protocol::agent::StatsContainerResponse;
use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryStat, Metrics, PidsStat,
};

pub fn to_cgroup_v2(stats: &StatsContainerResponse) -> Metrics {
    let mut metrics = Metrics::default();
    if let Some(cpu) = stats.cpu.as_ref() {
        metrics.cpu = Some(CPUStat {
            usage_usec: cpu.usage_usec,
            user_usec: cpu.user_usec,
            system_usec: cpu.system_usec,
            nr_throttled: cpu.nr_throttled,
            throttled_usec: cpu.throttled_usec,
            ..Default::default()
        })
        .into();
    }
    if let Some(memory) = stats.memory.as_ref() {
        metrics.memory = Some(MemoryStat {
            usage: memory.usage_bytes,
            usage_limit: memory.limit_bytes,
            max_usage: memory.max_usage_bytes,
            anon: memory.anon_bytes,
            file: memory.file_bytes,
            ..Default::default()
        })
        .into();
    }
    if let Some(pids) = stats.pids.as_ref() {
        metrics.pids = Some(PidsStat {
            current: pids.current,
            limit: pids.limit,
            ..Default::default()
        })
        .into();
    }
    if let Some(io) = stats.io.as_ref() {
        metrics.io = Some(IOStat {
            usage: vec![IOEntry {
                rbytes: io.read_bytes,
                wbytes: io.write_bytes,
                rios: io.read_ops,
                wios: io.write_ops,
                ..Default::default()
            }],
            ..Default::default()
        })
        .into();
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloak_protocol::agent::{CpuStats, MemoryStats, PidsStats};

    #[test]
    fn agent_stats_land_in_the_matching_fields() {
        let stats = StatsContainerResponse {
            cpu: Some(CpuStats {
                usage_usec: 7,
                ..Default::default()
            })
            .into(),
            memory: Some(MemoryStats {
                usage_bytes: 4096,
                limit_bytes: 1 << 20,
                ..Default::default()
            })
            .into(),
            pids: Some(PidsStats {
                current: 2,
                limit: 10,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let metrics = to_cgroup_v2(&stats);
        assert_eq!(metrics.cpu.usage_usec, 7);
        assert_eq!(
            (metrics.memory.usage, metrics.memory.usage_limit),
            (4096, 1 << 20)
        );
        assert_eq!((metrics.pids.current, metrics.pids.limit), (2, 10));
        assert!(metrics.io.is_none());
    }
}
