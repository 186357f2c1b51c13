//! A 16550A UART (vm-superio's `Serial`) answered on the vCPU thread: the kernel polls its
//! line-status register for every byte, so it must not leave the vCPU thread. Output goes
//! to a bounded buffer whose owner is told when it stops being empty; input is queued into
//! the receive FIFO, and the UART raises its interrupt line as the guest enabled it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use crate::bus::{BusDevice, DeviceAction};
use crate::devices::debug_console::ConsoleOutput;
use crate::error::{Error, Result};
use crate::irq::IrqLine;

/// The standard COM1 port base.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// Ports a 16550 occupies.
pub const SERIAL_PORTS: u16 = 8;

/// The UART's interrupt: an irqfd-backed line, or none (without the in-kernel irqchip the
/// guest has to poll).
#[derive(Debug)]
pub struct SerialInterrupt(Option<IrqLine>);

impl Trigger for SerialInterrupt {
    type E = Error;

    fn trigger(&self) -> Result<()> {
        self.0.as_ref().map_or(Ok(()), IrqLine::trigger)
    }
}

/// Where transmitted bytes go: a bounded buffer, and a callback when it stops being empty.
pub struct SerialOutput {
    buffer: Arc<Mutex<ConsoleOutput>>,
    notify: Box<dyn Fn() + Send>,
}

impl Write for SerialOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = buffer.is_empty();
        buffer.push(data);
        drop(buffer);
        if was_empty && !data.is_empty() {
            (self.notify)();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The device on the bus.
pub struct SerialDevice {
    uart: Serial<SerialInterrupt, NoEvents, SerialOutput>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART raising `interrupt` (if any), writing into `buffer` and calling `notify` when
    /// the buffer stops being empty.
    pub fn new(
        interrupt: Option<IrqLine>,
        buffer: Arc<Mutex<ConsoleOutput>>,
        notify: Box<dyn Fn() + Send>,
    ) -> Self {
        SerialDevice {
            uart: Serial::new(SerialInterrupt(interrupt), SerialOutput { buffer, notify }),
        }
    }

    /// Queues `input` for the guest to receive; returns how many bytes fit in the FIFO.
    pub fn enqueue(&mut self, input: &[u8]) -> Result<usize> {
        self.uart
            .enqueue_raw_bytes(input)
            .map_err(|e| Error::Device {
                device: "serial",
                message: format!("{e:?}"),
            })
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.uart.read(offset as u8);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
        if let Some(&value) = data.first() {
            // An interrupt that cannot be raised leaves the guest to poll; nothing to stop for.
            let _ = self.uart.write(offset as u8, value);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const THR: u64 = 0;
    const LSR: u64 = 5;

    fn uart() -> (SerialDevice, Arc<Mutex<ConsoleOutput>>, Arc<AtomicUsize>) {
        let buffer = Arc::new(Mutex::new(ConsoleOutput::default()));
        let notices = Arc::new(AtomicUsize::new(0));
        let n = Arc::clone(&notices);
        let dev = SerialDevice::new(
            None,
            Arc::clone(&buffer),
            Box::new(move || {
                n.fetch_add(1, Ordering::Relaxed);
            }),
        );
        (dev, buffer, notices)
    }

    #[test]
    fn transmits_into_the_buffer_and_notifies_once_per_batch() {
        let (mut dev, buffer, notices) = uart();
        let mut lsr = [0u8];
        dev.read(LSR, &mut lsr);
        assert_eq!(
            lsr[0] & 0x60,
            0x60,
            "THR and transmitter empty, as the datasheet resets"
        );
        for b in b"ok" {
            dev.write(THR, &[*b]);
        }
        assert_eq!(notices.load(Ordering::Relaxed), 1);
        assert_eq!(buffer.lock().unwrap().take(), b"ok");
        dev.write(THR, b"!");
        assert_eq!(notices.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn received_bytes_show_in_the_line_status_and_the_receive_buffer() {
        let (mut dev, _, _) = uart();
        let mut lsr = [0u8];
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 0, "no data ready");
        assert_eq!(dev.enqueue(b"x").unwrap(), 1);
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        dev.read(THR, &mut rbr);
        assert_eq!(rbr[0], b'x');
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 0);
    }
}
