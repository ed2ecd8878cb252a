//! The TEE evidence cloak's guest sends: the SNP report as the AMD-SP (or the simulated one)
//! returned it, and the certificates the host supplied with it (VCEK first, then the chain,
//! PEM), both base64url. It is the `primary_evidence` of the protocol's composite evidence.

use serde::{Deserialize, Serialize};

/// The `tee` the guest announces: SNP, also for the simulated TEE (whose reports have the SNP
/// layout; only a broker told to accept simulated roots takes them).
pub const TEE: kbs_types::Tee = kbs_types::Tee::Snp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpEvidence {
    /// The raw 1184-byte report, base64url.
    pub report: String,
    /// PEM certificates (VCEK or VLEK, then ASK/ASVK and ARK where supplied), base64url.
    #[serde(default)]
    pub certificates: String,
}

impl SnpEvidence {
    pub fn new(report: &[u8], certificates: &[u8]) -> Self {
        Self {
            report: crate::b64url(report),
            certificates: crate::b64url(certificates),
        }
    }
}
