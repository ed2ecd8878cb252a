//! How big a pod's VM is. A container limited to 1 GiB in a VM of the configured 512 MiB is
//! OOM-killed at ~400 MiB, so the VM is sized from the pod: the kubelet sends the sum of the
//! pod's container limits in the sandbox config, and containerd's CRI plugin (1.6.7 and later,
//! 2.x) passes it to the runtime as annotations on the sandbox container. Memory and vCPUs are
//! decided once, at the sandbox: an SNP guest's vCPUs are part of its launch digest and its
//! memory is encrypted at launch, so neither grows later, and cloak does not hot-plug either
//! for other pods (one rule for all pods, and one digest per size).
//!
//! The rule: memory = the configured `memory_mib` (what the guest kernel, agent and page cache
//! need: the RuntimeClass overhead) + the pod's memory limit, rounded up to a whole
//! [`MEMORY_STEP_MIB`]; vCPUs = the larger of the configured `vcpus` and the pod's CPU limit
//! rounded up (CPU limits are enforced by the guest's cgroups, the vCPUs only need to be
//! there). Both are capped at the configured maximums (default: what the host has). A pod
//! without limits, or a container started without the CRI (`ctr run`), gets the configured
//! size.

use std::collections::HashMap;

/// Sandbox annotations of containerd's CRI plugin (`pkg/cri/annotations`).
pub const SANDBOX_MEMORY_ANNOTATION: &str = "io.kubernetes.cri.sandbox-memory";
pub const SANDBOX_CPU_QUOTA_ANNOTATION: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const SANDBOX_CPU_PERIOD_ANNOTATION: &str = "io.kubernetes.cri.sandbox-cpu-period";

/// VM memory comes in whole steps of this, so the sizes — and for a direct SNP launch, whose
/// memory map is measured, the launch digests — are few and listed ahead of time.
pub const MEMORY_STEP_MIB: u32 = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodSizeError {
    #[error("annotation {name} = {value:?} is not a whole number")]
    NotANumber { name: &'static str, value: String },
}

/// The pod's resource limits as containerd passes them; `None` where the pod has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodResources {
    pub memory_limit_bytes: Option<u64>,
    /// CPU limit as CFS quota and period (microseconds).
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
}

impl PodResources {
    /// Reads the sandbox annotations; zero and negative values mean "no limit", as in the CRI.
    pub fn from_annotations(annotations: &HashMap<String, String>) -> Result<Self, PodSizeError> {
        let read = |name: &'static str| -> Result<Option<u64>, PodSizeError> {
            let Some(value) = annotations.get(name) else {
                return Ok(None);
            };
            let number: i64 = value.trim().parse().map_err(|_| PodSizeError::NotANumber {
                name,
                value: value.clone(),
            })?;
            Ok(u64::try_from(number).ok().filter(|n| *n > 0))
        };
        Ok(Self {
            memory_limit_bytes: read(SANDBOX_MEMORY_ANNOTATION)?,
            cpu_quota_us: read(SANDBOX_CPU_QUOTA_ANNOTATION)?,
            cpu_period_us: read(SANDBOX_CPU_PERIOD_ANNOTATION)?,
        })
    }

    /// The CPU limit in whole CPUs, rounded up.
    pub fn cpu_limit(&self) -> Option<u32> {
        let (quota, period) = (self.cpu_quota_us?, self.cpu_period_us?);
        u32::try_from(quota.div_ceil(period)).ok()
    }

    /// The memory limit in MiB, rounded up.
    pub fn memory_limit_mib(&self) -> Option<u32> {
        u32::try_from(self.memory_limit_bytes?.div_ceil(1 << 20)).ok()
    }
}

/// The configured part of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizePolicy {
    pub base_vcpus: u32,
    pub base_memory_mib: u32,
    pub max_vcpus: u32,
    pub max_memory_mib: u32,
}

/// A VM's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    pub vcpus: u32,
    pub memory_mib: u32,
}

impl SizePolicy {
    /// The VM size for a pod with `resources`; `capped` says whether a maximum cut it.
    pub fn size_for(&self, resources: &PodResources) -> (VmSize, bool) {
        let vcpus = resources
            .cpu_limit()
            .map_or(self.base_vcpus, |cpus| cpus.max(self.base_vcpus));
        let memory = match resources.memory_limit_mib() {
            None => self.base_memory_mib,
            Some(limit) => self
                .base_memory_mib
                .saturating_add(limit)
                .div_ceil(MEMORY_STEP_MIB)
                .saturating_mul(MEMORY_STEP_MIB),
        };
        let wanted = VmSize {
            vcpus,
            memory_mib: memory,
        };
        let size = VmSize {
            vcpus: vcpus.min(self.max_vcpus.max(self.base_vcpus)),
            memory_mib: memory.min(self.max_memory_mib.max(self.base_memory_mib)),
        };
        (size, size != wanted)
    }
}

/// The host's online CPUs and memory in MiB: the default maximums.
pub fn host_capacity() -> (u32, u32) {
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(u32::MAX, |kib| {
            u32::try_from(kib / 1024).unwrap_or(u32::MAX)
        });
    (cpus, memory_mib)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const POLICY: SizePolicy = SizePolicy {
        base_vcpus: 2,
        base_memory_mib: 512,
        max_vcpus: 8,
        max_memory_mib: 8192,
    };

    #[test]
    fn a_pod_limited_to_one_gib_gets_the_base_plus_one_gib() {
        let resources = PodResources::from_annotations(&annotations(&[(
            SANDBOX_MEMORY_ANNOTATION,
            "1073741824",
        )]))
        .unwrap();
        assert_eq!(
            POLICY.size_for(&resources),
            (
                VmSize {
                    vcpus: 2,
                    memory_mib: 1536
                },
                false
            )
        );
    }

    #[test]
    fn memory_rounds_up_to_a_step_and_cpus_to_whole_cpus() {
        // 300 MiB + 1 byte and 2.5 CPUs (quota 250000 per 100000 µs).
        let resources = PodResources::from_annotations(&annotations(&[
            (SANDBOX_MEMORY_ANNOTATION, &((300u64 << 20) + 1).to_string()),
            (SANDBOX_CPU_QUOTA_ANNOTATION, "250000"),
            (SANDBOX_CPU_PERIOD_ANNOTATION, "100000"),
        ]))
        .unwrap();
        let (size, capped) = POLICY.size_for(&resources);
        // 512 + 301 = 813 → 1024.
        assert_eq!(
            size,
            VmSize {
                vcpus: 3,
                memory_mib: 1024
            }
        );
        assert!(!capped);
    }

    #[test]
    fn no_limits_keep_the_configured_size_and_cpus_never_go_below_it() {
        let none = PodResources::from_annotations(&annotations(&[
            (SANDBOX_MEMORY_ANNOTATION, "0"),
            (SANDBOX_CPU_QUOTA_ANNOTATION, "-1"),
            (SANDBOX_CPU_PERIOD_ANNOTATION, "100000"),
        ]))
        .unwrap();
        assert_eq!(
            POLICY.size_for(&none).0,
            VmSize {
                vcpus: 2,
                memory_mib: 512
            }
        );
        let half_cpu = PodResources {
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            ..Default::default()
        };
        assert_eq!(POLICY.size_for(&half_cpu).0.vcpus, 2);
        assert_eq!(POLICY.size_for(&PodResources::default()).0.memory_mib, 512);
    }

    #[test]
    fn maximums_cap_the_size_and_say_so() {
        let huge = PodResources {
            memory_limit_bytes: Some(64 << 30),
            cpu_quota_us: Some(6_400_000),
            cpu_period_us: Some(100_000),
        };
        let (size, capped) = POLICY.size_for(&huge);
        assert_eq!(
            size,
            VmSize {
                vcpus: 8,
                memory_mib: 8192
            }
        );
        assert!(capped);
    }

    #[test]
    fn a_malformed_annotation_is_named() {
        let err =
            PodResources::from_annotations(&annotations(&[(SANDBOX_MEMORY_ANNOTATION, "1Gi")]))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "annotation io.kubernetes.cri.sandbox-memory = \"1Gi\" is not a whole number"
        );
    }
}
