//! The agent's ttrpc server. Handlers (`do_*`) return `anyhow::Result`; this module alone turns
//! their errors into ttrpc statuses, so every RPC reports failures the same way.

mod agent_service;
mod health_service;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cmdline::AgentSettings;
use crate::error::AgentError;
use crate::state::AgentState;

/// The one place handler errors become ttrpc statuses. The whole context chain goes into the
/// message so the shim can show the user why.
pub(crate) fn to_ttrpc<T>(method: &str, result: anyhow::Result<T>) -> ttrpc::Result<T> {
    result.map_err(|err| {
        let code = match err.downcast_ref::<AgentError>() {
            Some(AgentError::InvalidArgument(_)) => ttrpc::Code::INVALID_ARGUMENT,
            Some(AgentError::NotFound(_)) => ttrpc::Code::NOT_FOUND,
            Some(AgentError::AlreadyExists(_)) => ttrpc::Code::ALREADY_EXISTS,
            Some(AgentError::FailedPrecondition(_)) => ttrpc::Code::FAILED_PRECONDITION,
            Some(AgentError::PermissionDenied(_)) => ttrpc::Code::PERMISSION_DENIED,
            None => ttrpc::Code::INTERNAL,
        };
        tracing::warn!(method, ?code, error = format!("{err:#}"), "rpc failed");
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, format!("{err:#}")))
    })
}

/// Serves the agent and health services on vsock until DestroySandbox asks to stop.
pub(crate) async fn serve(state: AgentState, settings: &AgentSettings) -> anyhow::Result<()> {
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
    crate::port_forward::listen(
        state.clone(),
        cloak_protocol::port_forward::PORT_FORWARD_VSOCK_PORT,
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_message(result: anyhow::Result<()>) -> (ttrpc::Code, String) {
        match to_ttrpc("Test", result) {
            Err(ttrpc::Error::RpcStatus(status)) => (status.code(), status.message().to_owned()),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn each_agent_error_has_its_code_and_anything_else_is_internal() {
        for (error, code) in [
            (
                AgentError::InvalidArgument("a".into()),
                ttrpc::Code::INVALID_ARGUMENT,
            ),
            (AgentError::NotFound("a".into()), ttrpc::Code::NOT_FOUND),
            (
                AgentError::AlreadyExists("a".into()),
                ttrpc::Code::ALREADY_EXISTS,
            ),
            (
                AgentError::FailedPrecondition("a".into()),
                ttrpc::Code::FAILED_PRECONDITION,
            ),
            (
                AgentError::PermissionDenied("a".into()),
                ttrpc::Code::PERMISSION_DENIED,
            ),
        ] {
            // Context added on the way up keeps the code and reaches the message.
            let result = Err(anyhow::Error::new(error).context("creating c1"));
            assert_eq!(
                code_and_message(result),
                (code, "creating c1: a".to_owned())
            );
        }
        let (code, message) = code_and_message(Err(anyhow::anyhow!("disk on fire")));
        assert_eq!(code, ttrpc::Code::INTERNAL);
        assert_eq!(message, "disk on fire");
        assert!(to_ttrpc("Test", Ok(())).is_ok());
    }
}
