//! Devices of a cloak-vmm guest, each in its own file: the 8250 serial console, the i8042
//! controller (only for its reset line), the ACPI sleep register (power-off), the virtio-mmio
//! transport, and virtio devices (block, net on a tap, rng, vsock; virtio-fs as a vhost-user
//! frontend).

pub mod acpi_sleep;
pub mod chain_io;
pub mod i8042;
pub mod serial;
#[cfg(test)]
pub(crate) mod test_queues;
pub mod vhost_user_fs;
pub mod virtio_block;
pub mod virtio_mmio;
pub mod virtio_net;
pub mod virtio_rng;
pub mod vsock;

/// Legacy port addresses (PC/AT layout).
pub const COM1_PORT: u64 = 0x3f8;
pub const COM1_PORTS: u64 = 8;
pub const I8042_PORT: u64 = 0x60;
pub const I8042_PORTS: u64 = 5;
