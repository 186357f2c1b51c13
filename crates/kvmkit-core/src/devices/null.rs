//! A device that ignores writes and reads as a fixed byte, for ports a guest probes.

use crate::bus::{BusDeviceSync, DeviceAction};
use crate::exit::put_value;

/// Reads return `fill` in every byte; writes are discarded.
#[derive(Debug, Clone, Copy)]
pub struct NullDevice {
    fill: u8,
}

impl NullDevice {
    /// A null device whose reads return `fill` (0xff mimics an absent ISA device).
    pub fn new(fill: u8) -> Self {
        NullDevice { fill }
    }
}

impl BusDeviceSync for NullDevice {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        // At the access widths without a call to `memset` (see `exit::put_value`).
        if !put_value(data, u64::from_ne_bytes([self.fill; 8])) {
            data.fill(self.fill);
        }
    }

    fn write(&self, _offset: u64, _data: &[u8]) -> Option<DeviceAction> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fill_byte_and_swallows_writes() {
        let dev = NullDevice::new(0x5a);
        // The access widths, and lengths that are not one (string I/O).
        for n in [1, 2, 3, 4, 8, 16] {
            let mut data = vec![0u8; n];
            dev.read(0, &mut data);
            assert_eq!(data, vec![0x5a; n], "{n} bytes");
        }
        assert_eq!(dev.write(0, &[1, 2]), None);
    }
}
