//! The SEV-SNP attestation report's layout, in one place. The simulated AMD-SP writes reports
//! with it, the agent reads HOST_DATA and REPORT_DATA of its own reports with it, and the
//! verifier checks the signature over its signed part. It needs nothing, so the static guest
//! agent can use it. (What HOST_DATA holds for a pod is `cloak-init-data`'s rule.)
//!
//! Layout: SEV-SNP Firmware ABI (AMD 56860), table "ATTESTATION_REPORT Structure".

use std::ops::Range;

/// Size of an attestation report.
pub const REPORT_BYTES: usize = 1184;
/// Size of REPORT_DATA, the guest's 64 bytes bound into its report.
pub const REPORT_DATA_BYTES: usize = 64;
/// Size of HOST_DATA, the host's 32 bytes given at SNP_LAUNCH_FINISH.
pub const HOST_DATA_BYTES: usize = 32;
/// Size of each ECDSA P-384 signature component (R, S), little-endian, zero-padded.
pub const SIGNATURE_COMPONENT_BYTES: usize = 72;

/// Byte ranges of the report's fields.
pub mod field {
    use std::ops::Range;

    pub const VERSION: Range<usize> = 0x00..0x04;
    pub const GUEST_SVN: Range<usize> = 0x04..0x08;
    pub const POLICY: Range<usize> = 0x08..0x10;
    pub const VMPL: Range<usize> = 0x30..0x34;
    pub const SIGNATURE_ALGO: Range<usize> = 0x34..0x38;
    pub const CURRENT_TCB: Range<usize> = 0x38..0x40;
    pub const PLATFORM_INFO: Range<usize> = 0x40..0x48;
    /// AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (bits 4:2).
    pub const KEY_INFO: Range<usize> = 0x48..0x4c;
    pub const REPORT_DATA: Range<usize> = 0x50..0x90;
    pub const MEASUREMENT: Range<usize> = 0x90..0xc0;
    pub const HOST_DATA: Range<usize> = 0xc0..0xe0;
    pub const REPORT_ID: Range<usize> = 0x140..0x160;
    pub const REPORTED_TCB: Range<usize> = 0x180..0x188;
    /// CPUID family, model and stepping of the chip: report version 3 and later.
    pub const CPUID_FAM_ID: usize = 0x188;
    pub const CPUID_MOD_ID: usize = 0x189;
    pub const CPUID_STEP: usize = 0x18a;
    pub const CHIP_ID: Range<usize> = 0x1a0..0x1e0;
    pub const COMMITTED_TCB: Range<usize> = 0x1e0..0x1e8;
    /// CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR.
    pub const CURRENT_VERSION: Range<usize> = 0x1e8..0x1eb;
    /// COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR.
    pub const COMMITTED_VERSION: Range<usize> = 0x1ec..0x1ef;
    pub const LAUNCH_TCB: Range<usize> = 0x1f0..0x1f8;
    /// Mitigation vectors: report version 5 and later (Turin-era firmware).
    pub const LAUNCH_MIT_VECTOR: Range<usize> = 0x1f8..0x200;
    pub const CURRENT_MIT_VECTOR: Range<usize> = 0x200..0x208;
    /// What the signature covers.
    pub const SIGNED: Range<usize> = 0x000..0x2a0;
    pub const SIGNATURE_R: Range<usize> = 0x2a0..0x2e8;
    pub const SIGNATURE_S: Range<usize> = 0x2e8..0x330;
}

// The layout is checked when the crate compiles: the fields have the ABI's sizes, the
// signature follows the signed part, and everything lies inside the report.
const _: () = {
    const fn len(range: Range<usize>) -> usize {
        range.end - range.start
    }
    assert!(len(field::REPORT_DATA) == REPORT_DATA_BYTES);
    assert!(len(field::HOST_DATA) == HOST_DATA_BYTES);
    assert!(len(field::MEASUREMENT) == 48);
    assert!(len(field::CHIP_ID) == 64);
    assert!(len(field::SIGNATURE_R) == SIGNATURE_COMPONENT_BYTES);
    assert!(len(field::SIGNATURE_S) == SIGNATURE_COMPONENT_BYTES);
    assert!(field::SIGNED.end == field::SIGNATURE_R.start);
    assert!(field::SIGNATURE_S.end <= REPORT_BYTES);
};

/// Reads a field of a report; `None` when the report is too short to hold it.
pub fn read(report: &[u8], field: Range<usize>) -> Option<&[u8]> {
    report.get(field)
}

/// A zeroed report buffer and writes into it, for whoever signs reports (the simulated
/// AMD-SP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportWriter {
    bytes: Vec<u8>,
}

impl Default for ReportWriter {
    fn default() -> Self {
        Self {
            bytes: vec![0; REPORT_BYTES],
        }
    }
}

impl ReportWriter {
    /// Sets `field` to `value`, which must be exactly the field's size (a mismatch is a bug of
    /// the caller's and panics, as a slice copy does).
    pub fn set(&mut self, field: Range<usize>, value: &[u8]) -> &mut Self {
        self.bytes[field].copy_from_slice(value);
        self
    }

    /// A mutable view of `field`, for values made in place (random ids, signatures).
    pub fn field_mut(&mut self, field: Range<usize>) -> &mut [u8] {
        &mut self.bytes[field]
    }

    /// The bytes the signature covers.
    pub fn signed_part(&self) -> &[u8] {
        &self.bytes[field::SIGNED]
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_field_reads_back_and_short_reports_have_none() {
        let mut writer = ReportWriter::default();
        writer.set(field::HOST_DATA, &[0x7e; HOST_DATA_BYTES]);
        let report = writer.into_bytes();
        assert_eq!(report.len(), REPORT_BYTES);
        assert_eq!(
            read(&report, field::HOST_DATA),
            Some(&[0x7e; HOST_DATA_BYTES][..])
        );
        assert_eq!(read(&report[..0x10], field::HOST_DATA), None);
    }
}
