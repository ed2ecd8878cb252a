//! The guest console: an 8250 UART (vm-superio) whose output goes to a writer, normally the
//! VM's console log. Its interrupt is an irqfd on ISA IRQ 4 when the machine has interrupt
//! controllers (Linux's 8250 driver waits for "transmitter empty"); tiny guests poll.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use crate::bus::BusDevice;

/// The UART's interrupt line, when there is one.
pub struct SerialInterrupt(Option<vmm_sys_util::eventfd::EventFd>);

impl Trigger for SerialInterrupt {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        match &self.0 {
            Some(line) => line.write(1),
            None => Ok(()),
        }
    }
}

pub struct SerialConsole<W: Write + Send> {
    uart: Serial<SerialInterrupt, NoEvents, W>,
}

impl<W: Write + Send> SerialConsole<W> {
    /// A polled console (no interrupt line).
    pub fn new(out: W) -> Self {
        Self::with_interrupt(out, None)
    }

    pub fn with_interrupt(out: W, line: Option<vmm_sys_util::eventfd::EventFd>) -> Self {
        Self {
            uart: Serial::new(SerialInterrupt(line), out),
        }
    }
}

impl<W: Write + Send> BusDevice for SerialConsole<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(first) = data.first_mut() {
            *first = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(value) = data.first() {
            if let Err(err) = self.uart.write(offset as u8, *value) {
                tracing::warn!(error = ?err, "serial console output");
            }
            // The console log is read while the VM runs: keep it current.
            let _ = self.uart.writer_mut().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_the_data_register_reach_the_writer() {
        let out = Shared::default();
        let mut console = SerialConsole::new(out.clone());
        console.write(0, b"h");
        console.write(0, b"i");
        assert_eq!(&*out.0.lock().expect("lock"), b"hi");
        // Line status: transmitter empty, so a polling guest goes on writing.
        let mut status = [0u8];
        console.read(5, &mut status);
        assert_eq!(status[0] & 0x20, 0x20);
    }
}
