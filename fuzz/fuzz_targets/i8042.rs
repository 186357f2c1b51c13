//! The i8042 controller's registers under any sequence of guest reads and writes: nothing
//! panics, and only the reset command on the command port asks for a reset.
#![no_main]

use kvmkit_core::bus::{BusDevice, DeviceAction};
use kvmkit_core::devices::I8042;
use kvmkit_core::devices::i8042::I8042_PORTS;
use kvmkit_fuzz::accesses;
use libfuzzer_sys::fuzz_target;

const COMMAND: u64 = 4;
const RESET: u8 = 0xfe;

fuzz_target!(|data: &[u8]| {
    let mut dev = I8042::default();
    for a in accesses(data, I8042_PORTS.into()) {
        let bytes = a.value.to_le_bytes();
        if a.write {
            let action = dev.write(a.offset, &bytes[..a.size]);
            let reset = a.offset == COMMAND && bytes[0] == RESET;
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
