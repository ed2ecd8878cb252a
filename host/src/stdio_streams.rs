//! The host end of process stdio: one hybrid-vsock connection per stream to the agent's stdio
//! port, opened before the request that creates the process, starting with a header line that
//! names the process and stream. Bytes then flow directly, never one RPC per chunk.

use std::path::Path;

use cloak_protocol::{StreamHeader, StreamKind, STDIO_VSOCK_PORT};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::hybrid_vsock::{self, HandshakeError};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("sending the {kind} stream header: {source}")]
    Header {
        kind: &'static str,
        source: std::io::Error,
    },
}

/// Opens the `kind` stream of process `container_id`/`exec_id` (empty exec id: the init).
pub async fn open_stream(
    vsock_socket: &Path,
    container_id: &str,
    exec_id: &str,
    kind: StreamKind,
) -> Result<UnixStream, StreamError> {
    let header = StreamHeader {
        container_id: container_id.to_owned(),
        exec_id: exec_id.to_owned(),
        kind,
    };
    let mut stream = hybrid_vsock::connect(vsock_socket, STDIO_VSOCK_PORT).await?;
    stream
        .write_all(header.to_line().as_bytes())
        .await
        .map_err(|source| StreamError::Header {
            kind: kind.as_str(),
            source,
        })?;
    Ok(stream)
}

/// Which streams a process gets; a stream not wanted reads from or writes to /dev/null in
/// the guest. With a terminal, stderr is merged into stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdioWanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub terminal: bool,
}

impl StdioWanted {
    /// stdout and stderr (stderr merged into stdout with a terminal), stdin if asked.
    pub fn output_and(stdin: bool, terminal: bool) -> Self {
        Self {
            stdin,
            stdout: true,
            stderr: !terminal,
            terminal,
        }
    }
}

/// The host ends of one process's stdio.
#[derive(Debug, Default)]
pub struct ProcessStdio {
    pub stdin: Option<UnixStream>,
    pub stdout: Option<UnixStream>,
    pub stderr: Option<UnixStream>,
}

impl ProcessStdio {
    /// Opens the streams wanted; returns them with the matching request config.
    pub async fn open(
        vsock_socket: &Path,
        container_id: &str,
        exec_id: &str,
        wanted: StdioWanted,
    ) -> Result<(Self, cloak_protocol::agent::StdioConfig), StreamError> {
        let mut stdio = Self::default();
        let mut config = cloak_protocol::agent::StdioConfig {
            terminal: wanted.terminal,
            ..Default::default()
        };
        let open = |kind| open_stream(vsock_socket, container_id, exec_id, kind);
        if wanted.stdin {
            stdio.stdin = Some(open(StreamKind::Stdin).await?);
            config.stdin_port = STDIO_VSOCK_PORT;
        }
        if wanted.stdout {
            stdio.stdout = Some(open(StreamKind::Stdout).await?);
            config.stdout_port = STDIO_VSOCK_PORT;
        }
        if wanted.stderr && !wanted.terminal {
            stdio.stderr = Some(open(StreamKind::Stderr).await?);
            config.stderr_port = STDIO_VSOCK_PORT;
        }
        Ok((stdio, config))
    }
}
