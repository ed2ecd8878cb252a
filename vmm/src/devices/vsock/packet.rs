//! virtio-vsock packets (Virtual I/O Device spec 1.2, 5.10.6 "Device Operation"): a 44-byte
//! little-endian header, then `len` bytes of payload. The guest's transmit chains are read
//! (device-readable descriptors only), receive chains written (device-writable only).

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemory;

use crate::devices::chain_io::{read_chain, write_chain, ChainError};

pub const HEADER_BYTES: usize = 44;
/// The largest payload the device accepts or produces in one packet.
pub const MAX_PAYLOAD: usize = 64 * 1024;
pub const HOST_CID: u64 = 2;
pub const TYPE_STREAM: u16 = 1;

pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flags: the sender will receive / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    pub header: Header,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("the chain holds {0} bytes, less than a packet header")]
    ShortHeader(usize),
    #[error("the header says {said} payload bytes, the chain has {has}")]
    ShortPayload { said: u32, has: usize },
    #[error("a payload of {0} bytes is larger than the device accepts")]
    TooLarge(u32),
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.len.to_le_bytes());
        bytes[28..30].copy_from_slice(&self.kind.to_le_bytes());
        bytes[30..32].copy_from_slice(&self.op.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.flags.to_le_bytes());
        bytes[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        bytes[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        bytes
    }

    pub fn from_bytes(bytes: &[u8; HEADER_BYTES]) -> Self {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2"));
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

/// The packet a guest transmit chain carries.
pub fn read_packet<M>(chain: DescriptorChain<M>) -> Result<Packet, PacketError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let bytes = read_chain(chain, HEADER_BYTES + MAX_PAYLOAD)?;
    let header: &[u8; HEADER_BYTES] = bytes
        .get(..HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or(PacketError::ShortHeader(bytes.len()))?;
    let header = Header::from_bytes(header);
    if header.len as usize > MAX_PAYLOAD {
        return Err(PacketError::TooLarge(header.len));
    }
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() < header.len as usize {
        return Err(PacketError::ShortPayload {
            said: header.len,
            has: payload.len(),
        });
    }
    Ok(Packet {
        header,
        payload: payload[..header.len as usize].to_vec(),
    })
}

/// Writes `packet` into a guest receive chain; the bytes written.
pub fn write_packet<M>(chain: DescriptorChain<M>, packet: &Packet) -> Result<u32, PacketError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mut bytes = packet.header.to_bytes().to_vec();
    bytes.extend_from_slice(&packet.payload);
    Ok(write_chain(chain, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_at_their_offsets() {
        let header = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234,
            dst_port: 1024,
            len: 5,
            kind: TYPE_STREAM,
            op: op::RW,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 77,
        };
        let bytes = header.to_bytes();
        assert_eq!(&bytes[20..24], &1024u32.to_le_bytes());
        assert_eq!(&bytes[30..32], &5u16.to_le_bytes());
        assert_eq!(Header::from_bytes(&bytes), header);
    }
}
