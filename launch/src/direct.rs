//! The direct launch: a guest started at the kernel's 64-bit entry point with no firmware,
//! the way cloak-vmm launches SNP guests. Everything the kernel finds at entry is in the plan:
//! a GDT, the boot parameters (Linux boot protocol, "zero page") with the command line, initrd
//! and e820 map, the SEV confidential-computing blob naming the secrets and CPUID pages, the
//! ACPI tables describing the machine (acpi.rs: APICs, COM1, virtio-mmio slots), identity-mapped page tables carrying the C-bit, a parking loop for application processors,
//! the kernel and the initrd; every other RAM page is pre-validated but unmeasured (a kernel
//! booted without firmware expects all of its e820 RAM validated). One VMSA per vCPU follows:
//! the boot processor enters the kernel in long mode, the others park until the kernel starts
//! them with fresh VMSAs (SNP AP creation).
//!
//! cloak-vmm executes this plan and `cloak measure --backend cloak-vmm` digests it; the
//! simulated TEE reports its digest for the pod it booted. Nothing here is measured by other
//! means, so the layout below *is* the contract a verifier's reference value stands for.
//!
//! References: Documentation/arch/x86/boot.rst (boot protocol 2.12+, 64-bit entry at
//! load address + 0x200), arch/x86/include/uapi/asm/bootparam.h (`boot_params` offsets),
//! arch/x86/include/asm/sev.h (`cc_blob_sev_info`), SNP ABI 8.17 (page types).

use crate::digest::LaunchDigest;
use crate::plan::{LaunchPlan, PageKind, PlanError, PAGE_SIZE, VMSA_GPA};
use crate::vmsa::{SaveArea, Segment};

pub const GDT_GPA: u64 = 0x6000;
pub const BOOT_PARAMS_GPA: u64 = 0x7000;
pub const CC_BLOB_GPA: u64 = 0x8000;
pub const PML4_GPA: u64 = 0x9000;
pub const PDPT_GPA: u64 = 0xA000;
/// Four page directories of 2 MiB pages: the first 4 GiB identity mapped.
pub const PD_GPA: u64 = 0xB000;
const PD_PAGES: u64 = 4;
pub const AP_PARK_GPA: u64 = 0xF000;
pub const SECRETS_GPA: u64 = 0x10000;
pub const CPUID_GPA: u64 = 0x11000;
/// The guest's ACPI tables (guest_acpi.rs), RSDP first.
pub const ACPI_GPA: u64 = 0x12000;
pub const CMDLINE_GPA: u64 = 0x20000;
const CMDLINE_MAX: usize = 0x10000;
/// End of conventional memory; 0xA0000..1 MiB is the legacy hole.
const LOW_RAM_END: u64 = 0xA0000;
pub const KERNEL_GPA: u64 = 0x10_0000;
/// The kernel's 64-bit entry point is this far into the protected-mode image.
const ENTRY_64_OFFSET: u64 = 0x200;
const INITRD_ALIGN: u64 = 2 << 20;
/// Above this the PCI hole begins; guests larger than this would need a split e820 map.
pub const MAX_MEMORY_MIB: u32 = 3072;
/// The C-bit of Milan, Genoa and Turin (CPUID 0x8000001F EBX[5:0]).
pub const DEFAULT_C_BIT: u8 = 51;
/// No encryption bit: bit 0 is the present bit, never a C-bit.
pub const NO_C_BIT: u8 = 0;
/// SEV_FEATURES of a plain SNP guest: SNPActive only.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;

/// `boot_params` offsets (bootparam.h).
mod boot_params {
    pub(super) const ACPI_RSDP_ADDR: usize = 0x070;
    pub(super) const CC_BLOB_ADDRESS: usize = 0x13C;
    pub(super) const E820_ENTRIES: usize = 0x1E8;
    pub(super) const SETUP_SECTS: usize = 0x1F1;
    pub(super) const BOOT_FLAG: usize = 0x1FE;
    pub(super) const HEADER_MAGIC: usize = 0x202;
    pub(super) const VERSION: usize = 0x206;
    pub(super) const TYPE_OF_LOADER: usize = 0x210;
    pub(super) const LOADFLAGS: usize = 0x211;
    pub(super) const RAMDISK_IMAGE: usize = 0x218;
    pub(super) const RAMDISK_SIZE: usize = 0x21C;
    pub(super) const CMD_LINE_PTR: usize = 0x228;
    pub(super) const INITRD_ADDR_MAX: usize = 0x22C;
    pub(super) const XLOADFLAGS: usize = 0x236;
    pub(super) const CMDLINE_SIZE: usize = 0x238;
    pub(super) const PREF_ADDRESS: usize = 0x258;
    pub(super) const INIT_SIZE: usize = 0x260;
    pub(super) const E820_TABLE: usize = 0x2D0;
    /// The setup header is copied from the image up to 0x202 + the byte at 0x201.
    pub(super) const JUMP_LENGTH: usize = 0x201;
}

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const E820_ACPI: u32 = 3;
const LOADED_HIGH: u8 = 0x01;
const XLF_KERNEL_64: u16 = 0x01;
const UNDEFINED_LOADER: u8 = 0xFF;
/// The setup header's boot_flag, as in every bzImage.
const BOOT_FLAG: u16 = 0xAA55;
const CC_BLOB_MAGIC: u32 = 0x4544_4d41; // "AMDE"

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DirectLaunchError {
    #[error("the kernel is not a bzImage: {0}")]
    NotBzImage(String),
    #[error("the kernel's boot protocol {0:#x} has no 64-bit entry point (2.12 or later needed)")]
    NoEntry64(u16),
    #[error("the command line is {len} bytes; this kernel takes at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("{memory_mib} MiB of guest memory: the direct launch supports {min}..={MAX_MEMORY_MIB} MiB for this kernel and initrd")]
    Memory { memory_mib: u32, min: u64 },
    #[error("the initrd would end at {end:#x}, above the kernel's limit {limit:#x}")]
    InitrdTooHigh { end: u64, limit: u64 },
    #[error("at least one vCPU is needed")]
    NoVcpus,
    #[error("reading {path}: {reason}")]
    Input { path: String, reason: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// What a direct launch boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectLaunch {
    /// A bzImage.
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
    pub cmdline: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// SEV_FEATURES of every VMSA.
    pub guest_features: u64,
    /// Position of the encryption bit in guest page-table entries; `NO_C_BIT` for a guest
    /// without memory encryption (cloak-vmm's plain KVM boot).
    pub c_bit: u8,
}

/// The facts of a bzImage's setup header the layout depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelHeader {
    /// The setup header, copied into the boot parameters.
    header: std::ops::Range<usize>,
    protected_mode_offset: usize,
    initrd_addr_max: u64,
    cmdline_size: usize,
    pref_address: u64,
    init_size: u64,
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(
        bytes[at..at + 4]
            .try_into()
            .expect("a four-byte slice converts"),
    )
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(
        bytes[at..at + 8]
            .try_into()
            .expect("an eight-byte slice converts"),
    )
}

fn put(page: &mut [u8], at: usize, bytes: &[u8]) {
    page[at..at + bytes.len()].copy_from_slice(bytes);
}

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// `bytes` zero-padded to whole pages.
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    let len = align_up(bytes.len() as u64, PAGE_SIZE as u64) as usize;
    bytes.resize(len.max(PAGE_SIZE), 0);
    bytes
}

impl KernelHeader {
    fn parse(kernel: &[u8]) -> Result<Self, DirectLaunchError> {
        use boot_params as bp;
        if kernel.len() < bp::INIT_SIZE + 4 {
            return Err(DirectLaunchError::NotBzImage(format!(
                "{} bytes is too short for a setup header",
                kernel.len()
            )));
        }
        if &kernel[bp::HEADER_MAGIC..bp::HEADER_MAGIC + 4] != b"HdrS" {
            return Err(DirectLaunchError::NotBzImage("no \"HdrS\" magic".into()));
        }
        if u16_at(kernel, bp::BOOT_FLAG) != BOOT_FLAG {
            return Err(DirectLaunchError::NotBzImage("no 0xAA55 boot flag".into()));
        }
        let version = u16_at(kernel, bp::VERSION);
        if version < 0x020C || u16_at(kernel, bp::XLOADFLAGS) & XLF_KERNEL_64 == 0 {
            return Err(DirectLaunchError::NoEntry64(version));
        }
        let setup_sects = match kernel[bp::SETUP_SECTS] {
            0 => 4,
            sects => usize::from(sects),
        };
        let protected_mode_offset = (setup_sects + 1) * 512;
        if protected_mode_offset >= kernel.len() {
            return Err(DirectLaunchError::NotBzImage(format!(
                "{setup_sects} setup sectors but {} bytes in all",
                kernel.len()
            )));
        }
        Ok(Self {
            header: bp::SETUP_SECTS..0x202 + usize::from(kernel[bp::JUMP_LENGTH]),
            protected_mode_offset,
            initrd_addr_max: u64::from(u32_at(kernel, bp::INITRD_ADDR_MAX)),
            cmdline_size: u32_at(kernel, bp::CMDLINE_SIZE) as usize,
            pref_address: u64_at(kernel, bp::PREF_ADDRESS),
            init_size: u64::from(u32_at(kernel, bp::INIT_SIZE)),
        })
    }
}

/// Where everything goes for one launch.
struct Layout {
    kernel_end: u64,
    initrd_gpa: u64,
    memory_end: u64,
}

impl DirectLaunch {
    /// A launch of the kernel and initrd files at these paths (no initrd: `None`).
    pub fn from_files(
        kernel: &std::path::Path,
        initrd: Option<&std::path::Path>,
        cmdline: &str,
        memory_mib: u32,
        vcpus: u32,
    ) -> Result<Self, DirectLaunchError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|err| DirectLaunchError::Input {
                path: path.display().to_string(),
                reason: err.to_string(),
            })
        };
        Ok(Self {
            kernel: read(kernel)?,
            initrd: initrd.map(read).transpose()?.unwrap_or_default(),
            cmdline: cmdline.to_owned(),
            memory_mib,
            vcpus,
            guest_features: DEFAULT_GUEST_FEATURES,
            c_bit: DEFAULT_C_BIT,
        })
    }

    fn layout(&self, header: &KernelHeader) -> Result<Layout, DirectLaunchError> {
        let kernel_len = (self.kernel.len() - header.protected_mode_offset) as u64;
        let kernel_end = KERNEL_GPA + align_up(kernel_len, PAGE_SIZE as u64);
        // Past the kernel and the region it decompresses into, so neither overwrites it.
        let decompressed_end = header.pref_address.max(KERNEL_GPA) + header.init_size;
        let initrd_gpa = align_up(kernel_end.max(decompressed_end), INITRD_ALIGN);
        let initrd_end = initrd_gpa + align_up(self.initrd.len() as u64, PAGE_SIZE as u64);
        let memory_end = u64::from(self.memory_mib) << 20;
        if self.memory_mib > MAX_MEMORY_MIB || initrd_end > memory_end {
            return Err(DirectLaunchError::Memory {
                memory_mib: self.memory_mib,
                min: initrd_end.div_ceil(1 << 20),
            });
        }
        if initrd_gpa + self.initrd.len() as u64 > header.initrd_addr_max + 1 {
            return Err(DirectLaunchError::InitrdTooHigh {
                end: initrd_gpa + self.initrd.len() as u64,
                limit: header.initrd_addr_max,
            });
        }
        Ok(Layout {
            kernel_end,
            initrd_gpa,
            memory_end,
        })
    }

    /// The ordered page records of this launch: ascending guest addresses, then the VMSAs.
    pub fn plan(&self) -> Result<LaunchPlan, DirectLaunchError> {
        if self.vcpus == 0 {
            return Err(DirectLaunchError::NoVcpus);
        }
        let header = KernelHeader::parse(&self.kernel)?;
        let max_cmdline = header.cmdline_size.min(CMDLINE_MAX - 1);
        if self.cmdline.len() > max_cmdline {
            return Err(DirectLaunchError::CmdlineTooLong {
                len: self.cmdline.len(),
                max: max_cmdline,
            });
        }
        let layout = self.layout(&header)?;
        let mut cmdline = self.cmdline.as_bytes().to_vec();
        cmdline.push(0);
        let cmdline_end = CMDLINE_GPA + align_up(cmdline.len() as u64, PAGE_SIZE as u64);
        let acpi = self.acpi_tables();

        let mut measured: Vec<(u64, PageKind)> = vec![
            (GDT_GPA, PageKind::Normal(gdt_page())),
            (
                BOOT_PARAMS_GPA,
                PageKind::Normal(self.boot_params(&header, &layout, acpi.len())),
            ),
            (CC_BLOB_GPA, PageKind::Normal(cc_blob_page())),
            (
                PML4_GPA,
                PageKind::Normal(page_tables(self.c_bit_mask()).concat()),
            ),
            (AP_PARK_GPA, PageKind::Normal(ap_park_page())),
            (SECRETS_GPA, PageKind::Secrets),
            (CPUID_GPA, PageKind::Cpuid),
            (ACPI_GPA, PageKind::Normal(acpi)),
            (CMDLINE_GPA, PageKind::Normal(padded(cmdline))),
            (
                KERNEL_GPA,
                PageKind::Normal(padded(self.kernel[header.protected_mode_offset..].to_vec())),
            ),
            (
                layout.initrd_gpa,
                PageKind::Normal(padded(self.initrd.clone())),
            ),
        ];
        if self.initrd.is_empty() {
            measured.pop();
        }
        // Every other page of RAM: validated so the kernel may use it, contents unmeasured.
        let ram = [(0, LOW_RAM_END), (KERNEL_GPA, layout.memory_end)];
        let mut plan = LaunchPlan::default();
        let mut cursor = 0u64;
        for (gpa, kind) in measured {
            push_unmeasured_ram(&mut plan, &ram, cursor, gpa);
            let end = gpa + record_bytes(&kind) as u64;
            plan.push(gpa, kind);
            cursor = end;
        }
        push_unmeasured_ram(&mut plan, &ram, cursor, layout.memory_end);
        debug_assert!(cmdline_end <= LOW_RAM_END && layout.kernel_end <= layout.initrd_gpa);

        for vcpu in 0..self.vcpus {
            plan.push(VMSA_GPA, PageKind::Vmsa(self.save_area(vcpu == 0).page()));
        }
        Ok(plan)
    }

    pub fn digest(&self) -> Result<LaunchDigest, DirectLaunchError> {
        Ok(self.plan()?.digest()?)
    }

    /// The zero page; `acpi_bytes` is how much the ACPI tables take from ACPI_GPA.
    fn boot_params(&self, header: &KernelHeader, layout: &Layout, acpi_bytes: usize) -> Vec<u8> {
        use boot_params as bp;
        let mut page = vec![0u8; PAGE_SIZE];
        put(
            &mut page,
            header.header.start,
            &self.kernel[header.header.clone()],
        );
        page[bp::TYPE_OF_LOADER] = UNDEFINED_LOADER;
        page[bp::LOADFLAGS] |= LOADED_HIGH;
        put(
            &mut page,
            bp::CMD_LINE_PTR,
            &(CMDLINE_GPA as u32).to_le_bytes(),
        );
        if !self.initrd.is_empty() {
            put(
                &mut page,
                bp::RAMDISK_IMAGE,
                &(layout.initrd_gpa as u32).to_le_bytes(),
            );
            put(
                &mut page,
                bp::RAMDISK_SIZE,
                &(self.initrd.len() as u32).to_le_bytes(),
            );
        }
        put(
            &mut page,
            bp::CC_BLOB_ADDRESS,
            &(CC_BLOB_GPA as u32).to_le_bytes(),
        );
        put(&mut page, bp::ACPI_RSDP_ADDR, &ACPI_GPA.to_le_bytes());
        let acpi_end = ACPI_GPA + acpi_bytes as u64;
        let e820 = [
            (0, SECRETS_GPA, E820_RAM),
            (SECRETS_GPA, CPUID_GPA + PAGE_SIZE as u64, E820_RESERVED),
            (ACPI_GPA, acpi_end, E820_ACPI),
            (acpi_end, LOW_RAM_END, E820_RAM),
            (KERNEL_GPA, layout.memory_end, E820_RAM),
        ];
        page[bp::E820_ENTRIES] = e820.len() as u8;
        for (index, (start, end, kind)) in e820.into_iter().enumerate() {
            let at = bp::E820_TABLE + index * 20;
            put(&mut page, at, &start.to_le_bytes());
            put(&mut page, at + 8, &(end - start).to_le_bytes());
            put(&mut page, at + 16, &kind.to_le_bytes());
        }
        page
    }

    /// The guest's ACPI tables, whole pages.
    fn acpi_tables(&self) -> Vec<u8> {
        padded(crate::acpi::tables(ACPI_GPA, self.vcpus))
    }

    fn c_bit_mask(&self) -> u64 {
        match self.c_bit {
            NO_C_BIT => 0,
            bit => 1u64 << bit,
        }
    }

    /// The initial state of the boot processor (long mode at the kernel's 64-bit entry, the
    /// boot parameters in RSI) or of the others (parked): what each VMSA of the plan holds,
    /// and what a VMM without SNP loads into its vCPUs.
    pub fn save_area(&self, boot_processor: bool) -> SaveArea {
        const CODE64: u16 = 0xA9B; // present, DPL 0, execute/read, accessed, L, G
        const DATA: u16 = 0xC93; // present, DPL 0, read/write, accessed, D/B, G
        const BOOT_CS: u16 = 0x10;
        const BOOT_DS: u16 = 0x18;
        let data = Segment::new(BOOT_DS, DATA, 0xffff_ffff, 0);
        SaveArea {
            es: data,
            cs: Segment::new(BOOT_CS, CODE64, 0xffff_ffff, 0),
            ss: data,
            ds: data,
            fs: data,
            gs: data,
            gdtr: Segment::new(0, 0, GDT_BYTES - 1, GDT_GPA),
            ldtr: Segment::new(0, 0x82, 0xffff, 0),
            idtr: Segment::new(0, 0, 0, 0),
            tr: Segment::new(0, 0x8b, 0xffff, 0),
            efer: 0x1500, // LME, LMA, SVME
            cr4: 0x20,    // PAE
            cr3: PML4_GPA | self.c_bit_mask(),
            cr0: 0x8000_0011, // PE, ET, PG
            dr7: 0x400,
            dr6: 0xffff_0ff0,
            rflags: 0x2,
            rip: if boot_processor {
                KERNEL_GPA + ENTRY_64_OFFSET
            } else {
                AP_PARK_GPA
            },
            rsi: if boot_processor { BOOT_PARAMS_GPA } else { 0 },
            g_pat: 0x0007_0406_0007_0406,
            sev_features: self.guest_features,
            xcr0: 0x1,
            mxcsr: 0x1f80,
            x87_fcw: 0x37f,
            ..Default::default()
        }
    }
}

/// Null, null, then the boot protocol's flat __BOOT_CS (0x10, 64-bit) and __BOOT_DS (0x18).
const GDT_BYTES: u32 = 4 * 8;

fn gdt_page() -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE];
    put(&mut page, 0x10, &0x00AF_9B00_0000_FFFFu64.to_le_bytes());
    put(&mut page, 0x18, &0x00CF_9300_0000_FFFFu64.to_le_bytes());
    page
}

/// `cc_blob_sev_info`: where the kernel finds the secrets and CPUID pages.
fn cc_blob_page() -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE];
    put(&mut page, 0, &CC_BLOB_MAGIC.to_le_bytes());
    put(&mut page, 4, &1u16.to_le_bytes()); // version
    put(&mut page, 8, &SECRETS_GPA.to_le_bytes());
    put(&mut page, 16, &(PAGE_SIZE as u32).to_le_bytes());
    put(&mut page, 24, &CPUID_GPA.to_le_bytes());
    put(&mut page, 32, &(PAGE_SIZE as u32).to_le_bytes());
    page
}

/// PML4, PDPT and four page directories mapping 0..4 GiB with 2 MiB pages, every entry
/// with the C-bit so the kernel's first reads see private (encrypted) memory.
fn page_tables(c: u64) -> Vec<Vec<u8>> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const LARGE: u64 = 0x80;
    let mut pml4 = vec![0u8; PAGE_SIZE];
    put(
        &mut pml4,
        0,
        &(PDPT_GPA | c | PRESENT_WRITABLE).to_le_bytes(),
    );
    let mut pdpt = vec![0u8; PAGE_SIZE];
    let mut tables = Vec::new();
    for directory in 0..PD_PAGES {
        let pd_gpa = PD_GPA + directory * PAGE_SIZE as u64;
        put(
            &mut pdpt,
            directory as usize * 8,
            &(pd_gpa | c | PRESENT_WRITABLE).to_le_bytes(),
        );
        let mut pd = vec![0u8; PAGE_SIZE];
        for entry in 0..512u64 {
            let address = (directory << 30) | (entry << 21);
            put(
                &mut pd,
                entry as usize * 8,
                &(address | c | LARGE | PRESENT_WRITABLE).to_le_bytes(),
            );
        }
        tables.push(pd);
    }
    let mut all = vec![pml4, pdpt];
    all.extend(tables);
    all
}

/// `cli; hlt; jmp hlt`: application processors wait here until the kernel replaces their
/// VMSA.
fn ap_park_page() -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE];
    put(&mut page, 0, &[0xFA, 0xF4, 0xEB, 0xFD]);
    page
}

fn record_bytes(kind: &PageKind) -> usize {
    match kind {
        PageKind::Normal(data) | PageKind::Vmsa(data) => data.len(),
        PageKind::Zero(bytes) | PageKind::Unmeasured(bytes) => *bytes,
        PageKind::Secrets | PageKind::Cpuid => PAGE_SIZE,
    }
}

/// Unmeasured records for the RAM in `from..to`.
fn push_unmeasured_ram(plan: &mut LaunchPlan, ram: &[(u64, u64)], from: u64, to: u64) {
    for &(start, end) in ram {
        let start = start.max(from);
        let end = end.min(to);
        if start < end {
            plan.push(start, PageKind::Unmeasured((end - start) as usize));
        }
    }
}

/// A minimal bzImage around `protected_mode` (its 64-bit entry 0x200 bytes in): one setup
/// sector, boot protocol 2.15 with XLF_KERNEL_64, preferred address 16 MiB, `init_size`
/// bytes to decompress into. For tests and tiny guests that enter through a direct launch.
pub fn minimal_bzimage(protected_mode: &[u8], init_size: u32) -> Vec<u8> {
    let mut image = vec![0u8; 2 * 512];
    image[0x1F1] = 1;
    image[0x1FE..0x200].copy_from_slice(&BOOT_FLAG.to_le_bytes());
    image[0x201] = 0x6A; // header up to 0x26C
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    image[0x22C..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    image[0x236..0x238].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
    image[0x238..0x23C].copy_from_slice(&2048u32.to_le_bytes());
    image[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
    image[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
    image.extend_from_slice(protected_mode);
    image
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tiny_bzimage(protected_mode: &[u8]) -> Vec<u8> {
        minimal_bzimage(protected_mode, 0x30_0000)
    }

    fn launch() -> DirectLaunch {
        DirectLaunch {
            kernel: tiny_bzimage(&[0x90; 5000]),
            initrd: b"initrd".to_vec(),
            cmdline: "console=ttyS0".into(),
            memory_mib: 64,
            vcpus: 2,
            guest_features: 0x1,
            c_bit: DEFAULT_C_BIT,
        }
    }

    /// The whole sequence: what a cloak-vmm launch of this kernel hands to SNP_LAUNCH_UPDATE.
    #[test]
    fn the_page_record_sequence_is_pinned() {
        let plan = launch().plan().expect("plan");
        let summary: Vec<(u64, u8, usize)> = plan
            .records
            .iter()
            .map(|r| (r.gpa, r.kind.page_type(), record_bytes(&r.kind)))
            .collect();
        let expected = vec![
            (0x0, 4, 0x6000),         // low RAM below the GDT
            (0x6000, 1, 0x1000),      // GDT
            (0x7000, 1, 0x1000),      // boot parameters
            (0x8000, 1, 0x1000),      // cc blob
            (0x9000, 1, 0x6000),      // page tables
            (0xF000, 1, 0x1000),      // AP parking loop
            (0x10000, 5, 0x1000),     // secrets
            (0x11000, 6, 0x1000),     // CPUID
            (0x12000, 1, 0x1000),     // ACPI tables
            (0x13000, 4, 0xD000),     // RAM
            (0x20000, 1, 0x1000),     // command line
            (0x21000, 4, 0x7F000),    // RAM to the legacy hole
            (0x100000, 1, 0x2000),    // kernel (5000 bytes)
            (0x102000, 4, 0x12FE000), // RAM below the initrd
            // initrd after the decompression area: 16 MiB + 3 MiB, aligned to 2 MiB
            (0x1400000, 1, 0x1000),
            (0x1401000, 4, 0x2BFF000), // the rest of 64 MiB
            (VMSA_GPA, 2, 0x1000),
            (VMSA_GPA, 2, 0x1000),
        ];
        assert_eq!(summary, expected);
        assert_eq!(
            plan.digest().expect("digest").hex(),
            "ffa794bb9936f47ecbe7087bffff4799934658820f116bcfb7b2b3b2232ccc17fe6315929161f03fb197025e3d645a18",
            "the launch digest of the tiny kernel changed: if intended, update the pin"
        );
    }

    #[test]
    fn the_boot_processor_enters_the_kernel_with_the_boot_parameters() {
        let plan = launch().plan().expect("plan");
        let vmsas: Vec<&Vec<u8>> = plan
            .records
            .iter()
            .filter_map(|r| match &r.kind {
                PageKind::Vmsa(page) => Some(page),
                _ => None,
            })
            .collect();
        assert_eq!(&vmsas[0][0x178..0x180], &0x100200u64.to_le_bytes());
        assert_eq!(&vmsas[0][0x330..0x338], &0x7000u64.to_le_bytes());
        assert_eq!(&vmsas[1][0x178..0x180], &AP_PARK_GPA.to_le_bytes());
        let boot_params = match &plan.records[2].kind {
            PageKind::Normal(page) => page.clone(),
            other => panic!("boot parameters are measured, not {other:?}"),
        };
        assert_eq!(&boot_params[0x202..0x206], b"HdrS");
        assert_eq!(u32_at(&boot_params, 0x228), 0x20000);
        assert_eq!(u32_at(&boot_params, 0x218), 0x140_0000);
        assert_eq!(u32_at(&boot_params, 0x21C), 6);
        assert_eq!(u64_at(&boot_params, 0x070), ACPI_GPA, "acpi_rsdp_addr");
        assert_eq!(boot_params[0x1E8], 5);
        // The ACPI tables: one page, typed ACPI so the kernel keeps them.
        let acpi_entry = 0x2D0 + 2 * 20;
        assert_eq!(u64_at(&boot_params, acpi_entry), ACPI_GPA);
        assert_eq!(u64_at(&boot_params, acpi_entry + 8), 0x1000);
        assert_eq!(u32_at(&boot_params, acpi_entry + 16), 3);
        // The last e820 entry: RAM from 1 MiB to 64 MiB.
        assert_eq!(u64_at(&boot_params, 0x2D0 + 4 * 20), 0x10_0000);
        assert_eq!(
            u64_at(&boot_params, 0x2D0 + 4 * 20 + 8),
            (64 << 20) - 0x10_0000
        );
    }

    #[test]
    fn every_input_changes_the_digest() {
        let base = launch().digest().expect("digest");
        let mut variants = Vec::new();
        let mut l = launch();
        l.initrd[0] ^= 1;
        variants.push(("initrd byte", l));
        let mut l = launch();
        l.kernel[1100] ^= 1;
        variants.push(("kernel byte", l));
        let mut l = launch();
        l.cmdline.push_str(" quiet");
        variants.push(("cmdline", l));
        let mut l = launch();
        l.memory_mib = 128;
        variants.push(("memory", l));
        let mut l = launch();
        l.vcpus = 1;
        variants.push(("vcpus", l));
        let mut l = launch();
        l.guest_features = 0x21;
        variants.push(("features", l));
        let mut l = launch();
        l.c_bit = 47;
        variants.push(("c-bit", l));
        for (what, variant) in variants {
            assert_ne!(variant.digest().expect("digest"), base, "{what}");
        }
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let mut l = launch();
        l.kernel[0x202] = b'X';
        assert!(matches!(l.plan(), Err(DirectLaunchError::NotBzImage(_))));
        let mut l = launch();
        l.kernel[0x1FE] = 0;
        assert_eq!(
            l.plan(),
            Err(DirectLaunchError::NotBzImage("no 0xAA55 boot flag".into()))
        );
        let mut l = launch();
        l.kernel[0x236] = 0;
        assert_eq!(l.plan(), Err(DirectLaunchError::NoEntry64(0x020F)));
        let mut l = launch();
        l.memory_mib = 16;
        assert!(matches!(
            l.plan(),
            Err(DirectLaunchError::Memory { min: 21, .. })
        ));
        let mut l = launch();
        l.cmdline = "x".repeat(3000);
        assert_eq!(
            l.plan(),
            Err(DirectLaunchError::CmdlineTooLong {
                len: 3000,
                max: 2048
            })
        );
        let mut l = launch();
        l.vcpus = 0;
        assert_eq!(l.plan(), Err(DirectLaunchError::NoVcpus));
        assert!(matches!(
            DirectLaunch {
                kernel: vec![0; 100],
                ..launch()
            }
            .plan(),
            Err(DirectLaunchError::NotBzImage(_))
        ));
    }
}
