//! A VMSA page (the SEV-ES/SNP save area of one vCPU) written field by field, for launches
//! whose initial vCPU state is cloak's own (the direct launch starts the kernel in long mode).
//! OVMF launches start at the reset vector in the state each VMM sets (reset_state.rs, pinned
//! byte for byte against the `sev` crate's pages for QEMU), which pins the offsets below.
//!
//! Offsets: AMD64 Architecture Programmer's Manual vol. 2, appendix B, table "VMSA Layout,
//! State Save Area for SEV-ES" (Linux: `struct sev_es_save_area`).

use crate::plan::PAGE_SIZE;

/// A segment register as the save area holds it (selector, packed attributes, limit, base).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    /// Descriptor bits 40..47 in bits 0..7 and 52..55 in bits 8..11 (type, S, DPL, P; AVL,
    /// L, D/B, G).
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

impl Segment {
    pub const fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Self {
        Self {
            selector,
            attrib,
            limit,
            base,
        }
    }
}

/// The save-area fields a launch sets; everything else is zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveArea {
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    pub efer: u64,
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    pub rsp: u64,
    pub g_pat: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub sev_features: u64,
    pub xcr0: u64,
    pub mxcsr: u32,
    pub x87_fcw: u16,
}

mod offset {
    pub(super) const ES: usize = 0x000;
    pub(super) const CS: usize = 0x010;
    pub(super) const SS: usize = 0x020;
    pub(super) const DS: usize = 0x030;
    pub(super) const FS: usize = 0x040;
    pub(super) const GS: usize = 0x050;
    pub(super) const GDTR: usize = 0x060;
    pub(super) const LDTR: usize = 0x070;
    pub(super) const IDTR: usize = 0x080;
    pub(super) const TR: usize = 0x090;
    pub(super) const EFER: usize = 0x0D0;
    pub(super) const CR4: usize = 0x148;
    pub(super) const CR3: usize = 0x150;
    pub(super) const CR0: usize = 0x158;
    pub(super) const DR7: usize = 0x160;
    pub(super) const DR6: usize = 0x168;
    pub(super) const RFLAGS: usize = 0x170;
    pub(super) const RIP: usize = 0x178;
    pub(super) const RSP: usize = 0x1D8;
    pub(super) const G_PAT: usize = 0x268;
    pub(super) const RDX: usize = 0x310;
    pub(super) const RSI: usize = 0x330;
    pub(super) const SEV_FEATURES: usize = 0x3B0;
    pub(super) const XCR0: usize = 0x3E8;
    pub(super) const MXCSR: usize = 0x408;
    pub(super) const X87_FCW: usize = 0x410;
}

fn put(page: &mut [u8], at: usize, bytes: &[u8]) {
    page[at..at + bytes.len()].copy_from_slice(bytes);
}

fn put_segment(page: &mut [u8], at: usize, segment: &Segment) {
    put(page, at, &segment.selector.to_le_bytes());
    put(page, at + 2, &segment.attrib.to_le_bytes());
    put(page, at + 4, &segment.limit.to_le_bytes());
    put(page, at + 8, &segment.base.to_le_bytes());
}

impl SaveArea {
    /// The 4 KiB VMSA page.
    pub fn page(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        let segments = [
            (offset::ES, &self.es),
            (offset::CS, &self.cs),
            (offset::SS, &self.ss),
            (offset::DS, &self.ds),
            (offset::FS, &self.fs),
            (offset::GS, &self.gs),
            (offset::GDTR, &self.gdtr),
            (offset::LDTR, &self.ldtr),
            (offset::IDTR, &self.idtr),
            (offset::TR, &self.tr),
        ];
        for (at, segment) in segments {
            put_segment(&mut page, at, segment);
        }
        let quads = [
            (offset::EFER, self.efer),
            (offset::CR4, self.cr4),
            (offset::CR3, self.cr3),
            (offset::CR0, self.cr0),
            (offset::DR7, self.dr7),
            (offset::DR6, self.dr6),
            (offset::RFLAGS, self.rflags),
            (offset::RIP, self.rip),
            (offset::RSP, self.rsp),
            (offset::G_PAT, self.g_pat),
            (offset::RDX, self.rdx),
            (offset::RSI, self.rsi),
            (offset::SEV_FEATURES, self.sev_features),
            (offset::XCR0, self.xcr0),
        ];
        for (at, value) in quads {
            put(&mut page, at, &value.to_le_bytes());
        }
        put(&mut page, offset::MXCSR, &self.mxcsr.to_le_bytes());
        put(&mut page, offset::X87_FCW, &self.x87_fcw.to_le_bytes());
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_lands_in_its_own_bytes() {
        let area = SaveArea {
            rip: 0x1122_3344_5566_7788,
            rsi: 0x7000,
            cs: Segment::new(0x10, 0xa9b, 0xffff_ffff, 0),
            ..Default::default()
        };
        let page = area.page();
        assert_eq!(&page[0x178..0x180], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&page[0x330..0x338], &0x7000u64.to_le_bytes());
        assert_eq!(&page[0x10..0x14], &[0x10, 0, 0x9b, 0x0a]);
        let nonzero = page.iter().filter(|b| **b != 0).count();
        // RIP 8 bytes, RSI 1, CS selector 1, attributes 2, limit 4.
        assert_eq!(nonzero, 16, "no stray bytes");
    }
}
