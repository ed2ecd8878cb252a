//! Booting a VM as small ordered steps, each returning `Result<_, StartVmError>`: open KVM,
//! create the VM, guest RAM (memfd), register it, load the image, build the buses and
//! devices, create and set up the vCPUs, start their threads.
//!
//! This is the tiny-guest boot: 16-bit real-mode code loaded below 64 KiB, each vCPU entering
//! at its own offset. It is what runs on hosts whose KVM cannot boot Linux (see
//! ../shared/DESIGN.md), and what the KVM tests and the start-up benchmark use.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::bus::{Bus, BusError};
use crate::control::{VmControl, VmExitReason};
use crate::devices::virtio_block::{BlockBackend, VirtioBlock};
use crate::devices::virtio_mmio::{MmioTransport, PlaceholderDevice, VirtioDevice, WINDOW};
use crate::devices::{i8042::I8042, serial::SerialConsole};
use crate::devices::{COM1_PORT, COM1_PORTS, I8042_PORT, I8042_PORTS};
use crate::memory::{GuestRam, MemoryError};

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
}

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
}

/// A device behind a virtio-mmio window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioSpec {
    /// The transport alone, identifying as this device type.
    Placeholder(u32),
    /// virtio-rng fed by the host's getrandom.
    Rng,
    /// virtio-blk on a raw file.
    Block {
        path: std::path::PathBuf,
        read_only: bool,
    },
}

/// A guest booted from the direct-launch plan (kernel, initrd, command line).
pub struct DirectVmConfig {
    pub launch: cloak_attestation::direct_launch::DirectLaunch,
    pub console: Box<dyn Write + Send>,
    pub virtio_mmio: Vec<(u64, VirtioSpec)>,
}

pub struct RunningVm {
    control: Arc<VmControl>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
    first_exit: Arc<OnceLock<Instant>>,
    // Kept alive while vCPUs run: the VM fd and the memory they use.
    _vm: VmFd,
    _ram: GuestRam,
}

fn open_kvm() -> Result<Kvm, StartVmError> {
    Kvm::new().map_err(StartVmError::OpenKvm)
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

fn load_image(ram: &GuestRam, image: &[u8], address: u64) -> Result<(), StartVmError> {
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
    })
}

fn build_buses(
    control: &Arc<VmControl>,
    console: Box<dyn Write + Send>,
    virtio_mmio: &[(u64, VirtioSpec)],
    memory: &vm_memory::GuestMemoryMmap,
) -> Result<(Bus, Bus), StartVmError> {
    let mut pio = Bus::default();
    pio.insert(
        COM1_PORT,
        COM1_PORTS,
        Arc::new(Mutex::new(SerialConsole::new(console))),
    )?;
    pio.insert(
        I8042_PORT,
        I8042_PORTS,
        Arc::new(Mutex::new(I8042::new(control.clone()))),
    )?;
    let mut mmio = Bus::default();
    for (base, spec) in virtio_mmio {
        let transport = MmioTransport::with_memory(virtio_device(spec)?, Some(memory.clone()));
        mmio.insert(*base, WINDOW, Arc::new(Mutex::new(transport)))?;
    }
    Ok((pio, mmio))
}

fn vcpu_error(index: usize, step: &'static str) -> impl Fn(kvm_ioctls::Error) -> StartVmError {
    move |source| StartVmError::Vcpu {
        index,
        step,
        source,
    }
}

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
/// others parked; CPUID as KVM supports it (long mode needs the guest's CPUID to say LM).
fn create_planned_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    launch: &cloak_attestation::direct_launch::DirectLaunch,
) -> Result<Vec<VcpuFd>, StartVmError> {
    if launch.vcpus == 0 {
        return Err(StartVmError::NoVcpus);
    }
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(StartVmError::SupportedCpuid)?;
    (0..launch.vcpus as usize)
        .map(|index| {
            let vcpu_error = |step| vcpu_error(index, step);
            let vcpu = vm
                .create_vcpu(index as u64)
                .map_err(vcpu_error("creating"))?;
            vcpu.set_cpuid2(&cpuid)
                .map_err(vcpu_error("setting CPUID"))?;
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
        let ram = GuestRam::new(config.launch.memory_mib)?;
        register_memory(&vm, &ram)?;
        let plan = crate::direct_boot::plan_of(&config.launch)?;
        crate::direct_boot::load_plan(&ram, &plan)?;
        let control = Arc::new(VmControl::default());
        let (pio, mmio) = build_buses(&control, config.console, &config.virtio_mmio, &ram.memory)?;
        let vcpus = create_planned_vcpus(&kvm, &vm, &config.launch)?;
        Self::start(started, vm, ram, control, pio, mmio, vcpus)
    }

    /// Boots a tiny guest.
    pub fn boot_tiny(config: TinyVmConfig) -> Result<Self, StartVmError> {
        let started = Instant::now();
        let kvm = open_kvm()?;
        let vm = create_vm(&kvm)?;
        let ram = GuestRam::new(config.memory_mib)?;
        register_memory(&vm, &ram)?;
        load_image(&ram, &config.image, config.load_address)?;
        let control = Arc::new(VmControl::default());
        let (pio, mmio) = build_buses(&control, config.console, &config.virtio_mmio, &ram.memory)?;
        let vcpus = create_vcpus(&vm, &config.entries)?;
        Self::start(started, vm, ram, control, pio, mmio, vcpus)
    }

    /// Starts one thread per vCPU.
    fn start(
        started: Instant,
        vm: VmFd,
        ram: GuestRam,
        control: Arc<VmControl>,
        pio: Bus,
        mmio: Bus,
        vcpus: Vec<VcpuFd>,
    ) -> Result<Self, StartVmError> {
        crate::vcpu::install_kick_handler().map_err(StartVmError::Signal)?;
        let (pio, mmio) = (Arc::new(pio), Arc::new(mmio));
        let stopping = Arc::new(AtomicBool::new(false));
        let first_exit = Arc::new(OnceLock::new());
        let mut running = Self {
            control: control.clone(),
            stopping: stopping.clone(),
            threads: Vec::new(),
            started,
            first_exit: first_exit.clone(),
            _vm: vm,
            _ram: ram,
        };
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let context = crate::vcpu::VcpuContext {
                index,
                pio: pio.clone(),
                mmio: mmio.clone(),
                control: control.clone(),
                stopping: stopping.clone(),
                first_exit: first_exit.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || crate::vcpu::run(vcpu, context))
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
