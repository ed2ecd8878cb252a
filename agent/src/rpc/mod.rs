//! The agent's ttrpc server. Handlers (`do_*`) return `anyhow::Result`; this module alone turns
//! their errors into ttrpc statuses, so every RPC reports failures the same way.

mod agent_service;
mod health_service;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;

use crate::cmdline::AgentSettings;
use crate::container::ContainerRuntime;
use crate::reaper::Reaper;
use crate::sandbox::Sandbox;

/// State shared by every RPC handler.
pub struct AgentState {
    pub reaper: Arc<Reaper>,
    pub containers: ContainerRuntime,
    pub sandbox: tokio::sync::Mutex<Sandbox>,
    pub loaded_modules: Vec<String>,
    /// Signalled by DestroySandbox: the server stops and the VM powers off.
    pub shutdown: Notify,
    /// The TEE, decided at its first use (it may ask the host for a simulated one), and the
    /// report that question brought back, if any: its HOST_DATA serves the init-data check.
    pub tee: tokio::sync::OnceCell<(cloak_protocol::agent::TeeKind, Option<Vec<u8>>)>,
    pub ready_at_ms: std::sync::atomic::AtomicU64,
}

impl AgentState {
    pub fn new(loaded_modules: Vec<String>) -> Self {
        let reaper = Reaper::new();
        Self {
            containers: ContainerRuntime::new(reaper.clone()),
            sandbox: tokio::sync::Mutex::new(Sandbox::default()),
            reaper,
            loaded_modules,
            shutdown: Notify::new(),
            tee: tokio::sync::OnceCell::new(),
            ready_at_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// A failure the caller caused or can act on; anything else maps to INTERNAL.
#[derive(Debug, thiserror::Error)]
pub enum RpcFailure {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
}

/// The one place handler errors become ttrpc statuses. The whole context chain goes into the
/// message so the shim can show the user why.
pub fn to_ttrpc<T>(method: &str, result: anyhow::Result<T>) -> ttrpc::Result<T> {
    result.map_err(|err| {
        let code = match err.downcast_ref::<RpcFailure>() {
            Some(RpcFailure::InvalidArgument(_)) => ttrpc::Code::INVALID_ARGUMENT,
            Some(RpcFailure::NotFound(_)) => ttrpc::Code::NOT_FOUND,
            Some(RpcFailure::AlreadyExists(_)) => ttrpc::Code::ALREADY_EXISTS,
            Some(RpcFailure::FailedPrecondition(_)) => ttrpc::Code::FAILED_PRECONDITION,
            None => ttrpc::Code::INTERNAL,
        };
        tracing::warn!(method, ?code, error = format!("{err:#}"), "rpc failed");
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, format!("{err:#}")))
    })
}

/// Serves the agent and health services on vsock until DestroySandbox asks to stop.
pub async fn serve(state: AgentState, settings: &AgentSettings) -> anyhow::Result<()> {
    let state = Arc::new(state);
    let address = format!("vsock://-1:{}", settings.port);
    let mut server = ttrpc::asynchronous::Server::new()
        .bind(&address)
        .with_context(|| format!("binding the ttrpc server to {address} (is vsock loaded?)"))?
        .register_service(cloak_protocol::agent_ttrpc::create_agent_service(Arc::new(
            agent_service::AgentRpc::new(state.clone()),
        )))
        .register_service(cloak_protocol::health_ttrpc::create_health(Arc::new(
            health_service::HealthRpc,
        )));
    state
        .containers
        .streams
        .clone()
        .listen(cloak_protocol::STDIO_VSOCK_PORT)?;
    server.start().await.context("starting the ttrpc server")?;
    let ready_at = crate::guest_details::uptime_ms();
    state
        .ready_at_ms
        .store(ready_at, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(address, uptime_ms = ready_at, "agent serving");
    crate::ready::notify_host(settings.ready_port).await;

    state.shutdown.notified().await;
    tracing::info!("shutdown requested");
    // The DestroySandbox reply is already queued; give it time on the wire, but do not let a
    // host that keeps its connection open delay the power-off.
    let _ = tokio::time::timeout(Duration::from_millis(500), server.shutdown()).await;
    Ok(())
}
