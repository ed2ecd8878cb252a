//! `kubectl port-forward` through containerd's CRI streaming server, with runc's behaviour as
//! the expected one. The CRI plugin dials the port inside the pod's network namespace on the
//! host; under runc the pod's server is there, under cloak it is in the VM and the shim carries
//! the connection to it (`host/src/port_forward.rs`, `agent/src/port_forward.rs`). The server
//! listens on the pod's loopback only, so nothing but port-forward reaches it from outside; a
//! forward to a port nothing listens on reports an error and no data on both runtimes.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::time::Duration;

use cloak_tests::cri_compare::{on_runc_and_cloak, start_httpd};

const PAGE: &str = "served from inside the pod\n";
const HTTP_PORT: u16 = 8080;
/// Nothing listens here.
const CLOSED_PORT: u16 = 8081;
const WAIT: Duration = Duration::from_secs(60);
/// How long a finished forward is watched for a late error.
const SETTLE: Duration = Duration::from_secs(3);

/// What a forward brought back: the response's status line and body, or the error text.
#[derive(Debug, PartialEq)]
struct Forwarded {
    status_line: String,
    body: String,
    error: String,
}

fn forwarded((data, error): (Vec<u8>, String)) -> Forwarded {
    let response = String::from_utf8_lossy(&data).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Forwarded {
        status_line: head.lines().next().unwrap_or_default().to_owned(),
        body: body.to_owned(),
        error,
    }
}

#[test]
fn an_http_server_on_the_pods_loopback_is_reached_and_a_closed_port_ends_cleanly() {
    let Some((runc, cloak)) = on_runc_and_cloak(
        "an_http_server_on_the_pods_loopback_is_reached_and_a_closed_port_ends_cleanly",
        |_| {},
        async |cri, pod, pod_id, _| {
            start_httpd(cri, pod, pod_id, &format!("127.0.0.1:{HTTP_PORT}"), PAGE).await;

            let mut forward = cri.port_forward(pod_id, HTTP_PORT).await.unwrap();
            forward
                .send(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let data = forward.read_data_until(PAGE, WAIT).await.unwrap();
            // A forward that went well reports nothing on its error channel.
            let error = forward.error_within(SETTLE).await;
            let served = forwarded((data, error));
            let mut refused = cri.port_forward(pod_id, CLOSED_PORT).await.unwrap();
            let error = refused.error_within(WAIT).await;
            let closed = forwarded((refused.data(), error));
            (served, closed)
        },
    ) else {
        return;
    };
    let (runc_served, runc_closed) = runc;
    let (cloak_served, cloak_closed) = cloak;
    assert_eq!(
        (runc_served.status_line.as_str(), runc_served.body.as_str()),
        ("HTTP/1.1 200 OK", PAGE),
        "runc: the expected behaviour ({runc_served:?})"
    );
    assert_eq!(
        cloak_served, runc_served,
        "cloak forwards to the pod's loopback as runc does"
    );
    for (runtime, closed) in [("runc", &runc_closed), ("cloak", &cloak_closed)] {
        assert_eq!(
            (closed.status_line.as_str(), closed.body.as_str()),
            ("", ""),
            "{runtime}: no data from a closed port"
        );
        assert!(
            !closed.error.is_empty(),
            "{runtime}: the closed port is reported on the error stream"
        );
    }
}
