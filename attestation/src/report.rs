//! An SEV-SNP attestation report read field by field from its bytes, by cloak's own reader
//! over the layout in `cloak-snp-abi`. The verifier needs what a generic parser hides or
//! guesses: which key signed the report (KEY_INFO's SIGNING_KEY: VCEK or a cloud provider's
//! VLEK), which product line made it (CPUID fields from version 3 on; for version 2 the chain
//! that signed the key says), and the TCB layout of that line (Turin's adds an FMC byte and
//! moves the others). Versions 2, 3 (and 4, which keeps 3's layout) and 5 are read; anything
//! older or newer is refused by name rather than read with a guessed layout.
//!
//! Layout: SEV-SNP Firmware ABI (AMD 56860), "ATTESTATION_REPORT Structure" and "TCB_VERSION".

use cloak_snp_abi::{field, REPORT_BYTES};

/// The key the AMD-SP signed the report with (KEY_INFO bits 4:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// The chip's own Versioned Chip Endorsement Key, certified by the product line's ASK.
    Vcek,
    /// A cloud provider's Versioned Loaded Endorsement Key, certified by the line's ASVK.
    Vlek,
    /// The report is not signed (SIGNING_KEY = 7).
    None,
    /// A value the ABI reserves.
    Reserved(u8),
}

impl SigningKey {
    /// The key's name as AMD writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vcek => "VCEK",
            Self::Vlek => "VLEK",
            Self::None => "no key",
            Self::Reserved(_) => "a reserved key kind",
        }
    }

    /// The intermediate certificate that signs this kind of key.
    pub fn issuer_name(self) -> &'static str {
        match self {
            Self::Vlek => "ASVK",
            _ => "ASK",
        }
    }
}

/// AMD EPYC product lines with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub const ALL: [Self; 3] = [Self::Milan, Self::Genoa, Self::Turin];

    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }

    /// The line of a CPUID family and model (AMD's processor programming references:
    /// family 19h models 0h-Fh Milan, 10h-1Fh and A0h-AFh Genoa and Bergamo/Siena; family 1Ah
    /// models 0h-11h Turin).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0f) => Some(Self::Milan),
            (0x19, 0x10..=0x1f | 0xa0..=0xaf) => Some(Self::Genoa),
            (0x1a, 0x00..=0x11) => Some(Self::Turin),
            _ => None,
        }
    }
}

/// A TCB_VERSION: the security patch level of each firmware component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tcb {
    /// Turin and later only.
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl Tcb {
    /// Decodes the 8 bytes by the product line's layout: Milan and Genoa put bootloader, tee,
    /// four reserved bytes, snp, microcode; Turin puts fmc, bootloader, tee, snp, three
    /// reserved bytes, microcode.
    pub fn decode(bytes: [u8; 8], product: Product) -> Self {
        match product {
            Product::Milan | Product::Genoa => Self {
                fmc: None,
                bootloader: bytes[0],
                tee: bytes[1],
                snp: bytes[6],
                microcode: bytes[7],
            },
            Product::Turin => Self {
                fmc: Some(bytes[0]),
                bootloader: bytes[1],
                tee: bytes[2],
                snp: bytes[3],
                microcode: bytes[7],
            },
        }
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc {fmc} ")?;
        }
        write!(
            f,
            "bootloader {} tee {} snp {} microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("{0} bytes, an SNP report has {REPORT_BYTES}")]
    Size(usize),
    #[error("version {0}: SNP reports start at version 2")]
    TooOld(u32),
    #[error("version {0}: newer than the versions this verifier reads (2, 3, 4, 5); its layout is unknown")]
    TooNew(u32),
}

/// The fields of a report the verifier and the key broker use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub vmpl: u32,
    pub signature_algo: u32,
    pub signing_key: SigningKey,
    /// MASK_CHIP_KEY: CHIP_ID is zeroed.
    pub mask_chip_key: bool,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    /// REPORTED_TCB as stored; decode with the product line (`reported_tcb`).
    pub reported_tcb_bytes: [u8; 8],
    /// (family, model, stepping), version 3 and later.
    pub cpuid: Option<(u8, u8, u8)>,
    pub chip_id: [u8; 64],
    /// (launch, current) mitigation vectors, version 5 and later.
    pub mit_vectors: Option<(u64, u64)>,
}

/// Guest policy bit 19: DEBUG.
const POLICY_DEBUG: u64 = 1 << 19;
/// SIGNATURE_ALGO 1: ECDSA P-384 with SHA-384.
pub const ECDSA_P384_SHA384: u32 = 1;

fn array<const N: usize>(bytes: &[u8], range: std::ops::Range<usize>) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[range]);
    out
}

fn u32_at(bytes: &[u8], range: std::ops::Range<usize>) -> u32 {
    u32::from_le_bytes(array(bytes, range))
}

fn u64_at(bytes: &[u8], range: std::ops::Range<usize>) -> u64 {
    u64::from_le_bytes(array(bytes, range))
}

impl Report {
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() != REPORT_BYTES {
            return Err(ReportError::Size(bytes.len()));
        }
        let version = u32_at(bytes, field::VERSION);
        match version {
            0 | 1 => return Err(ReportError::TooOld(version)),
            2..=5 => {}
            _ => return Err(ReportError::TooNew(version)),
        }
        let key_info = u32_at(bytes, field::KEY_INFO);
        // Three bits: always fits a u8.
        let signing_key = match ((key_info >> 2) & 0b111) as u8 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => SigningKey::Reserved(other),
        };
        Ok(Self {
            version,
            guest_svn: u32_at(bytes, field::GUEST_SVN),
            policy: u64_at(bytes, field::POLICY),
            vmpl: u32_at(bytes, field::VMPL),
            signature_algo: u32_at(bytes, field::SIGNATURE_ALGO),
            signing_key,
            mask_chip_key: key_info & 0b10 != 0,
            report_data: array(bytes, field::REPORT_DATA),
            measurement: array(bytes, field::MEASUREMENT),
            host_data: array(bytes, field::HOST_DATA),
            reported_tcb_bytes: array(bytes, field::REPORTED_TCB),
            cpuid: (version >= 3).then(|| {
                (
                    bytes[field::CPUID_FAM_ID],
                    bytes[field::CPUID_MOD_ID],
                    bytes[field::CPUID_STEP],
                )
            }),
            chip_id: array(bytes, field::CHIP_ID),
            mit_vectors: (version >= 5).then(|| {
                (
                    u64_at(bytes, field::LAUNCH_MIT_VECTOR),
                    u64_at(bytes, field::CURRENT_MIT_VECTOR),
                )
            }),
        })
    }

    /// The product line the report's CPUID fields name (version 3 and later).
    pub fn product_by_cpuid(&self) -> Option<Product> {
        let (family, model, _) = self.cpuid?;
        Product::from_cpuid(family, model)
    }

    pub fn reported_tcb(&self, product: Product) -> Tcb {
        Tcb::decode(self.reported_tcb_bytes, product)
    }

    pub fn debug_allowed(&self) -> bool {
        self.policy & POLICY_DEBUG != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with(version: u32, key_info: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; REPORT_BYTES];
        bytes[field::VERSION].copy_from_slice(&version.to_le_bytes());
        bytes[field::KEY_INFO].copy_from_slice(&key_info.to_le_bytes());
        bytes
    }

    #[test]
    fn versions_outside_two_to_five_are_refused_by_name() {
        assert_eq!(
            Report::parse(&report_with(1, 0)),
            Err(ReportError::TooOld(1))
        );
        let too_new = Report::parse(&report_with(6, 0)).expect_err("v6");
        assert_eq!(too_new, ReportError::TooNew(6));
        assert!(too_new.to_string().contains("layout is unknown"));
        assert_eq!(Report::parse(&[0; 10]), Err(ReportError::Size(10)));
        for version in [2, 3, 4, 5] {
            assert!(Report::parse(&report_with(version, 0)).is_ok(), "{version}");
        }
    }

    #[test]
    fn key_info_names_the_signing_key() {
        let kind = |info| {
            Report::parse(&report_with(3, info))
                .expect("parses")
                .signing_key
        };
        assert_eq!(kind(0), SigningKey::Vcek);
        assert_eq!(kind(1 << 2), SigningKey::Vlek);
        assert_eq!(kind(7 << 2), SigningKey::None);
        assert_eq!(kind(3 << 2), SigningKey::Reserved(3));
        assert!(
            Report::parse(&report_with(3, 0b10))
                .expect("p")
                .mask_chip_key
        );
    }

    #[test]
    fn version_two_has_no_cpuid_and_five_has_mitigation_vectors() {
        let mut v5 = report_with(5, 0);
        v5[field::CPUID_FAM_ID] = 0x1a;
        v5[field::CPUID_MOD_ID] = 0x02;
        v5[field::LAUNCH_MIT_VECTOR].copy_from_slice(&9u64.to_le_bytes());
        let parsed = Report::parse(&v5).expect("v5");
        assert_eq!(parsed.product_by_cpuid(), Some(Product::Turin));
        assert_eq!(parsed.mit_vectors, Some((9, 0)));
        let mut v2 = v5.clone();
        v2[field::VERSION].copy_from_slice(&2u32.to_le_bytes());
        let parsed = Report::parse(&v2).expect("v2");
        assert_eq!((parsed.cpuid, parsed.mit_vectors), (None, None));
    }

    #[test]
    fn turin_moves_the_tcb_fields() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        let milan = Tcb::decode(bytes, Product::Milan);
        assert_eq!(
            (milan.bootloader, milan.tee, milan.snp, milan.microcode),
            (1, 2, 7, 8)
        );
        let turin = Tcb::decode(bytes, Product::Turin);
        assert_eq!(turin.fmc, Some(1));
        assert_eq!(
            (turin.bootloader, turin.tee, turin.snp, turin.microcode),
            (2, 3, 4, 8)
        );
    }
}
