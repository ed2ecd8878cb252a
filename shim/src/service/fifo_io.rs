//! containerd's stdio fifos bridged to the agent's vsock streams. Output is copied until the
//! guest closes the stream (the agent drains a process's output before it reports the exit),
//! and the exit is published only after the copies finished, so nothing written before an
//! exit is lost. stdin is copied by a thread, because opening a fifo for reading blocks until
//! containerd opens its writing end.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};

use cloak_host::stdio_streams::{ProcessStdio, StdioWanted};

/// The fifo paths containerd gives one process; an empty path means no such stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FifoPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl FifoPaths {
    pub fn wanted(&self) -> StdioWanted {
        StdioWanted {
            stdin: !self.stdin.is_empty(),
            stdout: !self.stdout.is_empty(),
            stderr: !self.stderr.is_empty() && !self.terminal,
            terminal: self.terminal,
        }
    }
}

/// What stays with the process record: a way to close stdin and to stop the copies.
#[derive(Debug, Default)]
pub struct StdioBridge {
    stdin_fifo: Option<PathBuf>,
    copies: Vec<AbortHandle>,
}

/// The output copies, awaited before an exit is published.
#[derive(Debug, Default)]
pub struct OutputDrain {
    copies: Vec<JoinHandle<()>>,
}

impl OutputDrain {
    /// Waits until every output stream reached EOF; false if `limit` passed first.
    pub async fn wait(self, limit: Duration) -> bool {
        let all = join_copies(self.copies);
        tokio::time::timeout(limit, all).await.is_ok()
    }
}

async fn join_copies(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}

impl StdioBridge {
    /// Opens the fifos and starts copying between them and the streams.
    pub fn start(
        fifos: &FifoPaths,
        streams: ProcessStdio,
        process: &str,
    ) -> std::io::Result<(Self, OutputDrain)> {
        let mut bridge = Self::default();
        let mut drain = OutputDrain::default();
        for (stream, path, name) in [
            (streams.stdout, &fifos.stdout, "stdout"),
            (streams.stderr, &fifos.stderr, "stderr"),
        ] {
            let Some(mut stream) = stream else { continue };
            // Read-write: opening never fails or blocks for want of a reader, and containerd
            // still sees EOF once this copy ends and drops its end.
            let mut fifo = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path)?;
            let process = process.to_owned();
            let copy = tokio::spawn(async move {
                match tokio::io::copy(&mut stream, &mut fifo).await {
                    Ok(bytes) => tracing::debug!(process, stream = name, bytes, "output copied"),
                    Err(err) => {
                        tracing::warn!(process, stream = name, error = %err, "copying output")
                    }
                }
            });
            bridge.copies.push(copy.abort_handle());
            drain.copies.push(copy);
        }
        if let Some(stream) = streams.stdin {
            let path = PathBuf::from(&fifos.stdin);
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            let thread_path = path.clone();
            let process = process.to_owned();
            std::thread::Builder::new()
                .name("stdin".to_owned())
                .spawn(move || copy_stdin(&thread_path, stream, &process))?;
            bridge.stdin_fifo = Some(path);
        }
        Ok((bridge, drain))
    }

    /// Lets the stdin copy end: a copy still waiting for containerd to open the fifo wakes up
    /// and sees EOF; one that is reading ends when containerd closes its end.
    pub fn close_stdin(&mut self) {
        if let Some(path) = self.stdin_fifo.take() {
            wake_fifo_reader(&path);
        }
    }

    /// Stops every copy (the process is being deleted).
    pub fn stop(&mut self) {
        self.close_stdin();
        for copy in self.copies.drain(..) {
            copy.abort();
        }
    }
}

fn copy_stdin(path: &Path, mut stream: std::os::unix::net::UnixStream, process: &str) {
    let mut fifo = match std::fs::File::open(path) {
        Ok(fifo) => fifo,
        Err(err) => {
            tracing::warn!(process, error = %err, "opening the stdin fifo");
            return;
        }
    };
    match std::io::copy(&mut fifo, &mut stream) {
        Ok(bytes) => tracing::debug!(process, bytes, "stdin copied"),
        Err(err) => tracing::debug!(process, error = %err, "stdin copy ended"),
    }
    // EOF for the process: the agent closes its stdin when the stream's write half closes.
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Opening a fifo's write end without blocking succeeds only if a reader exists (one blocked
/// in open counts); closing it at once gives that reader EOF unless another writer remains.
fn wake_fifo_reader(path: &Path) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }

    #[test]
    fn terminal_merges_stderr_and_empty_paths_are_not_wanted() {
        let fifos = FifoPaths {
            stdin: String::new(),
            stdout: "/o".into(),
            stderr: "/e".into(),
            terminal: true,
        };
        assert_eq!(
            fifos.wanted(),
            StdioWanted {
                stdin: false,
                stdout: true,
                stderr: false,
                terminal: true
            }
        );
    }

    #[tokio::test]
    async fn output_reaches_the_fifo_and_drain_waits_for_eof() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("stdout");
        mkfifo(&out);
        let mut reader = tokio::net::unix::pipe::OpenOptions::new()
            .open_receiver(&out)
            .expect("reader");
        let (guest, host) = tokio::net::UnixStream::pair().expect("pair");
        let streams = ProcessStdio {
            stdout: Some(host),
            ..Default::default()
        };
        let fifos = FifoPaths {
            stdout: out.display().to_string(),
            ..Default::default()
        };
        let (_bridge, drain) = StdioBridge::start(&fifos, streams, "test").expect("bridge");
        let mut guest = guest;
        guest.write_all(b"hello\n").await.expect("write");
        drop(guest);
        assert!(drain.wait(Duration::from_secs(5)).await, "copy ends at EOF");
        let mut got = String::new();
        reader.read_to_string(&mut got).await.expect("read");
        assert_eq!(got, "hello\n");
    }

    #[tokio::test]
    async fn stdin_flows_and_closing_wakes_a_copy_that_never_saw_a_writer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("stdin");
        mkfifo(&input);
        let (mut guest, host) = tokio::net::UnixStream::pair().expect("pair");
        let streams = ProcessStdio {
            stdin: Some(host),
            ..Default::default()
        };
        let fifos = FifoPaths {
            stdin: input.display().to_string(),
            ..Default::default()
        };
        let (mut bridge, _drain) = StdioBridge::start(&fifos, streams, "test").expect("bridge");
        // No writer ever comes: closing stdin must still end the copy with EOF in the guest.
        tokio::time::sleep(Duration::from_millis(50)).await;
        bridge.close_stdin();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), guest.read_to_end(&mut got))
            .await
            .expect("EOF reaches the guest end")
            .expect("read");
        assert!(got.is_empty());

        let input2 = dir.path().join("stdin2");
        mkfifo(&input2);
        let (mut guest, host) = tokio::net::UnixStream::pair().expect("pair");
        let fifos = FifoPaths {
            stdin: input2.display().to_string(),
            ..Default::default()
        };
        let streams = ProcessStdio {
            stdin: Some(host),
            ..Default::default()
        };
        let (_bridge, _drain) = StdioBridge::start(&fifos, streams, "test").expect("bridge");
        let path = input2.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut writer = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("writer");
            writer.write_all(b"hi\n").expect("write");
        })
        .await
        .expect("writer thread");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), guest.read_to_end(&mut got))
            .await
            .expect("EOF after the writer closed")
            .expect("read");
        assert_eq!(got, b"hi\n");
    }
}
