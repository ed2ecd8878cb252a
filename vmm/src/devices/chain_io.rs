//! Moving bytes through a virtio descriptor chain, the way every device here does it: a
//! driver-to-device chain is read as one byte string (device-writable descriptors are a
//! malformed request), a device-to-driver chain is filled across its writable descriptors.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemory};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("a driver-to-device chain holds a device-writable descriptor")]
    WritableInRequest,
    #[error("a receive buffer of {has} bytes cannot hold {needs} bytes")]
    NoRoom { needs: usize, has: usize },
    #[error("a descriptor points outside guest memory")]
    BadBuffer,
}

/// The bytes of a driver-to-device chain, at most `max` of them.
pub fn read_chain<M>(chain: DescriptorChain<M>, max: usize) -> Result<Vec<u8>, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let memory = chain.memory();
    let mut bytes = Vec::new();
    for descriptor in chain.clone() {
        if descriptor.is_write_only() {
            return Err(ChainError::WritableInRequest);
        }
        let take = (descriptor.len() as usize).min(max.saturating_sub(bytes.len()));
        let mut part = vec![0u8; take];
        memory
            .read_slice(&mut part, descriptor.addr())
            .map_err(|_| ChainError::BadBuffer)?;
        bytes.extend(part);
    }
    Ok(bytes)
}

/// Room in a device-to-driver chain.
pub fn writable_room<M>(chain: &DescriptorChain<M>) -> usize
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    chain
        .clone()
        .filter(|d| d.is_write_only())
        .map(|d| d.len() as usize)
        .sum()
}

/// Writes `bytes` across the writable descriptors of `chain`; the bytes written.
pub fn write_chain<M>(chain: DescriptorChain<M>, bytes: &[u8]) -> Result<u32, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let room = writable_room(&chain);
    if room < bytes.len() {
        return Err(ChainError::NoRoom {
            needs: bytes.len(),
            has: room,
        });
    }
    let memory = chain.memory();
    let mut left = bytes;
    for descriptor in chain.clone().filter(|d| d.is_write_only()) {
        if left.is_empty() {
            break;
        }
        let take = left.len().min(descriptor.len() as usize);
        memory
            .write_slice(&left[..take], descriptor.addr())
            .map_err(|_| ChainError::BadBuffer)?;
        left = &left[take..];
    }
    Ok(bytes.len() as u32)
}
