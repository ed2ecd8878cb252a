//! Port-forward (`kubectl port-forward`) to a pod VM. containerd's CRI plugin serves it by
//! dialling `localhost:<port>` inside the pod's network namespace on the host — where nothing of
//! the pod listens: its services run in the VM. So the shim answers there. One listener on the
//! namespace's loopback, and a NAT rule (`iptables -t nat OUTPUT … REDIRECT`) in that namespace
//! only, send every TCP connection to 127.0.0.1 to it; `SO_ORIGINAL_DST` gives the port dialled.
//! Each connection is carried over its own vsock connection to the agent
//! (`cloak_protocol::port_forward`), which connects to that port on the guest's loopback. A
//! port the agent cannot reach (nothing listens, or the policy forbids it) resets the
//! connection, so the CRI plugin reports an error and closes the stream, as it does when its
//! own dial fails under runc.
//!
//! Nothing outlives the pod: the rule lives in the pod's namespace, and dropping the forwarder
//! (with the pod VM) closes the listener and every connection.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloak_protocol::line::read_line;
use cloak_protocol::port_forward::{request_line, Answer, MAX_LINE, PORT_FORWARD_VSOCK_PORT};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinSet;

use crate::hybrid_vsock;

#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    #[error("entering network namespace {netns}: {source}")]
    Namespace {
        netns: String,
        source: std::io::Error,
    },
    #[error("listening on 127.0.0.1 in {netns}: {source}")]
    Listen {
        netns: String,
        source: std::io::Error,
    },
    #[error("adding the port-forward rule in {netns} (`iptables {rule}`): {reason}")]
    Rule {
        netns: String,
        rule: String,
        reason: String,
    },
}

/// Why one forwarded connection ended badly.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("reading the port dialled: {0}")]
    OriginalDestination(nix::Error),
    #[error("a connection straight to the forwarder's own port {0}")]
    OwnPort(u16),
    #[error(transparent)]
    Vsock(#[from] hybrid_vsock::HandshakeError),
    #[error("asking the agent for port {port}: {source}")]
    Request { port: u16, source: std::io::Error },
    #[error("the agent's answer for port {port}: {answer:?}")]
    BadAnswer { port: u16, answer: String },
    #[error("port {port}: {reason}")]
    Refused { port: u16, reason: String },
}

/// The listener of one pod, serving until dropped.
#[derive(Debug)]
pub struct PortForwarder {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PortForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PortForwarder {
    /// Starts forwarding TCP connections to the loopback of `netns` to the VM behind
    /// `vsock_socket`.
    pub async fn start(netns: &Path, vsock_socket: PathBuf) -> Result<Self, PortForwardError> {
        let listener = listen_in(netns).await?;
        let port = listener
            .local_addr()
            .map_err(|source| PortForwardError::Listen {
                netns: netns.display().to_string(),
                source,
            })?
            .port();
        redirect_loopback_to(netns, port).await?;
        let task = tokio::spawn(serve(listener, port, vsock_socket));
        tracing::info!(netns = %netns.display(), port, "port-forward listening");
        Ok(Self { port, task })
    }

    /// The forwarder's own port on the namespace's loopback.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A listener on 127.0.0.1 (an ephemeral port) of `netns`. A socket belongs to the namespace
/// it was created in, so a short-lived thread enters the namespace to create it.
async fn listen_in(netns: &Path) -> Result<TcpListener, PortForwardError> {
    let netns_text = netns.display().to_string();
    let path = netns.to_owned();
    let created = tokio::task::spawn_blocking(move || -> Result<_, PortForwardError> {
        let namespace =
            std::fs::File::open(&path).map_err(|source| PortForwardError::Namespace {
                netns: path.display().to_string(),
                source,
            })?;
        // This thread alone enters the namespace, and ends right after.
        nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
            |errno| PortForwardError::Namespace {
                netns: path.display().to_string(),
                source: errno.into(),
            },
        )?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|source| PortForwardError::Listen {
                netns: path.display().to_string(),
                source,
            })?;
        Ok(listener)
    })
    .await
    .map_err(|join| PortForwardError::Namespace {
        netns: netns_text.clone(),
        source: std::io::Error::other(join.to_string()),
    })??;
    TcpListener::from_std(created).map_err(|source| PortForwardError::Listen {
        netns: netns_text,
        source,
    })
}

/// Sends every locally made TCP connection to 127.0.0.1 in `netns` to `port`.
async fn redirect_loopback_to(netns: &Path, port: u16) -> Result<(), PortForwardError> {
    let rule = redirect_rule(port);
    let output = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("iptables")
        .args(&rule)
        .output()
        .await;
    let failure = match output {
        Ok(output) if output.status.success() => return Ok(()),
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        Err(err) => format!("nsenter: {err}"),
    };
    Err(PortForwardError::Rule {
        netns: netns.display().to_string(),
        rule: rule.join(" "),
        reason: failure,
    })
}

/// The NAT rule: locally made TCP connections to 127.0.0.1, any port, go to `port`.
fn redirect_rule(port: u16) -> Vec<String> {
    [
        "-w",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "127.0.0.1",
        "-j",
        "REDIRECT",
        "--to-ports",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([port.to_string()])
    .collect()
}

/// Accepts connections until the forwarder is dropped; each is carried on its own.
async fn serve(listener: TcpListener, own_port: u16, vsock_socket: PathBuf) {
    // Dropped with this task: aborting the forwarder ends every connection too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors and the like: try again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let vsock_socket = vsock_socket.clone();
                connections.spawn(async move {
                    if let Err(err) = carry(stream, own_port, &vsock_socket).await {
                        tracing::info!(error = %err, "port-forward connection refused");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection: the port dialled, the agent's answer, then bytes both ways. A refusal
/// resets the connection (see the module comment).
async fn carry(
    mut client: TcpStream,
    own_port: u16,
    vsock_socket: &Path,
) -> Result<(), ConnectionError> {
    let opened = async {
        let port = original_port(&client)?;
        if port == own_port {
            return Err(ConnectionError::OwnPort(port));
        }
        let guest = open_to_guest(vsock_socket, port).await?;
        Ok((port, guest))
    }
    .await;
    let (port, mut guest) = match opened {
        Ok(opened) => opened,
        Err(err) => {
            reset(&client);
            return Err(err);
        }
    };
    match tokio::io::copy_bidirectional(&mut client, &mut guest).await {
        Ok((to_guest, to_client)) => {
            tracing::debug!(port, to_guest, to_client, "port-forward connection closed");
        }
        Err(err) => tracing::debug!(port, error = %err, "port-forward connection broke"),
    }
    Ok(())
}

/// The port the client dialled, before the NAT rule changed it.
fn original_port(client: &TcpStream) -> Result<u16, ConnectionError> {
    let address =
        nix::sys::socket::getsockopt(&client.as_fd(), nix::sys::socket::sockopt::OriginalDst)
            .map_err(ConnectionError::OriginalDestination)?;
    Ok(u16::from_be(address.sin_port))
}

/// A vsock connection to the agent, connected to `port` on the guest's loopback.
async fn open_to_guest(vsock_socket: &Path, port: u16) -> Result<UnixStream, ConnectionError> {
    let mut guest = hybrid_vsock::connect(vsock_socket, PORT_FORWARD_VSOCK_PORT).await?;
    guest
        .write_all(request_line(port).as_bytes())
        .await
        .map_err(|source| ConnectionError::Request { port, source })?;
    let line = read_line(&mut guest, MAX_LINE)
        .await
        .map_err(|source| ConnectionError::Request { port, source })?;
    match Answer::parse(&line) {
        Some(Answer::Connected) => Ok(guest),
        Some(Answer::Refused(reason)) => Err(ConnectionError::Refused { port, reason }),
        None => Err(ConnectionError::BadAnswer { port, answer: line }),
    }
}

/// Closes with a reset rather than an orderly end: the client sees an error, not an empty
/// answer (SO_LINGER with a zero timeout).
fn reset(client: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    if let Err(err) =
        nix::sys::socket::setsockopt(&client.as_fd(), nix::sys::socket::sockopt::Linger, &linger)
    {
        tracing::debug!(error = %err, "setting SO_LINGER before a reset");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_redirects_loopback_tcp_only() {
        assert_eq!(
            redirect_rule(40123).join(" "),
            "-w -t nat -A OUTPUT -p tcp -d 127.0.0.1 -j REDIRECT --to-ports 40123"
        );
    }
}
