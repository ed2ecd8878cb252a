//! The virtio-mmio register window as a hostile guest drives it: any sequence of reads and
//! writes at any offset, in any order — feature selection, queue setup with ring addresses
//! anywhere, status changes, notifies of any queue — against cloak-vmm's transport with a
//! real device behind it: virtio-fs (the vhost-user frontend, whose backend here is a
//! stand-in speaking the vhost-user protocol, since virtiofsd's own data path is not cloak's
//! code) or virtio-rng (whose queue the VMM itself walks).
//!
//! The oracle is the virtio-mmio layout (spec 1.2 section 4.2.2), not the transport's code:
//! the identity registers read the same whatever the guest did, and the virtio-fs config
//! space holds the tag the VMM was given.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};

use cloak_vmm::bus::BusDevice as _;
use cloak_vmm::devices::vhost_user_fs::VhostUserFs;
use cloak_vmm::devices::virtio_mmio::{MmioTransport, VirtioDevice};
use cloak_vmm::devices::virtio_rng::VirtioRng;
use cloak_vmm::memory::GuestRam;

/// Register offsets of the virtio-mmio layout the seeds and the oracle use.
pub(crate) mod register {
    pub(crate) const MAGIC: u16 = 0x000;
    pub(crate) const VERSION: u16 = 0x004;
    pub(crate) const DEVICE_ID: u16 = 0x008;
    pub(crate) const DRIVER_FEATURES: u16 = 0x020;
    pub(crate) const DRIVER_FEATURES_SEL: u16 = 0x024;
    pub(crate) const QUEUE_SEL: u16 = 0x030;
    pub(crate) const QUEUE_NUM: u16 = 0x038;
    pub(crate) const QUEUE_READY: u16 = 0x044;
    pub(crate) const QUEUE_NOTIFY: u16 = 0x050;
    pub(crate) const STATUS: u16 = 0x070;
    pub(crate) const QUEUE_DESC_LOW: u16 = 0x080;
    pub(crate) const QUEUE_DRIVER_LOW: u16 = 0x090;
    pub(crate) const QUEUE_DEVICE_LOW: u16 = 0x0a0;
    pub(crate) const CONFIG: u16 = 0x100;
}

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;
const FS_DEVICE_ID: u32 = 26;
const RNG_DEVICE_ID: u32 = 4;
const TAG: &str = "cloak-rootfs";
/// Bytes of one operation: kind, offset (2), value (4).
pub(crate) const OP_BYTES: usize = 7;

/// One guest access: `kind` even writes `value` (4 bytes), odd reads 1, 2, 4 or 8 bytes.
pub(crate) fn op(kind: u8, offset: u16, value: u32) -> [u8; OP_BYTES] {
    let mut bytes = [0u8; OP_BYTES];
    bytes[0] = kind;
    bytes[1..3].copy_from_slice(&offset.to_le_bytes());
    bytes[3..].copy_from_slice(&value.to_le_bytes());
    bytes
}

/// The input: the first byte picks the device (even: virtio-fs, odd: virtio-rng), then
/// operations of `OP_BYTES` each.
pub(crate) fn mmio_transport(data: &[u8]) {
    let Some((&device, ops)) = data.split_first() else {
        return;
    };
    let Ok(ram) = GuestRam::new(2) else {
        return;
    };
    let (backend, expected_id): (Box<dyn VirtioDevice>, u32) = if device % 2 == 0 {
        let Some(fs) = virtio_fs() else {
            return;
        };
        (Box::new(fs.0), FS_DEVICE_ID)
    } else {
        (Box::new(VirtioRng::default()), RNG_DEVICE_ID)
    };
    let mut transport = MmioTransport::with_memory(backend, Some(ram.memory.clone()));
    for chunk in ops.chunks_exact(OP_BYTES).take(256) {
        let offset = u64::from(u16::from_le_bytes([chunk[1], chunk[2]]) % 0x200);
        if chunk[0] % 2 == 0 {
            transport.write(offset, &chunk[3..7]);
        } else {
            let width = [1, 2, 4, 8][usize::from(chunk[0] / 2 % 4)];
            let mut out = vec![0u8; width];
            transport.read(offset, &mut out);
        }
        transport.poll_host();
    }
    assert_eq!(read_u32(&mut transport, register::MAGIC), MAGIC);
    assert_eq!(read_u32(&mut transport, register::VERSION), 2);
    assert_eq!(read_u32(&mut transport, register::DEVICE_ID), expected_id);
    if expected_id == FS_DEVICE_ID {
        let mut tag = [0u8; 36];
        transport.read(u64::from(register::CONFIG), &mut tag);
        assert_eq!(&tag[..TAG.len()], TAG.as_bytes(), "the virtio-fs tag");
        assert!(tag[TAG.len()..].iter().all(|b| *b == 0));
    }
}

fn read_u32(transport: &mut MmioTransport, offset: u16) -> u32 {
    let mut bytes = [0u8; 4];
    transport.read(u64::from(offset), &mut bytes);
    u32::from_le_bytes(bytes)
}

/// The frontend connected to a stand-in backend (its thread ends when the frontend hangs up).
fn virtio_fs() -> Option<(VhostUserFs, tempfile::TempDir)> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("fs.sock");
    let listener = UnixListener::bind(&path).ok()?;
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            serve_vhost_user(stream);
        }
    });
    let fs = VhostUserFs::connect(&path, TAG).ok()?;
    Some((fs, dir))
}

/// vhost-user requests the stand-in answers; the rest it takes without a word.
mod request {
    pub(super) const GET_FEATURES: u32 = 1;
    pub(super) const GET_VRING_BASE: u32 = 11;
    pub(super) const GET_PROTOCOL_FEATURES: u32 = 15;
    pub(super) const GET_QUEUE_NUM: u32 = 17;
}
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
/// VIRTIO_F_VERSION_1 and VHOST_USER_F_PROTOCOL_FEATURES.
const BACKEND_FEATURES: u64 = (1 << 32) | (1 << 30);
/// MQ and REPLY_ACK.
const BACKEND_PROTOCOL_FEATURES: u64 = 0x1 | 0x8;

/// Reads vhost-user messages (header: request, flags, size; then the payload; descriptors
/// sent along are dropped) and answers the GETs and every NEED_REPLY, as virtiofsd would.
fn serve_vhost_user(mut stream: UnixStream) {
    let mut header = [0u8; 12];
    while stream.read_exact(&mut header).is_ok() {
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let (request, flags, size) = (word(0), word(4), word(8));
        let mut payload = vec![0u8; size.min(4096) as usize];
        if stream.read_exact(&mut payload).is_err() {
            return;
        }
        let answer: Option<Vec<u8>> = match request {
            request::GET_FEATURES => Some(BACKEND_FEATURES.to_le_bytes().to_vec()),
            request::GET_PROTOCOL_FEATURES => {
                Some(BACKEND_PROTOCOL_FEATURES.to_le_bytes().to_vec())
            }
            request::GET_QUEUE_NUM => Some(2u64.to_le_bytes().to_vec()),
            // struct vhost_vring_state: index, num.
            request::GET_VRING_BASE => Some(payload.get(..4).unwrap_or(&[0; 4]).repeat(2)),
            _ if flags & FLAG_NEED_REPLY != 0 => Some(0u64.to_le_bytes().to_vec()),
            _ => None,
        };
        if let Some(body) = answer {
            let mut reply = Vec::with_capacity(12 + body.len());
            reply.extend_from_slice(&request.to_le_bytes());
            reply.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
            reply.extend_from_slice(&(body.len() as u32).to_le_bytes());
            reply.extend_from_slice(&body);
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

/// A driver's whole bring-up of `device` (0 virtio-fs, 1 virtio-rng): features, queue 0
/// (and 1 for virtio-fs) laid out in RAM, DRIVER_OK, then a notify of each queue — what the
/// seeds start from, so mutants reach activation and the queue paths.
pub(crate) fn bring_up_seed(device: u8) -> Vec<u8> {
    use register::*;
    let mut seed = vec![device];
    let mut push =
        |kind: u8, offset: u16, value: u32| seed.extend_from_slice(&op(kind, offset, value));
    push(1, MAGIC, 0);
    push(0, STATUS, 1); // ACKNOWLEDGE
    push(0, STATUS, 3); // DRIVER
    push(0, DRIVER_FEATURES_SEL, 1);
    push(0, DRIVER_FEATURES, 1); // VIRTIO_F_VERSION_1 (bit 32)
    push(0, STATUS, 11); // FEATURES_OK
    let queues: u16 = if device == 0 { 2 } else { 1 };
    for queue in 0..queues {
        let base = 0x1_0000 + u32::from(queue) * 0x1_0000;
        push(0, QUEUE_SEL, u32::from(queue));
        push(0, QUEUE_NUM, 16);
        push(0, QUEUE_DESC_LOW, base);
        push(0, QUEUE_DRIVER_LOW, base + 0x1000);
        push(0, QUEUE_DEVICE_LOW, base + 0x2000);
        push(0, QUEUE_READY, 1);
    }
    push(0, STATUS, 15); // DRIVER_OK
    for queue in 0..queues {
        push(0, QUEUE_NOTIFY, u32::from(queue));
    }
    push(1, CONFIG, 0);
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bring_up_activates_the_virtio_fs_backend() {
        // Activation sends SET_MEM_TABLE and the SET_VRING_*s, each acknowledged (REPLY_ACK):
        // a failed one would set DEVICE_NEEDS_RESET. So the seed reaches the backend path.
        let (fs, _dir) = virtio_fs().expect("the stand-in backend");
        let ram = GuestRam::new(2).expect("ram");
        let mut transport = MmioTransport::with_memory(Box::new(fs), Some(ram.memory.clone()));
        let seed = bring_up_seed(0);
        for chunk in seed[1..].chunks_exact(OP_BYTES) {
            let offset = u64::from(u16::from_le_bytes([chunk[1], chunk[2]]));
            if chunk[0] % 2 == 0 {
                transport.write(offset, &chunk[3..7]);
            }
        }
        assert_eq!(transport.status() & 0x40, 0, "activation failed");
        assert_eq!(transport.status() & 0xf, 15);
        assert_eq!(read_u32(&mut transport, register::DEVICE_ID), FS_DEVICE_ID);
    }
}
