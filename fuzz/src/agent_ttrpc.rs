//! Raw bytes on the agent's ttrpc connection, as a hostile host writes them: frame headers
//! of any length, type and stream, request envelopes naming any service and method, payloads
//! that do or do not decode as the method's message. They reach a real ttrpc server with the
//! agent's generated services registered (the decoding and dispatch the agent runs) and
//! handlers that do what every agent handler does first: map the request to the policy's
//! input and put it to the confidential rules.
//!
//! The oracle is the ttrpc wire protocol: after any input the server still answers a
//! well-formed Health.Check on a new connection, and a single well-formed request frame (our
//! own encoding, below, not the crate's) is answered on its stream.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cloak_policy::{AgentPolicy, Decision};
use cloak_protocol::agent::{self, Empty};
use cloak_protocol::agent_ttrpc::AgentService;
use cloak_protocol::health::{CheckRequest, HealthCheckResponse};
use cloak_protocol::health_ttrpc::Health;
use protobuf::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ttrpc::asynchronous::TtrpcContext;

/// ttrpc frame header: length (big-endian u32), stream id (u32), type, flags.
const HEADER_BYTES: usize = 10;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
/// The agent service's full name, as the shim's client sends it.
pub(crate) const AGENT_SERVICE: &str = "cloak.agent.v1.AgentService";
const HEALTH_SERVICE: &str = "cloak.health.v1.Health";

/// The agent's handlers' first step against the confidential rules with an empty pod: the
/// policy sees every decoded message, and most are refused.
struct PolicyGatedAgent {
    policy: AgentPolicy,
}

impl PolicyGatedAgent {
    fn gate(&self, rpc: &str, req: &impl protobuf::MessageFull) -> ttrpc::Result<()> {
        let input = cloak_policy::input::of_message(req);
        match self.policy.decide(&format!("{rpc}Request"), input) {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny { reason } => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::PERMISSION_DENIED,
                reason.unwrap_or_default(),
            ))),
        }
    }
}

#[async_trait::async_trait]
impl AgentService for PolicyGatedAgent {
    async fn create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: agent::CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        self.gate("CreateSandbox", &req).map(|()| Empty::new())
    }

    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.gate("CreateContainer", &req).map(|()| Empty::new())
    }

    async fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        self.gate("ExecProcess", &req).map(|()| Empty::new())
    }

    async fn copy_file(
        &self,
        _ctx: &TtrpcContext,
        req: agent::CopyFileRequest,
    ) -> ttrpc::Result<Empty> {
        self.gate("CopyFile", &req).map(|()| Empty::new())
    }

    async fn update_interface(
        &self,
        _ctx: &TtrpcContext,
        req: agent::UpdateInterfaceRequest,
    ) -> ttrpc::Result<agent::Interface> {
        self.gate("UpdateInterface", &req)
            .map(|()| req.interface.unwrap_or_default())
    }
}

struct Healthy;

#[async_trait::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<HealthCheckResponse> {
        Ok(HealthCheckResponse::new())
    }
}

/// The server (kept running for the whole run) and its socket.
struct Served {
    runtime: tokio::runtime::Runtime,
    socket: std::path::PathBuf,
    /// In a mutex only to make the static `Sync`; never locked.
    _server: std::sync::Mutex<ttrpc::asynchronous::Server>,
    _dir: tempfile::TempDir,
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|err| panic!("a tokio runtime: {err}"));
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("a temp dir: {err}"));
        let socket = dir.path().join("agent.sock");
        let rules = cloak_policy::with_policy_data(
            cloak_policy::CONFIDENTIAL_RULES,
            &serde_json::json!({"containers": [], "pod": {}, "env_patterns": [],
                "copy_file_prefix": "/run/cloak/shared/", "host_reports": false}),
        );
        let policy =
            AgentPolicy::load(&rules).unwrap_or_else(|err| panic!("the rules load: {err}"));
        let server = runtime.block_on(async {
            let mut server = ttrpc::asynchronous::Server::new()
                .bind(&format!("unix://{}", socket.display()))
                .unwrap_or_else(|err| panic!("binding {}: {err}", socket.display()))
                .register_service(cloak_protocol::agent_ttrpc::create_agent_service(Arc::new(
                    PolicyGatedAgent { policy },
                )))
                .register_service(cloak_protocol::health_ttrpc::create_health(Arc::new(
                    Healthy,
                )));
            server
                .start()
                .await
                .unwrap_or_else(|err| panic!("starting the server: {err}"));
            server
        });
        Served {
            runtime,
            socket,
            _server: std::sync::Mutex::new(server),
            _dir: dir,
        }
    })
}

/// One frame: header then payload.
pub(crate) fn frame(stream_id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&stream_id.to_be_bytes());
    bytes.push(kind);
    bytes.push(0);
    bytes.extend_from_slice(payload);
    bytes
}

/// A request envelope (ttrpc.Request: service = 1, method = 2, payload = 3, timeout = 4),
/// protobuf written by hand so the oracle does not lean on the crate under test.
pub(crate) fn request(service: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (field, value) in [
        (1u8, service.as_bytes()),
        (2, method.as_bytes()),
        (3, payload),
    ] {
        bytes.push(field << 3 | 2);
        let mut length = value.len();
        loop {
            let low = (length & 0x7f) as u8;
            length >>= 7;
            if length == 0 {
                bytes.push(low);
                break;
            }
            bytes.push(low | 0x80);
        }
        bytes.extend_from_slice(value);
    }
    bytes
}

/// The response frames' stream ids read from `bytes` (a connection's whole output).
fn response_streams(mut bytes: &[u8]) -> Vec<u32> {
    let mut streams = Vec::new();
    while bytes.len() >= HEADER_BYTES {
        let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let stream = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if bytes[8] == TYPE_RESPONSE {
            streams.push(stream);
        }
        bytes = bytes.get(HEADER_BYTES + length..).unwrap_or(&[]);
    }
    streams
}

/// Writes `input` on a new connection and reads what comes back: until the server closes,
/// after a half-close (`answer_on` None), or until a response on stream `answer_on` arrived
/// (the connection kept open: a server may drop what a half-closed client has in flight).
/// At most `wait` either way.
async fn exchange(
    socket: &std::path::Path,
    input: &[u8],
    answer_on: Option<u32>,
    wait: Duration,
) -> Vec<u8> {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        panic!("the server is gone: connecting to {}", socket.display());
    };
    let _ = stream.write_all(input).await;
    let mut output = Vec::new();
    let Some(answer_on) = answer_on else {
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(wait, stream.read_to_end(&mut output)).await;
        return output;
    };
    let _ = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 4096];
        while !response_streams(&output).contains(&answer_on) {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => output.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    output
}

/// Whether `input` is exactly one request frame whose envelope names a service and method
/// (the server must answer it, even if only with an error status).
fn is_one_request(input: &[u8]) -> Option<u32> {
    let header = input.get(..HEADER_BYTES)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stream = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let envelope = input.get(HEADER_BYTES..)?;
    let well_formed = header[8] == TYPE_REQUEST
        && header[9] == 0
        && stream % 2 == 1
        && length == envelope.len()
        && ttrpc::Request::parse_from_bytes(envelope)
            .is_ok_and(|request| !request.service.is_empty() && !request.method.is_empty());
    well_formed.then_some(stream)
}

pub(crate) fn agent_ttrpc_frames(data: &[u8]) {
    let served = served();
    served.runtime.block_on(async {
        let expected = is_one_request(data);
        let output = exchange(&served.socket, data, expected, Duration::from_secs(2)).await;
        if let Some(stream) = expected {
            assert!(
                response_streams(&output).contains(&stream),
                "no response on stream {stream} to {data:?}; got {output:?}"
            );
        }
        let check = frame(
            1,
            TYPE_REQUEST,
            &request(
                HEALTH_SERVICE,
                "Check",
                &CheckRequest::new().write_to_bytes().unwrap_or_default(),
            ),
        );
        let answer = exchange(&served.socket, &check, Some(1), Duration::from_secs(5)).await;
        assert_eq!(
            response_streams(&answer),
            [1],
            "the server stopped answering after {data:?}"
        );
    });
}
