//! The pod network as Kubernetes sets it up, with runc's behaviour as the expected one:
//! - a dual-stack pod (CNI gives it an IPv4 and an IPv6 address and a default route of each
//!   family) is reachable from the node on both addresses. In a cloak pod the addresses and
//!   routes are the guest's (the shim reads them from the pod's namespace, the agent sets them:
//!   `host/src/network.rs`, `agent/src/network/`);
//! - the pod's DNS servers, searches and options (`dnsConfig`) reach the containers'
//!   /etc/resolv.conf.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::time::Duration;

use cloak_tests::containerd::image;
use cloak_tests::cri::{container_config, BRIDGE_ADDRESS_V6};
use cloak_tests::cri_compare::{
    on_runc_and_cloak, on_runc_and_cloak_in, start, start_httpd, Network,
};
use k8s_cri::v1::DnsConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PAGE: &str = "dual-stack pod\n";

/// The body of `GET /` from `address` port 80, fetched from the node (the test's namespace).
async fn fetch(address: &str) -> String {
    let target = if address.contains(':') {
        format!("[{address}]:80")
    } else {
        format!("{address}:80")
    };
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(&target).await?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(20), attempt).await {
        Ok(Ok(response)) => response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or(response),
        Ok(Err(err)) => format!("error: {err}"),
        Err(_) => "error: timed out".to_owned(),
    }
}

#[test]
fn a_dual_stack_pod_is_reached_on_both_addresses() {
    let Some((runc, cloak)) = on_runc_and_cloak_in(
        Network::DualStack,
        "a_dual_stack_pod_is_reached_on_both_addresses",
        |_| {},
        async |cri, pod, pod_id, _| {
            let id = start_httpd(cri, pod, pod_id, "80", PAGE).await;
            let ips = cri.pod_ips(pod_id).await.unwrap();
            let mut fetched = Vec::new();
            for ip in &ips {
                fetched.push((ip.contains(':'), fetch(ip).await));
            }
            let default_v6 = cri
                .exec_sync(&id, &["ip", "-6", "route", "show", "default"])
                .await
                .unwrap();
            (
                fetched,
                String::from_utf8_lossy(&default_v6.stdout).into_owned(),
            )
        },
    ) else {
        return;
    };
    let expected = vec![(false, PAGE.to_owned()), (true, PAGE.to_owned())];
    assert_eq!(
        runc.0, expected,
        "runc: the page on the IPv4 and the IPv6 address"
    );
    assert_eq!(
        cloak.0, expected,
        "cloak: reached on both addresses as runc"
    );
    let gateway = format!("default via {BRIDGE_ADDRESS_V6} dev eth0");
    for (runtime, routes) in [("runc", &runc.1), ("cloak", &cloak.1)] {
        assert!(
            routes.contains(&gateway),
            "{runtime}: the IPv6 default route goes through the bridge: {routes:?}"
        );
    }
}

#[test]
fn the_pods_dns_options_reach_resolv_conf() {
    let Some((runc, cloak)) = on_runc_and_cloak(
        "the_pods_dns_options_reach_resolv_conf",
        |pod| {
            pod.dns = Some(DnsConfig {
                servers: vec!["10.96.0.10".into(), "fd00:10:96::a".into()],
                searches: vec![
                    "default.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                ],
                options: vec!["ndots:2".into(), "timeout:1".into(), "edns0".into()],
            });
        },
        async |cri, pod, pod_id, _| {
            let id = start(
                cri,
                pod,
                pod_id,
                container_config("main", &image(), &["sleep", "3600"]),
            )
            .await;
            let resolv = cri
                .exec_sync(&id, &["cat", "/etc/resolv.conf"])
                .await
                .unwrap();
            String::from_utf8_lossy(&resolv.stdout).into_owned()
        },
    ) else {
        return;
    };
    for line in [
        "nameserver 10.96.0.10",
        "nameserver fd00:10:96::a",
        "search default.svc.cluster.local svc.cluster.local",
        "options ndots:2 timeout:1 edns0",
    ] {
        assert!(
            runc.lines().any(|l| l == line),
            "runc: {line:?} in {runc:?}"
        );
    }
    assert_eq!(cloak, runc, "cloak's resolv.conf is runc's");
}
