//! Port-I/O and MMIO buses: address ranges mapped to devices, so a vCPU exit is handed to the
//! device that owns the address with the offset into its range.

use std::sync::{Arc, Mutex};

/// A device on a bus. Reads fill `data`; both get the offset into the device's range.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap { base: u64, len: u64 },
    #[error("empty range at {0:#x}")]
    Empty(u64),
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl Bus {
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let end = base.saturating_add(len);
        if self
            .entries
            .iter()
            .any(|e| base < e.base + e.len && e.base < end)
        {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.push(Entry { base, len, device });
        Ok(())
    }

    fn find(&self, address: u64) -> Option<(&Entry, u64)> {
        self.entries
            .iter()
            .find(|e| address >= e.base && address < e.base + e.len)
            .map(|e| (e, address - e.base))
    }

    /// The device at `address`, locked, and the offset into its range.
    fn device_at(
        &self,
        address: u64,
    ) -> Option<(std::sync::MutexGuard<'_, dyn BusDevice + 'static>, u64)> {
        self.find(address).map(|(entry, offset)| {
            (
                entry
                    .device
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                offset,
            )
        })
    }

    /// Reads from the device at `address`; false (and `data` all ones, as from an empty
    /// slot) when none is there.
    pub fn read(&self, address: u64, data: &mut [u8]) -> bool {
        match self.device_at(address) {
            Some((mut device, offset)) => {
                device.read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes to the device at `address`; false when none is there (the write is dropped).
    pub fn write(&self, address: u64, data: &[u8]) -> bool {
        match self.device_at(address) {
            Some((mut device, offset)) => {
                device.write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_owner_with_the_offset() {
        let mut bus = Bus::default();
        let device = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x3f8, 8, device.clone()).expect("insert");
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
        assert!(bus.write(0x3f8, b"A"));
        assert_eq!(
            device.lock().expect("lock").writes,
            vec![(0, b"A".to_vec())]
        );
        let mut empty = [0u8; 2];
        assert!(!bus.read(0x400, &mut empty));
        assert_eq!(empty, [0xff, 0xff]);
        assert_eq!(
            bus.insert(0x3fc, 8, device),
            Err(BusError::Overlap {
                base: 0x3fc,
                len: 8
            })
        );
    }
}
