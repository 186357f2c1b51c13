//! ACPI tables for a PC without firmware: RSDP, XSDT, FADT (hardware-reduced, with a sleep
//! control register so the guest can power off), MADT (one local APIC per vCPU and the
//! IOAPIC) and a DSDT describing the serial ports, the i8042, the CMOS clock and the S5
//! sleep state. Built with the
//! rust-vmm `acpi_tables` crate and written to the BIOS area below 1 MiB, where a kernel
//! that is not told the RSDP's address also finds it by scanning.

use acpi_tables::Aml;
use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;

use crate::error::{Error, Result};
pub use crate::platform::{Platform, SerialPortInfo};
use crate::x86::layout::{ACPI_END, IOAPIC_ADDR, LAPIC_ADDR, RSDP_ADDR};

/// The sleep control register's port (the status register is the next port).
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// The `SLP_TYP` value the DSDT gives S5 (soft off).
pub const S5_SLEEP_TYPE: u8 = 5;

const OEM_ID: [u8; 6] = *b"KVMKIT";
const OEM_REVISION: u32 = 1;
/// FADT `IAPC_BOOT_ARCH` bits: legacy devices present, 8042 present.
const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
const BOOT_ARCH_8042: u16 = 1 << 1;

/// A legacy ISA device in the DSDT: `_HID`, its port ranges (first port, length), its IRQ.
/// Its IRQ must be in `_CRS`: a hardware-reduced ACPI machine has no legacy PIC, so Linux
/// maps ISA IRQs only where the DSDT gives them (without it, rtc_cmos's request for IRQ 8
/// fails with -EINVAL).
fn isa_device(body: &mut Vec<u8>, name: &str, hid: &str, ports: &[(u16, u8)], irq: u32) {
    let io: Vec<aml::IO> = ports
        .iter()
        .map(|&(port, len)| aml::IO::new(port, port, 1, len))
        .collect();
    let irq = aml::Interrupt::new(true, true, false, false, irq);
    let mut resources: Vec<&dyn Aml> = io.iter().map(|io| io as &dyn Aml).collect();
    resources.push(&irq);
    let hid = aml::EISAName::new(hid);
    let crs = aml::ResourceTemplate::new(resources);
    aml::Device::new(
        name.into(),
        vec![
            &aml::Name::new("_HID".into(), &hid),
            &aml::Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(body);
}

fn oem_table_id(signature: &[u8; 4]) -> [u8; 8] {
    let mut id = *b"KVMK    ";
    id[4..].copy_from_slice(signature);
    id
}

fn dsdt(platform: &Platform) -> Sdt {
    let mut body: Vec<u8> = Vec::new();
    for (uid, serial) in platform.serial.iter().enumerate() {
        let name = format!("_SB_.COM{}", uid + 1);
        let io = aml::IO::new(serial.port, serial.port, 1, 8);
        let irq = serial
            .irq
            .map(|irq| aml::Interrupt::new(true, true, false, false, irq));
        let mut resources: Vec<&dyn Aml> = vec![&io];
        if let Some(irq) = &irq {
            resources.push(irq);
        }
        let hid = aml::EISAName::new("PNP0501");
        let uid = uid as u8;
        let crs = aml::ResourceTemplate::new(resources);
        aml::Device::new(
            name.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &hid),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CRS".into(), &crs),
            ],
        )
        .to_aml_bytes(&mut body);
    }
    if platform.i8042 {
        // The keyboard controller, without PNP0F13: there is no mouse behind it, and Linux
        // takes a missing auxiliary device as "no AUX port" rather than probing for one.
        isa_device(
            &mut body,
            "_SB_.PS2K",
            "PNP0303",
            &[(0x60, 1), (0x64, 1)],
            1,
        );
    }
    if platform.rtc {
        isa_device(&mut body, "_SB_.RTC_", "PNP0B00", &[(0x70, 2)], 8);
    }
    for (uid, virtio) in platform.virtio_mmio.iter().enumerate() {
        // As Firecracker and QEMU's microvm describe virtio-mmio; Linux's virtio_mmio driver
        // matches the ID.
        let name = format!("_SB_.V{uid:03X}");
        let mem = aml::Memory32Fixed::new(true, virtio.base as u32, virtio.len as u32);
        let irq = aml::Interrupt::new(true, true, false, false, virtio.gsi);
        let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
        let uid = uid as u32;
        aml::Device::new(
            name.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &"LNRO0005"),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CCA".into(), &aml::ONE),
                &aml::Name::new("_CRS".into(), &crs),
            ],
        )
        .to_aml_bytes(&mut body);
    }
    // \_S5_: the SLP_TYP values for soft off, written with SLP_EN to the sleep control register.
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE]),
    )
    .to_aml_bytes(&mut body);
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, oem_table_id(b"DSDT"), OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt
}

fn fadt(platform: &Platform, dsdt_addr: u64) -> Vec<u8> {
    let register = |port: u16| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            port.into(),
        )
    };
    let mut builder = FADTBuilder::new(OEM_ID, oem_table_id(b"FACP"), OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    builder.sleep_control_reg = register(SLEEP_CONTROL_PORT);
    builder.sleep_status_reg = register(SLEEP_CONTROL_PORT + 1);
    let boot_arch = if platform.i8042 {
        BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042
    } else {
        0
    };
    builder.iapc_boot_arch = boot_arch.into();
    builder.hypervisor_vendor_identity = u64::from_le_bytes(*b"KVMKIT\0\0").into();
    bytes(&builder.finalize())
}

fn madt(platform: &Platform) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        oem_table_id(b"APIC"),
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for cpu in 0..platform.vcpus {
        madt.add_structure(ProcessorLocalApic::new(
            cpu as u8,
            cpu as u8,
            EnabledStatus::Enabled,
        ));
    }
    madt.add_structure(IoApic::new(platform.vcpus as u8, IOAPIC_ADDR, 0));
    bytes(&madt)
}

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    table.to_aml_bytes(&mut out);
    out
}

/// The tables, laid out from [`RSDP_ADDR`]: (guest address, bytes) for each.
pub fn tables(platform: &Platform) -> Result<Vec<(u64, Vec<u8>)>> {
    if platform.vcpus == 0 || platform.vcpus > 255 {
        return Err(Error::config(
            "vcpus",
            format!(
                "{} vCPUs cannot be described with 8-bit APIC IDs",
                platform.vcpus
            ),
        ));
    }
    let align = |addr: u64| (addr + 63) & !63;
    let xsdt_addr = align(RSDP_ADDR + Rsdp::len() as u64);
    // The XSDT lists two tables: its size is known before their addresses are.
    let fadt_addr = align(xsdt_addr + 36 + 2 * 8);
    let dsdt = dsdt(platform);
    let madt = madt(platform);
    let madt_addr = align(fadt_addr + acpi_tables::fadt::FADT::len() as u64);
    let dsdt_addr = align(madt_addr + madt.len() as u64);
    let fadt = fadt(platform, dsdt_addr);
    let end = dsdt_addr + dsdt.len() as u64;
    if end > ACPI_END {
        return Err(Error::config(
            "vcpus",
            format!("the ACPI tables need {end:#x} bytes, past {ACPI_END:#x}"),
        ));
    }
    let mut xsdt = XSDT::new(OEM_ID, oem_table_id(b"XSDT"), OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    Ok(vec![
        (RSDP_ADDR, bytes(&Rsdp::new(OEM_ID, xsdt_addr))),
        (xsdt_addr, bytes(&xsdt)),
        (fadt_addr, fadt),
        (madt_addr, madt),
        (dsdt_addr, dsdt.as_slice().to_vec()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(data: &[u8]) -> u8 {
        data.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    fn platform() -> Platform {
        Platform {
            vcpus: 2,
            serial: vec![SerialPortInfo {
                port: 0x3f8,
                irq: Some(4),
            }],
            i8042: true,
            rtc: true,
            virtio_mmio: Vec::new(),
        }
    }

    #[test]
    fn every_table_checksums_to_zero_and_says_its_length() {
        let tables = tables(&platform()).unwrap();
        let (_, rsdp) = &tables[0];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP v1 checksum");
        assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
        let signatures: Vec<&[u8]> = tables[1..].iter().map(|(_, t)| &t[..4]).collect();
        assert_eq!(signatures, [b"XSDT", b"FACP", b"APIC", b"DSDT"]);
        for (addr, table) in &tables[1..] {
            let len = u32::from_le_bytes(table[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, table.len(), "length of the table at {addr:#x}");
            assert_eq!(sum(table), 0, "checksum of the table at {addr:#x}");
            assert_eq!(addr % 16, 0);
        }
    }

    #[test]
    fn the_pointers_lead_from_the_rsdp_to_every_table() {
        let tables = tables(&platform()).unwrap();
        let at = |addr: u64| &tables.iter().find(|(a, _)| *a == addr).unwrap().1;
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
        let xsdt = at(le64(&tables[0].1[24..32]));
        assert_eq!(&xsdt[..4], b"XSDT");
        let fadt = at(le64(&xsdt[36..44]));
        let madt = at(le64(&xsdt[44..52]));
        assert_eq!(&fadt[..4], b"FACP");
        assert_eq!(&madt[..4], b"APIC");
        // FADT: X_DSDT at 140, flags at 112 (HW_REDUCED_ACPI is bit 20), IAPC_BOOT_ARCH at 109.
        assert_eq!(&at(le64(&fadt[140..148]))[..4], b"DSDT");
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0);
        assert_eq!(u16::from_le_bytes([fadt[109], fadt[110]]), 3);
        // The sleep control register: a GAS in I/O space at SLEEP_CONTROL_PORT (offset 244).
        assert_eq!(fadt[244], 1);
        assert_eq!(le64(&fadt[248..256]), u64::from(SLEEP_CONTROL_PORT));
    }

    #[test]
    fn the_madt_has_one_local_apic_per_vcpu_and_the_ioapic() {
        let tables = tables(&platform()).unwrap();
        let madt = &tables[3].1;
        assert_eq!(
            u32::from_le_bytes(madt[36..40].try_into().unwrap()),
            LAPIC_ADDR
        );
        let mut entries = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            entries.push((madt[at], madt[at + 2], madt[at + 3]));
            at += madt[at + 1] as usize;
        }
        // (type, first byte, second byte): LAPIC (uid, apic id), IOAPIC (id, reserved).
        assert_eq!(entries, [(0, 0, 0), (0, 1, 1), (1, 2, 0)]);
        let ioapic = &madt[madt.len() - 12..];
        assert_eq!(
            u32::from_le_bytes(ioapic[4..8].try_into().unwrap()),
            IOAPIC_ADDR
        );
    }

    #[test]
    fn the_dsdt_names_the_uart_and_the_s5_state() {
        let tables = tables(&platform()).unwrap();
        let dsdt = &tables[4].1;
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"COM1"));
        assert!(has(b"_S5_"));
        assert!(has(b"_CRS"));
        // The IO descriptor: 0x47, decode16, min 0x3f8, max 0x3f8, align 1, length 8.
        assert!(has(&[0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8]));
        // The interrupt descriptor: extended IRQ, consumer + edge, one interrupt: 4.
        assert!(has(&[0x89, 6, 0, 3, 1, 4, 0, 0, 0]));
    }

    #[test]
    fn the_dsdt_names_each_virtio_mmio_device_with_its_window_and_line() {
        let virtio = Platform {
            virtio_mmio: vec![crate::platform::VirtioMmioInfo {
                base: 0xc000_1000,
                len: 0x1000,
                gsi: 6,
            }],
            ..platform()
        };
        let tables = tables(&virtio).unwrap();
        let dsdt = &tables[4].1;
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"V000"));
        assert!(has(b"LNRO0005\0"));
        // Memory32Fixed: 0x86, length 9, read-write, base, length.
        assert!(has(&[0x86, 9, 0, 1, 0, 0x10, 0, 0xc0, 0, 0x10, 0, 0]));
        // Extended IRQ: consumer + edge, one interrupt: 6.
        assert!(has(&[0x89, 6, 0, 3, 1, 6, 0, 0, 0]));
    }

    #[test]
    fn the_dsdt_gives_the_i8042_and_the_clock_their_ports_and_irqs() {
        let dsdt = |p: &Platform| tables(p).unwrap()[4].1.clone();
        let has = |dsdt: &[u8], needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        let full = dsdt(&platform());
        // EISA IDs: PNP0303 and PNP0B00, compressed (0x0c <u32>).
        let pnp = |id: u16| [0x0c, 0x41, 0xd0, (id >> 8) as u8, id as u8];
        assert!(has(&full, &pnp(0x0303)));
        assert!(has(&full, &pnp(0x0b00)));
        assert!(!has(&full, &pnp(0x0f13)), "no mouse");
        assert!(has(&full, &[0x47, 1, 0x60, 0, 0x60, 0, 1, 1]));
        assert!(has(&full, &[0x47, 1, 0x64, 0, 0x64, 0, 1, 1]));
        assert!(has(&full, &[0x89, 6, 0, 3, 1, 1, 0, 0, 0]), "IRQ 1");
        assert!(has(&full, &[0x47, 1, 0x70, 0, 0x70, 0, 1, 2]));
        assert!(has(&full, &[0x89, 6, 0, 3, 1, 8, 0, 0, 0]), "IRQ 8");
        let bare = dsdt(&Platform {
            i8042: false,
            rtc: false,
            virtio_mmio: Vec::new(),
            ..platform()
        });
        assert!(!has(&bare, &pnp(0x0303)) && !has(&bare, &pnp(0x0b00)));
    }

    #[test]
    fn refuses_what_eight_bit_apic_ids_cannot_describe() {
        let mut p = platform();
        p.vcpus = 0;
        assert!(tables(&p).is_err());
        p.vcpus = 256;
        assert!(tables(&p).is_err());
        p.vcpus = 255;
        assert!(tables(&p).is_ok());
    }
}
