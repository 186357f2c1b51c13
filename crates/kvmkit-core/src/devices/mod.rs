//! Devices implemented in Rust, answered on the vCPU thread without leaving it, and the one
//! registry of them: each built-in is declared once by a [`DeviceSpec`] — its name, where it
//! sits, its interrupt line and how it is built. [`crate::vm::Machine::add`] attaches a
//! spec; the binding and the TypeScript façade only name one.

pub mod acpi_sleep;
pub mod debug_console;
pub mod debug_exit;
pub mod i8042;
pub mod null;
pub mod output;
pub mod rtc;
pub mod serial;

use std::sync::{Arc, Mutex};

pub use acpi_sleep::AcpiSleep;
pub use debug_console::DebugConsole;
pub use debug_exit::DebugExit;
pub use i8042::I8042;
pub use null::NullDevice;
pub use rtc::Rtc;
pub use serial::SerialDevice;

use crate::bus::{BusDeviceSync, Space};
use crate::devices::output::ConsoleOutput;
use crate::irq::IrqLine;
use crate::x86::acpi::SLEEP_CONTROL_PORT;

/// A built-in device and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A 16550A UART on 8 ports from `port`, raising `irq` if given (needs the in-kernel
    /// irqchip).
    Serial {
        /// Its first port ([`serial::COM1_PORT`] for COM1).
        port: u16,
        /// Its interrupt line ([`serial::COM1_IRQ`] for COM1).
        irq: Option<u32>,
    },
    /// The Bochs/QEMU debug console on one port: writes are collected for the host.
    DebugConsole {
        /// Its port ([`debug_console::DEBUG_CONSOLE_PORT`] by convention).
        port: u16,
    },
    /// QEMU's `isa-debug-exit`: a write ends the run with the value.
    DebugExit {
        /// Its first port ([`debug_exit::DEBUG_EXIT_PORT`] by convention).
        port: u16,
    },
    /// The i8042 keyboard controller at 0x60-0x64 (its reset command ends the run).
    I8042,
    /// The CMOS real-time clock at 0x70-0x71.
    Rtc,
    /// Reads `fill` in every byte and drops writes, on `len` ports or MMIO bytes from `base`.
    Null {
        /// Ports or MMIO.
        space: Space,
        /// The first port or address.
        base: u64,
        /// How many ports or bytes.
        len: u64,
        /// What reads return in every byte.
        fill: u8,
    },
    /// The ACPI sleep registers the FADT points at (S5 power-off).
    AcpiSleep,
}

/// What the host keeps of an attached device.
#[derive(Debug, Clone)]
pub enum HostSide {
    /// Nothing: the device only talks to the guest.
    None,
    /// A UART's input and output.
    Serial(serial::SerialHandle),
    /// A debug console's output.
    Console(Arc<Mutex<ConsoleOutput>>),
}

impl HostSide {
    /// The debug console's output, if this is one.
    pub fn into_console(self) -> Option<Arc<Mutex<ConsoleOutput>>> {
        match self {
            HostSide::Console(output) => Some(output),
            _ => None,
        }
    }

    /// The UART's host side, if this is one.
    pub fn into_serial(self) -> Option<serial::SerialHandle> {
        match self {
            HostSide::Serial(handle) => Some(handle),
            _ => None,
        }
    }
}

impl DeviceSpec {
    /// The device's name on the bus and in messages.
    pub fn name(&self) -> &'static str {
        match self {
            DeviceSpec::Serial { .. } => "serial",
            DeviceSpec::DebugConsole { .. } => "debug-console",
            DeviceSpec::DebugExit { .. } => "debug-exit",
            DeviceSpec::I8042 => "i8042",
            DeviceSpec::Rtc => "rtc",
            DeviceSpec::Null { .. } => "null",
            DeviceSpec::AcpiSleep => "acpi-sleep",
        }
    }

    /// The address space it sits in.
    pub fn space(&self) -> Space {
        match self {
            DeviceSpec::Null { space, .. } => *space,
            _ => Space::Port,
        }
    }

    /// Its first port or address.
    pub fn base(&self) -> u64 {
        match *self {
            DeviceSpec::Serial { port, .. }
            | DeviceSpec::DebugConsole { port }
            | DeviceSpec::DebugExit { port } => port.into(),
            DeviceSpec::I8042 => i8042::I8042_PORT.into(),
            DeviceSpec::Rtc => rtc::RTC_PORT.into(),
            DeviceSpec::Null { base, .. } => base,
            DeviceSpec::AcpiSleep => SLEEP_CONTROL_PORT.into(),
        }
    }

    /// How many ports or bytes it occupies.
    pub fn len(&self) -> u64 {
        match *self {
            DeviceSpec::Serial { .. } => serial::SERIAL_PORTS.into(),
            DeviceSpec::DebugConsole { .. } => 1,
            DeviceSpec::DebugExit { .. } => debug_exit::DEBUG_EXIT_PORTS.into(),
            DeviceSpec::I8042 => i8042::I8042_PORTS.into(),
            DeviceSpec::Rtc => rtc::RTC_PORTS.into(),
            DeviceSpec::Null { len, .. } => len,
            DeviceSpec::AcpiSleep => acpi_sleep::ACPI_SLEEP_PORTS.into(),
        }
    }

    /// Whether it occupies nothing (only a null device of length 0 does; the bus refuses it).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The interrupt line it raises, if any.
    pub fn irq(&self) -> Option<u32> {
        match *self {
            DeviceSpec::Serial { irq, .. } => irq,
            _ => None,
        }
    }

    /// Builds the device: `line` raises [`DeviceSpec::irq`], `notify` is called when a
    /// UART's output buffer stops being empty or its receive FIFO has room again for input
    /// it refused.
    pub fn build(
        &self,
        line: Option<IrqLine>,
        notify: serial::Notify,
    ) -> (Arc<dyn BusDeviceSync>, HostSide) {
        match *self {
            DeviceSpec::Serial { .. } => {
                let output = Arc::new(Mutex::new(ConsoleOutput::default()));
                let uart = Arc::new(Mutex::new(SerialDevice::new(
                    line,
                    Arc::clone(&output),
                    notify,
                )));
                let handle = serial::SerialHandle::new(Arc::clone(&uart), output);
                (uart, HostSide::Serial(handle))
            }
            DeviceSpec::DebugConsole { .. } => {
                let console = DebugConsole::default();
                let output = console.output();
                (Arc::new(Mutex::new(console)), HostSide::Console(output))
            }
            DeviceSpec::DebugExit { .. } => (Arc::new(DebugExit), HostSide::None),
            DeviceSpec::I8042 => (Arc::new(Mutex::new(I8042::default())), HostSide::None),
            DeviceSpec::Rtc => (Arc::new(Mutex::new(Rtc::default())), HostSide::None),
            DeviceSpec::Null { fill, .. } => (Arc::new(NullDevice::new(fill)), HostSide::None),
            DeviceSpec::AcpiSleep => (Arc::new(AcpiSleep), HostSide::None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_built_in_says_where_it_sits() {
        let specs = [
            (
                DeviceSpec::Serial {
                    port: serial::COM1_PORT,
                    irq: Some(serial::COM1_IRQ),
                },
                "serial",
                0x3f8,
                8,
            ),
            (
                DeviceSpec::DebugConsole { port: 0xe9 },
                "debug-console",
                0xe9,
                1,
            ),
            (DeviceSpec::DebugExit { port: 0xf4 }, "debug-exit", 0xf4, 4),
            (DeviceSpec::I8042, "i8042", 0x60, 5),
            (DeviceSpec::Rtc, "rtc", 0x70, 2),
            (DeviceSpec::AcpiSleep, "acpi-sleep", 0x600, 2),
        ];
        for (spec, name, base, len) in specs {
            assert_eq!(
                (spec.name(), spec.space(), spec.base(), spec.len()),
                (name, Space::Port, base, len)
            );
        }
        let null = DeviceSpec::Null {
            space: Space::Mmio,
            base: 0xd000_0000,
            len: 0x1000,
            fill: 0,
        };
        assert_eq!(
            (null.space(), null.base(), null.len()),
            (Space::Mmio, 0xd000_0000, 0x1000)
        );
    }

    #[test]
    fn each_build_is_a_new_device_with_its_own_host_side() {
        let spec = DeviceSpec::DebugConsole { port: 0xe9 };
        let (first, HostSide::Console(a)) = spec.build(None, Arc::new(|| {})) else {
            panic!("a console has an output");
        };
        let (_, HostSide::Console(b)) = spec.build(None, Arc::new(|| {})) else {
            panic!("a console has an output");
        };
        first.write(0, b"x");
        assert_eq!(a.lock().unwrap().take(), b"x");
        assert!(b.lock().unwrap().take().is_empty());
    }
}
