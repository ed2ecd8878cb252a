//! virtio-blk requests (Virtual I/O Device spec 1.2, 5.2.6 "Device Operation") against a raw
//! file: a device-readable header (type, reserved, sector), data buffers, and a device-writable
//! status byte last. Reads, writes, flushes and GET_ID; a read-only device fails writes with
//! IOERR. A chain that does not have that shape is refused — reported, never a panic — and
//! completes with nothing written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Deref;

use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

pub const SECTOR_SIZE: u64 = 512;
const HEADER_BYTES: u32 = 16;
/// GET_ID answers at most this many bytes.
const ID_BYTES: usize = 20;

mod request_type {
    pub(super) const IN: u32 = 0;
    pub(super) const OUT: u32 = 1;
    pub(super) const FLUSH: u32 = 4;
    pub(super) const GET_ID: u32 = 8;
}

/// Status byte values.
pub mod status {
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
}

/// Feature bits (spec 5.2.3).
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the chain has no descriptors")]
    Empty,
    #[error("the request header must be a device-readable descriptor of at least 16 bytes")]
    BadHeader,
    #[error("the last descriptor must be a device-writable status byte")]
    NoStatus,
    #[error("a data buffer points outside guest memory")]
    BadBuffer,
    #[error("a {0} request's data buffers must be device-{1}")]
    WrongDirection(&'static str, &'static str),
}

/// The backing file of a block device.
pub struct BlockBackend {
    file: File,
    read_only: bool,
    sectors: u64,
    id: String,
}

impl BlockBackend {
    pub fn new(file: File, read_only: bool, id: &str) -> std::io::Result<Self> {
        let sectors = file.metadata()?.len() / SECTOR_SIZE;
        Ok(Self {
            file,
            read_only,
            sectors,
            id: id.to_owned(),
        })
    }

    /// The backing file's length now (what a request must never change).
    pub fn file_len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn features(&self) -> u64 {
        VIRTIO_BLK_F_FLUSH | if self.read_only { VIRTIO_BLK_F_RO } else { 0 }
    }

    /// Configuration space: capacity in 512-byte sectors first.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let capacity = self.sectors.to_le_bytes();
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = capacity.get(offset as usize + index).copied().unwrap_or(0);
        }
    }

    fn in_range(&self, sector: u64, bytes: u64) -> bool {
        sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|start| start.checked_add(bytes))
            .is_some_and(|end| end <= self.sectors * SECTOR_SIZE)
    }

    /// Executes one request; the number of bytes written into guest memory (data and status),
    /// as the used ring reports it.
    pub fn process<M>(&mut self, chain: DescriptorChain<M>) -> Result<u32, RequestError>
    where
        M: Deref + Clone,
        M::Target: GuestMemory,
    {
        let memory = chain.memory();
        let descriptors: Vec<_> = chain.clone().collect();
        let (header, rest) = descriptors.split_first().ok_or(RequestError::Empty)?;
        if header.is_write_only() || header.len() < HEADER_BYTES {
            return Err(RequestError::BadHeader);
        }
        let (status_desc, data) = rest.split_last().ok_or(RequestError::NoStatus)?;
        if !status_desc.is_write_only() || status_desc.len() < 1 {
            return Err(RequestError::NoStatus);
        }
        let mut header_bytes = [0u8; HEADER_BYTES as usize];
        memory
            .read_slice(&mut header_bytes, header.addr())
            .map_err(|_| RequestError::BadHeader)?;
        let kind = u32::from_le_bytes([
            header_bytes[0],
            header_bytes[1],
            header_bytes[2],
            header_bytes[3],
        ]);
        let sector = u64::from_le_bytes(header_bytes[8..16].try_into().expect("8 bytes"));
        let buffers: Vec<(GuestAddress, u32, bool)> = data
            .iter()
            .map(|d| (d.addr(), d.len(), d.is_write_only()))
            .collect();
        let (status, written) = match kind {
            request_type::IN => {
                if buffers.iter().any(|b| !b.2) {
                    return Err(RequestError::WrongDirection("read", "writable"));
                }
                self.read(memory, sector, &buffers)?
            }
            request_type::OUT => {
                if buffers.iter().any(|b| b.2) {
                    return Err(RequestError::WrongDirection("write", "readable"));
                }
                (self.write(memory, sector, &buffers)?, 0)
            }
            request_type::FLUSH => (
                if self.file.sync_all().is_ok() {
                    status::OK
                } else {
                    status::IOERR
                },
                0,
            ),
            request_type::GET_ID => {
                let mut id = [0u8; ID_BYTES];
                let bytes = self.id.as_bytes();
                id[..bytes.len().min(ID_BYTES)]
                    .copy_from_slice(&bytes[..bytes.len().min(ID_BYTES)]);
                let mut written = 0u32;
                let mut left: &[u8] = &id;
                for (address, len, writable) in &buffers {
                    if !writable || left.is_empty() {
                        continue;
                    }
                    let take = left.len().min(*len as usize);
                    memory
                        .write_slice(&left[..take], *address)
                        .map_err(|_| RequestError::BadBuffer)?;
                    left = &left[take..];
                    written += take as u32;
                }
                (status::OK, written)
            }
            _ => (status::UNSUPP, 0),
        };
        memory
            .write_obj(status, status_desc.addr())
            .map_err(|_| RequestError::BadBuffer)?;
        Ok(written + 1)
    }

    fn read<M: GuestMemory + ?Sized>(
        &mut self,
        memory: &M,
        sector: u64,
        buffers: &[(GuestAddress, u32, bool)],
    ) -> Result<(u8, u32), RequestError> {
        let total: u64 = buffers.iter().map(|b| u64::from(b.1)).sum();
        if !self.in_range(sector, total) {
            return Ok((status::IOERR, 0));
        }
        if self
            .file
            .seek(SeekFrom::Start(sector * SECTOR_SIZE))
            .is_err()
        {
            return Ok((status::IOERR, 0));
        }
        let mut written = 0u32;
        for (address, len, _) in buffers {
            let mut bytes = vec![0u8; *len as usize];
            if self.file.read_exact(&mut bytes).is_err() {
                return Ok((status::IOERR, written));
            }
            memory
                .write_slice(&bytes, *address)
                .map_err(|_| RequestError::BadBuffer)?;
            written += len;
        }
        Ok((status::OK, written))
    }

    fn write<M: GuestMemory + ?Sized>(
        &mut self,
        memory: &M,
        sector: u64,
        buffers: &[(GuestAddress, u32, bool)],
    ) -> Result<u8, RequestError> {
        if self.read_only {
            return Ok(status::IOERR);
        }
        let total: u64 = buffers.iter().map(|b| u64::from(b.1)).sum();
        if !self.in_range(sector, total) {
            return Ok(status::IOERR);
        }
        let mut data = Vec::with_capacity(total as usize);
        for (address, len, _) in buffers {
            let mut bytes = vec![0u8; *len as usize];
            memory
                .read_slice(&mut bytes, *address)
                .map_err(|_| RequestError::BadBuffer)?;
            data.extend(bytes);
        }
        let done = self
            .file
            .seek(SeekFrom::Start(sector * SECTOR_SIZE))
            .and_then(|_| self.file.write_all(&data));
        Ok(if done.is_ok() {
            status::OK
        } else {
            status::IOERR
        })
    }

    /// Serves every available request of `queue`; how many were completed. Refused chains
    /// complete with length 0 and are logged.
    pub fn process_queue<Q: QueueT, M: GuestMemory>(&mut self, queue: &mut Q, memory: &M) -> usize {
        let mut completed = 0;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let used = match self.process(chain) {
                Ok(len) => len,
                Err(err) => {
                    tracing::warn!(error = %err, head, "refused virtio-blk request");
                    0
                }
            };
            if let Err(err) = queue.add_used(memory, head, used) {
                tracing::warn!(error = %err, head, "virtio-blk used ring");
            }
            completed += 1;
        }
        completed
    }
}

/// virtio-blk on the MMIO transport: one request queue.
pub struct VirtioBlock {
    backend: BlockBackend,
    queue_sizes: [u16; 1],
}

impl VirtioBlock {
    pub fn new(backend: BlockBackend) -> Self {
        Self {
            backend,
            queue_sizes: [256],
        }
    }
}

impl super::virtio_mmio::VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u32 {
        super::virtio_mmio::device_type::BLOCK
    }
    fn features(&self) -> u64 {
        self.backend.features()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.backend.read_config(offset, data);
    }
    fn process_queue(
        &mut self,
        index: u32,
        queues: &mut [Option<virtio_queue::Queue>],
        memory: &vm_memory::GuestMemoryMmap,
    ) -> bool {
        crate::devices::virtio_mmio::live_queue(queues, index as usize)
            .is_some_and(|queue| self.backend.process_queue(queue, memory) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_queues::{desc, memory, WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::GuestMemoryMmap;

    fn backend(sectors: u64, read_only: bool) -> (tempfile::NamedTempFile, BlockBackend) {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        file.as_file().set_len(sectors * SECTOR_SIZE).expect("size");
        let handle = file.reopen().expect("reopen");
        (
            file,
            BlockBackend::new(handle, read_only, "cloak-disk-0").expect("backend"),
        )
    }

    fn header(memory: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&kind.to_le_bytes());
        bytes[8..].copy_from_slice(&sector.to_le_bytes());
        memory
            .write_slice(&bytes, GuestAddress(at))
            .expect("header");
    }

    /// Runs one chain through a real split queue in guest memory; (used length, status).
    fn run(
        backend: &mut BlockBackend,
        memory: &GuestMemoryMmap,
        chain: &[RawDescriptor],
    ) -> (u32, u8) {
        let queue_memory = MockSplitQueue::create(memory, GuestAddress(0x8_0000), 16);
        queue_memory.build_desc_chain(chain).expect("chain");
        let mut queue: Queue = queue_memory.create_queue().expect("queue");
        assert_eq!(backend.process_queue(&mut queue, memory), 1);
        let used = queue_memory.used().ring().ref_at(0).expect("used").load();
        let status: u8 = memory.read_obj(GuestAddress(0x3000)).expect("status");
        (used.len(), status)
    }

    #[test]
    fn writes_read_back_and_flush_succeeds() {
        let memory = memory();
        let (_file, mut backend) = backend(8, false);
        let data: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
        memory
            .write_slice(&data, GuestAddress(0x1000))
            .expect("data");
        header(&memory, 0x100, request_type::OUT, 2);
        let (used, status) = run(
            &mut backend,
            &memory,
            &[
                desc(0x100, 16, 0),
                desc(0x1000, 1024, 0),
                desc(0x3000, 1, WRITE),
            ],
        );
        assert_eq!((used, status), (1, status::OK));

        header(&memory, 0x100, request_type::IN, 2);
        let (used, status) = run(
            &mut backend,
            &memory,
            &[
                desc(0x100, 16, 0),
                desc(0x5000, 512, WRITE),
                desc(0x5200, 512, WRITE),
                desc(0x3000, 1, WRITE),
            ],
        );
        assert_eq!((used, status), (1025, status::OK));
        let mut back = vec![0u8; 1024];
        memory
            .read_slice(&mut back, GuestAddress(0x5000))
            .expect("read");
        assert_eq!(back, data);

        header(&memory, 0x100, request_type::FLUSH, 0);
        let (_, status) = run(
            &mut backend,
            &memory,
            &[desc(0x100, 16, 0), desc(0x3000, 1, WRITE)],
        );
        assert_eq!(status, status::OK);

        header(&memory, 0x100, request_type::GET_ID, 0);
        let (used, status) = run(
            &mut backend,
            &memory,
            &[
                desc(0x100, 16, 0),
                desc(0x6000, 20, WRITE),
                desc(0x3000, 1, WRITE),
            ],
        );
        assert_eq!((used, status), (21, status::OK));
        let mut id = [0u8; 12];
        memory
            .read_slice(&mut id, GuestAddress(0x6000))
            .expect("id");
        assert_eq!(&id, b"cloak-disk-0");
    }

    #[test]
    fn a_read_only_device_refuses_writes_and_says_so_in_its_features() {
        let memory = memory();
        let (file, mut backend) = backend(4, true);
        assert_ne!(backend.features() & VIRTIO_BLK_F_RO, 0);
        memory
            .write_slice(&[0xAA; 512], GuestAddress(0x1000))
            .expect("data");
        header(&memory, 0x100, request_type::OUT, 0);
        let (_, status) = run(
            &mut backend,
            &memory,
            &[
                desc(0x100, 16, 0),
                desc(0x1000, 512, 0),
                desc(0x3000, 1, WRITE),
            ],
        );
        assert_eq!(status, status::IOERR);
        let on_disk = std::fs::read(file.path()).expect("read");
        assert!(on_disk.iter().all(|b| *b == 0), "nothing was written");
    }

    #[test]
    fn out_of_range_and_unknown_requests_get_error_statuses() {
        let memory = memory();
        let (_file, mut backend) = backend(4, false);
        let mut capacity = [0u8; 8];
        backend.read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), 4);
        header(&memory, 0x100, request_type::IN, 4);
        let (_, status) = run(
            &mut backend,
            &memory,
            &[
                desc(0x100, 16, 0),
                desc(0x5000, 512, WRITE),
                desc(0x3000, 1, WRITE),
            ],
        );
        assert_eq!(status, status::IOERR);
        header(&memory, 0x100, request_type::IN, u64::MAX / 2);
        let (_, status) = run(
            &mut backend,
            &memory,
            &[
                desc(0x100, 16, 0),
                desc(0x5000, 512, WRITE),
                desc(0x3000, 1, WRITE),
            ],
        );
        assert_eq!(status, status::IOERR, "no overflow");
        header(&memory, 0x100, 99, 0);
        let (_, status) = run(
            &mut backend,
            &memory,
            &[desc(0x100, 16, 0), desc(0x3000, 1, WRITE)],
        );
        assert_eq!(status, status::UNSUPP);
    }

    #[test]
    fn malformed_chains_are_refused_without_a_panic() {
        let memory = memory();
        let (_file, mut backend) = backend(4, false);
        header(&memory, 0x100, request_type::IN, 0);
        let cases: Vec<(&str, Vec<RawDescriptor>)> = vec![
            ("header only", vec![desc(0x100, 16, 0)]),
            (
                "short header",
                vec![desc(0x100, 8, 0), desc(0x3000, 1, WRITE)],
            ),
            (
                "writable header",
                vec![desc(0x100, 16, WRITE), desc(0x3000, 1, WRITE)],
            ),
            (
                "read-only status",
                vec![desc(0x100, 16, 0), desc(0x3000, 1, 0)],
            ),
            (
                "read into a readable buffer",
                vec![
                    desc(0x100, 16, 0),
                    desc(0x5000, 512, 0),
                    desc(0x3000, 1, WRITE),
                ],
            ),
            (
                "buffer outside memory",
                vec![
                    desc(0x100, 16, 0),
                    desc(0xFFFF_0000, 512, WRITE),
                    desc(0x3000, 1, WRITE),
                ],
            ),
        ];
        for (what, chain) in cases {
            memory
                .write_obj(0xEEu8, GuestAddress(0x3000))
                .expect("marker");
            let (used, _) = run(&mut backend, &memory, &chain);
            assert_eq!(used, 0, "{what}: completed with nothing written");
        }
    }
}
