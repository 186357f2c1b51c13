//! The i8042 keyboard controller, as far as an x86 guest needs it: its reset command (0xfe
//! to port 0x64) is how Linux reboots, and ends the run with a reset outcome.

use std::sync::atomic::{AtomicBool, Ordering};

use vm_superio::{I8042Device, Trigger};

use crate::bus::{BusDevice, DeviceAction};

/// Its data port; the command port is 4 above it.
pub const I8042_PORT: u16 = 0x60;
/// Ports it occupies (0x60-0x64, as Firecracker registers it).
pub const I8042_PORTS: u16 = 5;

/// Records the reset request until the write that made it returns.
#[derive(Debug, Default)]
pub struct ResetRequest(AtomicBool);

impl Trigger for ResetRequest {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The device on the bus.
pub struct I8042 {
    device: I8042Device<ResetRequest>,
}

impl Default for I8042 {
    fn default() -> Self {
        I8042 {
            device: I8042Device::new(ResetRequest::default()),
        }
    }
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042").finish_non_exhaustive()
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(self.device.read(offset as u8));
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
        let _ = self
            .device
            .write(offset as u8, data.first().copied().unwrap_or(0));
        self.device
            .reset_evt()
            .0
            .swap(false, Ordering::Relaxed)
            .then_some(DeviceAction::Reset { device: "i8042" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_command_asks_for_a_reset_and_nothing_else_does() {
        let mut dev = I8042::default();
        assert_eq!(dev.write(4, &[0xaa]), None);
        assert_eq!(
            dev.write(0, &[0xfe]),
            None,
            "0xfe on the data port is not a command"
        );
        assert_eq!(
            dev.write(4, &[0xfe]),
            Some(DeviceAction::Reset { device: "i8042" })
        );
        assert_eq!(dev.write(4, &[0xaa]), None);
    }
}
