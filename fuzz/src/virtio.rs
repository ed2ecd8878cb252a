//! The virtio paths a hostile guest drives in cloak-vmm: the guest writes a descriptor table
//! and an available ring into its memory, and the device walks whatever chain it finds. The
//! input is the guest's: a head index, up to 16 descriptors (address, length, flags — NEXT,
//! WRITE, INDIRECT — and next index, all unchecked) and the bytes of guest memory behind them.
//! The device code must refuse bad chains with an error, never panic or read outside memory.

use cloak_vmm::devices::chain_io::{read_chain, writable_room, write_chain};
use cloak_vmm::devices::vsock::packet::{read_packet, write_packet};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::DescriptorChain;
use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory: 1 MiB, the ring at 512 KiB, data from 4 KiB.
const MEMORY: u64 = 0x10_0000;
const RING: u64 = 0x8_0000;
const DATA: u64 = 0x1000;
const QUEUE_SIZE: u16 = 16;
const DESCRIPTOR_BYTES: usize = 16;

/// Reads descriptor `index` of the input: address (a little past memory's end at most),
/// length, flags, next.
fn descriptor(bytes: &[u8]) -> RawDescriptor {
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let address = u64_at(0) % (MEMORY + 0x2000);
    let length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) % 0x2_0000;
    let flags = u16::from_le_bytes([bytes[12], bytes[13]]) & 0x7;
    let next = u16::from_le_bytes([bytes[14], bytes[15]]) % (QUEUE_SIZE + 4);
    RawDescriptor::from(SplitDescriptor::new(address, length, flags, next))
}

/// Lays the guest's ring out as the input says; `None` for inputs too short to say.
fn guest_ring(data: &[u8]) -> Option<(GuestMemoryMmap, Queue)> {
    let (&head, rest) = data.split_first()?;
    let (&count, rest) = rest.split_first()?;
    let count = usize::from(count % (QUEUE_SIZE as u8)) + 1;
    let table = rest.get(..count * DESCRIPTOR_BYTES)?;
    let payload = &rest[count * DESCRIPTOR_BYTES..];
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY as usize)]).ok()?;
    memory.write_slice(payload, GuestAddress(DATA)).ok()?;
    let ring = MockSplitQueue::create(&memory, GuestAddress(RING), QUEUE_SIZE);
    for (index, bytes) in table.chunks_exact(DESCRIPTOR_BYTES).enumerate() {
        ring.desc_table()
            .store(u16::try_from(index).ok()?, descriptor(bytes))
            .ok()?;
    }
    ring.avail()
        .ring()
        .ref_at(0)
        .ok()?
        .store(u16::to_le(u16::from(head) % (QUEUE_SIZE + 2)));
    ring.avail().idx().store(u16::to_le(1));
    let queue: Queue = ring.create_queue().ok()?;
    Some((memory, queue))
}

/// Walks the first chain of the ring the input lays out, if it lays one out.
fn with_first_chain(data: &[u8], walk: impl FnOnce(DescriptorChain<&GuestMemoryMmap>)) {
    let Some((memory, mut queue)) = guest_ring(data) else {
        return;
    };
    if let Some(chain) = queue
        .iter(&memory)
        .ok()
        .and_then(|mut chains| chains.next())
    {
        walk(chain);
    }
}

/// A transmit chain read as a vsock packet, and as plain bytes.
pub(crate) fn vsock_tx(data: &[u8]) {
    with_first_chain(data, |chain| {
        let _ = read_chain(chain.clone(), 1 << 16);
        if let Ok(packet) = read_packet(chain) {
            assert!(packet.payload.len() == packet.header.len as usize);
        }
    });
}

/// A receive chain the device writes a packet (and plain bytes) into.
pub(crate) fn vsock_rx(data: &[u8]) {
    with_first_chain(data, |chain| {
        let room = writable_room(&chain);
        if let Ok(written) = write_chain(chain.clone(), &[0x5a; 300]) {
            assert!(
                written as usize <= room.min(300),
                "{written} written, room {room}"
            );
        }
        let packet = cloak_vmm::devices::vsock::packet::Packet {
            header: cloak_vmm::devices::vsock::packet::Header::from_bytes(&[1; 44]),
            payload: vec![7; 64],
        };
        let _ = write_packet(chain, &packet);
    });
}

/// A block request chain executed against a small disk: the device answers with a status
/// and never writes more into guest memory than the chain's writable room, nor beyond the
/// disk (its length does not change).
pub(crate) fn block_request(data: &[u8]) {
    use cloak_vmm::devices::virtio_block::{BlockBackend, SECTOR_SIZE};
    const SECTORS: u64 = 8;
    let Ok(file) = tempfile::tempfile() else {
        return;
    };
    if file.set_len(SECTORS * SECTOR_SIZE).is_err() {
        return;
    }
    let read_only = data.first().is_some_and(|b| b & 0x80 != 0);
    let Ok(mut backend) = BlockBackend::new(file, read_only, "fuzz-disk") else {
        return;
    };
    with_first_chain(data, |chain| {
        let room = writable_room(&chain);
        if let Ok(written) = backend.process(chain) {
            assert!(written as usize <= room, "{written} written, room {room}");
        }
    });
    let length = backend.file_len().unwrap_or(0);
    assert_eq!(length, SECTORS * SECTOR_SIZE, "a request resized the disk");
}

/// What a host process writes to the VM's vsock socket before `CONNECT <port>\n` is
/// answered: the muxer asks the guest (REQUEST to that port, from the host CID) for a
/// well-formed line, and for a line that is not one — none within 65 bytes, or no CONNECT
/// in it — asks nothing.
pub(crate) fn vsock_connect_line(data: &[u8]) {
    use cloak_vmm::devices::vsock::muxer::Muxer;
    use cloak_vmm::devices::vsock::packet::{op, HOST_CID, TYPE_STREAM};
    use std::io::Write as _;
    const GUEST_CID: u64 = 3;
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("vm.vsock");
    let Ok(mut muxer) = Muxer::new(GUEST_CID, &path) else {
        return;
    };
    let Ok(mut host) = std::os::unix::net::UnixStream::connect(&path) else {
        return;
    };
    let _ = host.write_all(data);
    let _ = host.shutdown(std::net::Shutdown::Write);
    muxer.poll_host();
    let request = muxer.next_for_guest(4096);

    let line = data
        .iter()
        .position(|b| *b == b'\n')
        .filter(|end| *end <= 64)
        .map(|end| &data[..end]);
    let well_formed = line.and_then(|line| {
        let port = line.strip_prefix(b"CONNECT ")?;
        let digits = port.iter().all(u8::is_ascii_digit) && !port.is_empty() && port.len() <= 9;
        digits.then(|| String::from_utf8_lossy(port).parse::<u32>().ok())?
    });
    match request {
        Some(packet) => {
            let line = line.unwrap_or_else(|| panic!("a REQUEST for {data:?}, no line"));
            assert!(
                String::from_utf8_lossy(line).contains("CONNECT"),
                "a REQUEST for {line:?}"
            );
            let header = packet.header;
            assert_eq!(
                (header.op, header.kind, header.src_cid, header.dst_cid),
                (op::REQUEST, TYPE_STREAM, HOST_CID, GUEST_CID)
            );
            if let Some(port) = well_formed {
                assert_eq!(header.dst_port, port, "the port of {line:?}");
            }
            assert!(packet.payload.is_empty());
        }
        None => assert!(well_formed.is_none(), "no REQUEST for {data:?}"),
    }
}

/// A well-formed ring for the seeds: `descriptors` as (address, length, flags, next), then
/// `payload` at the data address.
pub(crate) fn seed(descriptors: &[(u64, u32, u16, u16)], payload: &[u8]) -> Vec<u8> {
    let mut seed = vec![
        0,
        u8::try_from(descriptors.len().saturating_sub(1)).unwrap_or(0),
    ];
    for (address, length, flags, next) in descriptors {
        seed.extend_from_slice(&address.to_le_bytes());
        seed.extend_from_slice(&length.to_le_bytes());
        seed.extend_from_slice(&flags.to_le_bytes());
        seed.extend_from_slice(&next.to_le_bytes());
    }
    seed.extend_from_slice(payload);
    seed
}

/// The data address seeds point their buffers at.
pub(crate) const SEED_DATA: u64 = DATA;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_ring_is_walked_as_a_guest_laid_it_out() {
        let mut header = [0u8; 44];
        header[24..28].copy_from_slice(&5u32.to_le_bytes());
        let mut payload = header.to_vec();
        payload.extend_from_slice(b"hello");
        let tx = seed(&[(DATA, 44, 1, 1), (DATA + 44, 5, 0, 0)], &payload);
        let (memory, mut queue) = guest_ring(&tx).expect("a ring");
        let chain = queue.iter(&memory).expect("iter").next().expect("a chain");
        let packet = read_packet(chain).expect("a packet");
        assert_eq!(packet.payload, b"hello");

        let rx = seed(&[(DATA, 44, 3, 1), (DATA + 0x1000, 256, 2, 0)], &[]);
        let (memory, mut queue) = guest_ring(&rx).expect("a ring");
        let chain = queue.iter(&memory).expect("iter").next().expect("a chain");
        assert_eq!(writable_room(&chain), 300);
        assert_eq!(write_chain(chain, &[1; 300]).expect("written"), 300);
    }
}
