//! What the device unit tests share: guest memory for the queues and descriptors to chain.

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// VRING_DESC_F_WRITE: the device writes this buffer.
pub(crate) const WRITE: u16 = 2;

/// 1 MiB of guest memory from address 0.
pub(crate) fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("memory")
}

/// One descriptor; MockSplitQueue::build_desc_chain links them.
pub(crate) fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
}
