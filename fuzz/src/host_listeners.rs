//! What a guest reaches on the host: the ready port (the agent's "I serve" message, read as
//! the listener reads each connection) and the hybrid-vsock handshake answer (written by the
//! vsock backend, which relays what the guest side does; sent over a real Unix socket to the
//! real `connect`). The oracle is the protocol: only the exact ready message counts as ready,
//! and only an `OK ` line of at most 64 bytes opens a stream, the bytes after its newline
//! left in the stream.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|err| panic!("a tokio runtime for the fuzz targets: {err}"))
    })
}

/// The input as what a guest connection to the ready port sends: ready exactly for the
/// agent's ready message.
pub(crate) fn ready_port(data: &[u8]) {
    runtime().block_on(async {
        let (mut guest, host) = tokio::io::duplex(256);
        let message = data.to_vec();
        let sender = tokio::spawn(async move {
            let _ = guest.write_all(&message).await;
        });
        let ready = cloak_host::hypervisor::readiness::reads_ready(host).await;
        let _ = sender.await;
        assert_eq!(
            ready,
            data == cloak_protocol::READY_MESSAGE,
            "ready on {data:?}"
        );
    });
}

/// The input as the backend's answer to `CONNECT 1024`: accepted exactly when its first line
/// starts with `OK ` (and is short), the rest then readable from the stream.
pub(crate) fn hybrid_vsock_answer(data: &[u8]) {
    runtime().block_on(async {
        let Ok(dir) = tempfile::tempdir() else {
            return;
        };
        let path = dir.path().join("vm.vsock");
        let Ok(listener) = tokio::net::UnixListener::bind(&path) else {
            return;
        };
        let answer = data.to_vec();
        let backend = tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 13];
                let _ = stream.read_exact(&mut request).await;
                let _ = stream.write_all(&answer).await;
            }
        });
        let result = cloak_host::hybrid_vsock::connect(&path, 1024).await;
        let line_end = data.iter().position(|b| *b == b'\n');
        let expected = line_end.is_some_and(|end| end <= 64 && data.starts_with(b"OK "));
        match result {
            Ok(mut stream) => {
                assert!(expected, "accepted {data:?}");
                let end = line_end.unwrap_or(0);
                let mut rest = Vec::new();
                let _ = backend.await;
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), stream.read_to_end(&mut rest))
                        .await;
                assert_eq!(rest, data[end + 1..], "the stream after the answer line");
            }
            Err(_) => {
                assert!(!expected, "refused {data:?}");
                let _ = backend.await;
            }
        }
    });
}
