//! virtio-vsock (device type 19): queue 0 carries packets to the guest, queue 1 from it, queue
//! 2 events. The host side is the muxer (hybrid-vsock Unix sockets).

pub mod muxer;
pub mod packet;

use std::path::Path;

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use crate::devices::virtio_mmio::live_queue;
use muxer::Muxer;
use packet::{read_packet, write_packet, HEADER_BYTES};

/// Queue indexes (virtio spec 5.10.2).
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZES: [u16; 3] = [256, 256, 64];

pub struct VsockDevice {
    pub guest_cid: u64,
    pub muxer: Muxer,
    /// The guest had no receive buffer left while the host side had packets for it: host
    /// streams are not worth polling again until the driver adds buffers.
    rx_starved: bool,
}

impl VsockDevice {
    pub fn new(guest_cid: u64, socket: &Path) -> std::io::Result<Self> {
        Ok(Self {
            guest_cid,
            muxer: Muxer::new(guest_cid, socket)?,
            rx_starved: false,
        })
    }

    /// Configuration space: the guest's CID (le64).
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cid = self.guest_cid.to_le_bytes();
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = cid.get(offset as usize + index).copied().unwrap_or(0);
        }
    }

    /// The CID the configuration space reports.
    pub fn config_cid(&self) -> u64 {
        let mut bytes = [0u8; 8];
        self.read_config(0, &mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// Takes every packet the guest queued on the transmit queue; malformed chains are
    /// dropped (logged), completing with length 0. How many chains were consumed.
    pub fn process_tx<Q: QueueT, M: GuestMemory>(&mut self, queue: &mut Q, memory: &M) -> usize {
        let mut consumed = 0;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            match read_packet(chain) {
                Ok(packet) => self.muxer.on_guest_packet(packet),
                Err(err) => tracing::warn!(error = %err, head, "dropped a malformed vsock packet"),
            }
            if let Err(err) = queue.add_used(memory, head, 0) {
                tracing::warn!(error = %err, "vsock tx used ring");
            }
            consumed += 1;
        }
        consumed
    }

    /// Fills the guest's receive buffers with what the host side has for it. How many
    /// packets were delivered.
    pub fn fill_rx<Q: QueueT + QueueOwnedT, M: GuestMemory>(
        &mut self,
        queue: &mut Q,
        memory: &M,
    ) -> usize {
        self.muxer.poll_host();
        let mut delivered = 0;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let room = crate::devices::chain_io::writable_room(&chain);
            let Some(packet) = self.muxer.next_for_guest(room.saturating_sub(HEADER_BYTES)) else {
                // Nothing to send: give the buffer back for later.
                queue.go_to_previous_position();
                self.rx_starved = false;
                return delivered;
            };
            let used = match write_packet(chain, &packet) {
                Ok(len) => len,
                Err(err) => {
                    tracing::warn!(error = %err, "vsock rx buffer");
                    0
                }
            };
            if let Err(err) = queue.add_used(memory, head, used) {
                tracing::warn!(error = %err, "vsock rx used ring");
            }
            delivered += 1;
        }
        // Out of buffers: whatever is left waits for the driver's next notification.
        self.rx_starved = true;
        delivered
    }
}

impl crate::devices::virtio_mmio::VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        crate::devices::virtio_mmio::device_type::VSOCK
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        VsockDevice::read_config(self, offset, data);
    }

    /// A transmit kick hands the guest's packets to the host side, whose answers (and any
    /// data waiting for receive buffers) then go out on the receive queue.
    fn process_queue(
        &mut self,
        index: u32,
        queues: &mut [Option<virtio_queue::Queue>],
        memory: &vm_memory::GuestMemoryMmap,
    ) -> bool {
        let sent = index as usize == TX_QUEUE
            && live_queue(queues, TX_QUEUE).is_some_and(|tx| self.process_tx(tx, memory) > 0);
        let received = live_queue(queues, RX_QUEUE).is_some_and(|rx| self.fill_rx(rx, memory) > 0);
        sent || received
    }

    fn serves_host_side(&self) -> bool {
        true
    }

    fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.muxer.readable_fds(!self.rx_starved)
    }

    fn poll_host(
        &mut self,
        queues: &mut [Option<virtio_queue::Queue>],
        memory: &vm_memory::GuestMemoryMmap,
    ) -> bool {
        match live_queue(queues, RX_QUEUE) {
            Some(rx) => self.fill_rx(rx, memory) > 0,
            None => {
                // No receive queue yet: still accept host connections so they wait in order.
                self.muxer.poll_host();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::packet::{op, Header, Packet, HOST_CID, TYPE_STREAM};
    use super::*;
    use crate::devices::test_queues::{desc, memory, WRITE};
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::Duration;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const GUEST_CID: u64 = 3;
    const TX_BUFFER: u64 = 0x1000;
    const RX_BUFFER: u64 = 0x4000;

    fn guest_header(op: u16, src_port: u32, dst_port: u32, len: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 64 * 1024,
            fwd_cnt: 0,
        }
    }

    struct Rig<'a> {
        memory: &'a GuestMemoryMmap,
        tx_ring: MockSplitQueue<'a, GuestMemoryMmap>,
        tx: Queue,
        rx_ring: MockSplitQueue<'a, GuestMemoryMmap>,
        rx: Queue,
        device: VsockDevice,
        socket: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl<'a> Rig<'a> {
        fn new(memory: &'a GuestMemoryMmap) -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let socket = dir.path().join("vsock.sock");
            let tx_ring = MockSplitQueue::create(memory, GuestAddress(0x8_0000), 16);
            let rx_ring = MockSplitQueue::create(memory, GuestAddress(0x9_0000), 16);
            Self {
                tx: tx_ring.create_queue().expect("tx"),
                rx: rx_ring.create_queue().expect("rx"),
                tx_ring,
                rx_ring,
                memory,
                device: VsockDevice::new(GUEST_CID, &socket).expect("device"),
                socket,
                _dir: dir,
            }
        }

        fn send_raw(&mut self, chain: &[RawDescriptor]) {
            self.tx_ring.build_desc_chain(chain).expect("chain");
            assert_eq!(self.device.process_tx(&mut self.tx, self.memory), 1);
        }

        fn send(&mut self, header: Header, payload: &[u8]) {
            let mut bytes = header.to_bytes().to_vec();
            bytes.extend_from_slice(payload);
            self.memory
                .write_slice(&bytes, GuestAddress(TX_BUFFER))
                .expect("tx buffer");
            self.send_raw(&[desc(TX_BUFFER, bytes.len() as u32, 0)]);
        }

        /// The next packet for the guest, polling the host side for up to a second.
        fn receive(&mut self) -> Option<Packet> {
            self.rx_ring
                .build_desc_chain(&[desc(RX_BUFFER, 44 + 4096, WRITE)])
                .expect("rx chain");
            for _ in 0..100 {
                if self.device.fill_rx(&mut self.rx, self.memory) == 1 {
                    let mut header = [0u8; 44];
                    self.memory
                        .read_slice(&mut header, GuestAddress(RX_BUFFER))
                        .expect("header");
                    let header = Header::from_bytes(&header);
                    let mut payload = vec![0u8; header.len as usize];
                    self.memory
                        .read_slice(&mut payload, GuestAddress(RX_BUFFER + 44))
                        .expect("payload");
                    return Some(Packet { header, payload });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        }

        /// A guest connection to a host listener on `port`; the host's end.
        fn guest_connection(&mut self, port: u32, buf_alloc: u32) -> UnixStream {
            let listener =
                UnixListener::bind(format!("{}_{port}", self.socket.display())).expect("listener");
            let mut request = guest_header(op::REQUEST, 5000, port, 0);
            request.buf_alloc = buf_alloc;
            self.send(request, b"");
            let (host, _) = listener.accept().expect("accept");
            let response = self.receive().expect("response");
            assert_eq!(response.header.op, op::RESPONSE);
            assert_eq!(
                (response.header.src_port, response.header.dst_port),
                (port, 5000)
            );
            host
        }
    }

    #[test]
    fn a_guest_connection_reaches_the_host_listener_and_data_flows_both_ways() {
        let memory = memory();
        let mut rig = Rig::new(&memory);
        let mut host = rig.guest_connection(1025, 64 * 1024);
        rig.send(guest_header(op::RW, 5000, 1025, 5), b"hello");
        let mut got = [0u8; 5];
        host.read_exact(&mut got).expect("host reads");
        assert_eq!(&got, b"hello");
        host.write_all(b"world").expect("host writes");
        let packet = rig.receive().expect("data for the guest");
        assert_eq!(packet.header.op, op::RW);
        assert_eq!(packet.payload, b"world");
        assert_eq!(packet.header.fwd_cnt, 5, "the device forwarded 5 bytes");
        assert_eq!(rig.device.config_cid(), GUEST_CID);
    }

    #[test]
    fn a_host_connection_follows_the_hybrid_vsock_handshake() {
        let memory = memory();
        let mut rig = Rig::new(&memory);
        let mut host = UnixStream::connect(&rig.socket).expect("connect");
        host.write_all(b"CONNECT 1024\n").expect("handshake");
        let request = rig.receive().expect("request for the guest");
        assert_eq!(request.header.op, op::REQUEST);
        assert_eq!(request.header.dst_port, 1024);
        let host_port = request.header.src_port;
        assert!(host_port >= 1 << 30);
        rig.send(guest_header(op::RESPONSE, 1024, host_port, 0), b"");
        let mut line = [0u8; 64];
        host.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let read = host.read(&mut line).expect("OK line");
        assert_eq!(
            std::str::from_utf8(&line[..read]).expect("text"),
            format!("OK {host_port}\n")
        );
        // A line that is not CONNECT gets nothing and no connection.
        let mut other = UnixStream::connect(&rig.socket).expect("connect");
        other.write_all(b"HELLO\n").expect("write");
        assert!(rig.receive().is_none());
        assert_eq!(rig.device.muxer.connection_count(), 1);
    }

    #[test]
    fn refused_and_reset_connections() {
        let memory = memory();
        let mut rig = Rig::new(&memory);
        // No listener on port 9999: the guest is reset.
        rig.send(guest_header(op::REQUEST, 6000, 9999, 0), b"");
        let reset = rig.receive().expect("rst");
        assert_eq!((reset.header.op, reset.header.dst_port), (op::RST, 6000));
        // The guest resets an open connection: the host sees EOF.
        let mut host = rig.guest_connection(1026, 4096);
        rig.send(guest_header(op::RST, 5000, 1026, 0), b"");
        assert_eq!(rig.device.muxer.connection_count(), 0);
        let mut byte = [0u8; 1];
        assert_eq!(host.read(&mut byte).expect("eof"), 0);
        // The host closes its end: the guest is told the stream is shut down.
        let host = rig.guest_connection(1027, 4096);
        drop(host);
        let shutdown = rig.receive().expect("shutdown");
        assert_eq!(shutdown.header.op, op::SHUTDOWN);
        assert_eq!(rig.device.muxer.connection_count(), 0);
        // Data for a connection that does not exist is answered with a reset.
        rig.send(guest_header(op::RW, 7000, 1028, 2), b"hi");
        assert_eq!(rig.receive().expect("rst").header.op, op::RST);
    }

    #[test]
    fn the_guest_gets_no_more_than_its_credit() {
        let memory = memory();
        let mut rig = Rig::new(&memory);
        let mut host = rig.guest_connection(1029, 8);
        host.write_all(&[7u8; 20]).expect("host writes");
        assert_eq!(rig.receive().expect("first").payload.len(), 8);
        assert!(rig.receive().is_none(), "no credit left");
        let mut update = guest_header(op::CREDIT_UPDATE, 5000, 1029, 0);
        update.buf_alloc = 8;
        update.fwd_cnt = 8;
        rig.send(update, b"");
        assert_eq!(rig.receive().expect("second").payload.len(), 8);
        update.fwd_cnt = 16;
        rig.send(update, b"");
        assert_eq!(rig.receive().expect("rest").payload.len(), 4);
        // A credit request is answered with the device's own credit.
        rig.send(guest_header(op::CREDIT_REQUEST, 5000, 1029, 0), b"");
        let answer = rig.receive().expect("credit update");
        assert_eq!(answer.header.op, op::CREDIT_UPDATE);
        assert_eq!(answer.header.buf_alloc, muxer::BUF_ALLOC);
    }

    #[test]
    fn malformed_transmit_chains_are_dropped_without_a_panic() {
        let memory = memory();
        let mut rig = Rig::new(&memory);
        let short = guest_header(op::REQUEST, 5000, 1030, 0).to_bytes();
        memory
            .write_slice(&short, GuestAddress(TX_BUFFER))
            .expect("write");
        rig.send_raw(&[desc(TX_BUFFER, 20, 0)]);
        rig.send_raw(&[desc(TX_BUFFER, 44, WRITE)]);
        let lying = guest_header(op::RW, 5000, 1030, 100).to_bytes();
        memory
            .write_slice(&lying, GuestAddress(TX_BUFFER))
            .expect("write");
        rig.send_raw(&[desc(TX_BUFFER, 54, 0)]);
        rig.send_raw(&[desc(0xFFFF_0000, 44, 0)]);
        assert!(rig.receive().is_none(), "nothing answered a dropped packet");
        assert_eq!(rig.device.muxer.connection_count(), 0);
        // The device still works.
        let _host = rig.guest_connection(1031, 4096);
    }
}
