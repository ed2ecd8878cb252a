//! Leak accounting for soaks and fault tests: a census of what a pod can leave behind on the
//! node, taken before and after a run, and the counts that grew. It reads the kernel's own
//! tables (/proc, /sys, /run/netns) rather than anything cloak records, so it sees what cloak
//! forgot as well as what it knows about. A pod's tap lives in the pod's network namespace:
//! the census counts taps and veths in every named namespace as well as on the host.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Host programs of cloak's pods, by the name the kernel shows (`/proc/PID/comm`, which is cut
/// at 15 bytes).
pub const CLOAK_PROGRAMS: [&str; 5] = [
    "qemu-system-x86",
    "vhost-device-vs",
    "virtiofsd",
    "containerd-shim",
    "cloak-vmm",
];

/// One census: a count per kind of thing (see `Census::take`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    pub counts: BTreeMap<String, u64>,
}

/// A count that grew between two censuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    pub what: String,
    pub before: u64,
    pub after: u64,
}

/// What to count besides the node-wide tables.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// containerd's process: its open descriptors and resident memory.
    pub containerd_pid: Option<u32>,
    /// cloak's run directory: one entry per pod that has not been cleaned up.
    pub run_dir: Option<PathBuf>,
}

impl Census {
    /// Counts, now: processes of each cloak program and their open descriptors, mounts, Unix
    /// sockets, named network namespaces, taps and veths on the host and in every named
    /// namespace, cgroups, run-directory entries, containerd's descriptors and RSS (in KiB).
    pub fn take(scope: &Scope) -> Self {
        let mut counts = BTreeMap::new();
        let processes = processes();
        for program in CLOAK_PROGRAMS {
            let pids: Vec<u32> = processes
                .iter()
                .filter(|(_, comm)| comm == program)
                .map(|(pid, _)| *pid)
                .collect();
            counts.insert(format!("processes {program}"), pids.len() as u64);
            let fds: u64 = pids.iter().map(|pid| open_fds(*pid)).sum();
            counts.insert(format!("open fds of {program}"), fds);
        }
        counts.insert("mounts".into(), lines_of("/proc/self/mountinfo"));
        // The header line is not a socket.
        counts.insert(
            "unix sockets".into(),
            lines_of("/proc/net/unix").saturating_sub(1),
        );
        let namespaces = named_netns();
        counts.insert("network namespaces".into(), namespaces.len() as u64);
        let host_links = links_in(None);
        let mut taps = count_kind(&host_links, LinkKind::Tap);
        let mut veths = count_kind(&host_links, LinkKind::Veth);
        for namespace in &namespaces {
            let links = links_in(Some(namespace));
            taps += count_kind(&links, LinkKind::Tap);
            veths += count_kind(&links, LinkKind::Veth);
        }
        counts.insert("taps (host and pod namespaces)".into(), taps);
        counts.insert("veths (host and pod namespaces)".into(), veths);
        counts.insert("cgroups".into(), cgroups(Path::new("/sys/fs/cgroup")));
        if let Some(dir) = &scope.run_dir {
            let entries = std::fs::read_dir(dir).map_or(0, |entries| entries.count() as u64);
            counts.insert("cloak run-dir entries".into(), entries);
        }
        if let Some(pid) = scope.containerd_pid {
            counts.insert("open fds of containerd".into(), open_fds(pid));
            counts.insert("containerd RSS KiB".into(), rss_kib(pid));
        }
        Self { counts }
    }

    /// The counts that grew from `before` to `self`; memory only beyond `rss_slack_kib`.
    pub fn growth_since(&self, before: &Census, rss_slack_kib: u64) -> Vec<Growth> {
        self.counts
            .iter()
            .filter_map(|(what, after)| {
                let before = before.counts.get(what).copied().unwrap_or(0);
                let slack = if what.contains("RSS") {
                    rss_slack_kib
                } else {
                    0
                };
                (*after > before + slack).then(|| Growth {
                    what: what.clone(),
                    before,
                    after: *after,
                })
            })
            .collect()
    }
}

impl fmt::Display for Census {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (what, count) in &self.counts {
            writeln!(f, "{what:<36} {count:>10}")?;
        }
        Ok(())
    }
}

/// Every process: (pid, comm).
fn processes() -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            Some((pid, comm.trim().to_owned()))
        })
        .collect()
}

/// Open descriptors of `pid` (0 once it is gone).
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count() as u64)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn lines_of(path: &str) -> u64 {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count() as u64)
}

/// The namespaces named in /run/netns (CNI's and `ip netns`').
pub fn named_netns() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkKind {
    Tap,
    Veth,
    Other,
}

/// The links of the host (`None`) or of a named namespace, with their kind, from
/// `ip -d -j link show` (`linkinfo.info_kind`: "tun" for taps, "veth").
fn links_in(namespace: Option<&str>) -> Vec<(String, LinkKind)> {
    let mut command = std::process::Command::new("ip");
    if let Some(namespace) = namespace {
        command.args(["-n", namespace]);
    }
    let Ok(output) = command.args(["-d", "-j", "link", "show"]).output() else {
        return Vec::new();
    };
    parse_links(&String::from_utf8_lossy(&output.stdout))
}

fn parse_links(json: &str) -> Vec<(String, LinkKind)> {
    let links: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    links
        .iter()
        .map(|link| {
            let kind = match link["linkinfo"]["info_kind"].as_str() {
                Some("tun") => LinkKind::Tap,
                Some("veth") => LinkKind::Veth,
                _ => LinkKind::Other,
            };
            (link["ifname"].as_str().unwrap_or_default().to_owned(), kind)
        })
        .collect()
}

fn count_kind(links: &[(String, LinkKind)], kind: LinkKind) -> u64 {
    links.iter().filter(|(_, k)| *k == kind).count() as u64
}

/// Directories below `root` (the cgroup hierarchy).
fn cgroups(root: &Path) -> u64 {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| 1 + cgroups(&entry.path()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_told_apart_by_kind() {
        let json = r#"[{"ifname":"lo"},{"ifname":"tap0","linkinfo":{"info_kind":"tun"}},
            {"ifname":"eth0","linkinfo":{"info_kind":"veth"}},{"ifname":"br0","linkinfo":{"info_kind":"bridge"}}]"#;
        let links = parse_links(json);
        assert_eq!(count_kind(&links, LinkKind::Tap), 1);
        assert_eq!(count_kind(&links, LinkKind::Veth), 1);
        assert_eq!(count_kind(&links, LinkKind::Other), 2);
    }

    #[test]
    fn growth_names_only_what_grew_and_memory_beyond_its_slack() {
        let census = |pairs: &[(&str, u64)]| Census {
            counts: pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        };
        let before = census(&[("mounts", 30), ("containerd RSS KiB", 40_000), ("taps", 0)]);
        let after = census(&[("mounts", 31), ("containerd RSS KiB", 41_000), ("taps", 0)]);
        assert_eq!(
            after.growth_since(&before, 2_048),
            vec![Growth {
                what: "mounts".into(),
                before: 30,
                after: 31
            }]
        );
        assert_eq!(after.growth_since(&before, 500).len(), 2);
    }
}
