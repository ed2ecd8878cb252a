//! The ACPI tables of a cloak-vmm guest: the whole machine a direct-launched kernel sees,
//! described once — local APICs, the I/O APIC, COM1 and a fixed row of virtio-mmio slots.
//! Debian's kernels find virtio-mmio devices only through ACPI (their command-line probing is
//! compiled out), so these tables are how the guest learns of its disks, vsock and network.
//!
//! The tables depend on the vCPU count alone: every slot is always described, and a slot
//! with no device behind it answers device id 0, which virtio-mmio drivers skip. That keeps
//! the tables — measured pages of the SNP launch — the same for every pod of one size, so a
//! verifier can predict them, and the host cannot slip the guest extra AML unnoticed.
//!
//! Tables follow ACPI 6.5 (RSDP §5.2.5, XSDT §5.2.8, FADT §5.2.9 with HW_REDUCED_ACPI, MADT
//! §5.2.12, DSDT §5.2.11.1); the virtio-mmio device id "LNRO0005" is Linux's.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

const OEM_ID: [u8; 6] = *b"CLOAK ";
const OEM_TABLE_ID: [u8; 8] = *b"CLOAKVMM";
const OEM_REVISION: u32 = 1;

/// Where KVM's in-kernel local APIC and I/O APIC answer.
pub const LOCAL_APIC_ADDRESS: u32 = 0xFEE0_0000;
pub const IO_APIC_ADDRESS: u32 = 0xFEC0_0000;

/// The legacy serial port and its ISA interrupt.
pub const COM1_PORT: u16 = 0x3F8;
pub const COM1_IRQ: u32 = 4;

/// The hardware-reduced sleep control register (ACPI 6.5 §4.8.3.7): the guest powers off by
/// writing SLP_TYP = `S5_SLEEP_TYPE` with SLP_EN to this port, which ends the VM.
pub const SLEEP_CONTROL_PORT: u16 = 0x3C0;
pub const S5_SLEEP_TYPE: u8 = 5;
/// SLP_EN and the SLP_TYP field of a sleep control register write.
pub const SLEEP_ENABLE: u8 = 1 << 5;
pub const fn sleep_type_of(value: u8) -> u8 {
    (value >> 2) & 0x7
}

/// The virtio-mmio slots: `VIRTIO_MMIO_SLOTS` windows of `VIRTIO_MMIO_WINDOW` bytes from
/// `VIRTIO_MMIO_BASE` (above the largest RAM a direct launch has, below the APICs), slot `n`
/// interrupting on GSI `VIRTIO_MMIO_FIRST_GSI + n` — the I/O APIC pins past the ISA ones.
pub const VIRTIO_MMIO_BASE: u64 = 0xD000_0000;
pub const VIRTIO_MMIO_WINDOW: u64 = 0x1000;
pub const VIRTIO_MMIO_SLOTS: u32 = 8;
pub const VIRTIO_MMIO_FIRST_GSI: u32 = 16;

/// The address and interrupt of virtio-mmio slot `slot`.
pub fn virtio_mmio_slot(slot: u32) -> Option<(u64, u32)> {
    (slot < VIRTIO_MMIO_SLOTS).then(|| {
        (
            VIRTIO_MMIO_BASE + u64::from(slot) * VIRTIO_MMIO_WINDOW,
            VIRTIO_MMIO_FIRST_GSI + slot,
        )
    })
}

/// The tables as one blob to be placed at `base`: the RSDP first (so `base` is what the
/// boot parameters' acpi_rsdp_addr names), then XSDT, FADT, MADT and DSDT.
pub fn tables(base: u64, vcpus: u32) -> Vec<u8> {
    let mut blob = Vec::new();
    let rsdp_len = Rsdp::len();
    // Each table on an 8-byte boundary. The addresses are known before the pointing tables
    // are built: the XSDT (three entries, a fixed size) and the FADT (a fixed size, naming the
    // DSDT) come before the tables they name, the MADT is built first for its length.
    let xsdt_at = align8(rsdp_len);
    let xsdt_len = 36 + 3 * 8;
    let fadt_at = align8(xsdt_at + xsdt_len);
    let madt_at = align8(fadt_at + acpi_tables::fadt::FADT::len());
    let madt = bytes_of(&madt(vcpus));
    let dsdt_at = align8(madt_at + madt.len());
    let dsdt = dsdt();
    let address = |offset: usize| base + offset as u64;

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for at in [fadt_at, madt_at, dsdt_at] {
        xsdt.add_entry(address(at));
    }
    let pieces: [(usize, Vec<u8>); 5] = [
        (0, bytes_of(&Rsdp::new(OEM_ID, address(xsdt_at)))),
        (xsdt_at, bytes_of(&xsdt)),
        (fadt_at, bytes_of(&fadt(address(dsdt_at)))),
        (madt_at, madt),
        (dsdt_at, dsdt),
    ];
    for (at, bytes) in pieces {
        blob.resize(at, 0);
        blob.extend_from_slice(&bytes);
    }
    blob
}

fn align8(offset: usize) -> usize {
    offset.next_multiple_of(8)
}

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// Hardware-reduced: no PM timer, SCI or fixed-feature registers for the guest to look for.
/// Power-off goes through the sleep registers (with `\_S5_` in the DSDT); a reset through the
/// i8042 line (Linux's fallback when there is no ACPI reset register). Both end the VM.
fn fadt(dsdt: u64) -> acpi_tables::fadt::FADT {
    use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    let sleep_register = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(SLEEP_CONTROL_PORT),
    );
    fadt.sleep_control_reg = sleep_register;
    fadt.sleep_status_reg = sleep_register;
    fadt.finalize()
}

fn madt(vcpus: u32) -> MADT {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LOCAL_APIC_ADDRESS),
    );
    for vcpu in 0..vcpus {
        // APIC ids are vCPU indexes (the VMM sets them so in CPUID and KVM).
        let id = u8::try_from(vcpu).unwrap_or(u8::MAX);
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IO_APIC_ADDRESS, 0));
    madt
}

fn dsdt() -> Vec<u8> {
    let mut body = Vec::new();
    aml::Name::new("_S5_".into(), &aml::Package::new(vec![&S5_SLEEP_TYPE])).to_aml_bytes(&mut body);
    Com1.to_aml_bytes(&mut body);
    for slot in 0..VIRTIO_MMIO_SLOTS {
        VirtioMmioSlot(slot).to_aml_bytes(&mut body);
    }
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&body);
    table.as_slice().to_vec()
}

struct Com1;

impl Aml for Com1 {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        let hid = aml::EISAName::new("PNP0501");
        let uid = aml::ZERO;
        let io = aml::IO::new(COM1_PORT, COM1_PORT, 1, 8);
        let irq = aml::Interrupt::new(true, true, false, false, COM1_IRQ);
        let resources = aml::ResourceTemplate::new(vec![&io, &irq]);
        aml::Device::new(
            "_SB_.COM1".into(),
            vec![
                &aml::Name::new("_HID".into(), &hid),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CRS".into(), &resources),
            ],
        )
        .to_aml_bytes(sink);
    }
}

struct VirtioMmioSlot(u32);

impl Aml for VirtioMmioSlot {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        let Some((base, gsi)) = virtio_mmio_slot(self.0) else {
            return;
        };
        let name = format!("_SB_.V{:03}", self.0);
        let hid: aml::AmlStr = "LNRO0005";
        let uid = self.0;
        let window = aml::Memory32Fixed::new(true, base as u32, VIRTIO_MMIO_WINDOW as u32);
        // Edge-triggered: the VMM signals each used-buffer notification once through an irqfd.
        let irq = aml::Interrupt::new(true, true, false, false, gsi);
        let resources = aml::ResourceTemplate::new(vec![&window, &irq]);
        aml::Device::new(
            name.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &hid),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CCA".into(), &aml::ONE),
                &aml::Name::new("_CRS".into(), &resources),
            ],
        )
        .to_aml_bytes(sink);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiReadError {
    #[error("no RSDP at the start of the tables")]
    NoRsdp,
    #[error("{0} checksum does not add up to zero")]
    Checksum(String),
    #[error("table pointer {0:#x} points outside the tables")]
    OutOfRange(u64),
}

/// Reads the tables back the way a kernel does — RSDP, XSDT, then each table it points at —
/// checking signatures, lengths and checksums. Returns (signature, table) in XSDT order.
pub fn read_tables(blob: &[u8], base: u64) -> Result<Vec<(String, Vec<u8>)>, AcpiReadError> {
    let slice = |address: u64, len: usize| -> Result<&[u8], AcpiReadError> {
        let at = address
            .checked_sub(base)
            .ok_or(AcpiReadError::OutOfRange(address))? as usize;
        blob.get(at..at + len)
            .ok_or(AcpiReadError::OutOfRange(address))
    };
    let table_at = |address: u64| -> Result<&[u8], AcpiReadError> {
        let len = u32::from_le_bytes(slice(address + 4, 4)?.try_into().expect("a 4-byte slice"));
        let table = slice(address, len as usize)?;
        if !sums_to_zero(table) {
            return Err(AcpiReadError::Checksum(
                String::from_utf8_lossy(&table[..4]).into_owned(),
            ));
        }
        Ok(table)
    };
    let rsdp = blob.get(..36).ok_or(AcpiReadError::NoRsdp)?;
    if &rsdp[..8] != b"RSD PTR " {
        return Err(AcpiReadError::NoRsdp);
    }
    if !sums_to_zero(&rsdp[..20]) || !sums_to_zero(rsdp) {
        return Err(AcpiReadError::Checksum("RSDP".into()));
    }
    let xsdt = table_at(u64::from_le_bytes(
        rsdp[24..32].try_into().expect("8 bytes"),
    ))?;
    xsdt[36..]
        .chunks_exact(8)
        .map(|entry| {
            let table = table_at(u64::from_le_bytes(entry.try_into().expect("8 bytes")))?;
            Ok((
                String::from_utf8_lossy(&table[..4]).into_owned(),
                table.to_vec(),
            ))
        })
        .collect()
}

fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(blob: &[u8], base: u64) -> Vec<(String, Vec<u8>)> {
        read_tables(blob, base).expect("tables read back")
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    #[test]
    fn the_tables_chain_from_the_rsdp_with_valid_checksums() {
        let base = 0x12000;
        let blob = tables(base, 2);
        let tables = walk(&blob, base);
        let names: Vec<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["FACP", "APIC", "DSDT"]);
        let (_, fadt) = &tables[0];
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        let x_dsdt = u64_at(fadt, 140);
        assert_eq!(
            &blob[(x_dsdt - base) as usize..][..4],
            b"DSDT",
            "the FADT names the DSDT"
        );
    }

    #[test]
    fn the_madt_lists_one_enabled_local_apic_per_vcpu_and_the_io_apic() {
        for vcpus in [1u32, 4] {
            let blob = tables(0, vcpus);
            let (_, madt) = walk(&blob, 0).remove(1);
            assert_eq!(u32_at(&madt, 36), LOCAL_APIC_ADDRESS);
            let mut local_apics = Vec::new();
            let mut io_apics = Vec::new();
            let mut at = 44;
            while at < madt.len() {
                let (kind, len) = (madt[at], madt[at + 1] as usize);
                match kind {
                    0 => local_apics.push((madt[at + 3], u32_at(&madt, at + 4))),
                    1 => io_apics.push(u32_at(&madt, at + 4)),
                    other => panic!("unexpected MADT structure {other}"),
                }
                at += len;
            }
            let expected: Vec<(u8, u32)> = (0..vcpus as u8).map(|id| (id, 1)).collect();
            assert_eq!(local_apics, expected);
            assert_eq!(io_apics, [IO_APIC_ADDRESS]);
        }
    }

    #[test]
    fn the_dsdt_describes_every_virtio_mmio_slot_with_its_window_and_interrupt() {
        let blob = tables(0, 1);
        let (_, dsdt) = walk(&blob, 0).remove(2);
        let count = |needle: &[u8]| dsdt.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"LNRO0005"), VIRTIO_MMIO_SLOTS as usize);
        for slot in 0..VIRTIO_MMIO_SLOTS {
            let (base, gsi) = virtio_mmio_slot(slot).expect("slot");
            // Memory32Fixed: tag 0x86, length 9, read/write, base, length.
            let mut window = vec![0x86, 0x09, 0x00, 0x01];
            window.extend_from_slice(&(base as u32).to_le_bytes());
            window.extend_from_slice(&(VIRTIO_MMIO_WINDOW as u32).to_le_bytes());
            assert_eq!(count(&window), 1, "window of slot {slot}");
            // Extended interrupt: tag 0x89, length 6, consumer + edge, one interrupt.
            let mut irq = vec![0x89, 0x06, 0x00, 0x03, 0x01];
            irq.extend_from_slice(&gsi.to_le_bytes());
            assert_eq!(count(&irq), 1, "interrupt of slot {slot}");
        }
        assert_eq!(virtio_mmio_slot(VIRTIO_MMIO_SLOTS), None);
    }

    #[test]
    fn a_corrupted_table_is_refused() {
        let mut blob = tables(0, 1);
        let last = blob.len() - 1;
        blob[last] ^= 0xFF;
        assert_eq!(
            read_tables(&blob, 0),
            Err(AcpiReadError::Checksum("DSDT".into()))
        );
        assert_eq!(read_tables(&[0u8; 64], 0), Err(AcpiReadError::NoRsdp));
    }

    #[test]
    fn the_tables_depend_on_the_vcpu_count_and_base_only() {
        assert_eq!(tables(0x12000, 2), tables(0x12000, 2));
        assert_ne!(tables(0x12000, 2), tables(0x12000, 3));
        assert_ne!(tables(0x12000, 2), tables(0x13000, 2));
    }
}
