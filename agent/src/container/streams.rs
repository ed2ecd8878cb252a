//! Stdio streams arriving from the host. The host opens one vsock connection per stream to the
//! agent's stdio port and starts it with a header line naming the process and stream; it does
//! so before the CreateContainer/ExecProcess call that uses them, so a failed request can never
//! leave the agent dialling a host that is not listening. Streams wait here until the process
//! that wants them takes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloak_protocol::StreamHeader;
use tokio::sync::Notify;
use tokio_vsock::VsockStream;

/// Streams nobody claimed are dropped after this long.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct StreamBroker {
    arrived: Mutex<HashMap<StreamHeader, (Instant, VsockStream)>>,
    arrival: Notify,
}

impl StreamBroker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamHeader, (Instant, VsockStream)>> {
        self.arrived
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn park(&self, header: StreamHeader, stream: VsockStream) {
        let mut arrived = self.lock();
        arrived.retain(|_, (at, _)| at.elapsed() < UNCLAIMED_TTL);
        arrived.insert(header, (Instant::now(), stream));
        drop(arrived);
        self.arrival.notify_waiters();
    }

    /// The stream for `header`, waiting up to `timeout` for it to arrive.
    pub(crate) async fn take(
        &self,
        header: &StreamHeader,
        timeout: Duration,
    ) -> anyhow::Result<VsockStream> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrival.notified();
            if let Some((_, stream)) = self.lock().remove(header) {
                return Ok(stream);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(crate::error::AgentError::FailedPrecondition(format!(
                    "the host did not connect the {} stream of {}/{}",
                    header.kind.as_str(),
                    header.container_id,
                    header.exec_id
                )));
            }
        }
    }

    /// Drops parked streams of a process whose creation failed.
    pub(crate) fn forget(&self, container_id: &str, exec_id: &str) {
        self.lock().retain(|header, _| {
            !(header.container_id == container_id && header.exec_id == exec_id)
        });
    }

    /// Accepts stdio streams on `port` for the life of the agent.
    pub(crate) fn listen(self: Arc<Self>, port: u32) -> anyhow::Result<()> {
        crate::vsock_accept::serve(port, "stdio", move |stream| {
            let broker = self.clone();
            async move {
                match tokio::time::timeout(Duration::from_secs(10), read_header(stream)).await {
                    Ok(Ok((header, stream))) => broker.park(header, stream),
                    Ok(Err(err)) => tracing::warn!(error = %err, "bad stdio stream header"),
                    Err(_) => tracing::warn!("stdio stream sent no header"),
                }
            }
        })
    }
}

/// Reads the header line, leaving the stream's data unread.
async fn read_header(mut stream: VsockStream) -> std::io::Result<(StreamHeader, VsockStream)> {
    let text = cloak_protocol::line::read_line(&mut stream, StreamHeader::MAX_LEN).await?;
    StreamHeader::parse(&text)
        .map(|header| (header, stream))
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("header {text:?}"))
        })
}
