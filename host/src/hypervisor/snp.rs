//! The SEV-SNP launch of a QEMU guest: a q35 machine booting the OVMF AmdSev firmware, an
//! `sev-snp-guest` object carrying the guest policy, the C-bit position and reduced physical
//! address bits of this host (CPUID Fn8000_001F), `kernel-hashes=on` (so OVMF measures the
//! kernel, initrd and command line; `cloak measure` predicts the digest of exactly this), and
//! HOST_DATA, the SHA-256 of the pod's init-data, which the guest sees in its reports.

use std::path::PathBuf;

use base64::Engine as _;

use super::host::{self, MemoryEncryption};
use super::HypervisorError;
use crate::config::HypervisorConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpLaunch {
    pub firmware: PathBuf,
    pub policy: u64,
    pub vcpu_type: String,
    pub cbitpos: u32,
    pub reduced_phys_bits: u32,
    /// SHA-256 of the init-data.
    pub host_data: [u8; 32],
}

impl SnpLaunch {
    /// The launch for this host, or why this host cannot launch SNP guests.
    pub fn for_host(
        config: &HypervisorConfig,
        host_data: [u8; 32],
    ) -> Result<Self, HypervisorError> {
        let encryption = host::memory_encryption();
        Self::with_encryption(config, host_data, encryption)
    }

    pub fn with_encryption(
        config: &HypervisorConfig,
        host_data: [u8; 32],
        encryption: Option<MemoryEncryption>,
    ) -> Result<Self, HypervisorError> {
        let encryption = encryption.filter(|e| e.sev_snp).ok_or_else(|| {
            HypervisorError::Refused(
                "tee = \"snp\": this CPU does not report SEV-SNP (CPUID Fn8000_001F EAX bit 4)"
                    .to_owned(),
            )
        })?;
        if !config.firmware.is_file() {
            return Err(HypervisorError::Refused(format!(
                "tee = \"snp\": the firmware {} does not exist (an OVMF AmdSev build)",
                config.firmware.display()
            )));
        }
        Ok(Self {
            firmware: config.firmware.clone(),
            policy: config.snp_policy,
            vcpu_type: config.snp_vcpu_type.clone(),
            cbitpos: encryption.cbitpos,
            reduced_phys_bits: encryption.reduced_phys_bits,
            host_data,
        })
    }

    /// The launch a host without SNP rehearses (snp_rehearsal.rs): the firmware and policy
    /// of the configuration; the C-bit and reduced physical address bits are the usual
    /// values of EPYC parts, for they appear only in the object the rehearsal leaves out.
    pub fn for_rehearsal(config: &HypervisorConfig, host_data: [u8; 32]) -> Self {
        Self {
            firmware: config.firmware.clone(),
            policy: config.snp_policy,
            vcpu_type: config.snp_vcpu_type.clone(),
            cbitpos: 51,
            reduced_phys_bits: 1,
            host_data,
        }
    }

    /// The `-object` value.
    pub fn guest_object(&self) -> String {
        format!(
            "sev-snp-guest,id={SNP_OBJECT_ID},policy={:#x},cbitpos={},reduced-phys-bits={},kernel-hashes=on,host-data={}",
            self.policy,
            self.cbitpos,
            self.reduced_phys_bits,
            base64::engine::general_purpose::STANDARD.encode(self.host_data)
        )
    }
}

/// The id the machine's `confidential-guest-support` names.
pub const SNP_OBJECT_ID: &str = "sev0";

#[cfg(test)]
mod tests {
    use super::*;

    fn milan() -> Option<MemoryEncryption> {
        Some(MemoryEncryption {
            sev: true,
            sev_snp: true,
            cbitpos: 51,
            reduced_phys_bits: 1,
        })
    }

    #[test]
    fn the_guest_object_carries_policy_cbit_hashes_and_host_data() {
        let firmware = tempfile::NamedTempFile::new().expect("firmware");
        let config = HypervisorConfig {
            firmware: firmware.path().to_owned(),
            ..Default::default()
        };
        let launch = SnpLaunch::with_encryption(&config, [0; 32], milan()).expect("launch");
        // A pod without init-data: zero HOST_DATA, base64.
        assert_eq!(
            launch.guest_object(),
            "sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,\
             host-data=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
        let with_init_data = SnpLaunch::with_encryption(&config, [1; 32], milan()).expect("launch");
        assert_ne!(with_init_data.host_data, launch.host_data);
    }

    #[test]
    fn hosts_without_snp_or_firmware_say_why() {
        let config = HypervisorConfig::default();
        let err = SnpLaunch::with_encryption(&config, [0; 32], None).expect_err("no SNP");
        assert!(err.to_string().contains("SEV-SNP"), "{err}");
        let config = HypervisorConfig {
            firmware: PathBuf::from("/nonexistent/OVMF.amdsev.fd"),
            ..Default::default()
        };
        let err = SnpLaunch::with_encryption(&config, [0; 32], milan()).expect_err("no firmware");
        assert!(
            err.to_string().contains("/nonexistent/OVMF.amdsev.fd"),
            "{err}"
        );
    }
}
