//! Port-forward (`kubectl port-forward`) inside the pod: the shim catches each TCP connection
//! the CRI plugin makes to a port on the pod's loopback on the host, where nothing of the pod
//! listens, and carries it here over vsock (`cloak_protocol::port_forward`). The agent puts the
//! request to the pod's policy (a confidential pod's loopback services are the workload's own:
//! its policy names the ports the host may reach), connects to the port on the guest's loopback
//! — the pod's, since the pod's containers share the VM's network — and then relays bytes both
//! ways until each side has closed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cloak_protocol::line::read_line;
use cloak_protocol::port_forward::{parse_request, Answer, MAX_LINE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_vsock::VsockStream;

use crate::state::AgentState;

/// How long the shim has to send its request line, and the agent to reach the port.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts forwarded connections on vsock `port` for the life of the agent.
pub(crate) fn listen(state: Arc<AgentState>, port: u32) -> anyhow::Result<()> {
    crate::vsock_accept::serve(port, "port-forward", move |stream| {
        let state = state.clone();
        async move {
            if let Err(err) = forward(&state, stream).await {
                tracing::warn!(error = format!("{err:#}"), "port-forward failed");
            }
        }
    })
}

/// One forwarded connection: request, decision, connect, answer, relay.
async fn forward(state: &AgentState, mut host: VsockStream) -> anyhow::Result<()> {
    let line = tokio::time::timeout(STEP_TIMEOUT, read_line(&mut host, MAX_LINE))
        .await
        .context("no request line")?
        .context("reading the request line")?;
    let Some(port) = parse_request(&line) else {
        anyhow::bail!("bad request line {line:?}");
    };
    let target = match allowed(state, port) {
        Ok(()) => connect(port).await,
        Err(why) => Err(why),
    };
    let mut target = match target {
        Ok(target) => target,
        Err(why) => {
            tracing::info!(port, reason = why.as_str(), "port-forward refused");
            host.write_all(Answer::Refused(why).to_line().as_bytes())
                .await?;
            return Ok(());
        }
    };
    host.write_all(Answer::Connected.to_line().as_bytes())
        .await?;
    let (to_guest, to_host) = tokio::io::copy_bidirectional(&mut host, &mut target)
        .await
        .with_context(|| format!("relaying port {port}"))?;
    tracing::debug!(port, to_guest, to_host, "port-forward closed");
    Ok(())
}

/// The policy's word on forwarding `port`; before CreateSandbox there is no pod to reach.
fn allowed(state: &AgentState, port: u16) -> Result<(), String> {
    let Some(policy) = state.policy.get() else {
        return Err("the pod is not created yet".to_owned());
    };
    crate::policy::enforce(policy, "PortForward", serde_json::json!({ "port": port }))
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// Connects to `port` on the guest's loopback: IPv4 first, then IPv6, as a client of
/// "localhost" would.
async fn connect(port: u16) -> Result<TcpStream, String> {
    let attempt = async {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => Ok(stream),
            Err(v4) => TcpStream::connect(("::1", port))
                .await
                .map_err(|_| format!("connecting to localhost:{port} in the pod: {v4}")),
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "connecting to localhost:{port} in the pod timed out"
            ))
        })
}
