//! The hardware-reduced ACPI sleep control register the guest's FADT names (guest_acpi.rs):
//! Linux powers off by writing SLP_TYP = S5 with SLP_EN set, which ends the VM. Other sleep
//! states are not offered (the DSDT has only `\_S5_`) and are ignored.

use std::sync::Arc;

use cloak_launch::acpi::{sleep_type_of, S5_SLEEP_TYPE, SLEEP_ENABLE};

use crate::bus::BusDevice;
use crate::control::{VmControl, VmExitReason};

pub struct AcpiSleep {
    control: Arc<VmControl>,
}

impl AcpiSleep {
    pub fn new(control: Arc<VmControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for AcpiSleep {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // The sleep status register: no wake event pending.
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        if value & SLEEP_ENABLE != 0 && sleep_type_of(value) == S5_SLEEP_TYPE {
            self.control.request_exit(VmExitReason::PoweredOff);
        } else {
            tracing::debug!(value, "ignored sleep control write");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_enabled_s5_write_powers_off() {
        let control = Arc::new(VmControl::default());
        let mut device = AcpiSleep::new(control.clone());
        device.write(0, &[S5_SLEEP_TYPE << 2]); // SLP_EN missing
        device.write(0, &[(3 << 2) | SLEEP_ENABLE]); // S3
        assert_eq!(control.exit_reason(), None);
        device.write(0, &[(S5_SLEEP_TYPE << 2) | SLEEP_ENABLE]);
        assert_eq!(control.exit_reason(), Some(VmExitReason::PoweredOff));
    }
}
