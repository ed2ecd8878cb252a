//! Tells the host the agent is serving: one vsock connection to the host (CID 2) on the ready
//! port, carrying `READY\n`. The host listens before it starts the VM, so no polling is needed;
//! a host that does not listen (ready_port=0, or an older shim) just means nobody is told.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_vsock::{VsockAddr, VsockStream, VMADDR_CID_HOST};

pub(crate) async fn notify_host(port: u32) {
    if port == 0 {
        return;
    }
    // A connection reset right after boot is possible while the device settles: retry briefly.
    for attempt in 0..5u64 {
        match VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, port)).await {
            Ok(mut stream) => {
                if let Err(err) = stream.write_all(cloak_protocol::READY_MESSAGE).await {
                    tracing::warn!(port, error = %err, "writing the ready message failed");
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
                tracing::debug!(port, "host notified");
                return;
            }
            Err(err) => {
                tracing::debug!(port, attempt, error = %err, "ready notification failed");
                tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await;
            }
        }
    }
    tracing::warn!(port, "host never accepted the ready notification");
}
