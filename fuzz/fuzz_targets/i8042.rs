//! The i8042 controller's registers under any sequence of guest reads and writes: nothing
//! panics, and a reset is asked for exactly where a PC's controller resets the CPU: a
//! command that pulses the output port's reset line (0xf0-0xff with bit 0 clear, 0xfe being
//! Linux's), or an output-port write (command 0xd1, then its data byte) that clears it.
#![no_main]

use kvmkit_core::bus::{BusDevice, DeviceAction};
use kvmkit_core::devices::I8042;
use kvmkit_core::devices::i8042::I8042_PORTS;
use kvmkit_fuzz::accesses;
use libfuzzer_sys::fuzz_target;

const DATA: u64 = 0;
const COMMAND: u64 = 4;
const WRITE_OUTPUT_PORT: u8 = 0xd1;
const RESET_LINE: u8 = 0x01;

fuzz_target!(|data: &[u8]| {
    let mut dev = I8042::default();
    // Whether the last command written waits for its data byte to go to the output port.
    let mut output_port_next = false;
    for a in accesses(data, I8042_PORTS.into()) {
        let bytes = a.value.to_le_bytes();
        if a.write {
            let byte = bytes[0];
            let action = dev.write(a.offset, &bytes[..a.size]);
            let reset = match a.offset {
                COMMAND => (0xf0..=0xff).contains(&byte) && byte & RESET_LINE == 0,
                DATA => output_port_next && byte & RESET_LINE == 0,
                _ => false,
            };
            match a.offset {
                COMMAND => output_port_next = byte == WRITE_OUTPUT_PORT,
                DATA => output_port_next = false,
                _ => {}
            }
            assert_eq!(action.is_some(), reset, "{a:?}");
            if let Some(action) = action {
                assert!(matches!(action, DeviceAction::Reset { .. }));
            }
        } else {
            let mut out = bytes;
            dev.read(a.offset, &mut out[..a.size]);
        }
    }
});
