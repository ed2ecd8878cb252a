//! cloak-vmm under this host's KVM with tiny real-mode guests the tests assemble byte by
//! byte: serial output reaches the console, the i8042 reset ends the VM, virtio-mmio registers
//! read back their identification, several vCPUs start. Skipped (with the reason) where KVM
//! cannot create a VM; `CLOAK_REQUIRE_VM_TESTS=1` turns the skip into a failure.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloak_vmm::devices::virtio_mmio::device_type;
use cloak_vmm::{RunningVm, TinyVmConfig, VmExitReason};

const LOAD: u64 = 0x1000;

fn kvm_or_skip(test: &str) -> bool {
    match cloak_vmm::kvm_available() {
        Ok(()) => true,
        Err(reason) if std::env::var_os("CLOAK_REQUIRE_VM_TESTS").is_some() => {
            panic!("{test}: KVM is required here but: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP {test}: {reason}");
            false
        }
    }
}

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
    fn reset(mut self) -> Self {
        self.0.extend([0xB0, 0xFE, 0xE6, 0x64]); // mov al, 0xfe; out 0x64, al
        self
    }
    fn halt(mut self) -> Self {
        self.0.extend([0xFA, 0xF4]); // cli; hlt
        self
    }
}

fn boot(image: Vec<u8>, entries: Vec<u16>, virtio_mmio: Vec<(u64, u32)>) -> (RunningVm, Console) {
    let console = Console::default();
    let vm = RunningVm::boot_tiny(TinyVmConfig {
        memory_mib: 4,
        image,
        load_address: LOAD,
        entries,
        console: Box::new(console.clone()),
        virtio_mmio,
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
    let (vm, console) = boot(code.0, vec![LOAD as u16], vec![(base, device_type::VSOCK)]);
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
