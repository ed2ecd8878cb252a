//! The host side of hybrid vsock (Firecracker's scheme, also spoken by vhost-device-vsock and
//! cloak-vmm): connect to the VM's Unix socket, send `CONNECT <port>\n`, read `OK <n>\n`; the
//! stream then carries the guest connection. Until the guest listens on the port, the backend
//! closes the stream instead of answering: callers retry.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connecting to {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("hybrid-vsock handshake for port {port}: {source}")]
    Io { port: u32, source: std::io::Error },
    #[error("hybrid-vsock handshake for port {port}: connection closed (nothing listens in the guest yet)")]
    Closed { port: u32 },
    #[error("hybrid-vsock handshake for port {port}: unexpected answer {answer:?}")]
    Rejected { port: u32, answer: String },
}

/// Longest answer line accepted; `OK 4294967295\n` is 14 bytes.
const MAX_ANSWER: usize = 64;

/// Connects to guest `port` through the hybrid-vsock socket at `path`.
pub async fn connect(path: &Path, port: u32) -> Result<UnixStream, HandshakeError> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| HandshakeError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| HandshakeError::Io { port, source })?;
    // Read byte by byte: anything after the newline already belongs to the guest stream.
    let mut answer = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        let read = match stream.read(&mut byte).await {
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(source) => return Err(HandshakeError::Io { port, source }),
        };
        if read == 0 {
            return Err(HandshakeError::Closed { port });
        }
        if byte[0] == b'\n' {
            break;
        }
        answer.push(byte[0]);
        if answer.len() > MAX_ANSWER {
            // No backend answers this much: not a handshake answer.
            return Err(HandshakeError::Rejected {
                port,
                answer: String::from_utf8_lossy(&answer).into_owned(),
            });
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    if answer.starts_with("OK ") {
        Ok(stream)
    } else {
        Err(HandshakeError::Rejected { port, answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn fake_backend(answer: &'static [u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.vsock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 13];
            stream.read_exact(&mut request).await.unwrap();
            assert_eq!(&request, b"CONNECT 1024\n");
            stream.write_all(answer).await.unwrap();
        });
        (dir, path)
    }

    #[tokio::test]
    async fn ok_answer_leaves_following_bytes_in_the_stream() {
        let (_dir, path) = fake_backend(b"OK 1073741824\nhello").await;
        let mut stream = connect(&path, 1024).await.unwrap();
        let mut rest = [0u8; 5];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
    }

    #[tokio::test]
    async fn closed_and_rejected_are_told_apart() {
        let (_dir, path) = fake_backend(b"").await;
        assert!(matches!(
            connect(&path, 1024).await,
            Err(HandshakeError::Closed { port: 1024 })
        ));
        let (_dir, path) = fake_backend(b"ERR nope\n").await;
        assert!(matches!(
            connect(&path, 1024).await,
            Err(HandshakeError::Rejected { .. })
        ));
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            connect(&dir.path().join("absent"), 1024).await,
            Err(HandshakeError::Connect { .. })
        ));
    }
}
