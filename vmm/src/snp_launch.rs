//! The SEV-SNP direct launch: the direct-launch plan (cloak-launch's direct.rs,
//! the very records `cloak measure --backend cloak-vmm` digests) executed by the AMD secure
//! processor through KVM. Guest RAM is private (guest_memfd, KVM_SET_MEMORY_ATTRIBUTES); each
//! record becomes one SNP_LAUNCH_UPDATE of its page type with its contents; the vCPUs' VMSAs
//! are made by KVM at SNP_LAUNCH_FINISH from the registers the plan's save areas gave them;
//! HOST_DATA (the SHA-256 of the pod's init-data) is bound at finish.
//!
//! References: SEV-SNP Firmware ABI 1.55 sections 8.16 SNP_LAUNCH_START, 8.17
//! SNP_LAUNCH_UPDATE (page types), 8.18 SNP_LAUNCH_FINISH, and the CPUID page format of
//! section 8.17.2.6 (as Linux's `struct snp_cpuid_table`); Linux
//! Documentation/virt/kvm/x86/amd-memory-encryption.rst (KVM_SEV_INIT2,
//! KVM_SEV_SNP_LAUNCH_START/UPDATE/FINISH, KVM_X86_SNP_VM, guest_memfd).
//!
//! No host here has SNP; the launch's logic is tested against a recording firmware that
//! digests what it is given (tests below), the ioctls only where SNP hardware exists.

use std::fs::File;
use std::os::fd::{AsRawFd as _, FromRawFd as _};

use cloak_launch::{LaunchPlan, PageKind};
use kvm_bindings::CpuId;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Bytes as _, GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion as _};

use crate::memory::GuestRam;

#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    #[error("{step}: {source} (firmware error {firmware_error:#x})")]
    Firmware {
        step: &'static str,
        source: kvm_ioctls::Error,
        firmware_error: u32,
    },
    #[error("{step}: {source}")]
    Kvm {
        step: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("opening /dev/sev: {0}")]
    SevDevice(std::io::Error),
    #[error("the plan puts {bytes} bytes at {gpa:#x}, outside guest RAM")]
    OutsideRam { gpa: u64, bytes: usize },
    #[error("the plan has {plan} VMSAs for {vcpus} vCPUs")]
    VcpuCount { plan: usize, vcpus: u32 },
}

/// What the AMD secure processor is asked to do, in launch order.
pub trait SnpFirmware {
    fn launch_start(&mut self, policy: u64) -> Result<(), SnpError>;
    /// Pages `[gpa, gpa + len)` become guest pages of `page_type`; measured types take
    /// their contents from `source` (a host address of the same bytes in shared memory).
    fn launch_update(
        &mut self,
        gpa: u64,
        source: u64,
        len: u64,
        page_type: u8,
    ) -> Result<(), SnpError>;
    fn launch_finish(&mut self, host_data: [u8; 32]) -> Result<(), SnpError>;
}

/// Gives the firmware every page record of `plan` (after SNP_LAUNCH_START): contents are
/// written into guest RAM first, the CPUID page gets `cpuid_page`. The VMSA records are not
/// updates — KVM makes them from the vCPUs at finish — but must be one per vCPU.
pub fn update_pages(
    plan: &LaunchPlan,
    ram: &GuestRam,
    vcpus: u32,
    policy: u64,
    cpuid_page: &[u8],
    firmware: &mut dyn SnpFirmware,
) -> Result<(), SnpError> {
    let vmsas = plan
        .records
        .iter()
        .filter(|r| matches!(r.kind, PageKind::Vmsa(_)))
        .count();
    if vmsas != vcpus as usize {
        return Err(SnpError::VcpuCount { plan: vmsas, vcpus });
    }
    firmware.launch_start(policy)?;
    let page = cloak_launch::plan::PAGE_SIZE;
    for record in &plan.records {
        let (len, contents): (usize, Option<&[u8]>) = match &record.kind {
            PageKind::Normal(data) => (data.len(), Some(data)),
            PageKind::Zero(bytes) | PageKind::Unmeasured(bytes) => (*bytes, None),
            PageKind::Secrets => (page, None),
            PageKind::Cpuid => (page, Some(cpuid_page)),
            PageKind::Vmsa(_) => continue,
        };
        let outside = || SnpError::OutsideRam {
            gpa: record.gpa,
            bytes: len,
        };
        if let Some(contents) = contents {
            ram.memory
                .write_slice(contents, GuestAddress(record.gpa))
                .map_err(|_| outside())?;
        }
        let source = ram
            .memory
            .get_host_address(GuestAddress(record.gpa))
            .map_err(|_| outside())? as u64;
        firmware.launch_update(record.gpa, source, len as u64, record.kind.page_type())?;
    }
    Ok(())
}

/// The CPUID page: the guest's CPUID leaves as the firmware checks them (Linux's
/// `struct snp_cpuid_table`: count, reserved, then up to 64 entries of eax_in, ecx_in,
/// xcr0_in, xss_in, eax, ebx, ecx, edx, reserved).
pub fn cpuid_page(cpuid: &CpuId) -> Vec<u8> {
    const MAX_ENTRIES: usize = 64;
    const ENTRY_BYTES: usize = 48;
    let mut page = vec![0u8; cloak_launch::plan::PAGE_SIZE];
    let entries: Vec<_> = cpuid.as_slice().iter().take(MAX_ENTRIES).collect();
    page[0..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    for (index, entry) in entries.into_iter().enumerate() {
        let at = 16 + index * ENTRY_BYTES;
        let mut put = |offset: usize, bytes: &[u8]| {
            page[at + offset..at + offset + bytes.len()].copy_from_slice(bytes);
        };
        put(0, &entry.function.to_le_bytes());
        put(4, &entry.index.to_le_bytes());
        // xcr0_in and xss_in: the XSAVE state the size leaves (0xD) are asked for; the
        // firmware fills in what it finds when left zero.
        put(24, &entry.eax.to_le_bytes());
        put(28, &entry.ebx.to_le_bytes());
        put(32, &entry.ecx.to_le_bytes());
        put(36, &entry.edx.to_le_bytes());
    }
    page
}

/// An SNP VM: KVM_X86_SNP_VM, initialised with KVM_SEV_INIT2 for `vmsa_features`.
pub fn create_snp_vm(kvm: &Kvm, vmsa_features: u64) -> Result<(VmFd, File), SnpError> {
    let vm = kvm
        .create_vm_with_type(u64::from(kvm_bindings::KVM_X86_SNP_VM))
        .map_err(|source| SnpError::Kvm {
            step: "KVM_CREATE_VM (SNP)",
            source,
        })?;
    let sev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/sev")
        .map_err(SnpError::SevDevice)?;
    let mut init = kvm_bindings::kvm_sev_init {
        vmsa_features,
        ghcb_version: 2,
        ..Default::default()
    };
    sev_command(
        &vm,
        &sev,
        "KVM_SEV_INIT2",
        kvm_bindings::sev_cmd_id_KVM_SEV_INIT2,
        &mut init,
    )?;
    Ok((vm, sev))
}

fn sev_command<T>(
    vm: &VmFd,
    sev: &File,
    step: &'static str,
    id: u32,
    data: &mut T,
) -> Result<(), SnpError> {
    let mut command = kvm_bindings::kvm_sev_cmd {
        id,
        data: data as *mut T as u64,
        sev_fd: sev.as_raw_fd() as u32,
        ..Default::default()
    };
    vm.encrypt_op_sev(&mut command)
        .map_err(|source| SnpError::Firmware {
            step,
            source,
            firmware_error: command.error,
        })
}

/// Backs every RAM region with guest_memfd private memory (the memfd mapping stays the
/// shared view the launch copies from) and marks it private.
pub fn register_private_memory(vm: &VmFd, ram: &GuestRam) -> Result<Vec<File>, SnpError> {
    let kvm = |step| move |source| SnpError::Kvm { step, source };
    let mut guest_memfds = Vec::new();
    for (slot, region) in ram.memory.iter().enumerate() {
        let gmem = kvm_bindings::kvm_create_guest_memfd {
            size: region.len(),
            ..Default::default()
        };
        let raw = vm
            .create_guest_memfd(gmem)
            .map_err(kvm("KVM_CREATE_GUEST_MEMFD"))?;
        // SAFETY: KVM_CREATE_GUEST_MEMFD returned a new descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(raw) };
        let region_info = kvm_bindings::kvm_userspace_memory_region2 {
            slot: slot as u32,
            flags: kvm_bindings::KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            guest_memfd_offset: 0,
            guest_memfd: file.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the region is a live mapping of `ram` and `file` a live guest_memfd, both
        // kept by the caller for as long as the VM fd.
        unsafe { vm.set_user_memory_region2(region_info) }
            .map_err(kvm("KVM_SET_USER_MEMORY_REGION2"))?;
        vm.set_memory_attributes(kvm_bindings::kvm_memory_attributes {
            address: region.start_addr().0,
            size: region.len(),
            attributes: u64::from(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE),
            flags: 0,
        })
        .map_err(kvm("KVM_SET_MEMORY_ATTRIBUTES"))?;
        guest_memfds.push(file);
    }
    Ok(guest_memfds)
}

/// KVM_HC_MAP_GPA_RANGE: the guest asks for pages to turn shared or private (its GHCB
/// page-state changes, forwarded by KVM as this hypercall).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// Its third argument's "encrypted" attribute: the range becomes private.
const MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;

/// A memory conversion the guest asked for: (gpa, bytes, private).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    pub gpa: u64,
    pub bytes: u64,
    pub private: bool,
}

impl Conversion {
    /// From KVM_HC_MAP_GPA_RANGE's arguments: address, pages, attributes.
    pub fn from_hypercall(args: &[u64; 6]) -> Self {
        Self {
            gpa: args[0],
            bytes: args[1] * cloak_launch::plan::PAGE_SIZE as u64,
            private: args[2] & MAP_GPA_RANGE_ENCRYPTED != 0,
        }
    }

    /// From KVM_EXIT_MEMORY_FAULT (an access of the other kind than the page has).
    pub fn from_memory_fault(flags: u64, gpa: u64, size: u64) -> Self {
        Self {
            gpa,
            bytes: size,
            private: flags & u64::from(kvm_bindings::KVM_MEMORY_EXIT_FLAG_PRIVATE) != 0,
        }
    }

    /// Applies it (KVM_SET_MEMORY_ATTRIBUTES).
    pub fn apply(&self, vm: &VmFd) -> Result<(), SnpError> {
        vm.set_memory_attributes(kvm_bindings::kvm_memory_attributes {
            address: self.gpa,
            size: self.bytes,
            attributes: if self.private {
                u64::from(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE)
            } else {
                0
            },
            flags: 0,
        })
        .map_err(|source| SnpError::Kvm {
            step: "KVM_SET_MEMORY_ATTRIBUTES (conversion)",
            source,
        })
    }
}

/// Lets page-state changes reach the VMM as KVM_EXIT_HYPERCALL.
pub fn enable_conversion_exits(vm: &VmFd) -> Result<(), SnpError> {
    let cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_EXIT_HYPERCALL,
        args: [1 << KVM_HC_MAP_GPA_RANGE, 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap).map_err(|source| SnpError::Kvm {
        step: "KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)",
        source,
    })
}

/// The firmware through KVM.
pub struct KvmSnpFirmware<'a> {
    pub vm: &'a VmFd,
    pub sev: &'a File,
}

impl SnpFirmware for KvmSnpFirmware<'_> {
    fn launch_start(&mut self, policy: u64) -> Result<(), SnpError> {
        let mut start = kvm_bindings::kvm_sev_snp_launch_start {
            policy,
            ..Default::default()
        };
        sev_command(
            self.vm,
            self.sev,
            "SNP_LAUNCH_START",
            kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START,
            &mut start,
        )
    }

    fn launch_update(
        &mut self,
        gpa: u64,
        source: u64,
        len: u64,
        page_type: u8,
    ) -> Result<(), SnpError> {
        let mut update = kvm_bindings::kvm_sev_snp_launch_update {
            gfn_start: gpa >> 12,
            uaddr: source,
            len,
            type_: page_type,
            ..Default::default()
        };
        sev_command(
            self.vm,
            self.sev,
            "SNP_LAUNCH_UPDATE",
            kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE,
            &mut update,
        )
    }

    fn launch_finish(&mut self, host_data: [u8; 32]) -> Result<(), SnpError> {
        let mut finish = kvm_bindings::kvm_sev_snp_launch_finish {
            host_data,
            ..Default::default()
        };
        sev_command(
            self.vm,
            self.sev,
            "SNP_LAUNCH_FINISH",
            kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH,
            &mut finish,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloak_launch::digest::LaunchDigest;
    use cloak_launch::direct::{minimal_bzimage, DirectLaunch, DEFAULT_C_BIT};
    use sha2::Digest as _;

    /// A firmware that digests what it is handed, page by page, as the AMD-SP does
    /// (PAGE_INFO: contents hash for NORMAL pages, zeros otherwise), reading contents
    /// through the host addresses it is given.
    #[derive(Default)]
    struct RecordingFirmware {
        calls: Vec<String>,
        digest: LaunchDigest,
    }

    impl SnpFirmware for RecordingFirmware {
        fn launch_start(&mut self, policy: u64) -> Result<(), SnpError> {
            self.calls.push(format!("start {policy:#x}"));
            Ok(())
        }
        fn launch_update(
            &mut self,
            gpa: u64,
            source: u64,
            len: u64,
            page_type: u8,
        ) -> Result<(), SnpError> {
            self.calls
                .push(format!("update {gpa:#x} {len:#x} {page_type}"));
            for page in 0..len / 4096 {
                let contents = if page_type == 1 {
                    // SAFETY: `source` is the host address of guest RAM the test keeps
                    // mapped; the launch gives whole pages inside one region.
                    let bytes = unsafe {
                        std::slice::from_raw_parts((source + page * 4096) as *const u8, 4096)
                    };
                    sha2::Sha384::digest(bytes).into()
                } else {
                    [0u8; 48]
                };
                self.digest.extend(page_type, gpa + page * 4096, &contents);
            }
            Ok(())
        }
        fn launch_finish(&mut self, host_data: [u8; 32]) -> Result<(), SnpError> {
            self.calls
                .push(format!("finish {}", hex::encode(&host_data[..2])));
            Ok(())
        }
    }

    fn launch(vcpus: u32) -> DirectLaunch {
        DirectLaunch {
            kernel: minimal_bzimage(&[0x90; 5000], 0x30_0000),
            initrd: b"initrd".to_vec(),
            cmdline: "console=ttyS0".into(),
            memory_mib: 64,
            vcpus,
            guest_features: 1,
            c_bit: DEFAULT_C_BIT,
        }
    }

    /// What reaches the firmware is the plan: digesting the updates as the AMD-SP would
    /// gives the plan's digest without its VMSAs (which KVM adds at finish).
    #[test]
    fn the_firmware_is_given_exactly_the_planned_pages() {
        let launch = launch(2);
        let plan = launch.plan().expect("plan");
        let ram = GuestRam::new(launch.memory_mib).expect("ram");
        let mut firmware = RecordingFirmware::default();
        update_pages(&plan, &ram, 2, 0x30000, &[0u8; 4096], &mut firmware).expect("updates");
        firmware.launch_finish([0xAB; 32]).expect("finish");

        let mut without_vmsas = plan.clone();
        without_vmsas
            .records
            .retain(|r| !matches!(r.kind, PageKind::Vmsa(_)));
        assert_eq!(
            firmware.digest,
            without_vmsas.digest().expect("digest"),
            "the launch updates digest to the plan"
        );
        assert_eq!(
            firmware.calls.first().map(String::as_str),
            Some("start 0x30000")
        );
        assert_eq!(
            firmware.calls.last().map(String::as_str),
            Some("finish abab")
        );
        assert_eq!(
            firmware.calls.len(),
            2 + without_vmsas.records.len(),
            "one update per record"
        );
        assert!(
            firmware
                .calls
                .contains(&"update 0x10000 0x1000 5".to_owned()),
            "secrets"
        );
        assert!(
            firmware
                .calls
                .contains(&"update 0x11000 0x1000 6".to_owned()),
            "CPUID"
        );
    }

    #[test]
    fn a_plan_for_other_vcpus_is_refused_before_the_firmware_is_asked() {
        let plan = launch(2).plan().expect("plan");
        let ram = GuestRam::new(64).expect("ram");
        let mut firmware = RecordingFirmware::default();
        let err = update_pages(&plan, &ram, 4, 0x30000, &[0u8; 4096], &mut firmware)
            .expect_err("refused");
        assert!(matches!(err, SnpError::VcpuCount { plan: 2, vcpus: 4 }));
        assert!(firmware.calls.is_empty());
    }

    #[test]
    fn conversions_read_the_guests_requests() {
        let to_shared = Conversion::from_hypercall(&[0x20_0000, 4, 0, 0, 0, 0]);
        assert_eq!(
            to_shared,
            Conversion {
                gpa: 0x20_0000,
                bytes: 0x4000,
                private: false
            }
        );
        assert!(Conversion::from_hypercall(&[0x1000, 1, 1 << 4, 0, 0, 0]).private);
        assert!(Conversion::from_memory_fault(8, 0x3000, 0x1000).private);
        assert!(!Conversion::from_memory_fault(0, 0x3000, 0x1000).private);
    }

    #[test]
    fn the_cpuid_page_lists_the_leaves() {
        let entries = [
            kvm_bindings::kvm_cpuid_entry2 {
                function: 0x8000_001F,
                eax: 0x1,
                ebx: 0x33,
                ..Default::default()
            },
            kvm_bindings::kvm_cpuid_entry2 {
                function: 7,
                index: 1,
                edx: 0xDEAD,
                ..Default::default()
            },
        ];
        let page = cpuid_page(&CpuId::from_entries(&entries).expect("cpuid"));
        assert_eq!(page.len(), 4096);
        assert_eq!(u32::from_le_bytes(page[0..4].try_into().expect("4")), 2);
        let entry = |i: usize, at: usize| {
            u32::from_le_bytes(
                page[16 + i * 48 + at..16 + i * 48 + at + 4]
                    .try_into()
                    .expect("4"),
            )
        };
        assert_eq!((entry(0, 0), entry(0, 28)), (0x8000_001F, 0x33));
        assert_eq!((entry(1, 0), entry(1, 4), entry(1, 36)), (7, 1, 0xDEAD));
    }
}
