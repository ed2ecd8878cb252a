//! Booting from the direct-launch plan of cloak-attestation (`direct_launch.rs`): the pages
//! the plan measures are written into guest RAM and the vCPUs start in the state its VMSAs
//! hold — the same description that predicts an SNP launch digest. Without SNP (plain KVM)
//! the plan is built without a C-bit and executed by copying; with SNP the same records go
//! to SNP_LAUNCH_UPDATE (not on this host).

use cloak_launch::direct::DirectLaunch;
use cloak_launch::vmsa::{SaveArea, Segment};
use cloak_launch::{LaunchPlan, PageKind};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestRam;

#[derive(Debug, thiserror::Error)]
pub enum DirectBootError {
    #[error("building the launch plan: {0}")]
    Plan(#[from] cloak_launch::direct::DirectLaunchError),
    #[error("the plan puts {bytes} bytes at {gpa:#x}, outside guest RAM")]
    OutsideRam { gpa: u64, bytes: usize },
}

/// Writes every measured page of `plan` into `ram`. Zero, unmeasured, secrets and CPUID
/// pages are RAM the memfd already holds as zeros; VMSAs become vCPU state instead.
pub fn load_plan(ram: &GuestRam, plan: &LaunchPlan) -> Result<usize, DirectBootError> {
    let mut written = 0;
    for record in &plan.records {
        if let PageKind::Normal(data) = &record.kind {
            ram.memory
                .write_slice(data, GuestAddress(record.gpa))
                .map_err(|_| DirectBootError::OutsideRam {
                    gpa: record.gpa,
                    bytes: data.len(),
                })?;
            written += data.len();
        }
    }
    Ok(written)
}

/// The plan of `launch` as cloak-vmm executes it.
pub fn plan_of(launch: &DirectLaunch) -> Result<LaunchPlan, DirectBootError> {
    Ok(launch.plan()?)
}

fn kvm_segment_of(segment: &Segment) -> kvm_segment {
    let attrib = segment.attrib;
    kvm_segment {
        base: segment.base,
        limit: segment.limit,
        selector: segment.selector,
        type_: (attrib & 0xf) as u8,
        s: ((attrib >> 4) & 1) as u8,
        dpl: ((attrib >> 5) & 3) as u8,
        present: ((attrib >> 7) & 1) as u8,
        avl: ((attrib >> 8) & 1) as u8,
        l: ((attrib >> 9) & 1) as u8,
        db: ((attrib >> 10) & 1) as u8,
        g: ((attrib >> 11) & 1) as u8,
        unusable: u8::from(attrib & 0x80 == 0),
        padding: 0,
    }
}

/// Loads a VMSA's state into KVM's register structures.
pub fn apply_save_area(area: &SaveArea, sregs: &mut kvm_sregs, regs: &mut kvm_regs) {
    sregs.cs = kvm_segment_of(&area.cs);
    sregs.ds = kvm_segment_of(&area.ds);
    sregs.es = kvm_segment_of(&area.es);
    sregs.fs = kvm_segment_of(&area.fs);
    sregs.gs = kvm_segment_of(&area.gs);
    sregs.ss = kvm_segment_of(&area.ss);
    sregs.tr = kvm_segment_of(&area.tr);
    sregs.ldt = kvm_segment_of(&area.ldtr);
    sregs.gdt.base = area.gdtr.base;
    sregs.gdt.limit = area.gdtr.limit as u16;
    sregs.idt.base = area.idtr.base;
    sregs.idt.limit = area.idtr.limit as u16;
    sregs.cr0 = area.cr0;
    sregs.cr3 = area.cr3;
    sregs.cr4 = area.cr4;
    // EFER.SVME belongs to the SEV world (VMSA); a plain guest has no use for it.
    sregs.efer = area.efer & !0x1000;
    regs.rip = area.rip;
    regs.rsi = area.rsi;
    regs.rsp = area.rsp;
    regs.rdx = area.rdx;
    regs.rflags = area.rflags;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloak_launch::direct::NO_C_BIT;

    #[test]
    fn segments_unpack_from_the_vmsa_attribute_format() {
        let code = kvm_segment_of(&Segment::new(0x10, 0xA9B, 0xffff_ffff, 0));
        assert_eq!(
            (code.type_, code.s, code.present, code.l, code.db, code.g),
            (0xB, 1, 1, 1, 0, 1)
        );
        assert_eq!(code.unusable, 0);
        let data = kvm_segment_of(&Segment::new(0x18, 0xC93, 0xffff_ffff, 0));
        assert_eq!((data.type_, data.l, data.db, data.g), (3, 0, 1, 1));
    }

    /// The boot parameters the plan writes, read through linux-loader's `boot_params` (bindgen
    /// output of Linux's bootparam.h): every field the kernel takes from us where it looks.
    #[test]
    fn the_boot_parameters_read_as_linux_defines_them() {
        use cloak_launch::direct::{ACPI_GPA, BOOT_PARAMS_GPA, CC_BLOB_GPA, CMDLINE_GPA};
        use linux_loader::loader::bootparam::boot_params;
        let launch = DirectLaunch {
            kernel: cloak_launch::direct::minimal_bzimage(b"KERNEL", 0x10_0000),
            initrd: b"INITRD".to_vec(),
            cmdline: "console=ttyS0".into(),
            memory_mib: 64,
            vcpus: 2,
            guest_features: 0,
            c_bit: NO_C_BIT,
        };
        let plan = plan_of(&launch).expect("plan");
        let page = plan
            .records
            .iter()
            .find_map(|r| match (&r.kind, r.gpa == BOOT_PARAMS_GPA) {
                (PageKind::Normal(page), true) => Some(page.clone()),
                _ => None,
            })
            .expect("boot parameters in the plan");
        assert!(page.len() >= std::mem::size_of::<boot_params>());
        // SAFETY: boot_params is plain old data (integers and arrays of them), the page is at
        // least its size, and read_unaligned copes with the Vec's alignment.
        let params: boot_params = unsafe { std::ptr::read_unaligned(page.as_ptr().cast()) };
        let hdr = params.hdr;
        assert_eq!({ hdr.boot_flag }, 0xAA55);
        assert_eq!({ hdr.header }, u32::from_le_bytes(*b"HdrS"));
        assert_eq!({ hdr.type_of_loader }, 0xFF);
        assert_eq!(hdr.loadflags & 1, 1, "LOADED_HIGH");
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_GPA as u32);
        assert_eq!({ hdr.ramdisk_size }, 6);
        assert_ne!({ hdr.ramdisk_image }, 0);
        assert_eq!({ params.acpi_rsdp_addr }, ACPI_GPA);
        assert_eq!({ params.cc_blob_address }, CC_BLOB_GPA as u32);
        let e820: Vec<(u64, u64, u32)> = params.e820_table[..params.e820_entries as usize]
            .iter()
            .map(|e| ({ e.addr }, { e.size }, { e.r#type }))
            .collect();
        assert_eq!(
            e820,
            [
                (0, 0x10000, 1),
                (0x10000, 0x2000, 2),
                (ACPI_GPA, 0x1000, 3),
                (ACPI_GPA + 0x1000, 0xA0000 - ACPI_GPA - 0x1000, 1),
                (0x10_0000, (64 << 20) - 0x10_0000, 1),
            ],
            "RAM, the secrets and CPUID pages reserved, the ACPI tables, RAM"
        );
    }

    #[test]
    fn the_plan_lands_in_ram_where_it_says() {
        let kernel = cloak_launch::direct::minimal_bzimage(b"KERNEL-CODE", 0x10_0000);
        let launch = DirectLaunch {
            kernel,
            initrd: b"INITRD".to_vec(),
            cmdline: "console=ttyS0".into(),
            memory_mib: 32,
            vcpus: 1,
            guest_features: 0,
            c_bit: NO_C_BIT,
        };
        let plan = plan_of(&launch).expect("plan");
        let ram = GuestRam::new(32).expect("ram");
        assert!(load_plan(&ram, &plan).expect("loads") > 0);
        let read = |gpa: u64, len: usize| {
            let mut bytes = vec![0u8; len];
            ram.memory
                .read_slice(&mut bytes, GuestAddress(gpa))
                .expect("read");
            bytes
        };
        assert_eq!(read(0x10_0000, 11), b"KERNEL-CODE");
        assert_eq!(read(0x2_0000, 14), b"console=ttyS0\0");
        assert_eq!(&read(0x7202, 4), b"HdrS");
        let initrd_at = u32::from_le_bytes(read(0x7218, 4).try_into().expect("4")) as u64;
        assert_eq!(read(initrd_at, 6), b"INITRD");
        // Without a C-bit the page tables map identity with plain entries.
        let pml4 = u64::from_le_bytes(read(0x9000, 8).try_into().expect("8"));
        assert_eq!(pml4, 0xA003);
    }
}
