//! The launch digest the AMD-SP keeps while a guest is launched (GCTX.LD): every page given
//! to SNP_LAUNCH_UPDATE extends it with the SHA-384 of a PAGE_INFO structure.
//!
//! SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), section 8.17.2
//! "Measurement", table "Layout of the PAGE_INFO structure": DIGEST_CUR (48 bytes), CONTENTS
//! (48: SHA-384 of the page for normal and VMSA pages, zero otherwise), LENGTH (u16, 0x70),
//! PAGE_TYPE (u8), IMI_PAGE (bit 0 of a byte), VMPL3/2/1_PERMS (one byte each), a reserved
//! byte, GPA (u64). All little endian.

use sha2::{Digest, Sha384};

pub const LAUNCH_DIGEST_BYTES: usize = 48;
const PAGE_INFO_LENGTH: u16 = 0x70;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDigest([u8; LAUNCH_DIGEST_BYTES]);

impl Default for LaunchDigest {
    fn default() -> Self {
        Self([0; LAUNCH_DIGEST_BYTES])
    }
}

impl LaunchDigest {
    /// Starts from `seed` (a precomputed digest, e.g. of the firmware pages) instead of zeros.
    pub fn from_bytes(seed: [u8; LAUNCH_DIGEST_BYTES]) -> Self {
        Self(seed)
    }

    pub fn bytes(&self) -> [u8; LAUNCH_DIGEST_BYTES] {
        self.0
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Extends the digest with one 4 KiB page of `page_type` at `gpa` whose CONTENTS field
    /// is `contents`.
    pub fn extend(&mut self, page_type: u8, gpa: u64, contents: &[u8; LAUNCH_DIGEST_BYTES]) {
        let mut page_info = Vec::with_capacity(usize::from(PAGE_INFO_LENGTH));
        page_info.extend_from_slice(&self.0);
        page_info.extend_from_slice(contents);
        page_info.extend_from_slice(&PAGE_INFO_LENGTH.to_le_bytes());
        page_info.push(page_type);
        page_info.push(0); // IMI_PAGE: not an incoming-migration image page
        page_info.extend_from_slice(&[0, 0, 0, 0]); // VMPL3/2/1 permissions, reserved
        page_info.extend_from_slice(&gpa.to_le_bytes());
        debug_assert_eq!(page_info.len(), usize::from(PAGE_INFO_LENGTH));
        self.0 = Sha384::digest(&page_info).into();
    }
}

impl std::str::FromStr for LaunchDigest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(text.trim()).map_err(|err| format!("not hex: {err}"))?;
        let bytes: [u8; LAUNCH_DIGEST_BYTES] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, not {LAUNCH_DIGEST_BYTES}", b.len()))?;
        Ok(Self(bytes))
    }
}

impl std::fmt::Display for LaunchDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_zero_page_from_a_zero_digest() {
        // PAGE_INFO: 96 zero bytes, 0x70 0x00, type 3, 0, four zeros, GPA 0x1000.
        let mut expected_info = vec![0u8; 96];
        expected_info.extend_from_slice(&[0x70, 0x00, 0x03, 0x00, 0, 0, 0, 0]);
        expected_info.extend_from_slice(&0x1000u64.to_le_bytes());
        let expected: [u8; 48] = Sha384::digest(&expected_info).into();
        let mut digest = LaunchDigest::default();
        digest.extend(3, 0x1000, &[0; 48]);
        assert_eq!(digest.bytes(), expected);
    }

    #[test]
    fn hex_round_trips_and_bad_lengths_are_refused() {
        let digest = LaunchDigest::from_bytes([0xab; 48]);
        assert_eq!(digest.hex().parse::<LaunchDigest>(), Ok(digest));
        assert!("abcd".parse::<LaunchDigest>().is_err());
        assert!("zz".parse::<LaunchDigest>().is_err());
    }
}
