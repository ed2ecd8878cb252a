//! The launch plan of a QEMU guest booted by OVMF with SEV-SNP: the firmware image, the
//! sections its SEV metadata asks for (zeroed memory, secrets and CPUID pages, the page with
//! the kernel/initrd/command-line hashes QEMU fills when `kernel-hashes=on`), then the VMSAs.
//!
//! The firmware, its metadata table and the hashes page come from the `sev` crate's parsers;
//! the plan and the digest are cloak's (launch_plan.rs), shared with cloak-vmm's direct launch.

use std::path::{Path, PathBuf};

use sev::measurement::ovmf::{SectionType, OVMF};
use sev::measurement::sev_hashes::SevHashes;
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType, VMSA};
use sev::parser::ByteParser;

use crate::digest::LaunchDigest;
use crate::plan::{LaunchPlan, PageKind, PAGE_SIZE};

/// The VMM's conventions for the initial vCPU state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmType {
    Qemu,
    Ec2,
}

impl std::str::FromStr for VmmType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "qemu" => Ok(Self::Qemu),
            "ec2" => Ok(Self::Ec2),
            _ => Err(format!("unknown VMM type {text:?} (QEMU, ec2)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OvmfLaunch {
    pub ovmf: PathBuf,
    pub vcpus: u32,
    /// CPUID signature of the vCPU model (cpu_types.rs).
    pub vcpu_signature: u32,
    /// SEV_FEATURES of every VMSA.
    pub guest_features: u64,
    /// With a kernel, QEMU measures it, the initrd and the command line through OVMF's
    /// hashes table; the firmware must have one.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    pub vmm: VmmType,
    /// A precomputed digest of the firmware pages to start from (`--snp-ovmf-hash`).
    pub ovmf_digest: Option<LaunchDigest>,
}

#[derive(Debug, thiserror::Error)]
pub enum OvmfLaunchError {
    #[error("reading the firmware {path}: {reason}")]
    Firmware { path: String, reason: String },
    #[error("hashing the kernel, initrd and command line: {0}")]
    Hashes(String),
    #[error("a kernel was given but the firmware has no SNP kernel-hashes section (use an AmdSev build of OVMF)")]
    NoKernelHashesSection,
    #[error("the firmware's kernel-hashes section is {0} bytes, not one page")]
    HashesSectionSize(u32),
    #[error("building the VMSA: {0}")]
    Vmsa(String),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
}

/// Offset of RDX in the VMSA (AMD64 APM vol. 2, "VMSA Layout, State Save Area for SEV-ES").
const VMSA_RDX_OFFSET: usize = 0x310;

fn firmware_error(path: &Path, reason: impl std::fmt::Display) -> OvmfLaunchError {
    OvmfLaunchError::Firmware {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads and parses a firmware image (its GUIDed table and SEV metadata).
fn load_firmware(path: &Path) -> Result<OVMF, OvmfLaunchError> {
    OVMF::new(path.to_owned()).map_err(|err| firmware_error(path, err))
}

impl OvmfLaunch {
    /// The ordered page records of this launch.
    pub fn plan(&self) -> Result<LaunchPlan, OvmfLaunchError> {
        let ovmf = load_firmware(&self.ovmf)?;
        let mut plan = LaunchPlan::default();
        match self.ovmf_digest {
            Some(seed) => plan.seed = Some(seed),
            None => plan.push(ovmf.gpa(), PageKind::Normal(ovmf.data().clone())),
        }
        let hashes = self.kernel_hashes()?;
        if hashes.is_some() && !ovmf.has_metadata_section(SectionType::SnpKernelHashes) {
            return Err(OvmfLaunchError::NoKernelHashesSection);
        }
        for section in ovmf.metadata_items() {
            let gpa = u64::from(section.gpa);
            let size = section.size as usize;
            match section.section_type {
                SectionType::SnpSecMemory | SectionType::SvsmCaa => {
                    plan.push(gpa, PageKind::Zero(size))
                }
                SectionType::SnpSecrets => plan.push(gpa, PageKind::Secrets),
                // EC2 hands the CPUID page over after every other section.
                SectionType::Cpuid if self.vmm == VmmType::Ec2 => {}
                SectionType::Cpuid => plan.push(gpa, PageKind::Cpuid),
                SectionType::SnpKernelHashes => match &hashes {
                    Some(hashes) => {
                        if size != PAGE_SIZE {
                            return Err(OvmfLaunchError::HashesSectionSize(section.size));
                        }
                        let table_gpa = ovmf
                            .sev_hashes_table_gpa()
                            .map_err(|err| OvmfLaunchError::Hashes(err.to_string()))?;
                        let page = hashes
                            .construct_page((table_gpa as usize) & (PAGE_SIZE - 1))
                            .map_err(|err| OvmfLaunchError::Hashes(err.to_string()))?;
                        plan.push(gpa, PageKind::Normal(page));
                    }
                    None => plan.push(gpa, PageKind::Zero(size)),
                },
            }
        }
        if self.vmm == VmmType::Ec2 {
            for section in ovmf.metadata_items() {
                if section.section_type == SectionType::Cpuid {
                    plan.push(u64::from(section.gpa), PageKind::Cpuid);
                }
            }
        }
        let reset_eip = ovmf
            .sev_es_reset_eip()
            .map_err(|err| firmware_error(&self.ovmf, err))?;
        for page in self.vmsa_pages(u64::from(reset_eip))? {
            plan.push(crate::plan::VMSA_GPA, PageKind::Vmsa(page));
        }
        Ok(plan)
    }

    pub fn digest(&self) -> Result<LaunchDigest, OvmfLaunchError> {
        Ok(self.plan()?.digest()?)
    }

    fn kernel_hashes(&self) -> Result<Option<SevHashes>, OvmfLaunchError> {
        let Some(kernel) = &self.kernel else {
            return Ok(None);
        };
        SevHashes::new(kernel.clone(), self.initrd.clone(), self.append.as_deref())
            .map(Some)
            .map_err(|err| OvmfLaunchError::Hashes(err.to_string()))
    }

    /// One VMSA page per vCPU: the boot processor's, then the application processors'. The
    /// `sev` crate builds them for a CPU model it knows; for QEMU the model shows only in RDX,
    /// which is set to the requested signature (so models the crate lacks work too).
    fn vmsa_pages(&self, reset_eip: u64) -> Result<Vec<Vec<u8>>, OvmfLaunchError> {
        let vmm = match self.vmm {
            VmmType::Qemu => VMMType::QEMU,
            VmmType::Ec2 => VMMType::EC2,
        };
        // The crate builds GuestFeatures only by decoding its little-endian bytes.
        let features = GuestFeatures::from_bytes(&self.guest_features.to_le_bytes())
            .map_err(|err| OvmfLaunchError::Vmsa(err.to_string()))?;
        let vmsa = VMSA::new(
            reset_eip,
            CpuType::EpycV4,
            vmm,
            Some(u64::from(self.vcpus)),
            features,
        );
        let mut pages = vmsa
            .pages(self.vcpus as usize)
            .map_err(|err| OvmfLaunchError::Vmsa(err.to_string()))?;
        if self.vmm == VmmType::Qemu {
            for page in &mut pages {
                page[VMSA_RDX_OFFSET..VMSA_RDX_OFFSET + 8]
                    .copy_from_slice(&u64::from(self.vcpu_signature).to_le_bytes());
            }
        }
        Ok(pages)
    }
}

/// Whether `ovmf` is a firmware whose SEV metadata has a kernel-hashes section (so QEMU's
/// `kernel-hashes=on` measures the kernel, initrd and command line), or why it cannot be read.
pub fn has_kernel_hashes_table(ovmf: &Path) -> Result<bool, OvmfLaunchError> {
    Ok(load_firmware(ovmf)?.has_metadata_section(SectionType::SnpKernelHashes))
}

/// The digest of the firmware pages alone, for `--snp-ovmf-hash`.
pub fn ovmf_digest(ovmf: &Path) -> Result<LaunchDigest, OvmfLaunchError> {
    let firmware = load_firmware(ovmf)?;
    let mut plan = LaunchPlan::default();
    plan.push(firmware.gpa(), PageKind::Normal(firmware.data().clone()));
    Ok(plan.digest()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/snp/firmware")
            .join(name)
    }

    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&kernel, (0..10_000u32).map(|i| i as u8).collect::<Vec<_>>())
            .expect("kernel");
        std::fs::write(&initrd, b"initrd contents").expect("initrd");
        (dir, kernel, initrd)
    }

    /// The `sev` crate's own digest for the CPU models it knows: equal digests prove the
    /// plan's order and the RDX patch.
    #[test]
    fn plans_agree_with_the_sev_crate_where_it_covers_the_case() {
        let (_dir, kernel, initrd) = files();
        let cases = [
            (CpuType::EpycV4, "EPYC-v4"),
            (CpuType::EpycMilan, "EPYC-Milan"),
            (CpuType::EpycGenoa, "EPYC-Genoa"),
            (CpuType::EpycRome, "EPYC-Rome"),
        ];
        for (cpu, name) in cases {
            for vcpus in [1u32, 4] {
                for with_kernel in [false, true] {
                    let ovmf = testdata("ovmf_AmdSev_suffix.bin");
                    let expected = snp_calc_launch_digest(SnpMeasurementArgs {
                        vcpus,
                        vcpu_type: cpu,
                        ovmf_file: ovmf.clone(),
                        guest_features: GuestFeatures::from_bytes(&0x21u64.to_le_bytes())
                            .expect("features"),
                        kernel_file: with_kernel.then(|| kernel.clone()),
                        initrd_file: with_kernel.then(|| initrd.clone()),
                        append: with_kernel.then_some("console=ttyS0"),
                        ovmf_hash_str: None,
                        vmm_type: Some(VMMType::QEMU),
                    })
                    .expect("sev crate digest")
                    .get_hex_ld();
                    let launch = OvmfLaunch {
                        ovmf,
                        vcpus,
                        vcpu_signature: crate::cpu_types::signature_of(name).expect("known"),
                        guest_features: 0x21,
                        kernel: with_kernel.then(|| kernel.clone()),
                        initrd: with_kernel.then(|| initrd.clone()),
                        append: with_kernel.then(|| "console=ttyS0".to_owned()),
                        vmm: VmmType::Qemu,
                        ovmf_digest: None,
                    };
                    assert_eq!(
                        launch.digest().expect("digest").hex(),
                        expected,
                        "{name}, {vcpus} vCPUs, kernel {with_kernel}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_precomputed_firmware_digest_gives_the_same_result() {
        let ovmf = testdata("ovmf_OvmfX64_suffix.bin");
        let mut launch = OvmfLaunch {
            ovmf: ovmf.clone(),
            vcpus: 2,
            vcpu_signature: 0x00a0_0f11,
            guest_features: 0x1,
            kernel: None,
            initrd: None,
            append: None,
            vmm: VmmType::Qemu,
            ovmf_digest: None,
        };
        let whole = launch.digest().expect("digest");
        launch.ovmf_digest = Some(ovmf_digest(&ovmf).expect("firmware digest"));
        assert_eq!(launch.digest().expect("digest"), whole);
    }

    #[test]
    fn the_amdsev_build_has_a_hashes_table_and_ovmfx64_has_none() {
        assert!(has_kernel_hashes_table(&testdata("ovmf_AmdSev_suffix.bin")).expect("reads"));
        assert!(!has_kernel_hashes_table(&testdata("ovmf_OvmfX64_suffix.bin")).expect("reads"));
        assert!(has_kernel_hashes_table(Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn a_kernel_needs_a_firmware_with_a_hashes_table() {
        let (_dir, kernel, _) = files();
        let launch = OvmfLaunch {
            ovmf: testdata("ovmf_OvmfX64_suffix.bin"),
            vcpus: 1,
            vcpu_signature: 0x0080_0f12,
            guest_features: 0x1,
            kernel: Some(kernel),
            initrd: None,
            append: None,
            vmm: VmmType::Qemu,
            ovmf_digest: None,
        };
        assert!(matches!(
            launch.digest(),
            Err(OvmfLaunchError::NoKernelHashesSection)
        ));
    }
}
