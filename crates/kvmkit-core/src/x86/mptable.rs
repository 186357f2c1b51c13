//! The Intel MultiProcessor Specification 1.4 table, for kernels booted without ACPI
//! (`acpi=off`, or built without it): the floating pointer, then the configuration table
//! with one processor entry per vCPU, the ISA bus, the IOAPIC, ISA IRQs 0-15 wired to the
//! IOAPIC pins of the same number, and the local interrupts (ExtINT, NMI).

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::x86::layout::{IOAPIC_ADDR, LAPIC_ADDR, MPTABLE_ADDR, MPTABLE_END};

const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const ISA_IRQS: u8 = 16;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;

fn checksum(data: &[u8]) -> u8 {
    0u8.wrapping_sub(data.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The floating pointer and configuration table for the platform's processors, to be written at
/// [`MPTABLE_ADDR`].
pub fn table(platform: &Platform) -> Result<Vec<u8>> {
    let vcpus = platform.vcpus;
    if vcpus == 0 || vcpus > 254 {
        return Err(Error::config(
            "vcpus",
            format!("{vcpus} vCPUs cannot be described in an MP table (1 to 254)"),
        ));
    }
    let ioapic_id = vcpus as u8;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus as u8 {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        // CPU signature (family 6), feature flags (FPU, APIC), reserved.
        entries.extend_from_slice(&0x600u32.to_le_bytes());
        entries.extend_from_slice(&((1u32 << 0) | (1 << 9)).to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 2;
    // The ISA lines, then the virtio-mmio devices' lines above them (GSI 16-23), so a kernel
    // without ACPI routes each one it is told of on its command line.
    let lines = (0..ISA_IRQS).chain(
        platform
            .virtio_mmio
            .iter()
            .filter_map(|v| u8::try_from(v.gsi).ok())
            .filter(|&g| g >= ISA_IRQS),
    );
    for irq in lines {
        // Type, interrupt type, flags (conforming to the bus), source bus and IRQ, IOAPIC, pin.
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_VECTORED,
            0,
            0,
            0,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    // ExtINT to LINT0 of every local APIC, NMI to LINT1 of every local APIC.
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let config_addr = MPTABLE_ADDR + 16;
    let mut config: Vec<u8> = Vec::with_capacity(44 + entries.len());
    config.extend_from_slice(b"PCMP");
    config.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    config.extend_from_slice(&[SPEC_REV, 0]);
    config.extend_from_slice(b"KVMKIT  ");
    config.extend_from_slice(b"000000000001");
    config.extend_from_slice(&[0; 4]); // OEM table pointer
    config.extend_from_slice(&[0; 2]); // OEM table size
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    config.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut out = Vec::with_capacity(16 + config.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(config_addr as u32).to_le_bytes());
    out.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out);
    out.extend_from_slice(&config);
    if MPTABLE_ADDR + out.len() as u64 > MPTABLE_END {
        return Err(Error::config(
            "vcpus",
            format!("an MP table for {vcpus} vCPUs does not fit below 1 MiB"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(vcpus: u32) -> Platform {
        Platform {
            vcpus,
            ..Platform::default()
        }
    }

    fn sum(data: &[u8]) -> u8 {
        data.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn the_floating_pointer_and_the_table_checksum_to_zero() {
        let t = table(&cpus(2)).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(t[8], 1, "length in 16-byte units");
        assert_eq!(t[9], SPEC_REV);
        assert_eq!(sum(&t[..16]), 0);
        let pointer = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        let config = &t[(pointer - MPTABLE_ADDR) as usize..];
        assert_eq!(&config[..4], b"PCMP");
        let len = u16::from_le_bytes([config[4], config[5]]) as usize;
        assert_eq!(len, config.len());
        assert_eq!(sum(config), 0);
    }

    #[test]
    fn lists_each_processor_once_with_the_first_as_bsp() {
        let t = table(&cpus(3)).unwrap();
        let config = &t[16..];
        let count = u16::from_le_bytes([config[34], config[35]]) as usize;
        let mut at = 44;
        let mut cpus = Vec::new();
        let mut irqs = 0;
        for _ in 0..count {
            match config[at] {
                ENTRY_PROCESSOR => {
                    cpus.push((config[at + 1], config[at + 3]));
                    at += 20;
                }
                ENTRY_IO_INTERRUPT => {
                    assert_eq!(config[at + 5], config[at + 7], "IRQ n goes to pin n");
                    assert_eq!(
                        config[at + 6],
                        3,
                        "to the IOAPIC, whose ID follows the CPUs'"
                    );
                    irqs += 1;
                    at += 8;
                }
                _ => at += 8,
            }
        }
        assert_eq!(at, config.len());
        assert_eq!(cpus, [(0, 3), (1, 1), (2, 1)]);
        assert_eq!(irqs, 16);
    }

    #[test]
    fn routes_virtio_lines_above_the_isa_ones() {
        let mut platform = cpus(1);
        let info = |gsi| crate::platform::VirtioMmioInfo {
            base: 0xc000_0000,
            len: 0x1000,
            gsi,
        };
        platform.virtio_mmio = vec![info(5), info(17)];
        let t = table(&platform).unwrap();
        let config = &t[16..];
        // One 20-byte processor entry, then 8-byte entries.
        let pins: Vec<u8> = config[44 + 20..]
            .chunks(8)
            .filter(|e| e[0] == ENTRY_IO_INTERRUPT)
            .map(|e| e[7])
            .collect();
        let expected: Vec<u8> = (0..16).chain([17]).collect();
        assert_eq!(pins, expected, "5 is an ISA line already; 17 is added");
    }

    #[test]
    fn refuses_counts_it_cannot_describe() {
        assert!(table(&cpus(0)).is_err());
        assert!(table(&cpus(255)).is_err());
        assert!(table(&cpus(254)).is_ok());
    }
}
