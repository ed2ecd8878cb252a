//! The seed corpora, built from the real encoders so every seed is a well-formed input of
//! its target (`cloak-fuzz seeds DIR` writes them; they are committed under `fuzz/corpus/`).
//! The signed ones (report, AMD-SP answer) differ on each writing: the simulated AMD-SP makes
//! new keys; keep the committed ones unless their format changes.

use std::path::Path;

use anyhow::Context as _;
use cloak_protocol::agent;
use cloak_protocol::port_forward::{request_line, Answer};
use cloak_protocol::sim_psp::SimPspResponse;
use cloak_protocol::{StreamHeader, StreamKind};
use protobuf::Message;

const INIT_DATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"cloak.rootfs\" = \"shared\"\n\"policy.rego\" = '''\npackage agent_policy\ndefault CreateSandboxRequest := true\n'''\n";

/// (target, name, bytes) of every seed.
fn all() -> anyhow::Result<Vec<(&'static str, String, Vec<u8>)>> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push((target, name.to_owned(), bytes));
    };
    for (name, exec, kind) in [
        ("init-stdout", "", StreamKind::Stdout),
        ("exec-stdin", "e1", StreamKind::Stdin),
    ] {
        let header = StreamHeader {
            container_id: "3f1c".into(),
            exec_id: exec.into(),
            kind,
        };
        add("stdio_header", name, header.to_line().into_bytes());
    }
    add(
        "port_forward_lines",
        "request",
        request_line(8080).into_bytes(),
    );
    add(
        "port_forward_lines",
        "connected",
        Answer::Connected.to_line().into_bytes(),
    );
    add(
        "port_forward_lines",
        "refused",
        Answer::Refused("connecting to localhost:81 in the pod: refused".into())
            .to_line()
            .into_bytes(),
    );
    let psp = cloak_attestation::simulated_psp::SimulatedPsp::generate()?;
    let report = psp.report(&cloak_attestation::simulated_psp::ReportInputs {
        measurement: [0x11; 48],
        host_data: [0x22; 32],
        report_data: [0x33; 64],
        policy: 0x3_0000,
    })?;
    add("snp_report", "simulated", report.clone());
    add(
        "sim_psp_answer",
        "report",
        SimPspResponse::Report {
            report,
            certificates: psp.certificates_pem()?,
        }
        .encode(),
    );
    add(
        "sim_psp_answer",
        "error",
        SimPspResponse::Error("no".into()).encode(),
    );
    add("init_data", "document", INIT_DATA.as_bytes().to_vec());
    add(
        "init_data",
        "annotation",
        cloak_init_data::encode_annotation(INIT_DATA.as_bytes())?.into_bytes(),
    );
    add(
        "host_config",
        "shipped",
        include_str!("../../configs/configuration.toml")
            .as_bytes()
            .to_vec(),
    );
    add(
        "pod_size_annotations",
        "limits",
        b"io.kubernetes.cri.sandbox-memory=1073741824\nio.kubernetes.cri.sandbox-cpu-quota=150000\nio.kubernetes.cri.sandbox-cpu-period=100000\n".to_vec(),
    );
    for (kind, name, bytes) in agent_requests()? {
        let mut seed = vec![kind];
        seed.extend_from_slice(&bytes);
        add("agent_requests", name, seed);
    }
    // A guest's transmit chain: a 44-byte vsock header (payload length 5) and "hello"; and
    // a receive chain of two writable buffers.
    let mut header = [0u8; 44];
    header[0] = 3; // src_cid
    header[8] = 2; // dst_cid
    header[20..24].copy_from_slice(&1024u32.to_le_bytes()); // dst_port
    header[24..28].copy_from_slice(&5u32.to_le_bytes()); // len
    header[28] = 1; // type: stream
    header[30] = 5; // op: rw
    let mut payload = header.to_vec();
    payload.extend_from_slice(b"hello");
    let data = crate::virtio::SEED_DATA;
    add(
        "vmm_vsock_tx",
        "rw-packet",
        crate::virtio::seed(&[(data, 44, 1, 1), (data + 44, 5, 0, 0)], &payload),
    );
    add(
        "vmm_vsock_rx",
        "two-buffers",
        crate::virtio::seed(&[(data, 44, 3, 1), (data + 0x1000, 256, 2, 0)], &[]),
    );
    // Block requests: a header (type, reserved, sector), a data buffer, a status byte.
    for (name, kind, data_flags) in [("read-sector-1", 0u32, 3u16), ("write-sector-1", 1, 1)] {
        let mut header = kind.to_le_bytes().to_vec();
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&1u64.to_le_bytes());
        add(
            "vmm_block_request",
            name,
            crate::virtio::seed(
                &[
                    (data, 16, 1, 1),
                    (data + 0x1000, 512, data_flags, 2),
                    (data + 0x2000, 1, 2, 0),
                ],
                &header,
            ),
        );
    }
    {
        use crate::agent_ttrpc::{frame, request, AGENT_SERVICE};
        for (selector, name, bytes) in agent_requests()? {
            let method = match selector {
                0 => "CreateSandbox",
                1 => "CreateContainer",
                3 => "UpdateInterface",
                _ => "UpdateRoutes",
            };
            add(
                "agent_ttrpc_frames",
                name,
                frame(3, 1, &request(AGENT_SERVICE, method, &bytes)),
            );
        }
        let exec = agent::ExecProcessRequest {
            container_id: "3f1c".into(),
            exec_id: "e1".into(),
            ..Default::default()
        };
        add(
            "agent_ttrpc_frames",
            "exec-process",
            frame(
                5,
                1,
                &request(AGENT_SERVICE, "ExecProcess", &exec.write_to_bytes()?),
            ),
        );
        add(
            "agent_ttrpc_frames",
            "unknown-method",
            frame(7, 1, &request(AGENT_SERVICE, "Reboot", &[])),
        );
        let mut two = frame(1, 1, &request("cloak.health.v1.Health", "Check", &[]));
        two.extend(frame(
            3,
            1,
            &request(AGENT_SERVICE, "CopyFile", &[0x0a, 0x02, b'/', b'x']),
        ));
        add("agent_ttrpc_frames", "two-requests", two);
    }
    add(
        "vmm_vsock_connect_line",
        "connect",
        b"CONNECT 1024\n".to_vec(),
    );
    add(
        "vmm_vsock_connect_line",
        "connect-then-data",
        b"CONNECT 5000\nGET / HTTP/1.0\n".to_vec(),
    );
    add(
        "vmm_mmio_transport",
        "virtio-fs-bring-up",
        crate::mmio::bring_up_seed(0),
    );
    add(
        "vmm_mmio_transport",
        "virtio-rng-bring-up",
        crate::mmio::bring_up_seed(1),
    );
    add(
        "ready_port",
        "ready",
        cloak_protocol::READY_MESSAGE.to_vec(),
    );
    add("ready_port", "other", b"READY? not yet\n".to_vec());
    add(
        "hybrid_vsock_answer",
        "ok-then-data",
        b"OK 1073741824\nhello".to_vec(),
    );
    add(
        "hybrid_vsock_answer",
        "refused",
        b"ERR no listener\n".to_vec(),
    );
    Ok(seeds)
}

/// One well-formed request per message the target decodes (its selector byte first).
fn agent_requests() -> anyhow::Result<Vec<(u8, &'static str, Vec<u8>)>> {
    let spec = r#"{"ociVersion":"1.1.0","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"},"annotations":{"io.kubernetes.cri.container-type":"container"}}"#;
    let sandbox = agent::CreateSandboxRequest {
        sandbox_id: "a112".into(),
        hostname: "web".into(),
        ..Default::default()
    };
    let container = agent::CreateContainerRequest {
        container_id: "3f1c".into(),
        oci_spec_json: spec.as_bytes().to_vec(),
        ..Default::default()
    };
    let interface = agent::UpdateInterfaceRequest {
        interface: Some(agent::Interface {
            name: "eth0".into(),
            hw_addr: "9a:55:e8:3e:8b:33".into(),
            addresses: vec![agent::IpAddress {
                address: "fd00:10:213::5".into(),
                prefix_len: 64,
                ..Default::default()
            }],
            mtu: 1500,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let routes = agent::UpdateRoutesRequest {
        routes: vec![agent::Route {
            destination: "default".into(),
            gateway: "10.213.0.1".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Ok(vec![
        (0, "create-sandbox", sandbox.write_to_bytes()?),
        (1, "create-container", container.write_to_bytes()?),
        (3, "update-interface", interface.write_to_bytes()?),
        (4, "update-routes", routes.write_to_bytes()?),
    ])
}

/// Writes every seed to `dir/<target>/<name>`.
pub fn write(dir: &Path) -> anyhow::Result<usize> {
    let seeds = all()?;
    for (target, name, bytes) in &seeds {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)
            .with_context(|| format!("creating {}", target_dir.display()))?;
        std::fs::write(target_dir.join(name), bytes)?;
    }
    Ok(seeds.len())
}
