//! A debug-exit port (as QEMU's `isa-debug-exit`): a write ends the run with a status.

use crate::bus::{BusDeviceSync, DeviceAction};

/// The conventional debug-exit port.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Ports it occupies: 1-, 2- and 4-byte writes all reach it (QEMU's `iosize=4`).
pub const DEBUG_EXIT_PORTS: u16 = 4;

/// Writing any value ends the run with [`crate::exit::Outcome::DeviceRequest`] carrying it.
#[derive(Debug, Default)]
pub struct DebugExit;

impl BusDeviceSync for DebugExit {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _offset: u64, data: &[u8]) -> Option<DeviceAction> {
        let mut status = [0u8; 4];
        let n = data.len().min(4);
        status[..n].copy_from_slice(&data[..n]);
        Some(DeviceAction::Exit {
            device: "debug-exit",
            status: u32::from_le_bytes(status),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_requests_exit_with_its_value() {
        assert_eq!(
            DebugExit.write(0, &[0x2a, 0x01]),
            Some(DeviceAction::Exit {
                device: "debug-exit",
                status: 0x12a
            })
        );
    }
}
