//! The host's client of a pod VM's agent: the agent API over ttrpc on a hybrid-vsock stream to
//! port 1024, and the per-process stdio streams on the same socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloak_protocol::agent::{DestroySandboxRequest, GuestDetailsRequest, GuestDetailsResponse};
use cloak_protocol::agent_ttrpc::AgentServiceClient;
use cloak_protocol::health::{health_check_response::ServingStatus, CheckRequest};
use cloak_protocol::health_ttrpc::HealthClient;

use crate::hybrid_vsock::{self, HandshakeError};
use crate::stdio_streams::{ProcessStdio, StdioWanted, StreamError};

#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("agent {method}: {source}")]
    Rpc {
        method: &'static str,
        source: ttrpc::Error,
    },
    #[error("agent is not serving (health status {0})")]
    NotServing(i32),
    #[error("no connection to the agent within {waited_ms} ms: {last_error}")]
    Deadline { waited_ms: u64, last_error: String },
}

#[derive(Clone)]
pub struct AgentClient {
    agent: AgentServiceClient,
    health: HealthClient,
    request_timeout: Duration,
    /// The VM's hybrid-vsock socket: stdio streams start here too.
    vsock_socket: PathBuf,
}

/// Pause between connection attempts while the guest is not listening yet.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

impl AgentClient {
    /// One attempt: handshake for `port`, then a ttrpc client over the stream.
    pub async fn connect(
        vsock_socket: &Path,
        port: u32,
        request_timeout: Duration,
    ) -> Result<Self, AgentClientError> {
        let stream = hybrid_vsock::connect(vsock_socket, port).await?;
        let client = ttrpc::asynchronous::Client::new(stream.into());
        Ok(Self {
            agent: AgentServiceClient::new(client.clone()),
            health: HealthClient::new(client),
            request_timeout,
            vsock_socket: vsock_socket.to_owned(),
        })
    }

    /// Retries `connect` until it succeeds, `deadline` passes, or `give_up` returns an
    /// explanation (the VM died, say).
    pub async fn connect_until(
        vsock_socket: &Path,
        port: u32,
        request_timeout: Duration,
        deadline: Instant,
        mut give_up: impl FnMut() -> Option<String>,
    ) -> Result<Self, AgentClientError> {
        let started = Instant::now();
        loop {
            let last_error = match Self::connect(vsock_socket, port, request_timeout).await {
                Ok(client) => return Ok(client),
                Err(err) => err.to_string(),
            };
            if let Some(reason) = give_up() {
                return Err(AgentClientError::Deadline {
                    waited_ms: started.elapsed().as_millis() as u64,
                    last_error: format!("{reason} (last attempt: {last_error})"),
                });
            }
            if Instant::now() + RETRY_INTERVAL >= deadline {
                return Err(AgentClientError::Deadline {
                    waited_ms: started.elapsed().as_millis() as u64,
                    last_error,
                });
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// A request context with the configured timeout.
    pub fn context(&self) -> ttrpc::context::Context {
        ttrpc::context::with_timeout(
            i64::try_from(self.request_timeout.as_nanos()).unwrap_or(i64::MAX),
        )
    }

    /// Opens the stdio streams of a process about to be created (before its create request,
    /// which carries the returned config).
    pub async fn open_stdio(
        &self,
        container_id: &str,
        exec_id: &str,
        wanted: StdioWanted,
    ) -> Result<(ProcessStdio, cloak_protocol::agent::StdioConfig), StreamError> {
        ProcessStdio::open(&self.vsock_socket, container_id, exec_id, wanted).await
    }

    /// The generated client, for calls without a wrapper here.
    pub fn agent(&self) -> &AgentServiceClient {
        &self.agent
    }

    /// Health.Check; an agent that answers but is not SERVING is an error.
    pub async fn check(&self) -> Result<(), AgentClientError> {
        let response = self
            .health
            .check(self.context(), &CheckRequest::default())
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Check",
                source,
            })?;
        match response.status.enum_value() {
            Ok(ServingStatus::SERVING) => Ok(()),
            _ => Err(AgentClientError::NotServing(response.status.value())),
        }
    }

    pub async fn version(&self) -> Result<(u32, String), AgentClientError> {
        let response = self
            .health
            .version(self.context(), &CheckRequest::default())
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Version",
                source,
            })?;
        Ok((response.protocol_version, response.agent_version))
    }

    pub async fn guest_details(&self) -> Result<GuestDetailsResponse, AgentClientError> {
        self.agent
            .get_guest_details(self.context(), &GuestDetailsRequest::default())
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "GetGuestDetails",
                source,
            })
    }

    /// Asks the agent to power the VM off.
    pub async fn destroy_sandbox(&self) -> Result<(), AgentClientError> {
        let request = DestroySandboxRequest {
            power_off: true,
            ..Default::default()
        };
        self.agent
            .destroy_sandbox(self.context(), &request)
            .await
            .map(|_| ())
            .map_err(|source| AgentClientError::Rpc {
                method: "DestroySandbox",
                source,
            })
    }
}
