//! Process stdio in the guest. Each wanted stream is its own vsock connection from the host to
//! the agent's stdio port, opened before the process exists and introduced by a header line
//! naming the process and stream (see `streams`); bytes then flow without any per-chunk RPC. Output streams are drained
//! to EOF (and shut down towards the host) before the process's exit is published, so nothing
//! written before exit is lost.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cloak_protocol::agent::StdioConfig;
use cloak_protocol::{StreamHeader, StreamKind};

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};

use tokio::sync::oneshot;
use tokio_vsock::VsockStream;

use super::streams::StreamBroker;

/// How long a process waits for the host's stdio connections to arrive.
const STREAM_ARRIVAL: Duration = Duration::from_secs(10);

/// Read size of output pumps: large enough to keep a vsock stream busy.
const PUMP_BUFFER: usize = 128 * 1024;

/// Largest single write to a vsock stream. With 128 KiB writes the userspace vsock backend
/// (vhost-device-vsock 0.3) rejected the guest's TX packets ("DescriptorLengthTooSmall") and
/// dropped them, which stalls the stream for good; 4 KiB and 16 KiB writes were measured to
/// work (the 1 MiB-before-exit test covers it).
pub(super) const VSOCK_WRITE_CHUNK: usize = 16384;

/// Writes `data` to a vsock stream in chunks it can carry.
fn write_to_vsock(to: &mut File, data: &[u8]) -> std::io::Result<()> {
    for chunk in data.chunks(VSOCK_WRITE_CHUNK) {
        to.write_all(chunk)?;
    }
    Ok(())
}

/// The descriptors the new process gets, or the console socket for a terminal.
pub(super) struct ChildStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub console_socket: Option<PathBuf>,
}

impl ChildStdio {
    /// A libcontainer builder for `container_id` whose process gets these descriptors (or the
    /// console socket) and ends its set-up with `executor`.
    pub(super) fn builder(
        self,
        container_id: String,
        state_root: &Path,
        executor: super::executor::PayloadExecutor,
    ) -> Result<
        libcontainer::container::builder::ContainerBuilder,
        libcontainer::error::LibcontainerError,
    > {
        let mut builder = libcontainer::container::builder::ContainerBuilder::new(
            container_id,
            libcontainer::syscall::syscall::SyscallType::Linux,
        )
        .with_root_path(state_root)?
        .with_executor(executor)
        .with_console_socket(self.console_socket.as_ref());
        if let Some(fd) = self.stdin {
            builder = builder.with_stdin(fd);
        }
        if let Some(fd) = self.stdout {
            builder = builder.with_stdout(fd);
        }
        if let Some(fd) = self.stderr {
            builder = builder.with_stderr(fd);
        }
        Ok(builder)
    }
}

/// Which of a process's streams the agent policy lets reach the host. Output that may not is
/// still read — into nothing — so the process never blocks on a full pipe; input that may not
/// is never read from the host, and the process sees its stdin at EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamGrants {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl StreamGrants {
    pub(crate) const ALL: Self = Self {
        stdin: true,
        stdout: true,
        stderr: true,
    };

    fn allows(self, kind: StreamKind) -> bool {
        match kind {
            StreamKind::Stdin => self.stdin,
            StreamKind::Stdout => self.stdout,
            StreamKind::Stderr => self.stderr,
        }
    }
}

/// The agent's side of a process's stdio, before the process exists.
pub(super) struct PendingIo {
    container_id: String,
    exec_id: String,
    terminal: bool,
    grants: StreamGrants,
    streams: Vec<(StreamKind, VsockStream)>,
    pipe_ends: Vec<(StreamKind, OwnedFd)>,
    console_listener: Option<ConsoleSocket>,
}

/// Where console sockets live. A Unix socket path holds at most 107 bytes, and CRI's ids are
/// 64 hex characters each: a path below a container's directory named after the exec
/// (`/run/cloak/containers/<64>/console-<64>.sock`, 164 bytes) cannot be bound, so each socket
/// gets a short name of its own here instead.
const CONSOLE_SOCKET_DIR: &str = "/run/cloak/tty";

static CONSOLE_SOCKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A bound console socket; its file goes when it does.
struct ConsoleSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    fn bind(dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let number = CONSOLE_SOCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{number}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .with_context(|| format!("binding the console socket {}", path.display()))?;
        Ok(Self { listener, path })
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The running side: pump threads and what CloseStdin and TtyWinResize act on.
pub(crate) struct ProcessIo {
    output_drained: Vec<oneshot::Receiver<()>>,
    /// A duplicate of the stdin stream: shutting it down ends the input pump.
    stdin_control: Option<File>,
    tty_master: Option<File>,
}

fn null_fd(write: bool) -> anyhow::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .context("opening /dev/null")?;
    Ok(file.into())
}

impl PendingIo {
    /// Connects the streams `config` asks for and makes the pipes (or the console socket) the
    /// process will use.
    pub(super) async fn prepare(
        broker: &StreamBroker,
        container_id: &str,
        exec_id: &str,
        config: &StdioConfig,
        grants: StreamGrants,
    ) -> anyhow::Result<(Self, ChildStdio)> {
        let ports = [
            (StreamKind::Stdin, config.stdin_port),
            (StreamKind::Stdout, config.stdout_port),
            (StreamKind::Stderr, config.stderr_port),
        ];
        let mut streams = Vec::new();
        for (kind, port) in ports {
            // A terminal merges stderr into the one output stream.
            if port == 0 || (config.terminal && kind == StreamKind::Stderr) {
                continue;
            }
            let header = StreamHeader {
                container_id: container_id.to_owned(),
                exec_id: exec_id.to_owned(),
                kind,
            };
            match broker.take(&header, STREAM_ARRIVAL).await {
                Ok(stream) => streams.push((kind, stream)),
                Err(err) => {
                    broker.forget(container_id, exec_id);
                    return Err(err);
                }
            }
        }
        let mut pending = Self {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            terminal: config.terminal,
            grants,
            streams,
            pipe_ends: Vec::new(),
            console_listener: None,
        };
        let child = if config.terminal {
            let socket = ConsoleSocket::bind(Path::new(CONSOLE_SOCKET_DIR))?;
            let path = socket.path.clone();
            pending.console_listener = Some(socket);
            ChildStdio {
                stdin: None,
                stdout: None,
                stderr: None,
                console_socket: Some(path),
            }
        } else {
            let mut child = ChildStdio {
                stdin: None,
                stdout: None,
                stderr: None,
                console_socket: None,
            };
            for kind in [StreamKind::Stdin, StreamKind::Stdout, StreamKind::Stderr] {
                let connected = pending.streams.iter().any(|(k, _)| *k == kind);
                let child_end = if connected {
                    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .context("creating a stdio pipe")?;
                    let (ours, theirs) = if kind == StreamKind::Stdin {
                        (write, read)
                    } else {
                        (read, write)
                    };
                    pending.pipe_ends.push((kind, ours));
                    theirs
                } else {
                    null_fd(kind != StreamKind::Stdin)?
                };
                match kind {
                    StreamKind::Stdin => child.stdin = Some(child_end),
                    StreamKind::Stdout => child.stdout = Some(child_end),
                    StreamKind::Stderr => child.stderr = Some(child_end),
                }
            }
            child
        };
        Ok((pending, child))
    }

    /// Starts pumping once the process exists (for a terminal: once its master arrived).
    pub(super) async fn start(mut self) -> anyhow::Result<ProcessIo> {
        let mut io = ProcessIo {
            output_drained: Vec::new(),
            stdin_control: None,
            tty_master: None,
        };
        if let Some(socket) = self.console_listener.take() {
            // The socket (and its file) is gone once the master arrived or could not.
            let master =
                tokio::task::spawn_blocking(move || receive_console_master(&socket.listener))
                    .await
                    .context("console socket task")??;
            for (kind, stream) in self.streams.drain(..) {
                let stream = into_blocking_file(stream)?;
                let pty = master.try_clone().context("duplicating the pty master")?;
                let granted = self.grants.allows(kind);
                match kind {
                    StreamKind::Stdout if granted => {
                        io.output_drained.push(spawn_output_pump(pty, Some(stream)));
                    }
                    StreamKind::Stdout => {
                        shutdown(&stream, libc::SHUT_RDWR);
                        io.output_drained.push(spawn_output_pump(pty, None));
                    }
                    StreamKind::Stdin if granted => {
                        io.stdin_control = Some(stream.try_clone()?);
                        spawn_input_pump(stream, pty);
                    }
                    StreamKind::Stdin | StreamKind::Stderr => {}
                }
            }
            io.tty_master = Some(master);
            return Ok(io);
        }
        for (kind, ours) in self.pipe_ends.drain(..) {
            let Some(index) = self.streams.iter().position(|(k, _)| *k == kind) else {
                continue;
            };
            let (_, stream) = self.streams.swap_remove(index);
            let stream = into_blocking_file(stream)?;
            let pipe = File::from(ours);
            let granted = self.grants.allows(kind);
            if !granted {
                // The host's end closes at once: it gets nothing, and sends nothing in.
                shutdown(&stream, libc::SHUT_RDWR);
            }
            match (kind, granted) {
                (StreamKind::Stdin, true) => {
                    io.stdin_control = Some(stream.try_clone()?);
                    spawn_input_pump(stream, pipe);
                }
                // Dropping our end of the pipe gives the process EOF.
                (StreamKind::Stdin, false) => drop(pipe),
                (_, true) => io
                    .output_drained
                    .push(spawn_output_pump(pipe, Some(stream))),
                (_, false) => io.output_drained.push(spawn_output_pump(pipe, None)),
            }
        }
        tracing::debug!(container = %self.container_id, exec = %self.exec_id, terminal = self.terminal, "stdio connected");
        Ok(io)
    }
}

/// Pumps run on their own threads with blocking I/O: it keeps a stream moving at full speed
/// and does not depend on vsock write-readiness wake-ups, which stalled async writers here.
fn into_blocking_file(stream: VsockStream) -> anyhow::Result<File> {
    // SAFETY: into_raw_fd hands over sole ownership of the descriptor.
    let file = unsafe { File::from_raw_fd(stream.into_raw_fd()) };
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .context("reading stream flags")?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
        .context("making a stream blocking")?;
    Ok(file)
}

fn shutdown(socket: &File, how: libc::c_int) {
    // SAFETY: shutdown(2) on a descriptor this process owns; errors only mean it is closed.
    unsafe {
        libc::shutdown(socket.as_raw_fd(), how);
    }
}

/// Output until EOF (a pty reports EIO once the last slave closes: the same thing), sent to
/// `to` and then a write shutdown so the host sees EOF — or, where the policy keeps it from the
/// host (`None`), read and dropped, so the process never blocks on a full pipe. The receiver
/// completes once all of it was handled.
fn spawn_output_pump(mut from: File, mut to: Option<File>) -> oneshot::Receiver<()> {
    let (done, drained) = oneshot::channel();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; PUMP_BUFFER];
        loop {
            match from.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => {
                    if let Some(to) = to.as_mut() {
                        if write_to_vsock(to, &buffer[..read]).is_err() {
                            break;
                        }
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if let Some(to) = &to {
            shutdown(to, libc::SHUT_WR);
        }
        let _ = done.send(());
    });
    drained
}

/// Input until the host closes its side (or CloseStdin shuts the stream down); dropping the
/// writer then gives the process EOF.
fn spawn_input_pump(mut from: File, mut to: File) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => {
                    if to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
}

fn receive_console_master(
    listener: &std::os::unix::net::UnixListener,
) -> anyhow::Result<std::fs::File> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::FromRawFd;
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(err)
                if err.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => return Err(err).context("no pty master arrived on the console socket"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receiving the pty master")?;
    for cmsg in message.cmsgs().context("reading control messages")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed `fd` in this process; nothing else owns it.
                return Ok(unsafe { std::fs::File::from_raw_fd(fd) });
            }
        }
    }
    anyhow::bail!("the console socket message carried no file descriptor")
}

impl ProcessIo {
    /// Waits until every output stream reached EOF and was handed to the host, at most `limit`
    /// (a background child can keep a pipe open after the process itself exited).
    pub(crate) async fn drain(&mut self, limit: Duration) {
        let pumps = std::mem::take(&mut self.output_drained);
        let all = async {
            for pump in pumps {
                let _ = pump.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("output not drained in time, reporting the exit anyway");
        }
    }

    /// Gives the process EOF on stdin.
    pub(crate) async fn close_stdin(&mut self) -> anyhow::Result<()> {
        if let Some(master) = &self.tty_master {
            // A terminal has no EOF of its own: send the EOF character, as a typist would.
            let mut master = master.try_clone()?;
            master.write_all(&[0x04])?;
        }
        if let Some(stream) = self.stdin_control.take() {
            shutdown(&stream, libc::SHUT_RDWR);
        }
        Ok(())
    }

    pub(crate) fn resize(&self, rows: u16, columns: u16) -> anyhow::Result<()> {
        let Some(master) = &self.tty_master else {
            anyhow::bail!(crate::error::AgentError::FailedPrecondition(
                "the process has no terminal".to_owned()
            ));
        };
        let size = libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: the master is an open pty descriptor and `size` a valid winsize that the
        // kernel only reads.
        let result = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if result < 0 {
            return Err(std::io::Error::last_os_error()).context("setting the window size");
        }
        Ok(())
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        if let Some(stream) = self.stdin_control.take() {
            shutdown(&stream, libc::SHUT_RDWR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sun_path is 108 bytes with its terminating NUL.
    const SUN_PATH_MAX: usize = 107;

    #[test]
    fn console_sockets_have_short_paths_and_are_removed_with_their_socket() {
        let longest = Path::new(CONSOLE_SOCKET_DIR).join(format!("{}.sock", u64::MAX));
        assert!(
            longest.as_os_str().len() <= SUN_PATH_MAX,
            "{}",
            longest.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let tty = dir.path().join("tty");
        let first = ConsoleSocket::bind(&tty).expect("binds");
        let second = ConsoleSocket::bind(&tty).expect("binds");
        assert_ne!(first.path, second.path);
        assert!(first.path.exists());
        let path = first.path.clone();
        drop(first);
        assert!(!path.exists(), "the socket file goes with the socket");
        assert!(second.path.exists());
    }
}
