//! What the guest must be told about: a typed inventory of the attached built-in devices
//! that a guest discovers through firmware tables rather than by probing (UARTs, the i8042,
//! the RTC; next virtio-mmio slots and the PCI root). The ACPI tables and the MP table are
//! built from its [`Platform`] view, never from the names on the bus.

use crate::bus::Space;
use crate::devices::DeviceSpec;

/// A UART the firmware tables name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialPortInfo {
    /// Its first port.
    pub port: u16,
    /// Its interrupt line, if it has one.
    pub irq: Option<u32>,
}

/// A virtio-mmio device the firmware tables name (`LNRO0005`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioInfo {
    /// The start of its register window.
    pub base: u64,
    /// The window's length.
    pub len: u64,
    /// Its (edge-triggered) interrupt line.
    pub gsi: u32,
}

impl VirtioMmioInfo {
    /// How Linux is told of it on its command line when it has no ACPI:
    /// `virtio_mmio.device=4K@0xc0000000:5` (kernels built with
    /// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`).
    pub fn cmdline(&self) -> String {
        format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            self.len / 1024,
            self.base,
            self.gsi
        )
    }
}

/// What the firmware tables describe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    /// vCPUs, whose APIC IDs are their indices.
    pub vcpus: u32,
    /// The UARTs, in the order they were added (COM1 first if it was added first).
    pub serial: Vec<SerialPortInfo>,
    /// Whether an i8042 is at ports 0x60/0x64.
    pub i8042: bool,
    /// Whether a CMOS RTC is at ports 0x70/0x71.
    pub rtc: bool,
    /// The virtio-mmio devices, in the order they were added.
    pub virtio_mmio: Vec<VirtioMmioInfo>,
}

impl Platform {
    /// `cmdline`, naming the virtio-mmio devices (`virtio_mmio.device=`) when it turns ACPI
    /// off: the guest then has no DSDT to find them in.
    pub fn linux_cmdline(&self, cmdline: &str) -> String {
        let acpi_off = cmdline.split_whitespace().any(|w| w == "acpi=off");
        if !acpi_off || self.virtio_mmio.is_empty() {
            return cmdline.to_string();
        }
        let devices: Vec<String> = self
            .virtio_mmio
            .iter()
            .map(VirtioMmioInfo::cmdline)
            .collect();
        format!("{cmdline} {}", devices.join(" "))
    }
}

/// The built-in devices attached to a machine, in the order they were added. virtio devices
/// are listed apart: they carry backends (files, host streams) rather than a plain
/// description, so they are not [`DeviceSpec`]s.
#[derive(Debug, Default)]
pub struct Inventory {
    devices: Vec<DeviceSpec>,
    virtio: Vec<VirtioMmioInfo>,
}

impl Inventory {
    /// Records an attached device.
    pub fn add(&mut self, spec: DeviceSpec) {
        self.devices.push(spec);
    }

    /// Records an attached virtio-mmio device.
    pub fn add_virtio(&mut self, info: VirtioMmioInfo) {
        self.virtio.push(info);
    }

    /// Forgets the device whose `space` range starts at `base`, if it is a built-in.
    pub fn remove(&mut self, space: Space, base: u64) {
        self.devices
            .retain(|d| !(d.space() == space && d.base() == base));
        if space == Space::Mmio {
            self.virtio.retain(|v| v.base != base);
        }
    }

    /// Whether a device equal to `spec` is attached.
    pub fn contains(&self, spec: &DeviceSpec) -> bool {
        self.devices.contains(spec)
    }

    /// The firmware's view of a machine with `vcpus` vCPUs and these devices.
    pub fn platform(&self, vcpus: u32) -> Platform {
        let mut platform = Platform {
            vcpus,
            virtio_mmio: self.virtio.clone(),
            ..Platform::default()
        };
        for device in &self.devices {
            match *device {
                DeviceSpec::Serial { port, irq } => {
                    platform.serial.push(SerialPortInfo { port, irq });
                }
                DeviceSpec::I8042 => platform.i8042 = true,
                DeviceSpec::Rtc => platform.rtc = true,
                DeviceSpec::DebugConsole { .. }
                | DeviceSpec::DebugExit { .. }
                | DeviceSpec::Null { .. }
                | DeviceSpec::AcpiSleep => {}
            }
        }
        platform
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_lists_what_a_guest_discovers_from_tables() {
        let mut inventory = Inventory::default();
        inventory.add(DeviceSpec::Serial {
            port: 0x3f8,
            irq: Some(4),
        });
        inventory.add(DeviceSpec::DebugConsole { port: 0xe9 });
        inventory.add(DeviceSpec::I8042);
        inventory.add(DeviceSpec::Serial {
            port: 0x2f8,
            irq: None,
        });
        assert_eq!(
            inventory.platform(2),
            Platform {
                vcpus: 2,
                serial: vec![
                    SerialPortInfo {
                        port: 0x3f8,
                        irq: Some(4)
                    },
                    SerialPortInfo {
                        port: 0x2f8,
                        irq: None
                    },
                ],
                i8042: true,
                rtc: false,
                virtio_mmio: Vec::new(),
            }
        );
        inventory.add_virtio(VirtioMmioInfo {
            base: 0xc000_1000,
            len: 0x1000,
            gsi: 6,
        });
        assert_eq!(inventory.platform(2).virtio_mmio.len(), 1);
        inventory.remove(Space::Mmio, 0xc000_1000);
        assert!(inventory.platform(2).virtio_mmio.is_empty());
        inventory.remove(Space::Port, 0x60);
        assert!(!inventory.platform(2).i8042);
        inventory.remove(Space::Mmio, 0x3f8);
        assert_eq!(inventory.platform(2).serial.len(), 2, "another space");
    }

    #[test]
    fn a_kernel_without_acpi_is_told_of_virtio_devices_on_its_command_line() {
        let mut platform = Platform::default();
        assert_eq!(platform.linux_cmdline("acpi=off quiet"), "acpi=off quiet");
        platform.virtio_mmio = vec![
            VirtioMmioInfo {
                base: 0xc000_0000,
                len: 0x1000,
                gsi: 5,
            },
            VirtioMmioInfo {
                base: 0xc000_1000,
                len: 0x1000,
                gsi: 17,
            },
        ];
        assert_eq!(platform.linux_cmdline("console=ttyS0"), "console=ttyS0");
        assert_eq!(
            platform.linux_cmdline("acpi=off"),
            "acpi=off virtio_mmio.device=4K@0xc0000000:5 virtio_mmio.device=4K@0xc0001000:17"
        );
    }
}
