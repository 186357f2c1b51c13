//! The hardware-reduced ACPI sleep registers the FADT points at: writing `SLP_EN` with the
//! S5 sleep type to the control register is how an ACPI kernel powers the machine off, and
//! ends the run with a shutdown outcome.

use crate::bus::{BusDeviceSync, DeviceAction};
use crate::x86::acpi::S5_SLEEP_TYPE;

/// Ports it occupies: the sleep control register, then the sleep status register.
pub const ACPI_SLEEP_PORTS: u16 = 2;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;

/// The sleep control and status registers. Only S5 is offered (the DSDT names no other
/// state); other writes, and the status register, are ignored and read as zero.
#[derive(Debug, Default)]
pub struct AcpiSleep;

impl BusDeviceSync for AcpiSleep {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
        let value = data.first().copied().unwrap_or(0);
        let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
        (offset == 0 && value & SLP_EN != 0 && sleep_type == S5_SLEEP_TYPE)
            .then_some(DeviceAction::PowerOff { device: "acpi" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slp_en_with_the_s5_type_powers_off_and_nothing_else_does() {
        let dev = AcpiSleep;
        let s5 = (S5_SLEEP_TYPE << SLP_TYP_SHIFT) | SLP_EN;
        assert_eq!(
            dev.write(0, &[S5_SLEEP_TYPE << SLP_TYP_SHIFT]),
            None,
            "no SLP_EN"
        );
        assert_eq!(dev.write(0, &[(3 << SLP_TYP_SHIFT) | SLP_EN]), None, "S3");
        assert_eq!(dev.write(1, &[s5]), None, "the status register");
        assert_eq!(
            dev.write(0, &[s5]),
            Some(DeviceAction::PowerOff { device: "acpi" })
        );
        let mut status = [0xff];
        dev.read(1, &mut status);
        assert_eq!(status, [0]);
    }
}
