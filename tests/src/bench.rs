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

/// Prints both run lists and their medians with the ratio cloak/baseline, in milliseconds.
#[allow(clippy::print_stdout)] // benchmarks print their figures
pub fn print_against_baseline(cloak: &mut [f64], baseline_name: &str, baseline: &mut [f64]) {
    println!("  cloak: {} ms", join(cloak));
    println!("  {:<6} {} ms", format!("{baseline_name}:"), join(baseline));
    let (cloak_median, baseline_median) = (median(cloak), median(baseline));
    println!(
        "  median: cloak {cloak_median:.1} ms, {baseline_name} {baseline_median:.1} ms, ratio {:.1}",
        cloak_median / baseline_median
    );
}

/// `--runs N` from the command line, else `default`.
pub fn runs_from_args(default: usize) -> anyhow::Result<usize> {
    number_from_args("--runs", default)
}

/// The number after `flag` on the command line, else `default`.
pub fn number_from_args(flag: &str, default: usize) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    std::env::args()
        .skip_while(|arg| arg != flag)
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .with_context(|| format!("{flag} takes a number"))
        .map(|value| value.unwrap_or(default))
}

/// The KiB figure of the `name` line (`VmRSS:`, `Pss:`) of a /proc status-like file.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Resident set of `pid` in KiB: (VmRSS, RssShmem).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (
        kib_field(&status, "VmRSS:"),
        kib_field(&status, "RssShmem:"),
    )
}

/// Proportional set size of `pid` in KiB (`smaps_rollup`): its private pages and its share of
/// pages other processes map too (libraries, the same binary in another pod's helper).
pub fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    kib_field(&rollup, "Pss:")
}

/// Prints the host memory of one running cloak pod — its shim (among `shims`) and the VM's
/// processes (among `vm_processes`, as `processes_mentioning` lists them) — beside runc's
/// shims as the baseline; returns the pod's total in MiB.
#[allow(clippy::print_stdout)] // benchmarks print their figures
pub fn print_pod_memory(vm_processes: &[String], shims: &[String]) -> f64 {
    println!(
        "\nhost memory of one running cloak pod (VmRSS; guest RAM is the VMM's shared memory):"
    );
    let mut total = 0;
    let (mut helpers_rss, mut helpers_pss) = (0, 0);
    for (name, pids) in [
        (
            "containerd-shim-cloak-v2",
            crate::pids_of(shims, "containerd-shim-cloak-v2"),
        ),
        (
            "qemu-system-x86_64",
            crate::pids_of(vm_processes, "qemu-system-x86_64"),
        ),
        (
            "vhost-device-vsock",
            crate::pids_of(vm_processes, "vhost-device-vsock"),
        ),
        ("virtiofsd", crate::pids_of(vm_processes, "virtiofsd")),
    ] {
        let (rss, shmem) = pids
            .iter()
            .map(|pid| rss_kib(*pid))
            .fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
        let pss: u64 = pids.iter().map(|pid| pss_kib(*pid)).sum();
        total += rss;
        if !name.starts_with("qemu") {
            helpers_rss += rss;
            helpers_pss += pss;
        }
        println!(
            "  {name:<26} {:>8.1} MiB  (PSS {:.1} MiB; {} process{}, guest RAM in it {:.1} MiB)",
            rss as f64 / 1024.0,
            pss as f64 / 1024.0,
            pids.len(),
            if pids.len() == 1 { "" } else { "es" },
            shmem as f64 / 1024.0
        );
    }
    let total_mib = total as f64 / 1024.0;
    println!("  {:<26} {total_mib:>8.1} MiB", "cloak pod total");
    println!(
        "  {:<26} {:>8.1} MiB  (PSS {:.1} MiB; target 16 MiB)",
        "helpers (all but the VMM)",
        helpers_rss as f64 / 1024.0,
        helpers_pss as f64 / 1024.0
    );
    let runc: u64 = crate::pids_of(shims, "containerd-shim-runc-v2")
        .iter()
        .map(|pid| rss_kib(*pid).0)
        .sum();
    println!(
        "  {:<26} {:>8.1} MiB  (baseline: runc's shim; runc itself exits)",
        "containerd-shim-runc-v2",
        runc as f64 / 1024.0
    );
    total_mib
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
        assert_eq!(crate::pids_of(&lines, "qemu-system-x86_64"), vec![12]);
        assert_eq!(crate::pids_of(&lines, "virtiofsd"), vec![13]);
        assert!(
            rss_kib(std::process::id()).0 > 0,
            "this process has a resident set"
        );
    }
}
