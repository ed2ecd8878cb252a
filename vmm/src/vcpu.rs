//! One thread per vCPU: KVM_RUN, hand port and MMIO exits to the buses, apply the memory
//! conversions an SNP guest asks for, park on HLT (a tiny guest has no interrupt to wake it),
//! end the VM on a shutdown exit or a failure. A stopping
//! VM kicks its vCPU threads out of KVM_RUN with a signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::bus::Bus;
use crate::control::{VcpuFailure, VmControl, VmExitReason};

/// The signal that interrupts KVM_RUN when the VM stops.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler of the kick signal, so it interrupts KVM_RUN instead of
/// killing the process. Idempotent.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore_kick)
}

pub struct VcpuContext {
    pub index: usize,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub control: Arc<VmControl>,
    /// Set when the VM stops; checked after every exit.
    pub stopping: Arc<AtomicBool>,
    /// Set by the first exit of any vCPU (for "start to first guest instruction").
    pub first_exit: Arc<std::sync::OnceLock<std::time::Instant>>,
    /// Guest RAM, to show the code a failed vCPU stopped at.
    pub memory: vm_memory::GuestMemoryMmap,
    /// The VM, where the guest converts memory between private and shared (SNP).
    pub vm: Arc<kvm_ioctls::VmFd>,
}

/// "rip 0x…: <code bytes>" of a stopped vCPU. The bytes are read at the RIP as a physical
/// address, which they are while the boot page tables map identity.
fn where_it_stopped(vcpu: &VcpuFd, memory: &vm_memory::GuestMemoryMmap) -> String {
    use vm_memory::Bytes as _;
    match vcpu.get_regs() {
        Ok(regs) => {
            let mut code = [0u8; 16];
            let bytes = match memory.read_slice(&mut code, vm_memory::GuestAddress(regs.rip)) {
                Ok(()) => code
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(_) => "not in RAM".into(),
            };
            format!("rip {:#x} (code {bytes})", regs.rip)
        }
        Err(err) => format!("registers unreadable: {err}"),
    }
}

pub fn run(mut vcpu: VcpuFd, context: VcpuContext) {
    while !context.stopping.load(Ordering::SeqCst) {
        let exit = vcpu.run();
        if context.first_exit.get().is_none() {
            let _ = context.first_exit.set(std::time::Instant::now());
        }
        match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                context.pio.write(u64::from(port), data);
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                context.pio.read(u64::from(port), data);
            }
            Ok(VcpuExit::MmioRead(address, data)) => {
                context.mmio.read(address, data);
            }
            Ok(VcpuExit::MmioWrite(address, data)) => {
                context.mmio.write(address, data);
            }
            Ok(VcpuExit::Hlt) => {
                // Nothing can wake it: wait for the VM to end.
                while !context.stopping.load(Ordering::SeqCst) {
                    if context.control.wait(Duration::from_millis(50)).is_some() {
                        break;
                    }
                }
                break;
            }
            Ok(VcpuExit::Hypercall(exit)) if exit.nr == crate::snp_launch::KVM_HC_MAP_GPA_RANGE => {
                let conversion = crate::snp_launch::Conversion::from_hypercall(&exit.args);
                *exit.ret = match conversion.apply(&context.vm) {
                    Ok(()) => 0,
                    Err(err) => {
                        tracing::warn!(error = %err, ?conversion, "memory conversion refused");
                        libc::EINVAL as u64
                    }
                };
            }
            Ok(VcpuExit::MemoryFault { flags, gpa, size }) => {
                let conversion = crate::snp_launch::Conversion::from_memory_fault(flags, gpa, size);
                if let Err(err) = conversion.apply(&context.vm) {
                    context.control.request_exit(VmExitReason::Failed(
                        VcpuFailure::MemoryConversion {
                            vcpu: context.index,
                            reason: err.to_string(),
                        },
                    ));
                    break;
                }
            }
            Ok(VcpuExit::Shutdown) => {
                context.control.request_exit(VmExitReason::Reset);
                break;
            }
            Ok(other) => {
                let other = format!("{other:?}");
                let at = where_it_stopped(&vcpu, &context.memory);
                context
                    .control
                    .request_exit(VmExitReason::Failed(VcpuFailure::UnexpectedExit {
                        vcpu: context.index,
                        exit: other,
                        at,
                    }));
                break;
            }
            Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {}
            Err(err) => {
                context
                    .control
                    .request_exit(VmExitReason::Failed(VcpuFailure::KvmRun {
                        vcpu: context.index,
                        error: err.to_string(),
                    }));
                break;
            }
        }
        if context.control.exit_reason().is_some() {
            break;
        }
    }
}
