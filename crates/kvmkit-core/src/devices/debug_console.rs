//! A Bochs/QEMU-style debug console: bytes written to its port are collected for the host.

use std::sync::{Arc, Mutex};

use crate::bus::{BusDevice, DeviceAction};
use crate::devices::output::ConsoleOutput;

/// The conventional debug-console port (Bochs and QEMU `-debugcon`).
pub const DEBUG_CONSOLE_PORT: u16 = 0xe9;

/// Reads return `0xe9` (so a guest can detect the console, as with Bochs); writes are collected.
#[derive(Debug, Default)]
pub struct DebugConsole {
    output: Arc<Mutex<ConsoleOutput>>,
}

impl DebugConsole {
    /// The shared output buffer, for the host to read from.
    pub fn output(&self) -> Arc<Mutex<ConsoleOutput>> {
        Arc::clone(&self.output)
    }
}

impl BusDevice for DebugConsole {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xe9);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<DeviceAction> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(data);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_writes_and_answers_reads() {
        let mut dev = DebugConsole::default();
        let out = dev.output();
        dev.write(0, b"hi");
        dev.write(0, b"!");
        let mut probe = [0u8; 1];
        dev.read(0, &mut probe);
        assert_eq!(probe, [0xe9]);
        assert_eq!(out.lock().unwrap().take(), b"hi!");
        assert_eq!(out.lock().unwrap().take(), b"");
    }

    #[test]
    fn drops_the_oldest_bytes_past_capacity() {
        let mut dev = DebugConsole::default();
        let out = dev.output();
        dev.write(0, &vec![b'a'; ConsoleOutput::CAPACITY]);
        dev.write(0, b"bc");
        let mut out = out.lock().unwrap();
        assert_eq!(out.dropped(), 2);
        let bytes = out.take();
        assert_eq!(bytes.len(), ConsoleOutput::CAPACITY);
        assert_eq!(&bytes[bytes.len() - 2..], b"bc");
    }
}
