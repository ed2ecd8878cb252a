//! How a running VM ends: the first exit reason wins, and whoever waits is woken.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExitReason {
    /// The guest reset the machine (i8042 reset line, triple fault): a VM that reboots stops.
    Reset,
    /// The guest powered the machine off (ACPI S5).
    PoweredOff,
    /// The VMM was asked to stop.
    Stopped,
    /// A vCPU failed.
    Failed(VcpuFailure),
}

/// How a vCPU failed, with what it knew at the time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VcpuFailure {
    #[error("vCPU {vcpu}: converting guest memory for a memory fault: {reason}")]
    MemoryConversion { vcpu: usize, reason: String },
    #[error("vCPU {vcpu}: unexpected exit {exit} at {at}")]
    UnexpectedExit {
        vcpu: usize,
        /// The exit as KVM reported it.
        exit: String,
        /// Where the guest stopped (rip and the code there).
        at: String,
    },
    #[error("vCPU {vcpu}: {reason}")]
    Seccomp { vcpu: usize, reason: String },
    #[error("vCPU {vcpu}: KVM_RUN: {error}")]
    KvmRun { vcpu: usize, error: String },
}

#[derive(Debug, Default)]
pub struct VmControl {
    exit: Mutex<Option<VmExitReason>>,
    changed: Condvar,
}

impl VmControl {
    /// Records `reason` unless the VM is already ending.
    pub fn request_exit(&self, reason: VmExitReason) {
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if exit.is_none() {
            *exit = Some(reason);
            self.changed.notify_all();
        }
    }

    pub fn exit_reason(&self) -> Option<VmExitReason> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the VM ends or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> Option<VmExitReason> {
        let deadline = Instant::now() + timeout;
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        while exit.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            exit = self
                .changed
                .wait_timeout(exit, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        exit.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins_and_wakes_waiters() {
        let control = std::sync::Arc::new(VmControl::default());
        assert_eq!(control.wait(Duration::from_millis(10)), None);
        let waiter = {
            let control = control.clone();
            std::thread::spawn(move || control.wait(Duration::from_secs(10)))
        };
        control.request_exit(VmExitReason::Reset);
        control.request_exit(VmExitReason::Stopped);
        assert_eq!(waiter.join().expect("joins"), Some(VmExitReason::Reset));
    }
}
