//! The targets. Each takes raw bytes as the party that sends them would, and panics only when
//! the code under test misbehaves: a parser that panics, or a value that does not survive its
//! own encoding.

use std::collections::HashMap;

use cloak_protocol::agent;
use cloak_protocol::port_forward::{self, Answer};
use cloak_protocol::sim_psp::SimPspResponse;
use cloak_protocol::StreamHeader;
use protobuf::MessageFull;

use crate::Target;

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "stdio_header",
        run: stdio_header,
    },
    Target {
        name: "port_forward_lines",
        run: port_forward_lines,
    },
    Target {
        name: "sim_psp_answer",
        run: sim_psp_answer,
    },
    Target {
        name: "snp_report",
        run: snp_report,
    },
    Target {
        name: "init_data",
        run: init_data,
    },
    Target {
        name: "host_config",
        run: host_config,
    },
    Target {
        name: "pod_size_annotations",
        run: pod_size_annotations,
    },
    Target {
        name: "agent_requests",
        run: agent_requests,
    },
    Target {
        name: "agent_ttrpc_frames",
        run: crate::agent_ttrpc::agent_ttrpc_frames,
    },
    Target {
        name: "vmm_vsock_tx",
        run: crate::virtio::vsock_tx,
    },
    Target {
        name: "vmm_vsock_rx",
        run: crate::virtio::vsock_rx,
    },
    Target {
        name: "vmm_block_request",
        run: crate::virtio::block_request,
    },
    Target {
        name: "vmm_vsock_connect_line",
        run: crate::virtio::vsock_connect_line,
    },
    Target {
        name: "vmm_mmio_transport",
        run: crate::mmio::mmio_transport,
    },
    Target {
        name: "ready_port",
        run: crate::host_listeners::ready_port,
    },
    Target {
        name: "hybrid_vsock_answer",
        run: crate::host_listeners::hybrid_vsock_answer,
    },
];

/// The header line a guest-facing stdio connection starts with (the agent reads it from the
/// host; the format is shared). What parses must print back to the same header.
fn stdio_header(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(header) = StreamHeader::parse(&text) {
        assert_eq!(StreamHeader::parse(&header.to_line()), Some(header));
    }
}

/// Both lines of a forwarded connection: the shim's request (read by the agent) and the
/// agent's answer (read by the shim).
fn port_forward_lines(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(port) = port_forward::parse_request(&text) {
        assert_eq!(
            port_forward::parse_request(&port_forward::request_line(port)),
            Some(port)
        );
    }
    if let Some(answer) = Answer::parse(&text) {
        let line = answer.to_line();
        assert_eq!(line.matches('\n').count(), 1, "an answer is one line");
        let again = Answer::parse(&line);
        assert!(again.is_some(), "{line:?} does not parse back");
    }
}

/// The simulated AMD-SP's answer, as the guest decodes it.
fn sim_psp_answer(data: &[u8]) {
    if let Ok(answer) = SimPspResponse::decode(data) {
        let encoded = answer.encode();
        assert!(SimPspResponse::decode(&encoded).is_ok());
    }
}

/// An attestation report as a verifier receives it. Half the inputs are cut or padded to a
/// report's size, so the field checks behind the size check are reached.
fn snp_report(data: &[u8]) {
    let _ = cloak_attestation::report::Report::parse(data);
    let mut sized = data.to_vec();
    sized.resize(cloak_snp_abi::REPORT_BYTES, 0);
    let _ = cloak_attestation::report::Report::parse(&sized);
}

/// A pod's init-data, from the annotation (base64, maybe gzipped) and as the document.
fn init_data(data: &[u8]) {
    let _ = cloak_init_data::InitData::parse(data);
    if let Ok(decoded) = cloak_init_data::decode_annotation(&String::from_utf8_lossy(data)) {
        let _ = cloak_init_data::InitData::parse(&decoded);
    }
    let _ = cloak_init_data::host_data_for(data);
}

/// The runtime's configuration file.
fn host_config(data: &[u8]) {
    if let Ok(config) = cloak_host::Configuration::parse(&String::from_utf8_lossy(data), "fuzz") {
        let _ = config.size_policy();
    }
}

/// containerd's sandbox annotations, `name=value` a line, sizing a VM.
fn pod_size_annotations(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let annotations: HashMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    if let Ok(resources) = cloak_host::pod_size::PodResources::from_annotations(&annotations) {
        let policy = cloak_host::pod_size::SizePolicy {
            base_vcpus: 2,
            base_memory_mib: 512,
            max_vcpus: 64,
            max_memory_mib: 1 << 20,
        };
        let (size, _) = policy.size_for(&resources);
        assert!(size.vcpus >= 1 && size.memory_mib >= 512, "{size:?}");
    }
}

/// An agent request as a hostile host sends it: the first byte picks the message, the rest
/// is its protobuf encoding; what decodes is mapped to the policy's input, as the agent does
/// before every decision.
fn agent_requests(data: &[u8]) {
    let Some((kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 10 {
        0 => decode_and_map::<agent::CreateSandboxRequest>(bytes),
        1 => decode_and_map::<agent::CreateContainerRequest>(bytes),
        2 => decode_and_map::<agent::ExecProcessRequest>(bytes),
        3 => decode_and_map::<agent::UpdateInterfaceRequest>(bytes),
        4 => decode_and_map::<agent::UpdateRoutesRequest>(bytes),
        5 => decode_and_map::<agent::CopyFileRequest>(bytes),
        6 => decode_and_map::<agent::SignalProcessRequest>(bytes),
        7 => decode_and_map::<agent::UpdateContainerRequest>(bytes),
        8 => decode_and_map::<agent::TtyWinResizeRequest>(bytes),
        _ => decode_and_map::<agent::AttestationReportRequest>(bytes),
    }
}

fn decode_and_map<M: MessageFull>(bytes: &[u8]) {
    if let Ok(message) = M::parse_from_bytes(bytes) {
        let _ = cloak_policy::input::of_message(&message);
        let again = message.write_to_bytes().map(|b| M::parse_from_bytes(&b));
        assert!(matches!(again, Ok(Ok(_))), "a decoded request re-encodes");
    }
}
