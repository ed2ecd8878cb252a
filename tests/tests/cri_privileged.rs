//! Privileged containers get what they get under runc: every capability and the kernel features
//! behind them. A privileged container builds a network inside the pod (a bridge with a veth
//! enslaved — container-in-container and CNI-in-pod workloads do this), and an unprivileged
//! container of the same pod is refused. In a cloak pod the kernel is the guest's, so the
//! bridge and veth modules must be in the guest image (`configs/guest-image.toml`).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use cloak_tests::containerd::image;
use cloak_tests::cri::container_config;
use cloak_tests::cri_compare::{on_runc_and_cloak, start};

/// Builds bridge br0 with one end of a veth pair on it, and lists the bridge's ports.
const BUILD_A_BRIDGE: &str = "brctl addbr br0 && ip link add v0 type veth peer name v1 \
     && brctl addif br0 v0 && ls /sys/class/net/br0/brif";

#[test]
fn a_privileged_container_creates_a_bridge() {
    let Some((runc, cloak)) = on_runc_and_cloak(
        "a_privileged_container_creates_a_bridge",
        |pod| pod.privileged = true,
        async |cri, pod, pod_id, _| {
            let mut config = container_config("netadmin", &image(), &["sleep", "3600"]);
            let security = config
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap();
            security.privileged = true;
            let privileged = start(cri, pod, pod_id, config).await;
            let plain = start(
                cri,
                pod,
                pod_id,
                container_config("plain", &image(), &["sleep", "3600"]),
            )
            .await;
            let built = cri
                .exec_sync(&privileged, &["sh", "-c", BUILD_A_BRIDGE])
                .await
                .unwrap();
            let refused = cri
                .exec_sync(&plain, &["brctl", "addbr", "br1"])
                .await
                .unwrap();
            (
                built.exit_code,
                String::from_utf8_lossy(&built.stdout).into_owned(),
                String::from_utf8_lossy(&built.stderr).into_owned(),
                refused.exit_code,
            )
        },
    ) else {
        return;
    };
    // runc's result is the expected one, and cloak's must be the same.
    for (runtime, result) in [("runc", &runc), ("cloak", &cloak)] {
        assert_eq!(
            (result.0, result.1.as_str()),
            (0, "v0\n"),
            "{runtime}: the privileged container builds the bridge ({})",
            result.2
        );
        assert_ne!(
            result.3, 0,
            "{runtime}: the unprivileged container is refused"
        );
    }
}
