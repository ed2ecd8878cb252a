//! The shim's client of the agent API: ttrpc over a hybrid-vsock stream to port 1024.

use std::path::Path;
use std::time::{Duration, Instant};

use cloak_protocol::agent::{DestroySandboxRequest, GuestDetailsRequest, GuestDetailsResponse};
use cloak_protocol::agent_ttrpc::AgentServiceClient;
use cloak_protocol::health::{health_check_response::ServingStatus, CheckRequest};
use cloak_protocol::health_ttrpc::HealthClient;

use crate::hybrid_vsock::{self, HandshakeError};

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
        ttrpc::context::with_timeout(self.request_timeout.as_nanos() as i64)
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
