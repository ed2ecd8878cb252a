//! The host side of virtio-vsock, hybrid-vsock style (the same convention the QEMU path's
//! vhost-device-vsock uses, so the shim cannot tell the backends apart):
//! - a host process connects to the VM's Unix socket and writes `CONNECT <port>\n`; the
//!   muxer asks the guest (REQUEST) and answers `OK <host port>\n` once the guest accepts;
//! - a guest connecting to CID 2 port P reaches a host listener at `<socket>_P`.
//!
//! Stream data is bounded by credit (spec 5.10.6.3): the device sends the guest no more than
//! the guest's buf_alloc minus what it has not yet forwarded, and tells the guest its own
//! buffer and forward count in every header.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::packet::{
    op, Header, Packet, HOST_CID, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

/// What the device offers the guest as its receive buffer, per connection.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Host ports the muxer hands out for host-initiated connections start here.
const FIRST_HOST_PORT: u32 = 1 << 30;
/// A handshake line longer than this is not one.
const MAX_HANDSHAKE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

struct Connection {
    stream: UnixStream,
    state: State,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the guest.
    tx_cnt: u32,
    /// Payload bytes from the guest handed on to the host stream.
    fwd_cnt: u32,
    /// Guest data the host stream has not taken yet.
    to_host: Vec<u8>,
}

impl Connection {
    fn new(stream: UnixStream, state: State) -> Self {
        Self {
            stream,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            fwd_cnt: 0,
            to_host: Vec::new(),
        }
    }

    /// Bytes the guest can still take.
    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    fn flush_to_host(&mut self) -> std::io::Result<()> {
        while !self.to_host.is_empty() {
            match self.stream.write(&self.to_host) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.to_host.drain(..written);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(written as u32);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// (host port, guest port)
type Key = (u32, u32);

pub struct Muxer {
    guest_cid: u64,
    socket: PathBuf,
    listener: UnixListener,
    handshakes: Vec<(UnixStream, Vec<u8>)>,
    connections: HashMap<Key, Connection>,
    /// Control packets for the guest, sent before stream data.
    control: VecDeque<Packet>,
    next_host_port: u32,
}

impl Muxer {
    /// Listens on `socket` for host connections to guest `guest_cid`.
    pub fn new(guest_cid: u64, socket: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            guest_cid,
            socket: socket.to_owned(),
            listener,
            handshakes: Vec::new(),
            connections: HashMap::new(),
            control: VecDeque::new(),
            next_host_port: FIRST_HOST_PORT,
        })
    }

    fn header(&self, key: Key, op: u16, len: u32, flags: u32) -> Header {
        let fwd_cnt = self.connections.get(&key).map(|c| c.fwd_cnt).unwrap_or(0);
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            len,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt,
        }
    }

    fn send_control(&mut self, key: Key, op: u16, flags: u32) {
        let header = self.header(key, op, 0, flags);
        self.control.push_back(Packet {
            header,
            payload: Vec::new(),
        });
    }

    fn reset(&mut self, key: Key) {
        self.connections.remove(&key);
        self.send_control(key, op::RST, 0);
    }

    /// Handles one packet the guest sent.
    pub fn on_guest_packet(&mut self, packet: Packet) {
        let h = packet.header;
        let key = (h.dst_port, h.src_port);
        if h.dst_cid != HOST_CID || h.src_cid != self.guest_cid || h.kind != TYPE_STREAM {
            if h.op != op::RST {
                self.send_control(key, op::RST, 0);
            }
            return;
        }
        if let Some(connection) = self.connections.get_mut(&key) {
            connection.peer_buf_alloc = h.buf_alloc;
            connection.peer_fwd_cnt = h.fwd_cnt;
        }
        match h.op {
            op::REQUEST => self.guest_connects(key, h),
            op::RESPONSE => {
                let accepted = match self.connections.get_mut(&key) {
                    Some(c) if c.state == State::Connecting => {
                        c.state = State::Established;
                        c.stream
                            .write_all(format!("OK {}\n", key.0).as_bytes())
                            .is_ok()
                    }
                    _ => false,
                };
                if !accepted {
                    self.reset(key);
                }
            }
            op::RW => {
                let forwarded = match self.connections.get_mut(&key) {
                    Some(c) if c.state == State::Established => {
                        c.to_host.extend_from_slice(&packet.payload);
                        c.flush_to_host().is_ok()
                    }
                    _ => false,
                };
                if !forwarded {
                    self.reset(key);
                }
            }
            op::CREDIT_REQUEST => {
                if self.connections.contains_key(&key) {
                    self.send_control(key, op::CREDIT_UPDATE, 0);
                }
            }
            op::CREDIT_UPDATE => {}
            op::SHUTDOWN => {
                if h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND) == (SHUTDOWN_RCV | SHUTDOWN_SEND) {
                    self.reset(key);
                } else if h.flags & SHUTDOWN_SEND != 0 {
                    if let Some(c) = self.connections.get(&key) {
                        let _ = c.stream.shutdown(std::net::Shutdown::Write);
                    }
                }
            }
            op::RST => {
                self.connections.remove(&key);
            }
            _ => self.reset(key),
        }
    }

    fn guest_connects(&mut self, key: Key, h: Header) {
        if self.connections.contains_key(&key) {
            self.reset(key);
            return;
        }
        let listener = PathBuf::from(format!("{}_{}", self.socket.display(), key.0));
        match UnixStream::connect(&listener).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(stream) => {
                let mut connection = Connection::new(stream, State::Established);
                connection.peer_buf_alloc = h.buf_alloc;
                connection.peer_fwd_cnt = h.fwd_cnt;
                self.connections.insert(key, connection);
                self.send_control(key, op::RESPONSE, 0);
            }
            Err(err) => {
                tracing::debug!(port = key.0, error = %err, "guest connection refused");
                self.send_control(key, op::RST, 0);
            }
        }
    }

    /// Accepts host connections and reads their handshakes; guest-bound REQUESTs follow.
    pub fn poll_host(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.handshakes.push((stream, Vec::new()));
            }
        }
        let pending = std::mem::take(&mut self.handshakes);
        for (mut stream, mut line) in pending {
            let mut byte = [0u8; 1];
            let done = loop {
                match stream.read(&mut byte) {
                    Ok(0) => break Some(None),
                    Ok(_) if byte[0] == b'\n' => break Some(Some(line.clone())),
                    Ok(_) if line.len() >= MAX_HANDSHAKE => break Some(None),
                    Ok(_) => line.push(byte[0]),
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break None,
                    Err(_) => break Some(None),
                }
            };
            match done {
                None => self.handshakes.push((stream, line)),
                Some(Some(line)) => self.host_connects(stream, &line),
                Some(None) => {}
            }
        }
    }

    fn host_connects(&mut self, stream: UnixStream, line: &[u8]) {
        let port = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.trim().strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(guest_port) = port else {
            tracing::debug!(line = %String::from_utf8_lossy(line), "not a CONNECT line");
            return;
        };
        let host_port = self.next_host_port;
        self.next_host_port = self.next_host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        let key = (host_port, guest_port);
        self.connections
            .insert(key, Connection::new(stream, State::Connecting));
        self.send_control(key, op::REQUEST, 0);
    }

    /// The next packet for the guest, at most `room` bytes of payload: control packets first,
    /// then stream data within each connection's credit; EOF from the host ends the stream.
    pub fn next_for_guest(&mut self, room: usize) -> Option<Packet> {
        if let Some(packet) = self.control.pop_front() {
            return Some(packet);
        }
        let keys: Vec<Key> = self.connections.keys().copied().collect();
        for key in keys {
            let Some(connection) = self.connections.get_mut(&key) else {
                continue;
            };
            if connection.state != State::Established {
                continue;
            }
            let _ = connection.flush_to_host();
            let want = (connection.peer_credit() as usize)
                .min(room)
                .min(MAX_PAYLOAD);
            if want == 0 {
                continue;
            }
            let mut data = vec![0u8; want];
            match connection.stream.read(&mut data) {
                Ok(0) => {
                    self.connections.remove(&key);
                    let header = self.header(key, op::SHUTDOWN, 0, SHUTDOWN_RCV | SHUTDOWN_SEND);
                    return Some(Packet {
                        header,
                        payload: Vec::new(),
                    });
                }
                Ok(read) => {
                    data.truncate(read);
                    connection.tx_cnt = connection.tx_cnt.wrapping_add(read as u32);
                    let header = self.header(key, op::RW, read as u32, 0);
                    return Some(Packet {
                        header,
                        payload: data,
                    });
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.reset(key);
                    return self.control.pop_front();
                }
            }
        }
        None
    }

    /// Descriptors with work when readable: the listener and pending handshakes always,
    /// established host streams when `with_streams` (the guest can take data).
    pub fn readable_fds(&self, with_streams: bool) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd as _;
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.handshakes.iter().map(|(stream, _)| stream.as_raw_fd()));
        if with_streams {
            fds.extend(
                self.connections
                    .values()
                    .filter(|c| c.state == State::Established && c.peer_credit() > 0)
                    .map(|c| c.stream.as_raw_fd()),
            );
        }
        fds
    }

    /// Connections open (for tests and metrics).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}
