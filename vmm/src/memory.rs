//! Guest RAM: memfd-backed, so vhost-user backends (virtiofsd, vhost-device-vsock) can map the
//! same pages the guest uses. The PC layout's legacy hole (640 KiB to 1 MiB) is left unmapped:
//! accesses there exit to the VMM, where low MMIO devices live.

use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("creating the guest memory file: {0}")]
    Memfd(std::io::Error),
    #[error("sizing the guest memory file to {bytes} bytes: {source}")]
    Size { bytes: u64, source: std::io::Error },
    #[error("mapping guest memory: {0}")]
    Map(String),
}

/// The legacy hole: VGA memory and option ROMs on a PC; unmapped here.
pub const LEGACY_HOLE_START: u64 = 0xA_0000;
pub const LEGACY_HOLE_END: u64 = 0x10_0000;

/// Guest RAM and the file behind it.
pub struct GuestRam {
    pub memory: GuestMemoryMmap,
    pub file: File,
    pub bytes: u64,
}

impl GuestRam {
    /// `mib` MiB of RAM from guest address 0, without the legacy hole.
    pub fn new(mib: u32) -> Result<Self, MemoryError> {
        let bytes = u64::from(mib) << 20;
        // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
        let raw = unsafe { libc::memfd_create(c"cloak-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
        }
        // SAFETY: memfd_create returned a new descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(raw) };
        file.set_len(bytes)
            .map_err(|source| MemoryError::Size { bytes, source })?;
        let mut ranges = Vec::new();
        for (start, end) in [(0, LEGACY_HOLE_START.min(bytes)), (LEGACY_HOLE_END, bytes)] {
            if start < end {
                let shared = file
                    .try_clone()
                    .map_err(|source| MemoryError::Size { bytes, source })?;
                ranges.push((
                    GuestAddress(start),
                    (end - start) as usize,
                    Some(FileOffset::new(shared, start)),
                ));
            }
        }
        let memory = GuestMemoryMmap::from_ranges_with_files(ranges)
            .map_err(|err| MemoryError::Map(err.to_string()))?;
        Ok(Self {
            memory,
            file,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn ram_is_backed_by_its_file() {
        use std::io::{Read, Seek};
        let ram = GuestRam::new(2).expect("ram");
        ram.memory
            .write_slice(b"cloak", GuestAddress(0x1000))
            .expect("write");
        let mut file = ram.file.try_clone().expect("clone");
        file.seek(std::io::SeekFrom::Start(0x1000)).expect("seek");
        let mut bytes = [0u8; 5];
        file.read_exact(&mut bytes).expect("read");
        assert_eq!(&bytes, b"cloak");
        assert!(ram.memory.write_slice(b"x", GuestAddress(2 << 20)).is_err());
        assert!(
            ram.memory
                .write_slice(b"x", GuestAddress(LEGACY_HOLE_START))
                .is_err(),
            "the legacy hole is not RAM"
        );
        ram.memory
            .write_slice(b"high", GuestAddress(LEGACY_HOLE_END))
            .expect("RAM resumes at 1 MiB");
        file.seek(std::io::SeekFrom::Start(LEGACY_HOLE_END))
            .expect("seek");
        let mut high = [0u8; 4];
        file.read_exact(&mut high).expect("read");
        assert_eq!(&high, b"high", "at the same offset of the file");
    }
}
