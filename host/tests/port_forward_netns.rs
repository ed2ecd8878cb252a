//! The shim's port-forward (`cloak_host::port_forward`) in a real network namespace with a real
//! NAT rule, without a VM: the agent's end of the vsock socket is played by this test, which
//! speaks the hybrid-vsock handshake and the port-forward lines as the agent does. A dial to
//! a port the "agent" serves carries bytes both ways; a dial to one it refuses is reset, as
//! the CRI plugin must see it. (The VM test `cri_port_forward` runs the whole path.)

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test fails loudly by design

use std::io::{Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use cloak_host::port_forward::PortForwarder;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixListener;

/// The port this fake agent serves: it answers each line with the line in capitals.
const SERVED: u16 = 8080;

/// A network namespace of its own (with loopback up), deleted on drop.
struct Namespace(String);

impl Namespace {
    fn create() -> Option<Self> {
        let name = format!("cloak-pf-{}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["netns", "add", &name]) {
            return None;
        }
        let namespace = Self(name);
        ok(&["-n", &namespace.0, "link", "set", "lo", "up"]).then_some(namespace)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Why this test cannot run here, if it cannot.
fn unavailable() -> Option<&'static str> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (network namespaces and iptables)");
    }
    if Command::new("iptables").arg("--version").output().is_err() {
        return Some("needs iptables");
    }
    None
}

/// Plays the agent on the hybrid-vsock socket `listener`.
async fn fake_agent(listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            assert_eq!(
                line, "CONNECT 1028\n",
                "the forward goes to the agent's port"
            );
            stream.get_mut().write_all(b"OK 1\n").await.unwrap();
            line.clear();
            stream.read_line(&mut line).await.unwrap();
            if line != format!("FORWARD {SERVED}\n") {
                let refusal = b"ERR nothing listens\n";
                stream.get_mut().write_all(refusal).await.unwrap();
                return;
            }
            stream.get_mut().write_all(b"OK\n").await.unwrap();
            loop {
                line.clear();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let answer = line.to_uppercase();
                stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
        });
    }
}

/// Runs `dial` on a thread inside the namespace (a socket belongs to the namespace it was
/// made in).
fn in_namespace<T: Send + 'static>(
    namespace: &Path,
    dial: impl FnOnce() -> T + Send + 'static,
) -> T {
    let path = namespace.to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        dial()
    })
    .join()
    .unwrap()
}

/// How reading `stream` to its end went: its bytes, or the kind of error.
fn read_all(mut stream: std::net::TcpStream) -> Result<String, std::io::ErrorKind> {
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map(|_| text)
        .map_err(|err| err.kind())
}

#[test]
fn loopback_dials_in_the_namespace_reach_the_agent_or_are_reset() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let namespace = Namespace::create().expect("ip netns add");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let forwarder = runtime.block_on(async {
        tokio::spawn(fake_agent(UnixListener::bind(&socket).unwrap()));
        PortForwarder::start(&namespace.path(), socket.clone())
            .await
            .unwrap()
    });
    let own_port = forwarder.port();
    // The runtime keeps serving on its own threads while another thread dials.
    let (echoed, refused, own) = in_namespace(&namespace.path(), move || {
        let connect = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut served = connect(SERVED);
        served.write_all(b"hello\nagain\n").unwrap();
        served.shutdown(std::net::Shutdown::Write).unwrap();
        (
            read_all(served),
            read_all(connect(9)),
            read_all(connect(own_port)),
        )
    });
    assert_eq!(
        echoed,
        Ok("HELLO\nAGAIN\n".to_owned()),
        "bytes go both ways, and the end too"
    );
    assert_eq!(
        refused,
        Err(std::io::ErrorKind::ConnectionReset),
        "a port the agent refuses is reset"
    );
    assert_eq!(
        own,
        Err(std::io::ErrorKind::ConnectionReset),
        "the forwarder's own port is not a way around the rule"
    );
    drop(forwarder);
}
