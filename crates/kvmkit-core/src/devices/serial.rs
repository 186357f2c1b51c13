//! A 16550A UART (vm-superio's `Serial`) answered on the vCPU thread: the kernel polls its
//! line-status register for every byte, so it must not leave the vCPU thread. Output goes
//! to a bounded buffer whose owner is told when it stops being empty; input is queued into
//! the receive FIFO, and the UART raises its interrupt line as the guest enabled it. Input
//! the full FIFO refused is offered again when told: once the guest has read the FIFO down
//! to half, the owner is called as for output.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::serial::{Error as SerialError, NoEvents};
use vm_superio::{Serial, Trigger};

use crate::bus::{BusDevice, DeviceAction};
use crate::devices::output::ConsoleOutput;
use crate::error::{Error, Result};
use crate::irq::IrqLine;

/// The standard COM1 port base.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// Ports a 16550 occupies.
pub const SERIAL_PORTS: u16 = 8;

/// The receive buffer register's offset (the divisor latch's low byte while DLAB is set).
const RBR: u8 = 0;
/// The modem control register's offset, and its loopback bit.
const MCR: u8 = 4;
const MCR_LOOP: u8 = 0x10;

/// A callback telling the host side that the device has news: output waiting, or room
/// again for input it refused.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

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
    notify: Notify,
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
    notify: Notify,
    /// The receive FIFO's size.
    fifo_size: usize,
    /// Input was refused since the host was last told of room: tell it once the guest has
    /// read the FIFO down to half.
    refused: bool,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART raising `interrupt` (if any), writing into `buffer` and calling `notify` when
    /// the buffer stops being empty, and when the receive FIFO has room again for input it
    /// refused.
    pub fn new(
        interrupt: Option<IrqLine>,
        buffer: Arc<Mutex<ConsoleOutput>>,
        notify: Notify,
    ) -> Self {
        let output = SerialOutput {
            buffer,
            notify: Arc::clone(&notify),
        };
        let uart = Serial::new(SerialInterrupt(interrupt), output);
        SerialDevice {
            fifo_size: uart.fifo_capacity(),
            uart,
            notify,
            refused: false,
        }
    }

    /// Queues `input` for the guest to receive; returns how many bytes fit in the FIFO: none
    /// while it is full (the guest has not read what came before) or in loopback mode. When
    /// not all fit, the device's callback is called once the guest has made room.
    ///
    /// # Errors
    ///
    /// None today: a full FIFO takes nothing, and an interrupt that cannot be raised leaves
    /// the guest to poll for the bytes queued. Kept fallible for what vm-superio may add.
    pub fn enqueue(&mut self, input: &[u8]) -> Result<usize> {
        let room = self.uart.fifo_capacity().min(input.len());
        let taken = match self.uart.enqueue_raw_bytes(input) {
            Ok(n) => n,
            Err(SerialError::FullFifo) => 0,
            Err(SerialError::Trigger(_)) => room,
            Err(e) => {
                return Err(Error::Device {
                    device: "serial",
                    message: format!("{e:?}"),
                });
            }
        };
        if taken < input.len() {
            self.refused = true;
        }
        Ok(taken)
    }

    /// Tells the host side of room for the input it was refused, once the guest has read
    /// the FIFO down to half (not per byte read) and left loopback mode.
    fn announce_room(&mut self) {
        if self.refused
            && self.uart.fifo_capacity() >= self.fifo_size / 2
            && self.uart.read(MCR) & MCR_LOOP == 0
        {
            self.refused = false;
            (self.notify)();
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.uart.read(offset as u8);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
        if offset == u64::from(RBR) {
            self.announce_room();
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
        if let Some(&value) = data.first() {
            // An interrupt that cannot be raised leaves the guest to poll; nothing to stop for.
            let _ = self.uart.write(offset as u8, value);
        }
        if offset == u64::from(MCR) {
            self.announce_room();
        }
        None
    }
}

/// The host's side of a serial port.
#[derive(Debug, Clone)]
pub struct SerialHandle {
    device: Arc<Mutex<SerialDevice>>,
    output: Arc<Mutex<ConsoleOutput>>,
}

impl SerialHandle {
    /// The host side of `device`, whose transmitted bytes go to `output`.
    pub fn new(device: Arc<Mutex<SerialDevice>>, output: Arc<Mutex<ConsoleOutput>>) -> Self {
        SerialHandle { device, output }
    }

    /// Queues `input` for the guest; returns how many bytes fit in the receive FIFO (the
    /// rest must be offered again when the device's callback tells of room).
    ///
    /// # Errors
    ///
    /// A `DEVICE_FAILED` error if the UART refuses the bytes.
    pub fn input(&self, input: &[u8]) -> Result<usize> {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue(input)
    }

    /// Takes what the guest transmitted so far.
    pub fn take_output(&self) -> Vec<u8> {
        self.output.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const MSR: u64 = 6;
    const SCR: u64 = 7;

    fn read(dev: &mut SerialDevice, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    /// Reads `n` bytes of the receive buffer, as the guest does.
    fn read_bytes(dev: &mut SerialDevice, n: usize) {
        for _ in 0..n {
            read(dev, THR);
        }
    }

    fn uart() -> (SerialDevice, Arc<Mutex<ConsoleOutput>>, Arc<AtomicUsize>) {
        let buffer = Arc::new(Mutex::new(ConsoleOutput::default()));
        let notices = Arc::new(AtomicUsize::new(0));
        let n = Arc::clone(&notices);
        let dev = SerialDevice::new(
            None,
            Arc::clone(&buffer),
            Arc::new(move || {
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

    #[test]
    fn a_flood_nobody_takes_keeps_the_latest_mebibyte_and_notifies_once() {
        let (mut dev, buffer, notices) = uart();
        let total = ConsoleOutput::CAPACITY + 4096;
        for i in 0..total {
            dev.write(THR, &[(i % 251) as u8]);
        }
        assert_eq!(
            notices.load(Ordering::Relaxed),
            1,
            "the buffer never emptied"
        );
        let mut out = buffer.lock().unwrap();
        assert_eq!(out.dropped(), 4096);
        let kept = out.take();
        assert_eq!(kept.len(), ConsoleOutput::CAPACITY);
        assert_eq!(kept[0], (4096 % 251) as u8, "the oldest bytes went first");
    }

    /// Found by the `serial` fuzz target: a host writing more than the 64-byte FIFO holds,
    /// to a guest that has not read it, got a `FullFifo` error (and the Node input stream
    /// failed) instead of waiting.
    #[test]
    fn a_full_receive_fifo_takes_nothing_more_and_is_no_error() {
        let (mut dev, _, _) = uart();
        assert_eq!(dev.enqueue(&[b'a'; 100]).unwrap(), 64);
        assert_eq!(dev.enqueue(b"b").unwrap(), 0);
        assert_eq!(read(&mut dev, THR), b'a');
        assert_eq!(dev.enqueue(b"bc").unwrap(), 1, "one byte of room again");
    }

    #[test]
    fn room_is_announced_once_after_a_refusal_when_the_guest_read_half_the_fifo() {
        let (mut dev, _, notices) = uart();
        assert_eq!(dev.enqueue(&[b'a'; 64]).unwrap(), 64);
        read_bytes(&mut dev, 40);
        assert_eq!(
            notices.load(Ordering::Relaxed),
            0,
            "nothing was refused: nobody waits for room"
        );
        assert_eq!(dev.enqueue(&[b'b'; 100]).unwrap(), 40);
        read_bytes(&mut dev, 31);
        assert_eq!(
            notices.load(Ordering::Relaxed),
            0,
            "31 bytes of room: not yet"
        );
        read(&mut dev, THR);
        assert_eq!(notices.load(Ordering::Relaxed), 1, "half the FIFO free");
        read_bytes(&mut dev, 32);
        assert_eq!(notices.load(Ordering::Relaxed), 1, "once per refusal");
        assert_eq!(dev.enqueue(&[b'c'; 10]).unwrap(), 10);
        read(&mut dev, THR);
        assert_eq!(
            notices.load(Ordering::Relaxed),
            1,
            "what fits is no refusal"
        );
    }

    #[test]
    fn input_refused_in_loopback_mode_is_announced_when_the_guest_leaves_it() {
        let (mut dev, _, notices) = uart();
        dev.write(MCR, &[0x10]);
        assert_eq!(dev.enqueue(b"x").unwrap(), 0);
        read(&mut dev, THR);
        assert_eq!(notices.load(Ordering::Relaxed), 0, "still in loopback");
        dev.write(MCR, &[0x00]);
        assert_eq!(notices.load(Ordering::Relaxed), 1);
        assert_eq!(dev.enqueue(b"x").unwrap(), 1);
    }

    #[test]
    fn the_divisor_latch_shares_offsets_0_and_1_while_dlab_is_set() {
        let (mut dev, buffer, _) = uart();
        dev.write(IER, &[0x05]);
        dev.write(LCR, &[0x80 | 0x03]); // DLAB, 8 data bits
        assert_eq!(read(&mut dev, LCR), 0x83);
        dev.write(THR, &[0x01]); // DLL: 115200 baud
        dev.write(IER, &[0x00]); // DLM
        assert_eq!((read(&mut dev, THR), read(&mut dev, IER)), (0x01, 0x00));
        dev.write(LCR, &[0x03]);
        assert_eq!(read(&mut dev, IER), 0x05, "IER is back once DLAB is clear");
        assert!(
            buffer.lock().unwrap().take().is_empty(),
            "the divisor is not data"
        );
    }

    #[test]
    fn the_scratch_register_keeps_what_is_written() {
        let (mut dev, _, _) = uart();
        dev.write(SCR, &[0x5a]);
        assert_eq!(read(&mut dev, SCR), 0x5a);
    }

    #[test]
    fn the_interrupt_identification_names_the_highest_priority_source() {
        let (mut dev, _, _) = uart();
        assert_eq!(read(&mut dev, IIR) & 0x0f, 0x01, "no interrupt pending");
        dev.write(IER, &[0x02]); // transmitter holding register empty
        dev.write(THR, b"a");
        assert_eq!(read(&mut dev, IIR) & 0x0f, 0x02, "THR empty");
        dev.write(IER, &[0x01]); // received data available
        dev.enqueue(b"b").unwrap();
        assert_eq!(read(&mut dev, IIR) & 0x0f, 0x04, "received data");
        assert_eq!(read(&mut dev, THR), b'b');
        assert_eq!(read(&mut dev, IIR) & 0x0f, 0x01, "reading RBR clears it");
    }

    #[test]
    fn loopback_mode_returns_what_is_sent_and_mirrors_the_modem_lines() {
        let (mut dev, buffer, _) = uart();
        dev.write(MCR, &[0x10 | 0x01 | 0x02]); // loop, DTR, RTS
        // In loopback, DTR shows as DSR and RTS as CTS in the modem status.
        assert_eq!(read(&mut dev, MSR) & 0x30, 0x30);
        dev.write(THR, b"z");
        assert_eq!(read(&mut dev, LSR) & 1, 1, "the byte came back");
        assert_eq!(read(&mut dev, THR), b'z');
        assert!(
            buffer.lock().unwrap().take().is_empty(),
            "nothing left the UART"
        );
    }
}
