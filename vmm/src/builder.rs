//! Booting a VM as small ordered steps, each returning `Result<_, StartVmError>`: open KVM,
//! create the VM, guest RAM (memfd), register it, load the image, build the buses and
//! devices, create and set up the vCPUs, start their threads.
//!
//! Two boots share the steps. `boot_direct` starts a Linux guest from the direct-launch plan
//! on the machine its ACPI tables describe (interrupt controllers, PIT, COM1 on IRQ 4, virtio
//! devices in the fixed virtio-mmio slots with irqfd interrupts, an event loop for their host
//! sides). `boot_tiny` (feature `test-guests`, not in the product) runs 16-bit real-mode code
//! loaded below 64 KiB, each vCPU entering at its own offset, with polled devices: what runs
//! on hosts whose KVM cannot boot Linux, and what the KVM tests and the start-up benchmark use.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::bus::{Bus, BusError};
use crate::control::{VmControl, VmExitReason};
use crate::devices::virtio_block::{BlockBackend, VirtioBlock};
#[cfg(feature = "test-guests")]
use crate::devices::virtio_mmio::PlaceholderDevice;
use crate::devices::virtio_mmio::{MmioTransport, TransportWiring, VirtioDevice, WINDOW};
use crate::devices::{i8042::I8042, serial::SerialConsole};
use crate::devices::{COM1_PORT, COM1_PORTS, I8042_PORT, I8042_PORTS};
use crate::event_loop::EventLoop;
use crate::memory::{GuestRam, MemoryError};
use crate::seccomp::SeccompLevel;

/// Where KVM on Intel puts the real-mode TSS (three pages below 4 GiB, out of RAM's way).
const TSS_ADDRESS: usize = 0xfffb_d000;

#[derive(Debug, thiserror::Error)]
pub enum StartVmError {
    #[error("opening /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("creating the VM: {0}")]
    CreateVm(kvm_ioctls::Error),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("registering guest memory with KVM: {0}")]
    RegisterMemory(kvm_ioctls::Error),
    #[error("the image ({len} bytes at {address:#x}) does not fit below 64 KiB of real-mode code or in RAM")]
    ImageOutOfRange { address: u64, len: usize },
    #[error("placing a device: {0}")]
    Bus(#[from] BusError),
    #[error("opening the disk {path}: {source}")]
    Disk {
        path: String,
        source: std::io::Error,
    },
    #[error("vCPU {index}: {step}: {source}")]
    Vcpu {
        index: usize,
        step: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("at least one vCPU is needed")]
    NoVcpus,
    #[error(transparent)]
    DirectBoot(#[from] crate::direct_boot::DirectBootError),
    #[error("reading the CPUID KVM supports: {0}")]
    SupportedCpuid(kvm_ioctls::Error),
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error("starting vCPU thread {index}: {source}")]
    Thread {
        index: usize,
        source: std::io::Error,
    },
    #[error(transparent)]
    Machine(#[from] crate::machine::MachineError),
    #[error("the guest has {slots} virtio-mmio slots; {devices} devices asked for")]
    TooManyDevices { slots: u32, devices: usize },
    #[error("the vsock device on {path}: {source}")]
    Vsock {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tap(#[from] crate::devices::virtio_net::TapError),
    #[error(transparent)]
    VirtioFs(#[from] crate::devices::vhost_user_fs::VhostUserFsError),
    #[error("SEV-SNP launch: {0}")]
    Snp(#[from] crate::snp_launch::SnpError),
    #[error("starting the event loop: {0}")]
    EventLoop(std::io::Error),
}

/// A test guest (feature `test-guests`): real-mode code, its vCPUs' entries and polled
/// devices.
#[cfg(feature = "test-guests")]
pub struct TinyVmConfig {
    pub memory_mib: u32,
    /// Real-mode code and data, loaded at `load_address` (below 64 KiB, segment 0).
    pub image: Vec<u8>,
    pub load_address: u64,
    /// Entry offset (IP, CS = 0) of each vCPU.
    pub entries: Vec<u16>,
    /// Where the serial console writes.
    pub console: Box<dyn Write + Send>,
    /// virtio-mmio windows: (base address, device).
    pub virtio_mmio: Vec<(u64, VirtioSpec)>,
    /// The vCPU and event-loop threads' seccomp filters.
    pub seccomp: SeccompLevel,
}

/// A device behind a virtio-mmio window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioSpec {
    /// The transport alone, identifying as this device type (test guests only).
    #[cfg(feature = "test-guests")]
    Placeholder(u32),
    /// virtio-rng fed by the host's getrandom.
    Rng,
    /// virtio-blk on a raw file.
    Block {
        path: std::path::PathBuf,
        read_only: bool,
    },
    /// virtio-net on the tap device `tap` (opened in the VMM's network namespace).
    Net { tap: String, mac: [u8; 6] },
    /// virtio-fs served by a vhost-user backend (virtiofsd) listening on `socket`.
    Fs {
        socket: std::path::PathBuf,
        tag: String,
    },
    /// virtio-vsock whose host side listens on `socket` (hybrid vsock: `CONNECT <port>`;
    /// guest connections to host port P reach `<socket>_P`).
    Vsock {
        guest_cid: u64,
        socket: std::path::PathBuf,
    },
}

/// What an SEV-SNP launch adds to a direct boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpSettings {
    /// The guest policy (SNP ABI "Guest Policy").
    pub policy: u64,
    /// Bound into every attestation report (the SHA-256 of the pod's init-data).
    pub host_data: [u8; 32],
}

/// A guest booted from the direct-launch plan (kernel, initrd, command line).
pub struct DirectVmConfig {
    pub launch: cloak_launch::direct::DirectLaunch,
    pub console: Box<dyn Write + Send>,
    /// Devices, one per virtio-mmio slot of the guest's ACPI tables, in slot order.
    pub devices: Vec<VirtioSpec>,
    /// The vCPU and event-loop threads' seccomp filters.
    pub seccomp: SeccompLevel,
}

pub struct RunningVm {
    control: Arc<VmControl>,
    event_loop: Option<EventLoop>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
    first_exit: Arc<OnceLock<Instant>>,
    // Kept alive while vCPUs run: the VM fd and the memory they use (and, for SNP guests,
    // the private memory and the /dev/sev handle).
    _vm: Arc<VmFd>,
    _ram: GuestRam,
    _private: Vec<std::fs::File>,
}

fn open_kvm() -> Result<Kvm, StartVmError> {
    Kvm::new().map_err(StartVmError::OpenKvm)
}

fn supported_cpuid(kvm: &Kvm) -> Result<kvm_bindings::CpuId, StartVmError> {
    kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(StartVmError::SupportedCpuid)
}

fn create_vm(kvm: &Kvm) -> Result<VmFd, StartVmError> {
    let vm = kvm.create_vm().map_err(StartVmError::CreateVm)?;
    if let Err(err) = vm.set_tss_address(TSS_ADDRESS) {
        // Only Intel's real-mode emulation needs it; other KVM backends refuse it harmlessly.
        tracing::debug!(error = %err, "KVM_SET_TSS_ADDR");
    }
    Ok(vm)
}

fn register_memory(vm: &VmFd, ram: &GuestRam) -> Result<(), StartVmError> {
    for (slot, region) in ram.memory.iter().enumerate() {
        let region_info = kvm_bindings::kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping of `ram`, which RunningVm keeps until the VM
        // fd (and with it KVM's use of the mapping) is gone.
        unsafe { vm.set_user_memory_region(region_info) }.map_err(StartVmError::RegisterMemory)?;
    }
    Ok(())
}

#[cfg(feature = "test-guests")]
fn load_image(ram: &GuestRam, image: &[u8], address: u64) -> Result<(), StartVmError> {
    use vm_memory::{Bytes, GuestAddress};
    let out_of_range = || StartVmError::ImageOutOfRange {
        address,
        len: image.len(),
    };
    if address + image.len() as u64 > 0x1_0000 {
        return Err(out_of_range());
    }
    ram.memory
        .write_slice(image, GuestAddress(address))
        .map_err(|_| out_of_range())
}

fn virtio_device(spec: &VirtioSpec) -> Result<Box<dyn VirtioDevice>, StartVmError> {
    Ok(match spec {
        #[cfg(feature = "test-guests")]
        VirtioSpec::Placeholder(device_type) => Box::new(PlaceholderDevice {
            device_type: *device_type,
            queue_sizes: vec![256],
        }),
        VirtioSpec::Rng => Box::new(crate::devices::virtio_rng::VirtioRng::default()),
        VirtioSpec::Block { path, read_only } => {
            let disk_error = |source| StartVmError::Disk {
                path: path.display().to_string(),
                source,
            };
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(!read_only)
                .open(path)
                .map_err(disk_error)?;
            let id = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let backend = BlockBackend::new(file, *read_only, &id).map_err(disk_error)?;
            Box::new(VirtioBlock::new(backend))
        }
        VirtioSpec::Net { tap, mac } => Box::new(crate::devices::virtio_net::VirtioNet::new(
            Box::new(crate::devices::virtio_net::Tap::open(tap)?),
            *mac,
        )),
        VirtioSpec::Fs { socket, tag } => Box::new(
            crate::devices::vhost_user_fs::VhostUserFs::connect(socket, tag)?,
        ),
        VirtioSpec::Vsock { guest_cid, socket } => Box::new(
            crate::devices::vsock::VsockDevice::new(*guest_cid, socket).map_err(|source| {
                StartVmError::Vsock {
                    path: socket.display().to_string(),
                    source,
                }
            })?,
        ),
    })
}

/// A device at `base` and how its transport is wired into the VM.
struct PlacedDevice<'a> {
    base: u64,
    spec: &'a VirtioSpec,
    wiring: TransportWiring,
}

struct Buses {
    pio: Bus,
    mmio: Bus,
    /// Serving the devices' host sides; none when no device has one.
    event_loop: Option<EventLoop>,
}

/// The buses with the legacy devices and `devices`, and the event loop that serves the host
/// sides of those that have one (woken through `wake`, which `devices` are wired to).
fn build_buses(
    control: &Arc<VmControl>,
    console: SerialConsole<Box<dyn Write + Send>>,
    devices: Vec<PlacedDevice<'_>>,
    memory: &vm_memory::GuestMemoryMmap,
    wake: Arc<vmm_sys_util::eventfd::EventFd>,
    seccomp: SeccompLevel,
) -> Result<Buses, StartVmError> {
    let mut pio = Bus::default();
    pio.insert(COM1_PORT, COM1_PORTS, Arc::new(Mutex::new(console)))?;
    pio.insert(
        I8042_PORT,
        I8042_PORTS,
        Arc::new(Mutex::new(I8042::new(control.clone()))),
    )?;
    pio.insert(
        u64::from(cloak_launch::acpi::SLEEP_CONTROL_PORT),
        1,
        Arc::new(Mutex::new(crate::devices::acpi_sleep::AcpiSleep::new(
            control.clone(),
        ))),
    )?;
    let mut mmio = Bus::default();
    let mut transports = Vec::new();
    for device in devices {
        let transport =
            MmioTransport::with_memory(virtio_device(device.spec)?, Some(memory.clone()))
                .with_wiring(device.wiring);
        let serves_host_side = transport.serves_host_side();
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(device.base, WINDOW, transport.clone())?;
        if serves_host_side {
            transports.push(transport);
        }
    }
    let event_loop = if transports.is_empty() {
        None
    } else {
        Some(EventLoop::spawn(transports, wake, seccomp).map_err(StartVmError::EventLoop)?)
    };
    Ok(Buses {
        pio,
        mmio,
        event_loop,
    })
}

/// The eventfd that wakes the event loop.
fn new_wake() -> Result<Arc<vmm_sys_util::eventfd::EventFd>, StartVmError> {
    vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)
        .map(Arc::new)
        .map_err(StartVmError::EventLoop)
}

/// What a Linux guest has beside its vCPUs: COM1 on its interrupt, the devices in the ACPI
/// slots, and the event loop serving their host sides.
fn linux_devices(
    vm: &VmFd,
    control: &Arc<VmControl>,
    console: Box<dyn Write + Send>,
    devices: &[VirtioSpec],
    ram: &GuestRam,
    encrypted_guest: bool,
    seccomp: SeccompLevel,
) -> Result<Buses, StartVmError> {
    use cloak_launch::acpi::COM1_IRQ;
    let console =
        SerialConsole::with_interrupt(console, Some(crate::machine::interrupt_line(vm, COM1_IRQ)?));
    let wake = new_wake()?;
    let devices = place_in_slots(vm, devices, &wake, encrypted_guest)?;
    build_buses(control, console, devices, &ram.memory, wake, seccomp)
}

/// The devices of a Linux guest in the ACPI tables' virtio-mmio slots, each with its
/// interrupt line, all waking one event loop.
fn place_in_slots<'a>(
    vm: &VmFd,
    devices: &'a [VirtioSpec],
    wake: &Arc<vmm_sys_util::eventfd::EventFd>,
    encrypted_guest: bool,
) -> Result<Vec<PlacedDevice<'a>>, StartVmError> {
    use cloak_launch::acpi::{virtio_mmio_slot, VIRTIO_MMIO_SLOTS};
    devices
        .iter()
        .enumerate()
        .map(|(slot, spec)| {
            let (base, gsi) =
                virtio_mmio_slot(slot as u32).ok_or(StartVmError::TooManyDevices {
                    slots: VIRTIO_MMIO_SLOTS,
                    devices: devices.len(),
                })?;
            let interrupt = crate::machine::interrupt_line(vm, gsi)?;
            Ok(PlacedDevice {
                base,
                spec,
                wiring: TransportWiring {
                    interrupt: Some(Arc::new(interrupt)),
                    wake: Some(wake.clone()),
                    encrypted_guest,
                },
            })
        })
        .collect()
}

fn vcpu_error(index: usize, step: &'static str) -> impl Fn(kvm_ioctls::Error) -> StartVmError {
    move |source| StartVmError::Vcpu {
        index,
        step,
        source,
    }
}

#[cfg(feature = "test-guests")]
fn create_vcpus(vm: &VmFd, entries: &[u16]) -> Result<Vec<VcpuFd>, StartVmError> {
    if entries.is_empty() {
        return Err(StartVmError::NoVcpus);
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let vcpu_error = |step| vcpu_error(index, step);
            let vcpu = vm
                .create_vcpu(index as u64)
                .map_err(vcpu_error("creating"))?;
            let mut sregs = vcpu.get_sregs().map_err(vcpu_error("reading sregs"))?;
            // Real mode, code and data in segment 0.
            for segment in [
                &mut sregs.cs,
                &mut sregs.ds,
                &mut sregs.es,
                &mut sregs.ss,
                &mut sregs.fs,
                &mut sregs.gs,
            ] {
                segment.base = 0;
                segment.selector = 0;
            }
            vcpu.set_sregs(&sregs)
                .map_err(vcpu_error("setting sregs"))?;
            let mut regs = vcpu.get_regs().map_err(vcpu_error("reading regs"))?;
            regs.rip = u64::from(*entry);
            regs.rflags = 0x2;
            regs.rsp = 0xfff0 - (index as u64) * 0x100;
            vcpu.set_regs(&regs).map_err(vcpu_error("setting regs"))?;
            Ok(vcpu)
        })
        .collect()
}

/// vCPUs in the state the plan's VMSAs hold: the boot processor at the kernel entry, the
/// others parked; around them the processor state of machine.rs (CPUID from what KVM
/// supports — long mode needs it to say LM — with each vCPU's APIC id, MSRs, FPU, LAPIC).
fn create_planned_vcpus(
    supported: &kvm_bindings::CpuId,
    vm: &VmFd,
    launch: &cloak_launch::direct::DirectLaunch,
) -> Result<Vec<VcpuFd>, StartVmError> {
    if launch.vcpus == 0 {
        return Err(StartVmError::NoVcpus);
    }
    let msrs = crate::machine::boot_msrs()?;
    (0..launch.vcpus as usize)
        .map(|index| {
            let vcpu_error = |step| vcpu_error(index, step);
            let vcpu = vm
                .create_vcpu(index as u64)
                .map_err(vcpu_error("creating"))?;
            let cpuid = crate::machine::vcpu_cpuid(supported, index as u32, launch.vcpus);
            crate::machine::set_up_vcpu(&vcpu, &cpuid, &msrs)?;
            let mut sregs = vcpu.get_sregs().map_err(vcpu_error("reading sregs"))?;
            let mut regs = vcpu.get_regs().map_err(vcpu_error("reading regs"))?;
            let area = launch.save_area(index == 0);
            crate::direct_boot::apply_save_area(&area, &mut sregs, &mut regs);
            vcpu.set_sregs(&sregs)
                .map_err(vcpu_error("setting sregs"))?;
            vcpu.set_regs(&regs).map_err(vcpu_error("setting regs"))?;
            Ok(vcpu)
        })
        .collect()
}

impl RunningVm {
    /// Boots a guest from the direct-launch plan: the plan's pages in RAM, the vCPUs in its
    /// VMSA state.
    pub fn boot_direct(config: DirectVmConfig) -> Result<Self, StartVmError> {
        let started = Instant::now();
        let kvm = open_kvm()?;
        let vm = create_vm(&kvm)?;
        crate::machine::create_interrupt_controllers(&vm)?;
        let ram = GuestRam::new(config.launch.memory_mib)?;
        register_memory(&vm, &ram)?;
        let plan = crate::direct_boot::plan_of(&config.launch)?;
        crate::direct_boot::load_plan(&ram, &plan)?;
        let control = Arc::new(VmControl::default());
        let buses = linux_devices(
            &vm,
            &control,
            config.console,
            &config.devices,
            &ram,
            false,
            config.seccomp,
        )?;
        let vcpus = create_planned_vcpus(&supported_cpuid(&kvm)?, &vm, &config.launch)?;
        Self::start(started, vm, ram, control, buses, vcpus, config.seccomp)
    }

    /// Launches an SEV-SNP guest from the same plan (snp_launch.rs): private memory, every
    /// record through SNP_LAUNCH_UPDATE, the vCPUs in the save areas' state, then
    /// SNP_LAUNCH_FINISH with `snp.host_data`. The plan's C-bit must be the host's.
    pub fn boot_snp(config: DirectVmConfig, snp: SnpSettings) -> Result<Self, StartVmError> {
        use crate::snp_launch::{self, SnpFirmware as _};
        let started = Instant::now();
        let kvm = open_kvm()?;
        let (vm, sev) = snp_launch::create_snp_vm(&kvm, config.launch.guest_features)?;
        snp_launch::enable_conversion_exits(&vm)?;
        crate::machine::create_interrupt_controllers(&vm)?;
        let ram = GuestRam::new(config.launch.memory_mib)?;
        let mut private = snp_launch::register_private_memory(&vm, &ram)?;
        let plan = crate::direct_boot::plan_of(&config.launch)?;
        let supported = supported_cpuid(&kvm)?;
        let cpuid_page = snp_launch::cpuid_page(&crate::machine::vcpu_cpuid(
            &supported,
            0,
            config.launch.vcpus,
        ));
        let mut firmware = snp_launch::KvmSnpFirmware { vm: &vm, sev: &sev };
        snp_launch::update_pages(
            &plan,
            &ram,
            config.launch.vcpus,
            snp.policy,
            &cpuid_page,
            &mut firmware,
        )?;
        let control = Arc::new(VmControl::default());
        let buses = linux_devices(
            &vm,
            &control,
            config.console,
            &config.devices,
            &ram,
            true,
            config.seccomp,
        )?;
        let vcpus = create_planned_vcpus(&supported, &vm, &config.launch)?;
        // KVM turns each vCPU's registers into its VMSA here, the plan's VMSA records.
        firmware.launch_finish(snp.host_data)?;
        tracing::info!(policy = snp.policy, "SNP launch finished");
        let mut running = Self::start(started, vm, ram, control, buses, vcpus, config.seccomp)?;
        private.push(sev);
        running._private = private;
        Ok(running)
    }

    /// Boots a tiny guest.
    #[cfg(feature = "test-guests")]
    pub fn boot_tiny(config: TinyVmConfig) -> Result<Self, StartVmError> {
        let started = Instant::now();
        let kvm = open_kvm()?;
        let vm = create_vm(&kvm)?;
        let ram = GuestRam::new(config.memory_mib)?;
        register_memory(&vm, &ram)?;
        load_image(&ram, &config.image, config.load_address)?;
        let control = Arc::new(VmControl::default());
        // Polled devices (a tiny guest takes no interrupts), whose host sides still need the
        // event loop.
        let wake = new_wake()?;
        let devices = config
            .virtio_mmio
            .iter()
            .map(|(base, spec)| PlacedDevice {
                base: *base,
                spec,
                wiring: TransportWiring {
                    wake: Some(wake.clone()),
                    ..TransportWiring::default()
                },
            })
            .collect();
        let buses = build_buses(
            &control,
            SerialConsole::new(config.console),
            devices,
            &ram.memory,
            wake,
            config.seccomp,
        )?;
        let vcpus = create_vcpus(&vm, &config.entries)?;
        Self::start(started, vm, ram, control, buses, vcpus, config.seccomp)
    }

    /// Starts one thread per vCPU.
    fn start(
        started: Instant,
        vm: VmFd,
        ram: GuestRam,
        control: Arc<VmControl>,
        buses: Buses,
        vcpus: Vec<VcpuFd>,
        seccomp: SeccompLevel,
    ) -> Result<Self, StartVmError> {
        crate::vcpu::install_kick_handler().map_err(StartVmError::Signal)?;
        let (pio, mmio) = (Arc::new(buses.pio), Arc::new(buses.mmio));
        let stopping = Arc::new(AtomicBool::new(false));
        let first_exit = Arc::new(OnceLock::new());
        let mut running = Self {
            control: control.clone(),
            event_loop: buses.event_loop,
            stopping: stopping.clone(),
            threads: Vec::new(),
            started,
            first_exit: first_exit.clone(),
            _vm: Arc::new(vm),
            _ram: ram,
            _private: Vec::new(),
        };
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let context = crate::vcpu::VcpuContext {
                index,
                pio: pio.clone(),
                mmio: mmio.clone(),
                control: control.clone(),
                stopping: stopping.clone(),
                first_exit: first_exit.clone(),
                memory: running._ram.memory.clone(),
                vm: running._vm.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    // Before the guest's first instruction: a guest that takes this thread
                    // over finds it confined.
                    match crate::seccomp::install(crate::seccomp::ThreadRole::Vcpu, seccomp) {
                        Ok(()) => crate::vcpu::run(vcpu, context),
                        Err(err) => context.control.request_exit(VmExitReason::Failed(
                            crate::control::VcpuFailure::Seccomp {
                                vcpu: index,
                                reason: err.to_string(),
                            },
                        )),
                    }
                })
                .map_err(|source| StartVmError::Thread { index, source })?;
            running.threads.push(thread);
        }
        tracing::info!(vcpus = running.threads.len(), "VM started");
        Ok(running)
    }

    /// How the VM ended, once it has (within `timeout`).
    pub fn wait(&self, timeout: Duration) -> Option<VmExitReason> {
        self.control.wait(timeout)
    }

    /// From the start of `boot_tiny` to the first exit of any vCPU (the guest's first port
    /// or MMIO access), once there was one.
    pub fn time_to_first_exit(&self) -> Option<Duration> {
        self.first_exit
            .get()
            .map(|at| at.saturating_duration_since(self.started))
    }

    /// Stops the vCPUs (if still running) and says how the VM ended.
    pub fn stop(mut self) -> VmExitReason {
        self.shut_down()
    }

    fn shut_down(&mut self) -> VmExitReason {
        use vmm_sys_util::signal::Killable as _;
        self.control.request_exit(VmExitReason::Stopped);
        self.stopping.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            // A vCPU in KVM_RUN leaves only when a signal interrupts it; a kick can land just
            // before it enters, so keep kicking until it has gone.
            while !thread.is_finished() {
                let _ = thread.kill(crate::vcpu::kick_signal());
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = thread.join();
        }
        if let Some(mut event_loop) = self.event_loop.take() {
            event_loop.stop();
        }
        self.control.exit_reason().unwrap_or(VmExitReason::Stopped)
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shut_down();
        }
    }
}
