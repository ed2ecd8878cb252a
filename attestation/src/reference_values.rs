//! Reference values a verifier compares reports with: the launch digests a guest image may
//! have (one per vCPU count, CPU type and backend it is launched with). JSON, so other tools
//! (a key broker's policy) can read it too.

use serde::{Deserialize, Serialize};

use crate::launch_digest::LaunchDigest;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceValues {
    pub launch_digests: Vec<ReferenceDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceDigest {
    /// SNP launch digest, hex.
    pub digest: String,
    /// What launch it is for (backend, vCPUs, CPU type), for people.
    #[serde(default)]
    pub launch: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceValuesError {
    #[error("reference values: {0}")]
    Json(#[from] serde_json::Error),
    #[error("reference value {index}: {reason}")]
    Digest { index: usize, reason: String },
}

impl ReferenceValues {
    pub fn from_json(text: &[u8]) -> Result<Self, ReferenceValuesError> {
        Ok(serde_json::from_slice(text)?)
    }

    pub fn digests(&self) -> Result<Vec<LaunchDigest>, ReferenceValuesError> {
        self.launch_digests
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                entry
                    .digest
                    .parse()
                    .map_err(|reason| ReferenceValuesError::Digest { index, reason })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_and_bad_ones_are_named() {
        let good = format!(
            r#"{{"launch_digests":[{{"digest":"{}","launch":"qemu 2 vCPUs"}}]}}"#,
            "ab".repeat(48)
        );
        let values = ReferenceValues::from_json(good.as_bytes()).expect("parses");
        assert_eq!(
            values.digests().expect("digests"),
            vec![LaunchDigest::from_bytes([0xab; 48])]
        );
        let bad = r#"{"launch_digests":[{"digest":"abcd"}]}"#;
        let err = ReferenceValues::from_json(bad.as_bytes())
            .expect("parses")
            .digests()
            .expect_err("short digest");
        assert!(err.to_string().contains("reference value 0"), "{err}");
    }
}
