//! The short soak of the suite (`make soak` runs the long one): ctr and CRI pod cycles through
//! one containerd leave no count of the leak census grown — processes and their descriptors,
//! containerd's descriptors, mounts, sockets, network namespaces, taps and veths, cgroups,
//! run-dir entries. The census taken while a pod ran must show that pod (its VMM, its network
//! namespace, its tap inside that namespace), or "no growth" would prove nothing.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test fails loudly by design

use cloak_tests::containerd::PrivateContainerd;
use cloak_tests::cri::cri_test_env;

const CYCLES: usize = 3;

#[test]
fn ctr_and_cri_cycles_leave_no_count_grown() {
    let Some((env, shim)) = cri_test_env("ctr_and_cri_cycles_leave_no_count_grown") else {
        return;
    };
    let _slot = cloak_tests::vm_slot();
    let containerd = PrivateContainerd::start_with_cri(&env, &shim).unwrap();
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cloak_tests::soak::soak(&containerd, CYCLES))
        .unwrap();
    eprintln!("{}", report.table());

    let seen_while_up: Vec<String> = report
        .during_pod
        .growth_since(&report.before, u64::MAX)
        .into_iter()
        .map(|growth| growth.what)
        .collect();
    for what in [
        "processes qemu-system-x86",
        "processes virtiofsd",
        "processes vhost-device-vs",
        "network namespaces",
        "taps (host and pod namespaces)",
        "veths (host and pod namespaces)",
        "cloak run-dir entries",
    ] {
        assert!(
            seen_while_up.iter().any(|seen| seen == what),
            "the census missed the running pod's {what}:\n{}",
            report.table()
        );
    }
    assert_eq!(report.ctr_cycle_ms.len(), CYCLES);
    assert_eq!(report.cri_cycle_ms.len(), CYCLES);
    assert_eq!(report.growth(), Vec::new(), "{}", report.table());
}
