//! cloak-vmm under this host's KVM with tiny real-mode guests the tests assemble byte by
//! byte: serial output reaches the console, the i8042 reset ends the VM, virtio-mmio registers
//! read back their identification, several vCPUs start. Skipped (with the reason) where KVM
//! cannot create a VM; `CLOAK_REQUIRE_VM_TESTS=1` turns the skip into a failure.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;
use common::kvm_or_skip;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloak_vmm::devices::virtio_mmio::device_type;
use cloak_vmm::{RunningVm, TinyVmConfig, VirtioSpec, VmExitReason};

const LOAD: u64 = 0x1000;

#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    fn wait_for(&self, len: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while self.bytes().len() < len && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.bytes()
    }
}

/// Tiny real-mode assembler: just the instructions the guests use.
#[derive(Default)]
struct Code(Vec<u8>);

impl Code {
    fn serial_port(mut self) -> Self {
        self.0.extend([0xBA, 0xF8, 0x03]); // mov dx, 0x3f8
        self
    }
    fn print(mut self, byte: u8) -> Self {
        self.0.extend([0xB0, byte, 0xEE]); // mov al, byte; out dx, al
        self
    }
    fn set_ds(mut self, segment: u16) -> Self {
        let [low, high] = segment.to_le_bytes();
        self.0.extend([0xB8, low, high, 0x8E, 0xD8]); // mov ax, segment; mov ds, ax
        self
    }
    /// mov al, [offset]; out dx, al
    fn print_byte_at(mut self, offset: u16) -> Self {
        let [low, high] = offset.to_le_bytes();
        self.0.extend([0xA0, low, high, 0xEE]);
        self
    }
    /// mov eax, [offset], then its four bytes to the serial port, lowest first.
    fn print_dword_at(mut self, offset: u16) -> Self {
        let [low, high] = offset.to_le_bytes();
        self.0.extend([0x66, 0xA1, low, high]);
        for _ in 0..4 {
            self.0.extend([0xEE, 0x66, 0xC1, 0xE8, 0x08]); // out dx, al; shr eax, 8
        }
        self
    }
    fn set_es(mut self, segment: u16) -> Self {
        let [low, high] = segment.to_le_bytes();
        self.0.extend([0xB8, low, high, 0x8E, 0xC0]); // mov ax, segment; mov es, ax
        self
    }
    /// mov dword es:[offset], value — a 32-bit MMIO register write.
    fn mmio_write(mut self, offset: u16, value: u32) -> Self {
        self.0.extend([0x26, 0x66, 0xC7, 0x06]);
        self.0.extend(offset.to_le_bytes());
        self.0.extend(value.to_le_bytes());
        self
    }
    fn reset(mut self) -> Self {
        self.0.extend([0xB0, 0xFE, 0xE6, 0x64]); // mov al, 0xfe; out 0x64, al
        self
    }
    /// Spins until the byte at `offset` equals `value`: cmp byte [offset], value; jne back.
    fn wait_for_byte(mut self, offset: u16, value: u8) -> Self {
        let [low, high] = offset.to_le_bytes();
        self.0.extend([0x80, 0x3E, low, high, value, 0x75, 0xF9]);
        self
    }
    /// mov eax, [from]; mov [to], eax
    fn copy_dword(mut self, from: u16, to: u16) -> Self {
        let [from_low, from_high] = from.to_le_bytes();
        let [to_low, to_high] = to.to_le_bytes();
        self.0
            .extend([0x66, 0xA1, from_low, from_high, 0x66, 0xA3, to_low, to_high]);
        self
    }
    /// A driver bringing up the two-queue device at 0xD0000 (ES): ACKNOWLEDGE | DRIVER, accept
    /// VIRTIO_F_VERSION_1 as every modern driver does, both queues, FEATURES_OK | DRIVER_OK.
    /// Leaves DX at the serial port for the prints that follow.
    fn start_two_queue_driver(self) -> Self {
        self.set_es(0xD000)
            .serial_port()
            .mmio_write(0x070, 0x1 | 0x2) // ACKNOWLEDGE | DRIVER
            .mmio_write(0x024, 1) // DriverFeaturesSel: bits 32..63
            .mmio_write(0x020, 1) // VIRTIO_F_VERSION_1
            .set_up_queue(0, QUEUE0)
            .set_up_queue(1, QUEUE1)
            .mmio_write(0x070, 0x1 | 0x2 | 0x8 | 0x4) // FEATURES_OK | DRIVER_OK
    }
    /// What a driver does to make queue `index` (8 entries) ready at these addresses.
    fn set_up_queue(self, index: u32, rings: Rings) -> Self {
        self.mmio_write(0x030, index) // QueueSel
            .mmio_write(0x038, 8) // QueueNum
            .mmio_write(0x080, rings.desc as u32)
            .mmio_write(0x084, 0)
            .mmio_write(0x090, rings.avail as u32)
            .mmio_write(0x094, 0)
            .mmio_write(0x0a0, rings.used as u32)
            .mmio_write(0x0a4, 0)
            .mmio_write(0x044, 1) // QueueReady
    }
    /// mov word [offset], value
    fn store_word(mut self, offset: u16, value: u16) -> Self {
        self.0.extend([0xC7, 0x06]);
        self.0.extend(offset.to_le_bytes());
        self.0.extend(value.to_le_bytes());
        self
    }
    fn halt(mut self) -> Self {
        self.0.extend([0xFA, 0xF4]); // cli; hlt
        self
    }
}

fn boot(
    image: Vec<u8>,
    entries: Vec<u16>,
    virtio_mmio: Vec<(u64, VirtioSpec)>,
) -> (RunningVm, Console) {
    let console = Console::default();
    let vm = RunningVm::boot_tiny(TinyVmConfig {
        memory_mib: 4,
        image,
        load_address: LOAD,
        entries,
        console: Box::new(console.clone()),
        virtio_mmio,
        // The filters the product runs with: every device path below runs under them.
        seccomp: cloak_vmm::SeccompLevel::Kill,
    })
    .unwrap();
    (vm, console)
}

#[test]
fn serial_output_reaches_the_console_and_i8042_reset_ends_the_vm() {
    if !kvm_or_skip("serial_output_reaches_the_console_and_i8042_reset_ends_the_vm") {
        return;
    }
    let code = Code::default()
        .serial_port()
        .print(b'H')
        .print(b'i')
        .print(b'\n')
        .reset()
        .halt();
    let (vm, console) = boot(code.0, vec![LOAD as u16], vec![]);
    assert_eq!(vm.wait(Duration::from_secs(10)), Some(VmExitReason::Reset));
    assert!(vm.time_to_first_exit().is_some());
    assert_eq!(vm.stop(), VmExitReason::Reset);
    assert_eq!(console.bytes(), b"Hi\n");
}

#[test]
fn virtio_mmio_registers_read_back_magic_version_and_device_id() {
    if !kvm_or_skip("virtio_mmio_registers_read_back_magic_version_and_device_id") {
        return;
    }
    // In the legacy hole, where real-mode code reaches it: segment 0xD000.
    let base = 0xD_0000;
    let code = Code::default()
        .serial_port()
        .set_ds(0xD000)
        .print_byte_at(0x000)
        .print_byte_at(0x001)
        .print_byte_at(0x002)
        .print_byte_at(0x003)
        .print_byte_at(0x004) // version
        .print_byte_at(0x008) // device id
        .print_dword_at(0x000)
        .reset()
        .halt();
    let (vm, console) = boot(
        code.0,
        vec![LOAD as u16],
        vec![(base, VirtioSpec::Placeholder(device_type::VSOCK))],
    );
    assert_eq!(vm.wait(Duration::from_secs(10)), Some(VmExitReason::Reset));
    drop(vm);
    assert_eq!(console.bytes(), b"virt\x02\x13virt");
}

#[test]
fn several_vcpus_start_at_their_own_entries() {
    if !kvm_or_skip("several_vcpus_start_at_their_own_entries") {
        return;
    }
    let mut image = Vec::new();
    let mut entries = Vec::new();
    for vcpu in 0..4u8 {
        entries.push((LOAD as usize + image.len()) as u16);
        image.extend(Code::default().serial_port().print(b'0' + vcpu).halt().0);
    }
    let (vm, console) = boot(image, entries, vec![]);
    let mut seen = console.wait_for(4, Duration::from_secs(10));
    assert_eq!(
        vm.wait(Duration::from_millis(1)),
        None,
        "halted vCPUs keep the VM"
    );
    assert_eq!(vm.stop(), VmExitReason::Stopped);
    seen.sort_unstable();
    assert_eq!(seen, b"0123");
}

/// Guest memory of the virtio-blk test (segment 0): descriptor table, rings, request.
const DESC_TABLE: u64 = 0x2000;
const AVAIL_RING: u64 = 0x2100;
const USED_RING: u64 = 0x2200;
const REQUEST_HEADER: u64 = 0x3000;
const DATA: u64 = 0x3200;
const STATUS: u64 = 0x3400;

fn put(image: &mut Vec<u8>, address: u64, bytes: &[u8]) {
    let at = (address - LOAD) as usize;
    if image.len() < at + bytes.len() {
        image.resize(at + bytes.len(), 0);
    }
    image[at..at + bytes.len()].copy_from_slice(bytes);
}

fn descriptor(address: u64, len: u32, flags: u16, next: u16) -> Vec<u8> {
    let mut bytes = address.to_le_bytes().to_vec();
    bytes.extend(len.to_le_bytes());
    bytes.extend(flags.to_le_bytes());
    bytes.extend(next.to_le_bytes());
    bytes
}

#[test]
fn a_tiny_guest_reads_a_sector_through_virtio_blk() {
    if !kvm_or_skip("a_tiny_guest_reads_a_sector_through_virtio_blk") {
        return;
    }
    let disk = tempfile::NamedTempFile::new().unwrap();
    let mut sector = b"CLOAKDISK".to_vec();
    sector.resize(4096, 0x5A);
    std::fs::write(disk.path(), &sector).unwrap();

    // The driver's side of one request: IN, sector 0, 512 bytes, status — laid out by the
    // test; the guest code only programs the transport, kicks the queue and reports.
    let code = Code::default()
        .set_es(0xD000)
        .serial_port()
        .mmio_write(0x070, 0x1 | 0x2) // ACKNOWLEDGE | DRIVER
        .set_up_queue(
            0,
            Rings {
                desc: DESC_TABLE,
                avail: AVAIL_RING,
                used: USED_RING,
            },
        )
        .mmio_write(0x070, 0x1 | 0x2 | 0x8 | 0x4) // FEATURES_OK | DRIVER_OK
        .mmio_write(0x050, 0) // QueueNotify
        .print_byte_at(STATUS as u16)
        .print_byte_at(DATA as u16)
        .print_byte_at(DATA as u16 + 1)
        .print_byte_at(USED_RING as u16 + 2) // used idx
        .reset()
        .halt();
    let mut image = code.0;
    let mut table = descriptor(REQUEST_HEADER, 16, 1, 1); // NEXT
    table.extend(descriptor(DATA, 512, 1 | 2, 2)); // NEXT | WRITE
    table.extend(descriptor(STATUS, 1, 2, 0)); // WRITE
    put(&mut image, DESC_TABLE, &table);
    put(&mut image, AVAIL_RING, &[0, 0, 1, 0, 0, 0]); // flags, idx 1, ring[0] = head 0
    put(&mut image, USED_RING, &[0; 16]);
    put(&mut image, REQUEST_HEADER, &[0; 16]); // VIRTIO_BLK_T_IN, sector 0
    put(&mut image, STATUS, &[0xFF]);

    let (vm, console) = boot(
        image,
        vec![LOAD as u16],
        vec![(
            0xD_0000,
            VirtioSpec::Block {
                path: disk.path().to_owned(),
                read_only: true,
            },
        )],
    );
    assert_eq!(vm.wait(Duration::from_secs(10)), Some(VmExitReason::Reset));
    drop(vm);
    assert_eq!(
        console.bytes(),
        [0x00, b'C', b'L', 0x01],
        "status OK, data, used idx 1"
    );
}

/// A bzImage whose 64-bit entry prints on the serial port "L", the "H" of the boot
/// parameters' "HdrS", the first byte at the ACPI RSDP they name ("R" of "RSD PTR "), the
/// first byte of virtio-mmio slot 0's magic ("v") and its device id; then powers off the way
/// Linux does, through the ACPI sleep control register its FADT names.
fn long_mode_bzimage() -> Vec<u8> {
    let mut protected_mode = vec![0xF4u8; 0x200]; // the 32-bit entry is never used
    protected_mode.extend([
        0xBA, 0xF8, 0x03, 0x00, 0x00, // mov edx, 0x3f8
        0x8A, 0x06, // mov al, [rsi]: the boot parameters are mapped (no fault)
        0xB0, b'L', 0xEE, // mov al, 'L'; out dx, al
        0x8A, 0x86, 0x02, 0x02, 0x00, 0x00, // mov al, [rsi + 0x202]: "H" of "HdrS"
        0xEE, // out dx, al
        0x48, 0x8B, 0x5E, 0x70, // mov rbx, [rsi + 0x70]: acpi_rsdp_addr
        0x8A, 0x03, 0xEE, // mov al, [rbx]; out dx, al
        0xBB, 0x00, 0x00, 0x00, 0xD0, // mov ebx, 0xD0000000: virtio-mmio slot 0
        0x8A, 0x03, 0xEE, // mov al, [rbx]; out dx, al
        0x8A, 0x43, 0x08, 0xEE, // mov al, [rbx + 8]; out dx, al
        0x66, 0xBA, 0xC0, 0x03, // mov dx, 0x3c0: the sleep control register
        0xB0, 0x34, 0xEE, // mov al, SLP_TYP 5 << 2 | SLP_EN; out dx, al
        0xF4,
    ]);
    cloak_launch::direct::minimal_bzimage(&protected_mode, 0x10_0000)
}

#[test]
fn a_long_mode_guest_finds_the_machine_the_direct_launch_plan_describes() {
    if !kvm_or_skip("a_long_mode_guest_finds_the_machine_the_direct_launch_plan_describes") {
        return;
    }
    let console = Console::default();
    let launch = cloak_launch::direct::DirectLaunch {
        kernel: long_mode_bzimage(),
        initrd: b"initrd".to_vec(),
        cmdline: "console=ttyS0".into(),
        memory_mib: 64,
        vcpus: 1,
        guest_features: 0,
        c_bit: cloak_launch::direct::NO_C_BIT,
    };
    let dir = tempfile::tempdir().unwrap();
    let vsock = dir.path().join("vm.vsock");
    let vm = RunningVm::boot_direct(cloak_vmm::DirectVmConfig {
        launch,
        console: Box::new(console.clone()),
        devices: vec![VirtioSpec::Vsock {
            guest_cid: 3,
            socket: vsock.clone(),
        }],
        seccomp: cloak_vmm::SeccompLevel::Kill,
    })
    .unwrap();
    assert!(
        vsock.exists(),
        "the vsock host side listens while the VM runs"
    );
    let ended = vm.wait(Duration::from_secs(10));
    drop(vm);
    assert_eq!(
        (ended, console.bytes()),
        (Some(VmExitReason::PoweredOff), b"LHRv\x13".to_vec()),
        "long mode at the 64-bit entry, RSI at the boot parameters, the ACPI tables they \
         name, the vsock device in the first slot the DSDT describes, S5 power-off"
    );
    assert!(!vsock.exists(), "the vsock socket goes with the VM");
}

/// A bzImage whose 64-bit entry takes an interrupt the way Linux's 8250 driver does: an IDT
/// gate for vector 0x24, the local APIC enabled, I/O APIC pin 4 (COM1, as the MADT and DSDT
/// say) routed to that vector, the UART's transmitter-empty interrupt enabled, the legacy PIC
/// masked as Linux does (an unprogrammed 8259 would deliver through LINT0), `sti; hlt`. The
/// handler prints "I" and powers off through the ACPI sleep register. Assembled with GNU as
/// from this source (`.code64`, Intel syntax):
///
/// ```text
/// .org 0x200                       # the 64-bit entry
///     mov rsp, 0x1F0000
///     mov rdi, 0x200240            # IDT at 0x200000, gate 0x24
///     mov eax, 0x100300            # the handler
///     mov word ptr [rdi], ax
///     mov word ptr [rdi+2], 0x10   # the plan's 64-bit code selector
///     mov word ptr [rdi+4], 0x8E00 # present, interrupt gate
///     shr eax, 16
///     mov word ptr [rdi+6], ax
///     mov dword ptr [rdi+8], 0
///     mov dword ptr [rdi+12], 0
///     mov edi, 0x200FF0            # IDTR
///     mov word ptr [rdi], 0x0FFF
///     mov dword ptr [rdi+2], 0x200000
///     mov dword ptr [rdi+6], 0
///     lidt [rdi]
///     mov edi, 0xFEE000F0          # LAPIC SVR: software enable
///     mov dword ptr [rdi], 0x1FF
///     mov edi, 0xFEC00000          # IOAPIC redirection entry 4
///     mov dword ptr [rdi], 0x19
///     mov dword ptr [rdi+0x10], 0  #   destination APIC 0
///     mov dword ptr [rdi], 0x18
///     mov dword ptr [rdi+0x10], 0x24 # vector 0x24, fixed, edge, unmasked
///     mov dx, 0x3FC; mov al, 0x08; out dx, al   # MCR OUT2
///     mov dx, 0x3F9; mov al, 0x02; out dx, al   # IER: THR empty
///     mov al, 0xFF; out 0x21, al; out 0xA1, al  # mask the 8259s (LINT0 is ExtINT)
///     sti
/// wait: hlt; jmp wait
/// .org 0x300                       # the handler
///     mov dx, 0x3F8; mov al, 'I'; out dx, al
///     mov dx, 0x3C0; mov al, 0x34; out dx, al   # S5
///     hlt
/// ```
fn interrupt_bzimage() -> Vec<u8> {
    const ENTRY: &str = "48c7c400001f0048c7c740022000b80003100066890766c74702100066c74704008e\
        c1e81066894706c7470800000000c7470c00000000bff00f200066c707ff0fc7470200002000c747060000\
        00000f011fbff000e0fec707ff010000bf0000c0fec70719000000c7471000000000c70718000000c74710\
        2400000066bafc03b008ee66baf903b002eeb0ffe621e6a1fbf4ebfd";
    const HANDLER: &str = "66baf803b049ee66bac003b034eef4";
    let mut protected_mode = vec![0xF4u8; 0x300];
    let entry = hex::decode(ENTRY).unwrap();
    protected_mode[0x200..0x200 + entry.len()].copy_from_slice(&entry);
    protected_mode.extend(hex::decode(HANDLER).unwrap());
    cloak_launch::direct::minimal_bzimage(&protected_mode, 0x10_0000)
}

/// The interrupt path a Linux guest depends on: KVM's in-kernel I/O APIC and local APIC, the
/// serial port's irqfd on GSI 4, delivery into a long-mode guest's IDT.
#[test]
fn a_device_interrupt_reaches_the_guest_through_the_io_apic() {
    if !kvm_or_skip("a_device_interrupt_reaches_the_guest_through_the_io_apic") {
        return;
    }
    let console = Console::default();
    let launch = cloak_launch::direct::DirectLaunch {
        kernel: interrupt_bzimage(),
        initrd: Vec::new(),
        cmdline: String::new(),
        memory_mib: 64,
        vcpus: 1,
        guest_features: 0,
        c_bit: cloak_launch::direct::NO_C_BIT,
    };
    let vm = RunningVm::boot_direct(cloak_vmm::DirectVmConfig {
        launch,
        console: Box::new(console.clone()),
        devices: vec![],
        seccomp: cloak_vmm::SeccompLevel::Kill,
    })
    .unwrap();
    let ended = vm.wait(Duration::from_secs(10));
    drop(vm);
    assert_eq!(
        (ended, console.bytes()),
        (Some(VmExitReason::PoweredOff), b"I".to_vec()),
        "the COM1 interrupt ran the guest's handler"
    );
}

/// Where the two-queue test guests (vsock, net, fs) put their rings: queue 0 (receive, or
/// virtio-fs hiprio) and queue 1 (transmit, or requests), eight entries each.
#[derive(Clone, Copy)]
struct Rings {
    desc: u64,
    avail: u64,
    used: u64,
}

const QUEUE0: Rings = Rings {
    desc: 0x2000,
    avail: 0x2100,
    used: 0x2200,
};
const QUEUE1: Rings = Rings {
    desc: 0x2400,
    avail: 0x2500,
    used: 0x2600,
};

/// Guest memory of the virtio-vsock test: one receive and one transmit queue of 8 entries.
mod vsock_layout {
    pub(crate) const RX_BUFFER: u64 = 0x3000;
    pub(crate) const TX_BUFFER: u64 = 0x3200;
    pub(crate) const HEADER: u64 = 44;
}

/// The guest's half of the hybrid-vsock handshake, driven through the transport, the event
/// loop and the device: a host `CONNECT 1024` reaches the guest as a REQUEST in its receive
/// queue; the guest answers RESPONSE on the transmit queue (the host reads `OK <port>`);
/// host bytes then arrive as a RW packet in the next receive buffer.
#[test]
fn a_host_connects_to_a_tiny_guest_over_virtio_vsock() {
    use vsock_layout::*;
    if !kvm_or_skip("a_host_connects_to_a_tiny_guest_over_virtio_vsock") {
        return;
    }
    let code = Code::default()
        .start_two_queue_driver()
        .print(b'R') // ready: the host may connect
        .wait_for_byte(QUEUE0.used as u16 + 2, 1) // the REQUEST arrived
        .print_byte_at(RX_BUFFER as u16 + 30) // its op
        // RESPONSE to the host's port (the REQUEST's source port).
        .copy_dword(RX_BUFFER as u16 + 16, TX_BUFFER as u16 + 20)
        .store_word(QUEUE1.avail as u16 + 2, 1)
        .mmio_write(0x050, 1) // QueueNotify(tx)
        // The receive buffer again, for the host's data.
        .store_word(QUEUE0.avail as u16 + 2, 2)
        .mmio_write(0x050, 0) // QueueNotify(rx)
        .wait_for_byte(QUEUE0.used as u16 + 2, 2)
        .print_byte_at(RX_BUFFER as u16 + 30) // op RW
        .print_byte_at((RX_BUFFER + HEADER) as u16)
        .print_byte_at((RX_BUFFER + HEADER) as u16 + 1)
        .reset()
        .halt();
    let mut image = code.0;
    let rx_buffer_len = (HEADER + 64) as u32;
    put(
        &mut image,
        QUEUE0.desc,
        &descriptor(RX_BUFFER, rx_buffer_len, 2, 0),
    ); // WRITE
       // Two available entries, both the one buffer; idx 1: the first offered now.
    put(&mut image, QUEUE0.avail, &[0, 0, 1, 0, 0, 0, 0, 0]);
    put(&mut image, QUEUE0.used, &[0; 80]);
    put(
        &mut image,
        QUEUE1.desc,
        &descriptor(TX_BUFFER, HEADER as u32, 0, 0),
    );
    put(&mut image, QUEUE1.avail, &[0, 0, 0, 0, 0, 0]); // ring[0] = head 0, idx set by the guest
    put(&mut image, QUEUE1.used, &[0; 80]);
    let mut response = Vec::new();
    response.extend(3u64.to_le_bytes()); // src_cid: the guest
    response.extend(2u64.to_le_bytes()); // dst_cid: the host
    response.extend(1024u32.to_le_bytes()); // src_port
    response.extend(0u32.to_le_bytes()); // dst_port: copied from the REQUEST
    response.extend(0u32.to_le_bytes()); // len
    response.extend(1u16.to_le_bytes()); // type: stream
    response.extend(2u16.to_le_bytes()); // op: RESPONSE
    response.extend(0u32.to_le_bytes()); // flags
    response.extend(65536u32.to_le_bytes()); // buf_alloc
    response.extend(0u32.to_le_bytes()); // fwd_cnt
    put(&mut image, TX_BUFFER, &response);
    put(&mut image, RX_BUFFER, &[0; 108]);

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vm.vsock");
    let (vm, console) = boot(
        image,
        vec![LOAD as u16],
        vec![(
            0xD_0000,
            VirtioSpec::Vsock {
                guest_cid: 3,
                socket: socket.clone(),
            },
        )],
    );
    assert_eq!(console.wait_for(1, Duration::from_secs(5)), b"R");
    let mut host = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"CONNECT 1024\n").unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\n") {
        use std::io::Read as _;
        assert_eq!(
            host.read(&mut byte).unwrap(),
            1,
            "handshake reply: {reply:?}"
        );
        reply.push(byte[0]);
    }
    assert!(
        reply.starts_with(b"OK "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    host.write_all(b"hi").unwrap();
    assert_eq!(vm.wait(Duration::from_secs(10)), Some(VmExitReason::Reset));
    drop(vm);
    // REQUEST (1) seen, then RW (5) carrying the host's bytes.
    assert_eq!(console.bytes(), [b'R', 1, 5, b'h', b'i']);
}

/// A raw packet socket on one interface: what the host side of the tap test sends and
/// captures frames with.
struct PacketSocket(std::os::fd::OwnedFd);

impl PacketSocket {
    fn bind(interface: &str) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: socket(2) returned a new descriptor nothing else owns.
        let socket = Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) });
        let name = std::ffi::CString::new(interface).expect("no NUL in an interface name");
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol;
        address.sll_ifindex = index as i32;
        // SAFETY: `address` is a sockaddr_ll of the size passed.
        let bound = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&socket.0),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if bound < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(socket)
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: `frame` is valid for its length during the call.
        let sent = unsafe {
            libc::send(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                frame.as_ptr().cast(),
                frame.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame that contains `needle`, within `timeout`.
    fn capture(&self, needle: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buffer = [0u8; 2048];
        while Instant::now() < deadline {
            let mut poll = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&self.0),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut poll, 1, 100) } <= 0 {
                continue;
            }
            // SAFETY: `buffer` is writable for its length.
            let len = unsafe { libc::recv(poll.fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
            if len > 0 {
                let frame = &buffer[..len as usize];
                if frame.windows(needle.len()).any(|w| w == needle) {
                    return Some(frame.to_vec());
                }
            }
        }
        None
    }
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

/// Guest memory of the virtio-net test.
mod net_layout {
    pub(crate) const RX_BUFFER: u64 = 0x3000;
    pub(crate) const TX_BUFFER: u64 = 0x3800;
    /// virtio_net_hdr_v1
    pub(crate) const HEADER: u64 = 12;
}

/// Frames both ways between a real-mode guest and a real tap: the host sends on the tap,
/// the frame lands in the guest's receive buffer behind a virtio-net header; the guest
/// transmits a frame and the host captures it on the tap.
#[test]
fn frames_cross_a_real_tap_both_ways() {
    use net_layout::*;
    if !kvm_or_skip("frames_cross_a_real_tap_both_ways") {
        return;
    }
    let tap = format!("cvmn{}", std::process::id() % 100_000);
    if let Err(err) = cloak_vmm::devices::virtio_net::Tap::open(&tap) {
        let reason = format!("cannot create a tap device here: {err} (needs CAP_NET_ADMIN)");
        assert!(
            std::env::var_os("CLOAK_REQUIRE_VM_TESTS").is_none(),
            "frames_cross_a_real_tap_both_ways: {reason}"
        );
        eprintln!("SKIP frames_cross_a_real_tap_both_ways: {reason}");
        return;
    }
    let code = Code::default()
        .start_two_queue_driver()
        .mmio_write(0x050, 0) // receive buffers are there
        .print(b'R')
        .wait_for_byte(QUEUE0.used as u16 + 2, 1)
        .print_byte_at((RX_BUFFER + HEADER) as u16 + 12) // EtherType, high byte
        .print_byte_at((RX_BUFFER + HEADER) as u16 + 14) // first payload byte
        .store_word(QUEUE1.avail as u16 + 2, 1)
        .mmio_write(0x050, 1) // transmit
        .wait_for_byte(QUEUE1.used as u16 + 2, 1)
        .print(b'T')
        .reset()
        .halt();
    let mut image = code.0;
    put(&mut image, QUEUE0.desc, &descriptor(RX_BUFFER, 1600, 2, 0));
    put(&mut image, QUEUE0.avail, &[0, 0, 1, 0, 0, 0]);
    put(&mut image, QUEUE0.used, &[0; 80]);
    let mut guest_frame = vec![0u8; HEADER as usize];
    guest_frame.extend([0xFF; 6]); // broadcast
    guest_frame.extend([0x02, 0, 0, 0, 0, 0x01]); // the guest's MAC
    guest_frame.extend([0x88, 0xB5]); // local experimental EtherType
    guest_frame.extend(b"from the guest");
    guest_frame.resize(HEADER as usize + 60, 0);
    put(
        &mut image,
        QUEUE1.desc,
        &descriptor(TX_BUFFER, guest_frame.len() as u32, 0, 0),
    );
    put(&mut image, QUEUE1.avail, &[0, 0, 0, 0, 0, 0]);
    put(&mut image, QUEUE1.used, &[0; 80]);
    put(&mut image, TX_BUFFER, &guest_frame);
    put(&mut image, RX_BUFFER, &[0; 1600]);

    let (vm, console) = boot(
        image,
        vec![LOAD as u16],
        vec![(
            0xD_0000,
            VirtioSpec::Net {
                tap: tap.clone(),
                mac: [0x02, 0, 0, 0, 0, 0x01],
            },
        )],
    );
    assert_eq!(console.wait_for(1, Duration::from_secs(5)), b"R");
    // The VMM created the tap; bring it up quietly (no IPv6 chatter into the guest).
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), b"1");
    assert!(ip(&["link", "set", &tap, "up"]), "ip link set {tap} up");
    let socket = PacketSocket::bind(&tap).expect("packet socket on the tap");
    let mut host_frame = vec![0x02, 0, 0, 0, 0, 0x01]; // to the guest
    host_frame.extend([0x02, 0, 0, 0, 0, 0x02]);
    host_frame.extend([0x88, 0xB5]);
    host_frame.extend(b"host says hi");
    host_frame.resize(60, 0);
    socket.send(&host_frame).expect("send on the tap");
    let captured = socket.capture(b"from the guest", Duration::from_secs(10));
    let ended = vm.wait(Duration::from_secs(10));
    drop(vm);
    assert_eq!(
        captured.as_deref(),
        Some(&guest_frame[HEADER as usize..]),
        "the guest's frame, without its virtio-net header, on the tap"
    );
    assert_eq!(ended, Some(VmExitReason::Reset));
    assert_eq!(console.bytes(), [b'R', 0x88, b'h', b'T']);
    assert!(
        !std::path::Path::new("/sys/class/net").join(&tap).exists(),
        "the tap went with the VM"
    );
}

fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    let home_bin =
        std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo/bin"));
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home_bin)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Guest memory of the virtio-fs test: the request queue and one FUSE_INIT.
mod fs_layout {
    pub(crate) const REQUEST: u64 = 0x3000;
    pub(crate) const REPLY: u64 = 0x3200;
}

/// virtio-fs through the transport: DRIVER_OK hands the rings and guest RAM to a real
/// virtiofsd, the guest's kick reaches it, and its answer to FUSE_INIT lands in guest memory.
#[test]
fn a_tiny_guest_gets_virtiofsds_answer_to_fuse_init() {
    use fs_layout::*;
    let test = "a_tiny_guest_gets_virtiofsds_answer_to_fuse_init";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(virtiofsd) = find_tool("virtiofsd") else {
        let reason = "virtiofsd is not on PATH (scripts/setup-host.sh installs it)";
        assert!(
            std::env::var_os("CLOAK_REQUIRE_VM_TESTS").is_none(),
            "{test}: {reason}"
        );
        eprintln!("SKIP {test}: {reason}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("shared")).unwrap();
    let socket = dir.path().join("fs.sock");
    let mut backend = std::process::Command::new(virtiofsd)
        .arg("--socket-path")
        .arg(&socket)
        .arg("--shared-dir")
        .arg(dir.path().join("shared"))
        .arg("--sandbox=none")
        .arg("--log-level=error")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }

    let code = Code::default()
        .start_two_queue_driver()
        .store_word(QUEUE1.avail as u16 + 2, 1)
        .mmio_write(0x050, 1) // kick the request queue
        .wait_for_byte(QUEUE1.used as u16 + 2, 1)
        .print_byte_at(REPLY as u16 + 4) // error (low byte): 0
        .print_byte_at(REPLY as u16 + 16) // fuse_init_out.major: 7
        .reset()
        .halt();
    let mut image = code.0;
    let mut request = Vec::new();
    request.extend((40u32 + 64).to_le_bytes()); // len
    request.extend(26u32.to_le_bytes()); // FUSE_INIT
    request.extend(1u64.to_le_bytes()); // unique
    request.extend([0u8; 24]); // nodeid, uid, gid, pid, extlen, padding
    request.extend(7u32.to_le_bytes()); // major
    request.extend(31u32.to_le_bytes()); // minor
    request.extend([0u8; 56]); // max_readahead, flags, flags2, unused
    let mut table = descriptor(REQUEST, request.len() as u32, 1, 1); // NEXT
    table.extend(descriptor(REPLY, 256, 2, 0)); // WRITE
    put(&mut image, QUEUE1.desc, &table);
    put(&mut image, QUEUE1.avail, &[0, 0, 0, 0, 0, 0]);
    put(&mut image, QUEUE1.used, &[0; 80]);
    put(&mut image, QUEUE0.desc, &[0; 16]);
    put(&mut image, QUEUE0.avail, &[0; 6]);
    put(&mut image, QUEUE0.used, &[0; 80]);
    put(&mut image, REQUEST, &request);
    put(&mut image, REPLY, &[0xFF; 256]);

    let (vm, console) = boot(
        image,
        vec![LOAD as u16],
        vec![(
            0xD_0000,
            VirtioSpec::Fs {
                socket: socket.clone(),
                tag: "cloak".into(),
            },
        )],
    );
    let ended = vm.wait(Duration::from_secs(10));
    drop(vm);
    let _ = backend.kill();
    let _ = backend.wait();
    assert_eq!(
        (ended, console.bytes()),
        (Some(VmExitReason::Reset), vec![0, 7]),
        "FUSE_INIT answered without error, protocol major 7"
    );
}
