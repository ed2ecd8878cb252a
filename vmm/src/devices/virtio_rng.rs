//! virtio-rng (Virtual I/O Device spec 1.2, 5.4): every device-writable buffer the guest
//! offers is filled from the host's getrandom(2). A chain with a device-readable buffer is not
//! a request and completes with nothing written.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemory, GuestMemoryMmap};

use super::virtio_mmio::{device_type, VirtioDevice};

/// The most one request gets, so a guest cannot make the VMM allocate without bound.
const MAX_REQUEST: usize = 64 * 1024;

fn random(buffer: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        let rest = &mut buffer[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which is valid.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        } else {
            filled += got as usize;
        }
    }
    Ok(())
}

/// Serves every available request; how many were completed.
pub fn fill_requests<Q: QueueT, M: GuestMemory>(queue: &mut Q, memory: &M) -> usize {
    let mut completed = 0;
    while let Some(chain) = queue.pop_descriptor_chain(memory) {
        let head = chain.head_index();
        let descriptors: Vec<_> = chain.collect();
        let written = if descriptors.iter().any(|d| !d.is_write_only()) {
            tracing::warn!(head, "virtio-rng request with a device-readable buffer");
            0
        } else {
            let mut written = 0u32;
            for descriptor in descriptors {
                let len = (descriptor.len() as usize).min(MAX_REQUEST - written as usize);
                let mut bytes = vec![0u8; len];
                if random(&mut bytes).is_err()
                    || memory.write_slice(&bytes, descriptor.addr()).is_err()
                {
                    break;
                }
                written += len as u32;
            }
            written
        };
        if let Err(err) = queue.add_used(memory, head, written) {
            tracing::warn!(error = %err, "virtio-rng used ring");
        }
        completed += 1;
    }
    completed
}

pub struct VirtioRng {
    queue_sizes: [u16; 1],
}

impl Default for VirtioRng {
    fn default() -> Self {
        Self { queue_sizes: [64] }
    }
}

impl VirtioDevice for VirtioRng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn process_queue(
        &mut self,
        index: u32,
        queues: &mut [Option<Queue>],
        memory: &GuestMemoryMmap,
    ) -> bool {
        crate::devices::virtio_mmio::live_queue(queues, index as usize)
            .is_some_and(|queue| fill_requests(queue, memory) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_queues::{desc, memory, WRITE};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    #[test]
    fn writable_buffers_are_filled_and_readable_ones_refused() {
        let memory = memory();
        let ring = MockSplitQueue::create(&memory, GuestAddress(0x8_0000), 16);
        ring.build_desc_chain(&[desc(0x1000, 256, WRITE), desc(0x2000, 256, WRITE)])
            .expect("chain");
        let mut queue: Queue = ring.create_queue().expect("queue");
        assert_eq!(fill_requests(&mut queue, &memory), 1);
        assert_eq!(
            ring.used().ring().ref_at(0).expect("used").load().len(),
            512
        );
        let mut bytes = [0u8; 256];
        memory
            .read_slice(&mut bytes, GuestAddress(0x2000))
            .expect("read");
        assert!(bytes.iter().any(|b| *b != 0), "random, not zeros");

        ring.build_desc_chain(&[desc(0x3000, 64, 0)])
            .expect("chain");
        assert_eq!(fill_requests(&mut queue, &memory), 1);
        assert_eq!(ring.used().ring().ref_at(1).expect("used").load().len(), 0);
        memory
            .read_slice(&mut bytes[..64], GuestAddress(0x3000))
            .expect("read");
        assert!(
            bytes[..64].iter().all(|b| *b == 0),
            "a readable buffer is left alone"
        );
    }
}
