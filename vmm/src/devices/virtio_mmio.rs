//! The virtio-mmio transport (Virtual I/O Device spec 1.2, section 4.2.2 "MMIO Device Register
//! Layout", version 2 "modern" registers): identification, feature negotiation, queue setup and
//! device status for one device. Queue processing belongs to the device behind it.

use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// "virt", little endian.
pub const MAGIC: u32 = 0x7472_6976;
pub const VERSION: u32 = 2;
/// PCI-SIG vendor id space is not used by MMIO; this is cloak's ("CLK\0").
pub const VENDOR_ID: u32 = 0x004b_4c43;
/// Every register window is this long (config space included).
pub const WINDOW: u64 = 0x200;
/// VIRTIO_F_VERSION_1: the device speaks the modern interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_ACCESS_PLATFORM: the device reaches guest memory the way the platform allows —
/// what a guest with encrypted memory (SEV-SNP) requires before it uses a device, so that
/// its driver places buffers in shared pages.
pub const VIRTIO_F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Virtio device ids (spec 5).
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const RNG: u32 = 4;
    pub const VSOCK: u32 = 19;
    pub const FS: u32 = 26;
}

mod reg {
    pub(super) const MAGIC: u64 = 0x000;
    pub(super) const VERSION: u64 = 0x004;
    pub(super) const DEVICE_ID: u64 = 0x008;
    pub(super) const VENDOR_ID: u64 = 0x00c;
    pub(super) const DEVICE_FEATURES: u64 = 0x010;
    pub(super) const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub(super) const DRIVER_FEATURES: u64 = 0x020;
    pub(super) const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub(super) const QUEUE_SEL: u64 = 0x030;
    pub(super) const QUEUE_NUM_MAX: u64 = 0x034;
    pub(super) const QUEUE_NUM: u64 = 0x038;
    pub(super) const QUEUE_READY: u64 = 0x044;
    pub(super) const QUEUE_NOTIFY: u64 = 0x050;
    pub(super) const INTERRUPT_STATUS: u64 = 0x060;
    pub(super) const INTERRUPT_ACK: u64 = 0x064;
    pub(super) const STATUS: u64 = 0x070;
    pub(super) const QUEUE_DESC_LOW: u64 = 0x080;
    pub(super) const QUEUE_DESC_HIGH: u64 = 0x084;
    pub(super) const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub(super) const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub(super) const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub(super) const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub(super) const CONFIG_GENERATION: u64 = 0x0fc;
    pub(super) const CONFIG: u64 = 0x100;
}

/// What the transport needs from a device.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Feature bits offered (VIRTIO_F_VERSION_1 is added by the transport).
    fn features(&self) -> u64;
    /// Maximum size of each queue.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver kicked queue `index`; `queues` are all of the device's queues the driver
    /// made ready, in `memory`. True when buffers were used (the transport then raises the
    /// used-buffer interrupt).
    fn process_queue(
        &mut self,
        _index: u32,
        _queues: &mut [Option<Queue>],
        _memory: &GuestMemoryMmap,
    ) -> bool {
        false
    }
    /// The driver set DRIVER_OK: `queues` and `driver_features` are final. Devices served
    /// elsewhere (vhost-user) hand them over now; an error marks the device as needing reset.
    fn activate(
        &mut self,
        _queues: &[QueueConfig],
        _driver_features: u64,
        _memory: &GuestMemoryMmap,
    ) -> Result<(), String> {
        Ok(())
    }
    /// Whether the device has a host side the event loop serves (`host_fds`, `poll_host`).
    /// Only such devices wake the loop when the driver runs their queues.
    fn serves_host_side(&self) -> bool {
        false
    }
    /// Host-side file descriptors whose readiness means work for the guest (the event loop
    /// polls them); none for devices that only answer the driver.
    fn host_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// Work from the host side (one of `host_fds` was ready); true when buffers were used.
    fn poll_host(&mut self, _queues: &mut [Option<Queue>], _memory: &GuestMemoryMmap) -> bool {
        false
    }
}

/// Queue `index` of a device's queues, if the driver made it ready.
pub fn live_queue(queues: &mut [Option<Queue>], index: usize) -> Option<&mut Queue> {
    queues.get_mut(index).and_then(Option::as_mut)
}

/// How a transport is wired into its VM: its interrupt, the event loop, the guest kind.
#[derive(Clone, Default)]
pub struct TransportWiring {
    /// The device's interrupt line (an irqfd KVM injects from).
    pub interrupt: Option<Arc<EventFd>>,
    /// Wakes the event loop after the driver ran a queue (a device may have new host fds).
    pub wake: Option<Arc<EventFd>>,
    /// The guest's memory is encrypted: offer VIRTIO_F_ACCESS_PLATFORM.
    pub encrypted_guest: bool,
}

/// Where the driver put one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueConfig {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    /// Guest memory the queues live in (none: a transport whose queues never run).
    memory: Option<GuestMemoryMmap>,
    /// Queues the driver made ready, as the device processes them.
    live: Vec<Option<Queue>>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    status: u32,
    interrupt_status: u32,
    wiring: TransportWiring,
}

fn set_half(value: &mut u64, high: bool, half: u32) {
    if high {
        *value = (*value & 0xffff_ffff) | (u64::from(half) << 32);
    } else {
        *value = (*value & !0xffff_ffff) | u64::from(half);
    }
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        Self::with_memory(device, None)
    }

    /// A transport whose queues `device` processes in `memory`.
    pub fn with_memory(device: Box<dyn VirtioDevice>, memory: Option<GuestMemoryMmap>) -> Self {
        let queues = vec![QueueConfig::default(); device.queue_max_sizes().len()];
        Self {
            live: (0..queues.len()).map(|_| None).collect(),
            memory,
            device,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            status: 0,
            interrupt_status: 0,
            wiring: TransportWiring::default(),
        }
    }

    /// Wires the transport into its VM.
    pub fn with_wiring(mut self, wiring: TransportWiring) -> Self {
        self.wiring = wiring;
        self
    }

    /// Whether the event loop has anything to do for this device.
    pub fn serves_host_side(&self) -> bool {
        self.device.serves_host_side()
    }

    /// The device's host-side descriptors (see `VirtioDevice::host_fds`).
    pub fn host_fds(&self) -> Vec<RawFd> {
        if self.memory.is_none() {
            return Vec::new();
        }
        self.device.host_fds()
    }

    /// Lets the device do host-side work; interrupts the guest when it used buffers.
    pub fn poll_host(&mut self) {
        let Some(memory) = self.memory.as_ref() else {
            return;
        };
        if self.device.poll_host(&mut self.live, memory) {
            self.signal_used_buffers();
        }
    }

    fn activate(&mut self) {
        let Some(memory) = self.memory.as_ref() else {
            return;
        };
        if let Err(err) = self
            .device
            .activate(&self.queues, self.driver_features, memory)
        {
            tracing::error!(error = %err, device = self.device.device_type(), "device activation failed");
            self.status |= STATUS_DEVICE_NEEDS_RESET;
        }
        // The device may watch new host descriptors now.
        self.wake_event_loop();
    }

    /// After the driver ran the device: a device with a host side may watch other
    /// descriptors now (a new connection, receive buffers again).
    fn wake_event_loop(&self) {
        if let (Some(wake), true) = (&self.wiring.wake, self.device.serves_host_side()) {
            let _ = wake.write(1);
        }
    }

    /// What a driver does to make queue `index` ready (tests drive transports with it).
    #[cfg(test)]
    pub fn set_up_queue(&mut self, index: u32, size: u16, desc: u64, driver: u64, device: u64) {
        self.write_register(reg::QUEUE_SEL, index);
        self.write_register(reg::QUEUE_NUM, u32::from(size));
        for (low, value) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, driver),
            (reg::QUEUE_DEVICE_LOW, device),
        ] {
            self.write_register(low, value as u32);
            self.write_register(low + 4, (value >> 32) as u32);
        }
        self.write_register(reg::QUEUE_READY, 1);
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    fn signal_used_buffers(&mut self) {
        self.interrupt_status |= INTERRUPT_USED_BUFFER;
        if let Some(interrupt) = &self.wiring.interrupt {
            if let Err(err) = interrupt.write(1) {
                tracing::warn!(error = %err, "virtio-mmio interrupt");
            }
        }
    }

    pub fn queues(&self) -> &[QueueConfig] {
        &self.queues
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    fn offered_features(&self) -> u64 {
        let platform = if self.wiring.encrypted_guest {
            VIRTIO_F_ACCESS_PLATFORM
        } else {
            0
        };
        self.device.features() | VIRTIO_F_VERSION_1 | platform
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .device
                .queue_max_sizes()
                .get(self.queue_sel as usize)
                .copied()
                .map(u32::from)
                .unwrap_or(0),
            reg::QUEUE_READY => queue.map(|q| u32::from(q.ready)).unwrap_or(0),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                let high = self.driver_features_sel == 1;
                if self.driver_features_sel <= 1 {
                    set_half(&mut self.driver_features, high, value);
                    // A driver may only accept what was offered.
                    self.driver_features &= self.offered_features();
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                let max = self
                    .device
                    .queue_max_sizes()
                    .get(self.queue_sel as usize)
                    .copied()
                    .unwrap_or(0);
                if let Some(queue) = self.selected_queue() {
                    queue.size = (value as u16).min(max);
                }
            }
            reg::QUEUE_READY => {
                let index = self.queue_sel as usize;
                if let Some(queue) = self.selected_queue() {
                    queue.ready = value == 1;
                }
                self.make_live(index);
            }
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => {
                let newly_ok = value & STATUS_DRIVER_OK != 0 && self.status & STATUS_DRIVER_OK == 0;
                self.status = value;
                if newly_ok {
                    self.activate();
                }
                if value == 0 {
                    // Writing 0 resets the device.
                    self.driver_features = 0;
                    self.queues
                        .iter_mut()
                        .for_each(|q| *q = QueueConfig::default());
                    self.live.iter_mut().for_each(|q| *q = None);
                    self.interrupt_status = 0;
                }
            }
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH => {
                if let Some(queue) = self.selected_queue() {
                    set_half(&mut queue.desc, offset == reg::QUEUE_DESC_HIGH, value);
                }
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH => {
                if let Some(queue) = self.selected_queue() {
                    set_half(&mut queue.driver, offset == reg::QUEUE_DRIVER_HIGH, value);
                }
            }
            reg::QUEUE_DEVICE_LOW | reg::QUEUE_DEVICE_HIGH => {
                if let Some(queue) = self.selected_queue() {
                    set_half(&mut queue.device, offset == reg::QUEUE_DEVICE_HIGH, value);
                }
            }
            _ => tracing::debug!(
                offset,
                value,
                "write to a read-only or unknown virtio-mmio register"
            ),
        }
    }
}

/// Device status bits (virtio spec 2.1).
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_DEVICE_NEEDS_RESET: u32 = 0x40;

/// Used-buffer notification bit of InterruptStatus.
const INTERRUPT_USED_BUFFER: u32 = 1;

impl MmioTransport {
    /// Builds the queue the driver just made ready (or drops it when made not ready); a
    /// configuration the queue crate finds invalid leaves it unusable, not the VMM.
    fn make_live(&mut self, index: usize) {
        let Some(config) = self.queues.get(index).copied() else {
            return;
        };
        let max = self
            .device
            .queue_max_sizes()
            .get(index)
            .copied()
            .unwrap_or(0);
        let queue = match (&self.memory, config.ready) {
            (Some(memory), true) => Queue::new(max).ok().and_then(|mut queue| {
                queue.set_size(config.size);
                queue.set_desc_table_address(
                    Some(config.desc as u32),
                    Some((config.desc >> 32) as u32),
                );
                queue.set_avail_ring_address(
                    Some(config.driver as u32),
                    Some((config.driver >> 32) as u32),
                );
                queue.set_used_ring_address(
                    Some(config.device as u32),
                    Some((config.device >> 32) as u32),
                );
                queue.set_ready(true);
                queue.is_valid(memory).then_some(queue)
            }),
            _ => None,
        };
        if config.ready && queue.is_none() {
            tracing::warn!(index, ?config, "virtio queue configuration refused");
        }
        if let Some(slot) = self.live.get_mut(index) {
            *slot = queue;
        }
    }

    fn notify(&mut self, index: u32) {
        let Some(memory) = self.memory.as_ref() else {
            return;
        };
        if !matches!(self.live.get(index as usize), Some(Some(_))) {
            tracing::debug!(index, "notify for a queue that is not ready");
            return;
        }
        let used = self.device.process_queue(index, &mut self.live, memory);
        self.wake_event_loop();
        if used {
            self.signal_used_buffers();
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        // Registers are 32 bits wide and read whole; narrower reads see the low bytes.
        let value = self.read_register(offset & !3).to_le_bytes();
        let start = (offset & 3) as usize;
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = value.get(start + index).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG || data.len() != 4 || offset & 3 != 0 {
            tracing::debug!(offset, len = data.len(), "ignored virtio-mmio write");
            return;
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_register(offset, value);
    }
}

/// A device with nothing behind its queues yet: lets a guest (or a test) see a device of
/// `device_type` on the bus.
#[cfg(any(test, feature = "test-guests"))]
pub struct PlaceholderDevice {
    pub device_type: u32,
    pub queue_sizes: Vec<u16>,
}

#[cfg(any(test, feature = "test-guests"))]
impl VirtioDevice for PlaceholderDevice {
    fn device_type(&self) -> u32 {
        self.device_type
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> MmioTransport {
        MmioTransport::new(Box::new(PlaceholderDevice {
            device_type: device_type::VSOCK,
            queue_sizes: vec![256, 256, 64],
        }))
    }

    fn read32(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write32(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    #[test]
    fn an_encrypted_guest_is_offered_access_platform() {
        let read_high_features = |transport: &mut MmioTransport| {
            transport.write_register(reg::DEVICE_FEATURES_SEL, 1);
            transport.read_register(reg::DEVICE_FEATURES)
        };
        let mut plain = transport();
        assert_eq!(read_high_features(&mut plain), 1, "VERSION_1 only");
        let mut encrypted = transport().with_wiring(TransportWiring {
            encrypted_guest: true,
            ..TransportWiring::default()
        });
        assert_eq!(
            read_high_features(&mut encrypted),
            1 | 2,
            "VERSION_1 | ACCESS_PLATFORM"
        );
    }

    #[test]
    fn identification_registers() {
        let mut t = transport();
        assert_eq!(read32(&mut t, 0x000), MAGIC);
        assert_eq!(read32(&mut t, 0x004), 2);
        assert_eq!(read32(&mut t, 0x008), 19);
        assert_eq!(read32(&mut t, 0x00c), VENDOR_ID);
        let mut byte = [0u8; 1];
        t.read(0x001, &mut byte);
        assert_eq!(byte[0], b'i', "narrow reads see the register's bytes");
    }

    #[test]
    fn feature_negotiation_keeps_only_offered_bits() {
        let mut t = transport();
        write32(&mut t, 0x014, 1);
        assert_eq!(read32(&mut t, 0x010), 1, "VERSION_1 is bit 32");
        write32(&mut t, 0x024, 1);
        write32(&mut t, 0x020, 0xffff_ffff);
        write32(&mut t, 0x024, 0);
        write32(&mut t, 0x020, 0xffff_ffff);
        assert_eq!(t.driver_features(), VIRTIO_F_VERSION_1);
    }

    #[test]
    fn queue_setup_and_reset() {
        let mut t = transport();
        write32(&mut t, 0x030, 2);
        assert_eq!(read32(&mut t, 0x034), 64);
        write32(&mut t, 0x038, 1024);
        write32(&mut t, 0x080, 0x1000);
        write32(&mut t, 0x084, 0x1);
        write32(&mut t, 0x090, 0x2000);
        write32(&mut t, 0x0a0, 0x3000);
        write32(&mut t, 0x044, 1);
        assert_eq!(
            t.queues()[2],
            QueueConfig {
                size: 64,
                ready: true,
                desc: 0x1_0000_1000,
                driver: 0x2000,
                device: 0x3000
            }
        );
        write32(&mut t, 0x030, 7);
        assert_eq!(read32(&mut t, 0x034), 0, "no such queue");
        write32(&mut t, 0x070, 0xf);
        assert_eq!(t.status(), 0xf);
        write32(&mut t, 0x070, 0);
        assert_eq!(t.queues()[2], QueueConfig::default());
    }
}
