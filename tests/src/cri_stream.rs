//! The kubelet's side of CRI streaming: Exec, Attach and PortForward answer with a URL on
//! containerd's streaming server, and `kubectl exec`/`attach`/`port-forward` talk to it. This
//! client speaks the server's WebSocket dialect (Kubernetes' `v4.channel.k8s.io`: every binary
//! message starts with a channel byte) so tests exercise the same server, the same token cache
//! and the same runtime calls (ResizePty, CloseIO, the pod's network namespace) a cluster does.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Channel numbers of the remote-command protocol.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The server's final status (a Kubernetes `Status` object in JSON).
pub const ERROR: u8 = 3;
/// Terminal size changes from the client (`{"Width":…,"Height":…}`).
pub const RESIZE: u8 = 4;

/// The subprotocol both exec/attach and port-forward accept in binary form.
const PROTOCOL: &str = "v4.channel.k8s.io";

/// One streaming session.
pub struct ChannelStream {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// What arrived per channel so far.
    received: Vec<Vec<u8>>,
    closed: bool,
}

impl ChannelStream {
    /// Opens the session the CRI returned `url` for (`http://…/exec/<token>` and the like).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let ws_url = url
            .strip_prefix("http://")
            .map(|rest| format!("ws://{rest}"))
            .with_context(|| format!("streaming URL {url} is not plain HTTP"))?;
        let mut request = ws_url.as_str().into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", PROTOCOL.parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("opening the stream at {ws_url}"))?;
        Ok(Self {
            ws,
            received: vec![Vec::new(); 256],
            closed: false,
        })
    }

    /// Sends `data` on `channel`.
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> anyhow::Result<()> {
        let mut message = Vec::with_capacity(data.len() + 1);
        message.push(channel);
        message.extend_from_slice(data);
        self.ws.send(Message::binary(message)).await?;
        Ok(())
    }

    /// Tells the server the terminal is now `width` × `height`.
    pub async fn resize(&mut self, width: u16, height: u16) -> anyhow::Result<()> {
        let size = serde_json::json!({ "Width": width, "Height": height }).to_string();
        self.send(RESIZE, size.as_bytes()).await
    }

    /// Everything received on `channel` so far.
    pub fn received(&self, channel: u8) -> &[u8] {
        &self.received[usize::from(channel)]
    }

    /// `received` as text.
    pub fn text(&self, channel: u8) -> String {
        String::from_utf8_lossy(self.received(channel)).into_owned()
    }

    /// Reads one message (waiting at most until `deadline`); false once the server closed.
    async fn read_one(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(left, self.ws.next()).await {
            Err(_) => bail!("the stream stayed silent until the deadline"),
            Ok(None) => None,
            Ok(Some(message)) => Some(message?),
        };
        match message {
            None | Some(Message::Close(_)) => {
                self.closed = true;
                Ok(false)
            }
            Some(Message::Binary(bytes)) => {
                if let Some((channel, data)) = bytes.split_first() {
                    self.received[usize::from(*channel)].extend_from_slice(data);
                }
                Ok(true)
            }
            Some(_) => Ok(true),
        }
    }

    /// Reads until `channel` holds `needle`; fails after `timeout` or if the server closes
    /// first, saying what arrived.
    pub async fn read_until(
        &mut self,
        channel: u8,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.text(channel).contains(needle) {
            let open = self.read_one(deadline).await.with_context(|| {
                format!(
                    "waiting for {needle:?} on channel {channel}: got {:?}",
                    self.text(channel)
                )
            })?;
            if !open {
                bail!(
                    "the stream closed before {needle:?} came on channel {channel}: got {:?}",
                    self.text(channel)
                );
            }
        }
        Ok(())
    }

    /// Reads until the server closes the session (at most `timeout`).
    pub async fn read_to_close(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.read_one(deadline).await? {}
        Ok(())
    }

    /// Closes the session from the client's side (what `kubectl` does when its input ends).
    pub async fn close(&mut self) -> anyhow::Result<()> {
        if !self.closed {
            self.ws.close(None).await?;
        }
        Ok(())
    }

    /// The exit code the server's final status reports: 0 for "Success", the `ExitCode`
    /// cause for a non-zero exit, `None` when no status came.
    pub fn exit_code(&self) -> Option<i32> {
        let status: serde_json::Value = serde_json::from_slice(self.received(ERROR)).ok()?;
        if status["status"] == "Success" {
            return Some(0);
        }
        status["details"]["causes"]
            .as_array()?
            .iter()
            .find(|cause| cause["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// A port-forward session for one port: data arrives on channel 0, errors on channel 1, each
/// after the 2-byte port number the server writes first on both.
pub struct PortForward {
    stream: ChannelStream,
}

impl PortForward {
    /// Opens a forward to `port` of the pod whose PortForward call returned `url`.
    pub async fn connect(url: &str, port: u16) -> anyhow::Result<Self> {
        let separator = if url.contains('?') { '&' } else { '?' };
        let stream = ChannelStream::connect(&format!("{url}{separator}port={port}")).await?;
        Ok(Self { stream })
    }

    /// Writes `data` to the forwarded connection.
    pub async fn send(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.stream.send(0, data).await
    }

    /// The forwarded bytes so far and the error text so far, each without its port prefix.
    fn so_far(&self) -> (Vec<u8>, String) {
        let strip = |bytes: &[u8]| bytes.get(2..).unwrap_or_default().to_vec();
        let data = strip(self.stream.received(0));
        let error = String::from_utf8_lossy(&strip(self.stream.received(1))).into_owned();
        (data, error)
    }

    /// Reads until the forwarded data holds `needle` (at most `timeout`). The streaming server
    /// keeps a WebSocket session open after the forwarded connection ends (a client may
    /// forward again), so a reader waits for what it expects, not for the session's end.
    pub async fn read_data_until(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while !String::from_utf8_lossy(&self.so_far().0).contains(needle) {
            let open = self.stream.read_one(deadline).await.with_context(|| {
                format!(
                    "port-forward: waiting for {needle:?}: {:?} so far",
                    self.so_far()
                )
            })?;
            if !open {
                bail!(
                    "port-forward: closed before {needle:?} came: {:?}",
                    self.so_far()
                );
            }
        }
        Ok(self.so_far().0)
    }

    /// The error the server reports within `timeout`: what arrived on the error channel once
    /// something did, or the session closed, or the time is up ("" if nothing came).
    pub async fn error_within(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while self.so_far().1.is_empty() {
            match self.stream.read_one(deadline).await {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        self.so_far().1
    }

    /// Everything forwarded so far, without the port prefix.
    pub fn data(&self) -> Vec<u8> {
        self.so_far().0
    }
}

impl crate::cri::CriClient {
    /// Exec with the streams asked for; the session on the streaming server.
    pub async fn exec_stream(
        &mut self,
        id: &str,
        command: &[&str],
        tty: bool,
        stdin: bool,
    ) -> anyhow::Result<ChannelStream> {
        let response = self
            .runtime
            .exec(k8s_cri::v1::ExecRequest {
                container_id: id.into(),
                cmd: command.iter().map(|arg| arg.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                // With a terminal, stderr is the terminal too (the CRI refuses both).
                stderr: !tty,
            })
            .await
            .context("Exec")?;
        ChannelStream::connect(&response.into_inner().url).await
    }

    /// Attach to the container's main process; the session on the streaming server.
    pub async fn attach_stream(
        &mut self,
        id: &str,
        tty: bool,
        stdin: bool,
    ) -> anyhow::Result<ChannelStream> {
        let response = self
            .runtime
            .attach(k8s_cri::v1::AttachRequest {
                container_id: id.into(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .context("Attach")?;
        ChannelStream::connect(&response.into_inner().url).await
    }

    /// PortForward to `port` of the pod; the forward on the streaming server.
    pub async fn port_forward(&mut self, pod_id: &str, port: u16) -> anyhow::Result<PortForward> {
        let response = self
            .runtime
            .port_forward(k8s_cri::v1::PortForwardRequest {
                pod_sandbox_id: pod_id.into(),
                port: vec![i32::from(port)],
            })
            .await
            .context("PortForward")?;
        PortForward::connect(&response.into_inner().url, port).await
    }
}
