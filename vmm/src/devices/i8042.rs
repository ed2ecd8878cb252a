//! The i8042 keyboard controller, for the one thing a guest uses it for here: writing 0xFE to
//! its command port pulses the CPU reset line, which is how Linux (reboot=k) and the tiny test
//! guests end the VM.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use crate::bus::BusDevice;
use crate::control::{VmControl, VmExitReason};

/// Raises the VM's reset.
pub struct ResetLine(pub Arc<VmControl>);

impl Trigger for ResetLine {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request_exit(VmExitReason::Reset);
        Ok(())
    }
}

pub struct I8042 {
    device: I8042Device<ResetLine>,
}

impl I8042 {
    pub fn new(control: Arc<VmControl>) -> Self {
        Self {
            device: I8042Device::new(ResetLine(control)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(first) = data.first_mut() {
            *first = self.device.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(value) = data.first() {
            if let Err(err) = self.device.write(offset as u8, *value) {
                tracing::warn!(error = %err, "i8042");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_command_ends_the_vm() {
        let control = Arc::new(VmControl::default());
        let mut i8042 = I8042::new(control.clone());
        i8042.write(4, &[0x00]);
        assert_eq!(control.exit_reason(), None);
        i8042.write(4, &[0xfe]);
        assert_eq!(control.exit_reason(), Some(VmExitReason::Reset));
    }
}
