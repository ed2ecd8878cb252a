//! The launch plan of a guest booted by OVMF with SEV-SNP: the firmware image, the sections
//! its SEV metadata asks for (zeroed memory, secrets and CPUID pages, the page with the
//! kernel/initrd/command-line hashes QEMU fills when `kernel-hashes=on`), then the VMSAs in the
//! reset state of the VMM assumed (QEMU, EC2 or GCE, which order and type some pages
//! differently too). A firmware without SEV metadata is measured as its pages and VMSAs.
//!
//! The firmware's table and metadata are read by ovmf_firmware.rs; the hashes page comes from
//! the `sev` crate; the plan and the digest are cloak's (plan.rs), shared with cloak-vmm's
//! direct launch.

use std::path::{Path, PathBuf};

use sev::measurement::sev_hashes::SevHashes;

use crate::digest::LaunchDigest;
use crate::ovmf_firmware::{Firmware, FirmwareError, Section, SectionType};
use crate::plan::{LaunchPlan, PageKind, PAGE_SIZE};
pub use crate::reset_state::VmmType;

#[derive(Debug, Clone)]
pub struct OvmfLaunch {
    pub ovmf: PathBuf,
    pub vcpus: u32,
    /// CPUID signature of the vCPU model (cpu_types.rs); QEMU puts it in RDX at reset.
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
    #[error("the firmware {path}: {source}")]
    Firmware { path: String, source: FirmwareError },
    #[error("hashing the kernel, initrd and command line: {0}")]
    Hashes(String),
    #[error("a kernel was given but the firmware has no SNP kernel-hashes section (use an AmdSev build of OVMF)")]
    NoKernelHashesSection,
    #[error("the firmware's kernel-hashes section is {0} bytes, not one page")]
    HashesSectionSize(usize),
    #[error("the firmware has no SEV-ES reset block, so its application processors cannot start under SEV-SNP (sev-snp-measure refuses it too)")]
    NoResetBlock,
    #[error("at least one vCPU is measured")]
    NoVcpus,
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
}

fn firmware_error(path: &Path, source: FirmwareError) -> OvmfLaunchError {
    OvmfLaunchError::Firmware {
        path: path.display().to_string(),
        source,
    }
}

fn load_firmware(path: &Path) -> Result<Firmware, OvmfLaunchError> {
    Firmware::load(path).map_err(|source| firmware_error(path, source))
}

/// The kernel-hashes page for `section` of `firmware` (read from `path`): the hashes table at
/// its offset in the page, as QEMU writes it for `kernel-hashes=on`.
fn hashes_page(
    firmware: &Firmware,
    path: &Path,
    section: &Section,
    hashes: &SevHashes,
) -> Result<Vec<u8>, OvmfLaunchError> {
    if section.size != PAGE_SIZE {
        return Err(OvmfLaunchError::HashesSectionSize(section.size));
    }
    let table_gpa = firmware
        .hashes_table_gpa()
        .map_err(|source| firmware_error(path, source))?;
    hashes
        .construct_page((table_gpa as usize) & (PAGE_SIZE - 1))
        .map_err(|err| OvmfLaunchError::Hashes(err.to_string()))
}

impl OvmfLaunch {
    /// The ordered page records of this launch.
    pub fn plan(&self) -> Result<LaunchPlan, OvmfLaunchError> {
        if self.vcpus == 0 {
            return Err(OvmfLaunchError::NoVcpus);
        }
        let firmware = load_firmware(&self.ovmf)?;
        let ap_eip = firmware
            .ap_reset_eip()
            .ok_or(OvmfLaunchError::NoResetBlock)?;
        let mut plan = LaunchPlan::default();
        match self.ovmf_digest {
            Some(seed) => plan.seed = Some(seed),
            None => plan.push(firmware.gpa(), PageKind::Normal(firmware.data().to_vec())),
        }
        let hashes = self.kernel_hashes()?;
        if hashes.is_some() && !firmware.has_section(SectionType::SnpKernelHashes) {
            return Err(OvmfLaunchError::NoKernelHashesSection);
        }
        for section in firmware.sections() {
            let (gpa, size) = (section.gpa, section.size);
            match section.kind {
                // GCE leaves the pre-validated memory unmeasured.
                SectionType::SnpSecMemory if self.vmm == VmmType::Gce => {
                    plan.push(gpa, PageKind::Unmeasured(size))
                }
                SectionType::SnpSecMemory | SectionType::SvsmCaa => {
                    plan.push(gpa, PageKind::Zero(size))
                }
                SectionType::SnpSecrets => plan.push(gpa, PageKind::Secrets),
                // EC2 hands the CPUID page over after every other section.
                SectionType::Cpuid if self.vmm == VmmType::Ec2 => {}
                SectionType::Cpuid => plan.push(gpa, PageKind::Cpuid),
                SectionType::SnpKernelHashes => match &hashes {
                    Some(hashes) => plan.push(
                        gpa,
                        PageKind::Normal(hashes_page(&firmware, &self.ovmf, section, hashes)?),
                    ),
                    None => plan.push(gpa, PageKind::Zero(size)),
                },
            }
        }
        if self.vmm == VmmType::Ec2 {
            for section in firmware.sections() {
                if section.kind == SectionType::Cpuid {
                    plan.push(section.gpa, PageKind::Cpuid);
                }
            }
        }
        for page in crate::reset_state::vmsa_pages(
            self.vmm,
            u64::from(ap_eip),
            self.vcpus,
            self.guest_features,
            self.vcpu_signature,
        ) {
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
}

/// The page QEMU puts at the firmware's kernel-hashes section for `kernel-hashes=on` (the
/// table of the kernel's, initrd's and command line's SHA-256 at the table's offset), and that
/// section's guest address: the same page this plan measures.
pub fn kernel_hashes_page(
    ovmf: &Path,
    kernel: &Path,
    initrd: Option<&Path>,
    append: &str,
) -> Result<(u64, Vec<u8>), OvmfLaunchError> {
    let firmware = load_firmware(ovmf)?;
    let section = firmware
        .sections()
        .iter()
        .find(|section| section.kind == SectionType::SnpKernelHashes)
        .ok_or(OvmfLaunchError::NoKernelHashesSection)?;
    let hashes = SevHashes::new(kernel.to_owned(), initrd.map(Path::to_owned), Some(append))
        .map_err(|err| OvmfLaunchError::Hashes(err.to_string()))?;
    Ok((section.gpa, hashes_page(&firmware, ovmf, section, &hashes)?))
}

/// Whether `ovmf` is a firmware whose SEV metadata has a kernel-hashes section (so QEMU's
/// `kernel-hashes=on` measures the kernel, initrd and command line), or why it cannot be read.
pub fn has_kernel_hashes_table(ovmf: &Path) -> Result<bool, OvmfLaunchError> {
    Ok(load_firmware(ovmf)?.has_section(SectionType::SnpKernelHashes))
}

/// The digest of the firmware pages alone, for `--snp-ovmf-hash`.
pub fn ovmf_digest(ovmf: &Path) -> Result<LaunchDigest, OvmfLaunchError> {
    let firmware = load_firmware(ovmf)?;
    let mut plan = LaunchPlan::default();
    plan.push(firmware.gpa(), PageKind::Normal(firmware.data().to_vec()));
    Ok(plan.digest()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::{GuestFeatures, VMMType};
    use sev::parser::ByteParser;

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
