//! The 16550 UART's registers under any sequence of guest reads and writes, with host input
//! arriving between them: nothing panics, and its output stays within its bounded buffer.
#![no_main]

use std::sync::{Arc, Mutex};

use kvmkit_core::devices::SerialDevice;
use kvmkit_core::devices::output::ConsoleOutput;
use kvmkit_core::devices::serial::SERIAL_PORTS;
use kvmkit_fuzz::{accesses, apply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let output = Arc::new(Mutex::new(ConsoleOutput::default()));
    let mut uart = SerialDevice::new(None, Arc::clone(&output), Arc::new(|| {}));
    for access in accesses(data, SERIAL_PORTS.into()) {
        if access.op & 0x80 != 0 {
            // Host input instead: as many bytes as the size says.
            let fitted = uart.enqueue(&access.value.to_le_bytes()[..access.size]);
            assert!(fitted.is_ok_and(|n| n <= access.size));
        } else {
            apply(&mut uart, access);
        }
    }
    let output = output.lock().expect("not poisoned").take();
    assert!(output.len() <= ConsoleOutput::CAPACITY);
});
