//! Figures for benchmarks: medians, run lists, and the host memory of processes.

/// Median of `values` (sorted in place); NaN for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Runs as `12 15 13`, rounded, in the order given.
pub fn join(values: &[f64]) -> String {
    values
        .iter()
        .map(|value| format!("{value:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resident set of `pid` in KiB: (VmRSS, RssShmem).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssShmem:"))
}

/// The pids among `lines` (`pid: command line`, as `processes_mentioning` gives) whose
/// executable ends with `program`.
pub fn pids_of(lines: &[String], program: &str) -> Vec<u32> {
    lines
        .iter()
        .filter(|line| {
            line.split_once(": ")
                .and_then(|(_, cmd)| cmd.split_whitespace().next())
                .is_some_and(|exe| exe.ends_with(program))
        })
        .filter_map(|line| line.split(':').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!(join(&[1.4, 2.6]), "1 3");
    }

    #[test]
    fn pids_are_picked_by_executable() {
        let lines = vec![
            "12: /usr/bin/qemu-system-x86_64 -machine microvm".to_owned(),
            "13: /usr/local/bin/virtiofsd --socket-path /run/qemu-system-x86_64".to_owned(),
        ];
        assert_eq!(pids_of(&lines, "qemu-system-x86_64"), vec![12]);
        assert_eq!(pids_of(&lines, "virtiofsd"), vec![13]);
        assert!(
            rss_kib(std::process::id()).0 > 0,
            "this process has a resident set"
        );
    }
}
