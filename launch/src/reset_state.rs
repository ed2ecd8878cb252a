//! The vCPU state at reset that a VMM hands SEV-SNP for an OVMF launch, one VMSA per vCPU:
//! the boot processor at the reset vector (0xFFFFFFF0), the others at the firmware's SEV-ES
//! reset block. QEMU, EC2 and GCE differ in a few registers (segment attributes, RDX, the PAT,
//! the x87/SSE control words), so a digest is right only for the VMM it assumes; the values
//! are those `sev-snp-measure` uses for each VMM, which the oracle test holds cloak to.

use crate::vmsa::{SaveArea, Segment};

/// The VMM whose reset conventions a launch assumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmType {
    Qemu,
    Ec2,
    Gce,
}

impl std::str::FromStr for VmmType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "qemu" => Ok(Self::Qemu),
            "ec2" => Ok(Self::Ec2),
            "gce" => Ok(Self::Gce),
            _ => Err(format!("unknown VMM type {text:?} (QEMU, ec2, gce)")),
        }
    }
}

/// The boot processor's first instruction.
pub const BSP_RESET_EIP: u64 = 0xffff_fff0;
/// RDX at reset on EC2 and GCE: family 6 (their VMMs do not put the CPUID signature there).
const FIXED_RESET_RDX: u64 = 0x600;
/// The PAT MSR's power-on value (AMD APM vol. 2, "PAT Register").
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
/// GCE's hypervisor writes its own PAT.
const GCE_PAT: u64 = 0x0007_0106;

/// The save area of a vCPU that starts at `eip` (real mode, CS base from the upper bits).
pub fn reset_state(vmm: VmmType, eip: u64, sev_features: u64, vcpu_signature: u32) -> SaveArea {
    let (cs_attrib, ss_attrib, tr_attrib, rdx, g_pat, mxcsr, x87_fcw) = match vmm {
        VmmType::Qemu => (
            0x9b,
            0x93,
            0x8b,
            u64::from(vcpu_signature),
            DEFAULT_PAT,
            0x1f80,
            0x37f,
        ),
        // EC2 leaves the boot processor's CS not accessed.
        VmmType::Ec2 if eip == BSP_RESET_EIP => {
            (0x9a, 0x92, 0x83, FIXED_RESET_RDX, DEFAULT_PAT, 0, 0)
        }
        VmmType::Ec2 => (0x9b, 0x92, 0x83, FIXED_RESET_RDX, DEFAULT_PAT, 0, 0),
        VmmType::Gce => (0x9b, 0x93, 0x8b, FIXED_RESET_RDX, GCE_PAT, 0, 0),
    };
    let data = Segment::new(0, 0x93, 0xffff, 0);
    SaveArea {
        es: data,
        cs: Segment::new(0xf000, cs_attrib, 0xffff, eip & 0xffff_0000),
        ss: Segment::new(0, ss_attrib, 0xffff, 0),
        ds: data,
        fs: data,
        gs: data,
        gdtr: Segment::new(0, 0, 0xffff, 0),
        ldtr: Segment::new(0, 0x82, 0xffff, 0),
        idtr: Segment::new(0, 0, 0xffff, 0),
        tr: Segment::new(0, tr_attrib, 0xffff, 0),
        // KVM sets EFER.SVME and CR4.MCE; CR0.ET is set at reset.
        efer: 0x1000,
        cr4: 0x40,
        cr0: 0x10,
        dr7: 0x400,
        dr6: 0xffff_0ff0,
        rflags: 0x2,
        rip: eip & 0xffff,
        g_pat,
        rdx,
        sev_features,
        xcr0: 0x1,
        mxcsr,
        x87_fcw,
        ..Default::default()
    }
}

/// One VMSA page per vCPU: the boot processor's, then the application processors'.
pub fn vmsa_pages(
    vmm: VmmType,
    ap_eip: u64,
    vcpus: u32,
    sev_features: u64,
    vcpu_signature: u32,
) -> Vec<Vec<u8>> {
    let bsp = reset_state(vmm, BSP_RESET_EIP, sev_features, vcpu_signature).page();
    let ap = reset_state(vmm, ap_eip, sev_features, vcpu_signature).page();
    (0..vcpus)
        .map(|i| if i == 0 { bsp.clone() } else { ap.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::{GuestFeatures, VMMType, VMSA};
    use sev::parser::ByteParser;

    /// For QEMU the `sev` crate builds the same pages (EC2 differs there in RDX: the crate
    /// writes 0 where `sev-snp-measure` and EC2 use 0x600; the oracle test covers EC2 and GCE).
    #[test]
    fn qemu_pages_equal_the_sev_crates() {
        for (cpu, features, ap_eip) in [
            (CpuType::EpycV4, 0x1u64, 0x80_b004u64),
            (CpuType::EpycGenoa, 0x21, 0xffff_0123),
        ] {
            let vmsa = VMSA::new(
                ap_eip,
                cpu,
                VMMType::QEMU,
                Some(2),
                GuestFeatures::from_bytes(&features.to_le_bytes()).expect("features"),
            );
            let theirs = vmsa.pages(2).expect("pages");
            let ours = vmsa_pages(VmmType::Qemu, ap_eip, 2, features, cpu.sig() as u32);
            assert_eq!(ours, theirs, "{cpu:?}");
        }
    }

    #[test]
    fn the_vmms_differ_where_they_should() {
        let qemu = reset_state(VmmType::Qemu, BSP_RESET_EIP, 1, 0xa00f11);
        let ec2 = reset_state(VmmType::Ec2, BSP_RESET_EIP, 1, 0xa00f11);
        let ec2_ap = reset_state(VmmType::Ec2, 0x80_b004, 1, 0xa00f11);
        let gce = reset_state(VmmType::Gce, BSP_RESET_EIP, 1, 0xa00f11);
        assert_eq!((qemu.rdx, ec2.rdx, gce.rdx), (0xa00f11, 0x600, 0x600));
        assert_eq!((ec2.cs.attrib, ec2_ap.cs.attrib), (0x9a, 0x9b));
        assert_eq!(gce.g_pat, GCE_PAT);
        assert_eq!("GCE".parse::<VmmType>(), Ok(VmmType::Gce));
        assert!("kvmtool".parse::<VmmType>().is_err());
    }
}
