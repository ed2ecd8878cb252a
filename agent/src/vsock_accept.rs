//! The agent's raw vsock listeners (stdio streams, port-forward): bound once at start, each
//! accepted connection handled on its own task for the life of the agent.

use std::future::Future;

use anyhow::Context as _;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

/// Binds vsock `port` (`what` names the listener in errors) and runs `handle` on each
/// connection.
pub(crate) fn serve<F, Fut>(port: u32, what: &str, handle: F) -> anyhow::Result<()>
where
    F: Fn(VsockStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
        .with_context(|| format!("binding the {what} listener on vsock port {port}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(handle(stream));
        }
    });
    Ok(())
}
