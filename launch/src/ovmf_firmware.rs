//! An OVMF firmware image as the launch digest sees it: its bytes (mapped to end at 4 GiB),
//! the GUIDed table its reset vector ends with, and the SEV metadata that table may point to
//! (the pages SNP launches must pre-validate: zeroed memory, secrets, CPUID, kernel hashes).
//! Read by cloak itself, because a firmware without SEV metadata (an OvmfX64 build) is still
//! measured by `sev-snp-measure` — its firmware pages and VMSAs only — where the `sev` crate
//! refuses it.
//!
//! Layout: edk2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm` (the table ends 32 bytes before
//! the image's end, each entry is data, then a 16-bit size, then its GUID; the footer entry
//! gives the table's size) and `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm` ("ASEV" header,
//! version 1, then (gpa, size, type) descriptors).

use std::collections::HashMap;
use std::path::Path;

/// Where the firmware image ends in guest memory.
const FOUR_GIB: u64 = 1 << 32;
/// The table ends this many bytes before the end of the image.
const TABLE_END_FROM_IMAGE_END: usize = 32;
/// An entry's trailer: a 16-bit size, then the GUID.
const ENTRY_HEADER: usize = 2 + 16;

pub const TABLE_FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
pub const SEV_HASH_TABLE_RV_GUID: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
pub const SEV_ES_RESET_BLOCK_GUID: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
pub const SEV_METADATA_GUID: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";

/// A SEV metadata section's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionType {
    SnpSecMemory,
    SnpSecrets,
    Cpuid,
    SvsmCaa,
    SnpKernelHashes,
}

impl SectionType {
    fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::SnpSecMemory),
            2 => Some(Self::SnpSecrets),
            3 => Some(Self::Cpuid),
            4 => Some(Self::SvsmCaa),
            0x10 => Some(Self::SnpKernelHashes),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub gpa: u64,
    pub size: usize,
    pub kind: SectionType,
}

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} bytes: a firmware image is a whole number of 4 KiB pages, at most 4 GiB")]
    Size(usize),
    #[error("the GUIDed table has an entry of {0} bytes, smaller than its header")]
    EntrySize(usize),
    #[error("the SEV metadata: {0}")]
    Metadata(String),
    #[error("the firmware has no {0} entry in its GUIDed table")]
    MissingEntry(&'static str),
}

/// A GUID string as the bytes a firmware stores (the first three fields little-endian).
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    bytes[0..4].reverse();
    bytes[4..6].reverse();
    bytes[6..8].reverse();
    bytes
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[derive(Debug, Clone)]
pub struct Firmware {
    data: Vec<u8>,
    table: HashMap<[u8; 16], Vec<u8>>,
    sections: Vec<Section>,
}

impl Firmware {
    pub fn load(path: &Path) -> Result<Self, FirmwareError> {
        let data = std::fs::read(path).map_err(|source| FirmwareError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(data)
    }

    pub fn from_bytes(data: Vec<u8>) -> Result<Self, FirmwareError> {
        if data.is_empty() || !data.len().is_multiple_of(4096) || data.len() as u64 > FOUR_GIB {
            return Err(FirmwareError::Size(data.len()));
        }
        let table = parse_table(&data)?;
        let sections = match table.get(&guid_bytes(SEV_METADATA_GUID)) {
            Some(entry) => parse_metadata(&data, entry)?,
            None => Vec::new(),
        };
        Ok(Self {
            data,
            table,
            sections,
        })
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The guest address of the image's first byte.
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }

    /// The SEV metadata sections, in the firmware's order; none without metadata.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    pub fn has_section(&self, kind: SectionType) -> bool {
        self.sections.iter().any(|section| section.kind == kind)
    }

    fn entry_u32(&self, guid: &'static str) -> Option<u32> {
        u32_at(self.table.get(&guid_bytes(guid))?, 0)
    }

    /// Where the kernel-hashes table lies (QEMU fills it for `kernel-hashes=on`).
    pub fn hashes_table_gpa(&self) -> Result<u64, FirmwareError> {
        self.entry_u32(SEV_HASH_TABLE_RV_GUID)
            .map(u64::from)
            .ok_or(FirmwareError::MissingEntry("SEV hash table"))
    }

    /// The application processors' reset address; without one, only the boot processor's
    /// VMSA is measured (as `sev-snp-measure` does).
    pub fn ap_reset_eip(&self) -> Option<u32> {
        self.entry_u32(SEV_ES_RESET_BLOCK_GUID)
    }
}

/// The GUIDed table: entries by GUID; empty when the image has no footer.
fn parse_table(data: &[u8]) -> Result<HashMap<[u8; 16], Vec<u8>>, FirmwareError> {
    let mut table = HashMap::new();
    let Some(footer_at) = data
        .len()
        .checked_sub(TABLE_END_FROM_IMAGE_END + ENTRY_HEADER)
    else {
        return Ok(table);
    };
    let footer = &data[footer_at..footer_at + ENTRY_HEADER];
    if footer[2..] != guid_bytes(TABLE_FOOTER_GUID) {
        return Ok(table);
    }
    let total = usize::from(u16::from_le_bytes([footer[0], footer[1]]));
    let Some(entries_size) = total.checked_sub(ENTRY_HEADER) else {
        return Ok(table);
    };
    let Some(start) = footer_at.checked_sub(entries_size) else {
        return Err(FirmwareError::EntrySize(total));
    };
    let mut entries = &data[start..footer_at];
    while entries.len() >= ENTRY_HEADER {
        let header = &entries[entries.len() - ENTRY_HEADER..];
        let size = usize::from(u16::from_le_bytes([header[0], header[1]]));
        if size < ENTRY_HEADER || size > entries.len() {
            return Err(FirmwareError::EntrySize(size));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&header[2..]);
        let body = &entries[entries.len() - size..entries.len() - ENTRY_HEADER];
        table.insert(guid, body.to_vec());
        entries = &entries[..entries.len() - size];
    }
    Ok(table)
}

fn parse_metadata(data: &[u8], entry: &[u8]) -> Result<Vec<Section>, FirmwareError> {
    let bad = |what: &str| FirmwareError::Metadata(what.to_owned());
    let offset_from_end = u32_at(entry, 0).ok_or_else(|| bad("its table entry is short"))? as usize;
    let start = data
        .len()
        .checked_sub(offset_from_end)
        .ok_or_else(|| bad("it starts before the image"))?;
    if data.get(start..start + 4) != Some(b"ASEV".as_slice()) {
        return Err(bad("no ASEV signature"));
    }
    let version = u32_at(data, start + 8).ok_or_else(|| bad("short header"))?;
    if version != 1 {
        return Err(FirmwareError::Metadata(format!(
            "version {version}, only 1 is known"
        )));
    }
    let count = u32_at(data, start + 12).ok_or_else(|| bad("short header"))? as usize;
    (0..count)
        .map(|i| {
            let at = start + 16 + i * 12;
            let field = |n: usize| u32_at(data, at + 4 * n).ok_or_else(|| bad("short section"));
            let kind = field(2)?;
            Ok(Section {
                gpa: u64::from(field(0)?),
                size: field(1)? as usize,
                kind: SectionType::from_u32(kind)
                    .ok_or_else(|| FirmwareError::Metadata(format!("section type {kind:#x}")))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(
            guid_bytes("96b582de-1fb2-45f7-baea-a366c55a082d"),
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
    }

    #[test]
    fn an_image_without_a_table_has_no_sections_and_bad_sizes_are_refused() {
        let firmware = Firmware::from_bytes(vec![0x90; 8192]).expect("plain image");
        assert!(firmware.sections().is_empty());
        assert_eq!(firmware.ap_reset_eip(), None);
        assert_eq!(firmware.gpa(), FOUR_GIB - 8192);
        assert!(matches!(
            Firmware::from_bytes(vec![0; 100]),
            Err(FirmwareError::Size(100))
        ));
    }
}
