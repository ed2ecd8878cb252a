//! Reference values a verifier compares reports with: the launch digests a guest image may
//! have (one per vCPU count, CPU type and backend it is launched with). JSON, so other tools
//! (a key broker's policy) can read it too.

use serde::{Deserialize, Serialize};

use cloak_launch::digest::LaunchDigest;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceValues {
    pub launch_digests: Vec<ReferenceDigest>,
    /// SHA-256 (hex) of what the launch measures through OVMF's hashes table.
    #[serde(default)]
    pub kernel_sha256: String,
    #[serde(default)]
    pub initrd_sha256: String,
    /// The exact kernel command line the digests are for.
    #[serde(default)]
    pub cmdline: String,
    /// HOST_DATA of a pod without init-data: all zero.
    #[serde(default)]
    pub default_host_data: String,
}

/// The launches to compute digests for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceLaunchSet {
    pub firmware: Option<std::path::PathBuf>,
    pub vcpus: Vec<u32>,
    pub vcpu_types: Vec<String>,
    pub guest_features: u64,
    /// Guest memory sizes of direct launches (cloak-vmm, and what the simulated TEE reports),
    /// whose memory map is measured: one direct-launch digest per size and vCPU count.
    pub direct_memory_mib: Vec<u32>,
}

fn sha256_file(path: &std::path::Path) -> Result<String, ReferenceValuesError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|err| ReferenceValuesError::Input {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

impl ReferenceValues {
    /// Reference values of a guest image (kernel, initrd) launched with `cmdline`: its
    /// hashes, and the SNP launch digest of every launch in `launches` (the `qemu` backend:
    /// OVMF with kernel hashes; the direct launch of cloak-vmm) — the same code as `cloak
    /// measure`.
    pub fn for_image(
        kernel: &std::path::Path,
        initrd: &std::path::Path,
        cmdline: &str,
        launches: &ReferenceLaunchSet,
    ) -> Result<Self, ReferenceValuesError> {
        let mut values = Self {
            kernel_sha256: sha256_file(kernel)?,
            initrd_sha256: sha256_file(initrd)?,
            cmdline: cmdline.to_owned(),
            default_host_data: hex::encode([0u8; cloak_snp_abi::HOST_DATA_BYTES]),
            ..Default::default()
        };
        if let Some(firmware) = &launches.firmware {
            values.add_ovmf_digests(firmware, kernel, initrd, cmdline, launches)?;
        }
        for memory_mib in &launches.direct_memory_mib {
            values.add_direct_digests(kernel, initrd, cmdline, *memory_mib, launches)?;
        }
        Ok(values)
    }

    fn add_direct_digests(
        &mut self,
        kernel: &std::path::Path,
        initrd: &std::path::Path,
        cmdline: &str,
        memory_mib: u32,
        launches: &ReferenceLaunchSet,
    ) -> Result<(), ReferenceValuesError> {
        use cloak_launch::direct::DirectLaunch;
        let launch_error = |err: cloak_launch::direct::DirectLaunchError| {
            ReferenceValuesError::Launch(err.to_string())
        };
        let mut launch = DirectLaunch::from_files(kernel, Some(initrd), cmdline, memory_mib, 1)
            .map_err(launch_error)?;
        launch.guest_features = launches.guest_features;
        for vcpus in &launches.vcpus {
            launch.vcpus = *vcpus;
            self.launch_digests.push(ReferenceDigest {
                digest: launch.digest().map_err(launch_error)?.hex(),
                launch: format!(
                    "cloak-vmm direct vcpus={vcpus} memory={memory_mib}MiB guest-features={:#x} c-bit={}",
                    launches.guest_features, launch.c_bit
                ),
            });
        }
        Ok(())
    }

    fn add_ovmf_digests(
        &mut self,
        firmware: &std::path::Path,
        kernel: &std::path::Path,
        initrd: &std::path::Path,
        cmdline: &str,
        launches: &ReferenceLaunchSet,
    ) -> Result<(), ReferenceValuesError> {
        use cloak_launch::ovmf::{OvmfLaunch, VmmType};
        let firmware_sha = sha256_file(firmware)?;
        for vcpu_type in &launches.vcpu_types {
            let signature = cloak_launch::cpu_types::signature_of(vcpu_type).ok_or_else(|| {
                ReferenceValuesError::Launch(format!("unknown vCPU type {vcpu_type:?}"))
            })?;
            for vcpus in &launches.vcpus {
                let launch = OvmfLaunch {
                    ovmf: firmware.to_owned(),
                    vcpus: *vcpus,
                    vcpu_signature: signature,
                    guest_features: launches.guest_features,
                    kernel: Some(kernel.to_owned()),
                    initrd: Some(initrd.to_owned()),
                    append: Some(cmdline.to_owned()),
                    vmm: VmmType::Qemu,
                    ovmf_digest: None,
                };
                let digest = launch
                    .digest()
                    .map_err(|err| ReferenceValuesError::Launch(err.to_string()))?;
                self.launch_digests.push(ReferenceDigest {
                    digest: digest.hex(),
                    launch: format!(
                        "qemu+ovmf firmware-sha256={} vcpus={vcpus} vcpu-type={vcpu_type} guest-features={:#x}",
                        &firmware_sha[..16],
                        launches.guest_features
                    ),
                });
            }
        }
        Ok(())
    }

    /// The same values as a message for Trustee's reference value provider (RVPS, "sample"
    /// provenance: a base64 JSON map from reference value name to accepted values).
    pub fn trustee_message(&self) -> serde_json::Value {
        use base64::Engine as _;
        let payload = serde_json::json!({
            "snp_launch_measurement": self.launch_digests.iter().map(|d| d.digest.clone()).collect::<Vec<_>>(),
            "snp_host_data": [self.default_host_data],
            "kernel_sha256": [self.kernel_sha256],
            "initrd_sha256": [self.initrd_sha256],
        });
        serde_json::json!({
            "version": "0.1.0",
            "type": "sample",
            "payload": base64::engine::general_purpose::STANDARD.encode(payload.to_string()),
        })
    }
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
    #[error("reading {path}: {reason}")]
    Input { path: String, reason: String },
    #[error("computing a launch digest: {0}")]
    Launch(String),
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

    fn image(dir: &std::path::Path, initrd_byte: u8) -> (std::path::PathBuf, std::path::PathBuf) {
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join(format!("initrd-{initrd_byte}.img"));
        std::fs::write(
            &kernel,
            cloak_launch::direct::minimal_bzimage(&[0x5a; 9000], 0x30_0000),
        )
        .expect("kernel");
        std::fs::write(&initrd, vec![initrd_byte; 5000]).expect("initrd");
        (kernel, initrd)
    }

    fn launches() -> ReferenceLaunchSet {
        ReferenceLaunchSet {
            firmware: Some(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/data/snp/firmware/ovmf_AmdSev_suffix.bin"),
            ),
            vcpus: vec![1, 2],
            vcpu_types: vec!["EPYC-Milan".into(), "EPYC-Turin".into()],
            guest_features: 0x1,
            direct_memory_mib: vec![64],
        }
    }

    #[test]
    fn image_reference_values_hold_one_digest_per_launch_and_follow_the_initrd() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kernel, initrd) = image(dir.path(), 1);
        let values = ReferenceValues::for_image(&kernel, &initrd, "console=ttyS0", &launches())
            .expect("values");
        // 2 CPU types x 2 vCPU counts with OVMF, then 2 direct launches.
        assert_eq!(values.launch_digests.len(), 6);
        // Each entry is what `cloak measure` computes for that launch.
        let milan_two = cloak_launch::ovmf::OvmfLaunch {
            ovmf: launches().firmware.expect("firmware"),
            vcpus: 2,
            vcpu_signature: cloak_launch::cpu_types::signature_of("EPYC-Milan").expect("known"),
            guest_features: 0x1,
            kernel: Some(kernel.clone()),
            initrd: Some(initrd.clone()),
            append: Some("console=ttyS0".into()),
            vmm: cloak_launch::ovmf::VmmType::Qemu,
            ovmf_digest: None,
        }
        .digest()
        .expect("digest");
        assert_eq!(values.launch_digests[1].digest, milan_two.hex());
        assert!(values.launch_digests[1]
            .launch
            .contains("vcpus=2 vcpu-type=EPYC-Milan"));
        let direct_two = cloak_launch::direct::DirectLaunch::from_files(
            &kernel,
            Some(&initrd),
            "console=ttyS0",
            64,
            2,
        )
        .expect("launch")
        .digest()
        .expect("digest");
        assert_eq!(values.launch_digests[5].digest, direct_two.hex());
        assert!(values.launch_digests[5]
            .launch
            .starts_with("cloak-vmm direct vcpus=2 memory=64MiB"));
        // One changed initrd byte: no digest stays the same.
        let (_, changed) = image(dir.path(), 2);
        let other = ReferenceValues::for_image(&kernel, &changed, "console=ttyS0", &launches())
            .expect("values");
        for (a, b) in values.launch_digests.iter().zip(&other.launch_digests) {
            assert_ne!(a.digest, b.digest);
        }
        assert_ne!(values.initrd_sha256, other.initrd_sha256);
        // Round trip through JSON.
        let json = serde_json::to_vec(&values).expect("json");
        assert_eq!(ReferenceValues::from_json(&json).expect("parses"), values);
    }

    #[test]
    fn the_trustee_message_carries_the_digests_in_its_payload() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let (kernel, initrd) = image(dir.path(), 1);
        let values =
            ReferenceValues::for_image(&kernel, &initrd, "x", &launches()).expect("values");
        let message = values.trustee_message();
        assert_eq!(message["type"], "sample");
        let payload = base64::engine::general_purpose::STANDARD
            .decode(message["payload"].as_str().expect("payload"))
            .expect("base64");
        let payload: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(
            payload["snp_launch_measurement"].as_array().map(Vec::len),
            Some(6)
        );
        assert_eq!(
            payload["snp_launch_measurement"][0],
            values.launch_digests[0].digest.as_str()
        );
    }

    #[test]
    fn without_firmware_or_direct_launches_only_hashes_are_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kernel, initrd) = image(dir.path(), 1);
        let launches = ReferenceLaunchSet {
            firmware: None,
            direct_memory_mib: Vec::new(),
            ..launches()
        };
        let values = ReferenceValues::for_image(&kernel, &initrd, "x", &launches).expect("values");
        assert!(values.launch_digests.is_empty());
        assert_eq!(values.kernel_sha256.len(), 64);
        assert_eq!(values.default_host_data, "0".repeat(64));
    }
}
