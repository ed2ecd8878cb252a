//! How the guest's runtime data (the broker's nonce and the guest's ephemeral public key) is
//! bound into the hardware report: REPORT_DATA is the SHA-384 of the runtime data's canonical
//! JSON, zero-padded to 64 bytes — Trustee's default for SNP (`runtime_data_hash_algorithm`
//! sha384, the digest compared with the report's first 48 bytes, the rest zero). A broker that
//! finds another REPORT_DATA knows the key or the nonce was swapped.

use kbs_types::RuntimeData;
use sha2::{Digest, Sha384};

/// REPORT_DATA is 64 bytes in an SNP report.
pub const REPORT_DATA_BYTES: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("serializing the runtime data: {0}")]
pub struct BindingError(#[from] serde_json::Error);

/// The canonical bytes of the runtime data: what is hashed.
pub fn runtime_data_bytes(runtime_data: &RuntimeData) -> Result<Vec<u8>, BindingError> {
    Ok(crate::canonical::to_canonical(&serde_json::to_value(
        runtime_data,
    )?))
}

/// The REPORT_DATA a report must carry for `runtime_data`.
pub fn report_data_for(
    runtime_data: &RuntimeData,
) -> Result<[u8; REPORT_DATA_BYTES], BindingError> {
    let digest = Sha384::digest(runtime_data_bytes(runtime_data)?);
    let mut report_data = [0u8; REPORT_DATA_BYTES];
    report_data[..digest.len()].copy_from_slice(&digest);
    Ok(report_data)
}
