//! The i8042 keyboard controller, with no keyboard or mouse behind it: the controller
//! commands a kernel polls (its configuration byte, self-tests, the auxiliary loopback, the
//! output port) answer as on a PC after its BIOS, so Linux's i8042 driver probes it and
//! finds its ports empty; the reset command (0xfe to port 0x64, or a cleared reset line in
//! the output port) is how Linux reboots, and ends the run with a reset outcome. It raises
//! no interrupts: nothing behind it ever sends data unasked.

use crate::bus::{BusDevice, DeviceAction};

/// Its data port; the command port is 4 above it.
pub const I8042_PORT: u16 = 0x60;
/// Ports it occupies (0x60-0x64, as Firecracker registers it; 0x61 is the in-kernel PIT's).
pub const I8042_PORTS: u16 = 5;

/// The command/status port's offset from the data port.
const COMMAND_OFFSET: u64 = 4;

/// Status: the output buffer holds a byte for the host.
const STATUS_OUTPUT_FULL: u8 = 0x01;
/// Status: the self-test passed (the system flag).
const STATUS_SYSTEM: u8 = 0x04;
/// Status: the last byte written went to the command port.
const STATUS_COMMAND: u8 = 0x08;
/// Status: the keyboard is not inhibited by the key lock.
const STATUS_UNLOCKED: u8 = 0x10;
/// Status: the output buffer's byte comes from the auxiliary (mouse) port.
const STATUS_AUX_DATA: u8 = 0x20;

/// Configuration byte: keyboard interrupt enabled.
const CONFIG_KBD_INT: u8 = 0x01;
/// Configuration byte: the system flag.
const CONFIG_SYSTEM: u8 = 0x04;
/// Configuration byte: keyboard port disabled.
const CONFIG_KBD_DISABLED: u8 = 0x10;
/// Configuration byte: auxiliary port disabled.
const CONFIG_AUX_DISABLED: u8 = 0x20;
/// Configuration byte: scan-code set 2 translated to set 1.
const CONFIG_TRANSLATE: u8 = 0x40;

/// Output port: the CPU reset line (active low) and the A20 gate.
const OUTPUT_RESET_LINE: u8 = 0x01;
const OUTPUT_A20: u8 = 0x02;

const CMD_READ_CONFIG: u8 = 0x20;
const CMD_WRITE_CONFIG: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xd2;
const CMD_WRITE_AUX_BUFFER: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;

/// The self-test's pass answer; interface tests answer 0 for "no fault".
const SELF_TEST_PASSED: u8 = 0x55;
const INTERFACE_OK: u8 = 0x00;

/// The device on the bus.
#[derive(Debug)]
pub struct I8042 {
    /// The configuration byte ("command byte", CTR in Linux).
    config: u8,
    output_port: u8,
    /// The one-byte output buffer and whether the byte is from the auxiliary port.
    output: Option<(u8, bool)>,
    /// The last byte read from the data port, which reads again while the buffer is empty.
    last: u8,
    /// A command waiting for its data byte.
    pending: Option<u8>,
    last_was_command: bool,
}

impl Default for I8042 {
    /// The state a PC's BIOS leaves: keyboard interrupt on, translation on, the auxiliary
    /// port off, self-test passed, A20 enabled.
    fn default() -> Self {
        I8042 {
            config: CONFIG_KBD_INT | CONFIG_SYSTEM | CONFIG_AUX_DISABLED | CONFIG_TRANSLATE,
            output_port: OUTPUT_RESET_LINE | OUTPUT_A20,
            output: None,
            last: 0,
            pending: None,
            last_was_command: false,
        }
    }
}

impl I8042 {
    fn status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if self.config & CONFIG_SYSTEM != 0 {
            status |= STATUS_SYSTEM;
        }
        if self.last_was_command {
            status |= STATUS_COMMAND;
        }
        match self.output {
            Some((_, true)) => status | STATUS_OUTPUT_FULL | STATUS_AUX_DATA,
            Some((_, false)) => status | STATUS_OUTPUT_FULL,
            None => status,
        }
    }

    fn command(&mut self, command: u8) -> Option<DeviceAction> {
        self.pending = None;
        match command {
            CMD_READ_CONFIG => self.output = Some((self.config, false)),
            CMD_DISABLE_AUX => self.config |= CONFIG_AUX_DISABLED,
            CMD_ENABLE_AUX => self.config &= !CONFIG_AUX_DISABLED,
            CMD_TEST_AUX | CMD_TEST_KBD => self.output = Some((INTERFACE_OK, false)),
            CMD_SELF_TEST => {
                self.config |= CONFIG_SYSTEM;
                self.output = Some((SELF_TEST_PASSED, false));
            }
            CMD_DISABLE_KBD => self.config |= CONFIG_KBD_DISABLED,
            CMD_ENABLE_KBD => self.config &= !CONFIG_KBD_DISABLED,
            CMD_READ_OUTPUT_PORT => self.output = Some((self.output_port, false)),
            CMD_WRITE_CONFIG
            | CMD_WRITE_OUTPUT_PORT
            | CMD_WRITE_KBD_BUFFER
            | CMD_WRITE_AUX_BUFFER
            | CMD_WRITE_AUX => self.pending = Some(command),
            // 0xf0-0xff pulse output port lines low for 6 µs: bit 0 is the CPU reset.
            0xf0..=0xff if command & OUTPUT_RESET_LINE == 0 => {
                return Some(DeviceAction::Reset { device: "i8042" });
            }
            _ => {}
        }
        None
    }

    fn data(&mut self, value: u8) -> Option<DeviceAction> {
        match self.pending.take() {
            Some(CMD_WRITE_CONFIG) => self.config = value,
            Some(CMD_WRITE_OUTPUT_PORT) => {
                self.output_port = value;
                if value & OUTPUT_RESET_LINE == 0 {
                    return Some(DeviceAction::Reset { device: "i8042" });
                }
            }
            Some(CMD_WRITE_KBD_BUFFER) => self.output = Some((value, false)),
            Some(CMD_WRITE_AUX_BUFFER) => self.output = Some((value, true)),
            // For the mouse or, with no command pending, the keyboard: neither is there.
            _ => {}
        }
        None
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => {
                if let Some((byte, _)) = self.output.take() {
                    self.last = byte;
                }
                self.last
            }
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        };
        data.fill(value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
        let value = data.first().copied().unwrap_or(0);
        match offset {
            0 => {
                self.last_was_command = false;
                self.data(value)
            }
            COMMAND_OFFSET => {
                self.last_was_command = true;
                self.command(value)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reset command Linux's `reboot=k` sends: pulse the reset line.
    const CMD_RESET_CPU: u8 = 0xfe;

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0];
        dev.read(offset, &mut b);
        b[0]
    }

    /// A polled command and its answer, as Linux's `i8042_command` does it.
    fn ask(dev: &mut I8042, command: u8) -> u8 {
        assert_eq!(dev.write(4, &[command]), None);
        assert_ne!(
            read(dev, 4) & STATUS_OUTPUT_FULL,
            0,
            "answer to {command:#x}"
        );
        read(dev, 0)
    }

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
            dev.write(4, &[CMD_RESET_CPU]),
            Some(DeviceAction::Reset { device: "i8042" })
        );
        assert_eq!(dev.write(4, &[0xff]), None, "pulsing no line");
        // Found by the i8042 fuzz target: any pulse command with bit 0 clear (here 0xf6, bits
        // 0 and 3) pulses the reset line, as on a PC, not only Linux's 0xfe.
        assert_eq!(
            dev.write(4, &[0xf6]),
            Some(DeviceAction::Reset { device: "i8042" })
        );
        assert_eq!(dev.write(4, &[CMD_WRITE_OUTPUT_PORT]), None);
        assert_eq!(
            dev.write(0, &[OUTPUT_A20]),
            Some(DeviceAction::Reset { device: "i8042" }),
            "the reset line driven low through the output port"
        );
    }

    #[test]
    fn answers_linux_probe_its_configuration_byte_and_self_tests() {
        let mut dev = I8042::default();
        assert_eq!(
            read(&mut dev, 4),
            STATUS_UNLOCKED | STATUS_SYSTEM,
            "empty, idle"
        );
        assert_eq!(ask(&mut dev, CMD_READ_CONFIG), 0x65);
        assert_eq!(read(&mut dev, 4) & STATUS_OUTPUT_FULL, 0, "read once");
        dev.write(4, &[CMD_WRITE_CONFIG]);
        dev.write(0, &[0x47]);
        assert_eq!(ask(&mut dev, CMD_READ_CONFIG), 0x47);
        assert_eq!(ask(&mut dev, CMD_SELF_TEST), SELF_TEST_PASSED);
        assert_eq!(ask(&mut dev, CMD_TEST_KBD), INTERFACE_OK);
        assert_eq!(ask(&mut dev, CMD_TEST_AUX), INTERFACE_OK);
        assert_eq!(
            ask(&mut dev, CMD_READ_OUTPUT_PORT),
            OUTPUT_RESET_LINE | OUTPUT_A20
        );
        dev.write(4, &[CMD_DISABLE_KBD]);
        dev.write(4, &[CMD_ENABLE_AUX]);
        assert_eq!(ask(&mut dev, CMD_READ_CONFIG), 0x47 | CONFIG_KBD_DISABLED);
    }

    #[test]
    fn loops_a_byte_back_as_auxiliary_or_keyboard_data() {
        let mut dev = I8042::default();
        dev.write(4, &[CMD_WRITE_AUX_BUFFER]);
        dev.write(0, &[0x5a]);
        assert_eq!(
            read(&mut dev, 4),
            STATUS_OUTPUT_FULL | STATUS_AUX_DATA | STATUS_UNLOCKED | STATUS_SYSTEM
        );
        assert_eq!(read(&mut dev, 0), 0x5a);
        dev.write(4, &[CMD_WRITE_KBD_BUFFER]);
        dev.write(0, &[0xa5]);
        assert_eq!(read(&mut dev, 4) & STATUS_AUX_DATA, 0);
        assert_eq!(read(&mut dev, 0), 0xa5);
        assert_eq!(
            read(&mut dev, 0),
            0xa5,
            "an empty buffer reads its last byte"
        );
    }

    #[test]
    fn bytes_for_the_absent_keyboard_and_mouse_go_nowhere() {
        let mut dev = I8042::default();
        assert_eq!(dev.write(0, &[0xf2]), None, "keyboard: identify");
        dev.write(4, &[CMD_WRITE_AUX]);
        assert_eq!(dev.write(0, &[0xf4]), None, "mouse: enable");
        assert_eq!(read(&mut dev, 4) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(
            ask(&mut dev, CMD_READ_CONFIG),
            0x65,
            "not taken as a configuration byte"
        );
    }
}
