//! The x86 machine a Linux guest expects around its vCPUs, as the guest's ACPI tables
//! (cloak-launch's acpi.rs) describe it: KVM's in-kernel local APICs, I/O APIC and
//! PIC, a PIT for the kernel's timer calibration, CPUID that names each vCPU's APIC id and a
//! hypervisor, the MSRs and FPU state of a processor after reset, and LAPIC LINT0/LINT1 wired
//! the way firmware leaves them (ExtINT from the PIC, NMI).
//!
//! References: Intel SDM vol. 3A 10.5.1 (LVT), vol. 2A CPUID leaves 01H and 0BH; KVM API
//! (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2, KVM_IRQFD).

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_pit_config, CpuId, Msrs, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("creating the in-kernel interrupt controllers: {0}")]
    Irqchip(kvm_ioctls::Error),
    #[error("creating the PIT: {0}")]
    Pit(kvm_ioctls::Error),
    #[error("an interrupt line for GSI {gsi}: {source}")]
    Irqfd { gsi: u32, source: std::io::Error },
    #[error("{step}: {source}")]
    Vcpu {
        step: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("MSR list: {0}")]
    MsrList(String),
}

/// The interrupt controllers and the PIT, created before any vCPU.
pub fn create_interrupt_controllers(vm: &VmFd) -> Result<(), MachineError> {
    vm.create_irq_chip().map_err(MachineError::Irqchip)?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(MachineError::Pit)
}

/// An interrupt line: writing the eventfd raises GSI `gsi` in the guest (KVM_IRQFD).
pub fn interrupt_line(vm: &VmFd, gsi: u32) -> Result<EventFd, MachineError> {
    let irqfd_error = |source| MachineError::Irqfd { gsi, source };
    let line = EventFd::new(libc::EFD_NONBLOCK).map_err(irqfd_error)?;
    vm.register_irqfd(&line, gsi)
        .map_err(|err| irqfd_error(std::io::Error::from_raw_os_error(err.errno())))?;
    Ok(line)
}

mod cpuid_bits {
    /// Leaf 1 ECX: running under a hypervisor.
    pub(super) const HYPERVISOR: u32 = 1 << 31;
    /// Leaf 1 EBX: initial APIC id (31:24), logical processors per package (23:16).
    pub(super) const APIC_ID_SHIFT: u32 = 24;
    pub(super) const LOGICAL_COUNT_SHIFT: u32 = 16;
    /// Leaf 1 EDX: HTT (the logical-processor count is valid).
    pub(super) const HTT: u32 = 1 << 28;
}

/// KVM's supported CPUID, made this vCPU's: its APIC id in leaves 1, 0BH and 1FH, the
/// package's logical processor count, and the hypervisor bit.
pub fn vcpu_cpuid(supported: &CpuId, index: u32, vcpus: u32) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff)
                    | (index << cpuid_bits::APIC_ID_SHIFT)
                    | (vcpus.min(255) << cpuid_bits::LOGICAL_COUNT_SHIFT);
                entry.ecx |= cpuid_bits::HYPERVISOR;
                if vcpus > 1 {
                    entry.edx |= cpuid_bits::HTT;
                }
            }
            0xB | 0x1F => entry.edx = index,
            _ => {}
        }
    }
    cpuid
}

mod msr {
    pub(super) const IA32_SYSENTER_CS: u32 = 0x174;
    pub(super) const IA32_SYSENTER_ESP: u32 = 0x175;
    pub(super) const IA32_SYSENTER_EIP: u32 = 0x176;
    pub(super) const IA32_MISC_ENABLE: u32 = 0x1A0;
    pub(super) const STAR: u32 = 0xC000_0081;
    pub(super) const LSTAR: u32 = 0xC000_0082;
    pub(super) const CSTAR: u32 = 0xC000_0083;
    pub(super) const SYSCALL_MASK: u32 = 0xC000_0084;
    pub(super) const KERNEL_GS_BASE: u32 = 0xC000_0102;
    pub(super) const IA32_TSC: u32 = 0x10;
    /// IA32_MISC_ENABLE: fast string operations enabled (as firmware leaves it).
    pub(super) const MISC_ENABLE_FAST_STRING: u64 = 1;
}

/// The MSRs of a processor after reset as a kernel entered without firmware expects them.
pub fn boot_msrs() -> Result<Msrs, MachineError> {
    let entries: Vec<kvm_msr_entry> = [
        (msr::IA32_SYSENTER_CS, 0),
        (msr::IA32_SYSENTER_ESP, 0),
        (msr::IA32_SYSENTER_EIP, 0),
        (msr::STAR, 0),
        (msr::CSTAR, 0),
        (msr::KERNEL_GS_BASE, 0),
        (msr::SYSCALL_MASK, 0),
        (msr::LSTAR, 0),
        (msr::IA32_TSC, 0),
        (msr::IA32_MISC_ENABLE, msr::MISC_ENABLE_FAST_STRING),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    Msrs::from_entries(&entries).map_err(|err| MachineError::MsrList(format!("{err:?}")))
}

mod lapic {
    pub(super) const LVT_LINT0: usize = 0x350;
    pub(super) const LVT_LINT1: usize = 0x360;
    pub(super) const DELIVERY_MODE_MASK: u32 = 0x700;
    pub(super) const DELIVERY_EXTINT: u32 = 0x700;
    pub(super) const DELIVERY_NMI: u32 = 0x400;
}

fn lapic_register(regs: &[std::os::raw::c_char; 1024], offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

fn set_lapic_register(regs: &mut [std::os::raw::c_char; 1024], offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        regs[offset + i] = byte as std::os::raw::c_char;
    }
}

/// Sets up one vCPU's processor state around its registers: CPUID, MSRs, FPU, LAPIC.
pub fn set_up_vcpu(vcpu: &VcpuFd, cpuid: &CpuId, msrs: &Msrs) -> Result<(), MachineError> {
    let step = |step| move |source| MachineError::Vcpu { step, source };
    vcpu.set_cpuid2(cpuid).map_err(step("setting CPUID"))?;
    vcpu.set_msrs(msrs).map_err(step("setting MSRs"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(step("setting the FPU"))?;
    let mut state = vcpu.get_lapic().map_err(step("reading the LAPIC"))?;
    for (register, mode) in [
        (lapic::LVT_LINT0, lapic::DELIVERY_EXTINT),
        (lapic::LVT_LINT1, lapic::DELIVERY_NMI),
    ] {
        let value = lapic_register(&state.regs, register);
        set_lapic_register(
            &mut state.regs,
            register,
            (value & !lapic::DELIVERY_MODE_MASK) | mode,
        );
    }
    vcpu.set_lapic(&state).map_err(step("setting the LAPIC"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn supported() -> CpuId {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xAB00_0800,
                edx: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xB,
                index: 1,
                edx: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ebx: 0x1234,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&entries).expect("cpuid")
    }

    #[test]
    fn each_vcpu_sees_its_apic_id_and_a_hypervisor() {
        let cpuid = vcpu_cpuid(&supported(), 3, 4);
        let leaf = |function| {
            *cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == function)
                .expect("leaf")
        };
        let one = leaf(1);
        assert_eq!(one.ebx >> 24, 3, "APIC id");
        assert_eq!((one.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!(one.ebx & 0xffff, 0x0800, "CLFLUSH size and brand kept");
        assert_ne!(one.ecx & (1 << 31), 0);
        assert_ne!(one.edx & (1 << 28), 0, "HTT with several vCPUs");
        assert_eq!(leaf(0xB).edx, 3, "x2APIC id");
        assert_eq!(leaf(7).ebx, 0x1234, "other leaves untouched");
        assert_eq!(
            vcpu_cpuid(&supported(), 0, 1).as_slice()[0].edx & (1 << 28),
            0
        );
    }

    #[test]
    fn lapic_registers_are_little_endian_words() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        set_lapic_register(&mut regs, lapic::LVT_LINT0, 0x0001_0700);
        assert_eq!(regs[0x350] as u8, 0x00);
        assert_eq!(regs[0x351] as u8, 0x07);
        assert_eq!(regs[0x352] as u8, 0x01);
        assert_eq!(lapic_register(&regs, lapic::LVT_LINT0), 0x0001_0700);
    }

    #[test]
    fn boot_msrs_enable_fast_strings() {
        let msrs = boot_msrs().expect("msrs");
        let misc = msrs
            .as_slice()
            .iter()
            .find(|e| e.index == msr::IA32_MISC_ENABLE)
            .expect("IA32_MISC_ENABLE");
        assert_eq!(misc.data, msr::MISC_ENABLE_FAST_STRING);
    }
}
