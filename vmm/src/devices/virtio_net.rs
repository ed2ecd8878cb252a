//! virtio-net (device type 1) on a tap device: queue 0 receives, queue 1 transmits. Frames
//! cross as they are — no offloads are offered, so every virtio-net header is zero apart from
//! num_buffers, and the tap carries bare Ethernet frames (IFF_NO_PI, no vnet header).
//!
//! References: virtio spec 1.2 section 5.1 (config: mac, status; the 12-byte
//! virtio_net_hdr of VIRTIO_F_VERSION_1 devices); Linux Documentation/networking/tuntap.rst.

use std::fs::File;
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;

use virtio_queue::{Queue, QueueT as _};
use vm_memory::GuestMemoryMmap;

use super::chain_io::{read_chain, write_chain};
use super::virtio_mmio::{device_type, live_queue, VirtioDevice};

/// VIRTIO_NET_F_MAC: the configuration space holds the NIC's address.
const F_MAC: u64 = 1 << 5;
/// virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers.
pub const NET_HEADER_BYTES: usize = 12;
/// The largest frame without offloads: 1500 bytes of MTU, Ethernet and VLAN headers.
const MAX_FRAME: usize = 1518 + 4;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZES: [u16; 2] = [256, 256];

/// Where frames go to and come from: one read, one frame.
pub trait FrameIo: Send {
    fn read_frame(&mut self, buffer: &mut [u8]) -> std::io::Result<usize>;
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()>;
    fn fd(&self) -> RawFd;
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("the tap name {0:?} is longer than 15 bytes")]
    Name(String),
    #[error("opening /dev/net/tun: {0}")]
    Open(std::io::Error),
    #[error("attaching to tap {name}: {source}")]
    Attach {
        name: String,
        source: std::io::Error,
    },
}

/// A tap device, opened by name (created if it does not exist; gone with its last
/// descriptor unless made persistent).
pub struct Tap {
    file: File,
    pub name: String,
}

/// TUNSETIFF = _IOW('T', 202, int)
const TUNSETIFF: libc::c_ulong = 0x4004_54CA;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tap {
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.len() >= libc::IFNAMSIZ {
            return Err(TapError::Name(name.to_owned()));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut request = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        for (slot, byte) in request.name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes one struct ifreq; `request` is one, laid out as
        // the kernel's (name[IFNAMSIZ], then a short in a 24-byte union), and lives across
        // the call.
        let result = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) };
        if result < 0 {
            return Err(TapError::Attach {
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            file,
            name: name.to_owned(),
        })
    }
}

impl FrameIo for Tap {
    fn read_frame(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buffer)
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.file.write(frame).map(|_| ())
    }
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

pub struct VirtioNet {
    backend: Box<dyn FrameIo>,
    mac: [u8; 6],
    /// A frame read from the backend that found no receive buffer yet.
    pending: Option<Vec<u8>>,
    /// No receive buffer left: the backend is not polled until the driver adds some.
    rx_starved: bool,
}

/// Parses "02:00:00:00:00:01".
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

impl VirtioNet {
    pub fn new(backend: Box<dyn FrameIo>, mac: [u8; 6]) -> Self {
        Self {
            backend,
            mac,
            pending: None,
            rx_starved: false,
        }
    }

    /// Sends every frame the guest queued; malformed chains are dropped (logged). How many
    /// chains were consumed.
    pub fn transmit(&mut self, queue: &mut Queue, memory: &GuestMemoryMmap) -> usize {
        let mut consumed = 0;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            match read_chain(chain, NET_HEADER_BYTES + MAX_FRAME) {
                Ok(bytes) if bytes.len() > NET_HEADER_BYTES => {
                    if let Err(err) = self.backend.write_frame(&bytes[NET_HEADER_BYTES..]) {
                        // A full tap drops, as a wire would.
                        tracing::debug!(error = %err, "virtio-net frame not sent");
                    }
                }
                Ok(bytes) => tracing::warn!(len = bytes.len(), "virtio-net frame without data"),
                Err(err) => tracing::warn!(error = %err, head, "dropped a malformed frame"),
            }
            if let Err(err) = queue.add_used(memory, head, 0) {
                tracing::warn!(error = %err, "virtio-net tx used ring");
            }
            consumed += 1;
        }
        consumed
    }

    /// Moves frames from the backend into the guest's receive buffers. How many arrived.
    pub fn receive(&mut self, queue: &mut Queue, memory: &GuestMemoryMmap) -> usize {
        let mut delivered = 0;
        loop {
            let frame = match self.pending.take() {
                Some(frame) => frame,
                None => {
                    let mut buffer = vec![0u8; NET_HEADER_BYTES + MAX_FRAME];
                    match self.backend.read_frame(&mut buffer[NET_HEADER_BYTES..]) {
                        Ok(0) => break,
                        Ok(len) => {
                            buffer.truncate(NET_HEADER_BYTES + len);
                            // num_buffers = 1 (the rest of the header is zero: no offloads).
                            buffer[10] = 1;
                            buffer
                        }
                        Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                        Err(err) => {
                            tracing::warn!(error = %err, "reading the tap");
                            break;
                        }
                    }
                }
            };
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                self.pending = Some(frame);
                self.rx_starved = true;
                return delivered;
            };
            let head = chain.head_index();
            let used = match write_chain(chain, &frame) {
                Ok(len) => len,
                Err(err) => {
                    tracing::warn!(error = %err, "virtio-net receive buffer");
                    0
                }
            };
            if let Err(err) = queue.add_used(memory, head, used) {
                tracing::warn!(error = %err, "virtio-net rx used ring");
            }
            delivered += 1;
        }
        self.rx_starved = false;
        delivered
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn features(&self) -> u64 {
        F_MAC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], then status (no VIRTIO_NET_F_STATUS: left zero).
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = config.get(offset as usize + index).copied().unwrap_or(0);
        }
    }

    fn process_queue(
        &mut self,
        index: u32,
        queues: &mut [Option<Queue>],
        memory: &GuestMemoryMmap,
    ) -> bool {
        // A transmit kick sends; any kick may find frames waiting for receive buffers.
        let sent = index as usize == TX_QUEUE
            && live_queue(queues, TX_QUEUE).is_some_and(|tx| self.transmit(tx, memory) > 0);
        let received = live_queue(queues, RX_QUEUE).is_some_and(|rx| self.receive(rx, memory) > 0);
        sent || received
    }

    fn serves_host_side(&self) -> bool {
        true
    }

    fn host_fds(&self) -> Vec<RawFd> {
        if self.rx_starved {
            Vec::new()
        } else {
            vec![self.backend.fd()]
        }
    }

    fn poll_host(&mut self, queues: &mut [Option<Queue>], memory: &GuestMemoryMmap) -> bool {
        live_queue(queues, RX_QUEUE).is_some_and(|rx| self.receive(rx, memory) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_queues::{desc, memory, WRITE};
    use std::os::unix::net::UnixDatagram;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes as _, GuestAddress};

    /// A datagram socket keeps frame boundaries the way a tap does.
    struct Wire(UnixDatagram);

    impl FrameIo for Wire {
        fn read_frame(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            self.0.recv(buffer)
        }
        fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
            self.0.send(frame).map(|_| ())
        }
        fn fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    fn device() -> (VirtioNet, UnixDatagram) {
        let (ours, theirs) = UnixDatagram::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        (
            VirtioNet::new(Box::new(Wire(ours)), [2, 0, 0, 0, 0, 1]),
            theirs,
        )
    }

    const FRAME: &[u8] = b"\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01\x08\x06arp!";

    #[test]
    fn a_guest_frame_goes_out_without_its_header() {
        let memory = memory();
        let (mut net, wire) = device();
        let ring = MockSplitQueue::create(&memory, GuestAddress(0x8_0000), 16);
        let mut queue = ring.create_queue().expect("queue");
        let mut bytes = vec![0u8; NET_HEADER_BYTES];
        bytes.extend_from_slice(FRAME);
        memory
            .write_slice(&bytes, GuestAddress(0x1000))
            .expect("frame");
        // Header and frame in two descriptors, as Linux may queue them.
        ring.build_desc_chain(&[
            desc(0x1000, NET_HEADER_BYTES as u32, 0),
            desc(0x1000 + NET_HEADER_BYTES as u64, FRAME.len() as u32, 0),
        ])
        .expect("chain");
        assert_eq!(net.transmit(&mut queue, &memory), 1);
        let mut received = [0u8; 64];
        let len = wire.recv(&mut received).expect("frame on the wire");
        assert_eq!(&received[..len], FRAME);
    }

    #[test]
    fn a_wire_frame_arrives_with_a_header_and_waits_for_a_buffer() {
        let memory = memory();
        let (mut net, wire) = device();
        let ring = MockSplitQueue::create(&memory, GuestAddress(0x8_0000), 16);
        let mut queue = ring.create_queue().expect("queue");
        wire.send(FRAME).expect("send");
        // No buffer yet: the frame waits and the tap is not polled meanwhile.
        assert_eq!(net.receive(&mut queue, &memory), 0);
        assert!(net.host_fds().is_empty());
        ring.build_desc_chain(&[desc(0x2000, 2048, WRITE)])
            .expect("buffer");
        assert_eq!(net.receive(&mut queue, &memory), 1);
        let mut got = vec![0u8; NET_HEADER_BYTES + FRAME.len()];
        memory
            .read_slice(&mut got, GuestAddress(0x2000))
            .expect("read");
        assert_eq!(got[10], 1, "num_buffers");
        assert_eq!(&got[NET_HEADER_BYTES..], FRAME);
        let used_len: u32 = memory
            .read_obj(GuestAddress(ring.used_addr().0 + 8))
            .expect("used len");
        assert_eq!(used_len as usize, NET_HEADER_BYTES + FRAME.len());
        assert_eq!(net.host_fds().len(), 1, "polled again");
    }

    #[test]
    fn a_frame_with_a_writable_descriptor_is_dropped_not_sent() {
        let memory = memory();
        let (mut net, wire) = device();
        wire.set_nonblocking(true).expect("nonblocking");
        let ring = MockSplitQueue::create(&memory, GuestAddress(0x8_0000), 16);
        let mut queue = ring.create_queue().expect("queue");
        ring.build_desc_chain(&[desc(0x1000, 64, WRITE)])
            .expect("chain");
        assert_eq!(net.transmit(&mut queue, &memory), 1, "consumed");
        let mut buffer = [0u8; 64];
        assert!(wire.recv(&mut buffer).is_err(), "nothing sent");
    }

    #[test]
    fn config_space_holds_the_mac() {
        let (net, _wire) = device();
        let mut mac = [0u8; 6];
        net.read_config(0, &mut mac);
        assert_eq!(mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(parse_mac("02:00:00:00:00:01"), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:01"), None);
    }

    #[test]
    fn a_tap_opens_by_name_and_goes_with_its_descriptor() {
        let name = format!("cvmt{}", std::process::id() % 100_000);
        match Tap::open(&name) {
            Ok(tap) => {
                assert!(std::path::Path::new("/sys/class/net").join(&name).exists());
                drop(tap);
                assert!(!std::path::Path::new("/sys/class/net").join(&name).exists());
            }
            // Without CAP_NET_ADMIN the kernel refuses; the refusal must say which tap.
            Err(err) => {
                eprintln!("tap not available here: {err}");
                assert!(err.to_string().contains(&name) || err.to_string().contains("tun"));
            }
        }
        assert!(matches!(
            Tap::open("a-name-far-too-long-for-linux"),
            Err(TapError::Name(_))
        ));
    }
}
