//! Every fixed guest-physical address kvmkit uses, in one place, lowest first.
//!
//! ```text
//! 0x0000_0500  GDT                         0x0000_6000  PVH start info (+0x800: module list)
//! 0x0000_7000  zero page / PVH memory map  0x0000_9000  PML4, PDPT, four PDs (to 0xf000)
//! 0x0001_0000  Multiboot information       0x0002_0000  kernel command line (64 KiB)
//! 0x0009_fc00  EBDA/BIOS area (reserved)   0x000e_0000  RSDP and ACPI tables
//! 0x000f_0000  MP table                    0x0010_0000  kernels load here (high memory)
//! 0xc000_0000  end of low RAM: the 32-bit hole, MMIO windows from here to the IOAPIC
//! 0xfec0_0000  IOAPIC                      0xfee0_0000  local APICs (and MSI writes)
//! 0xfffb_d000  TSS and identity-map page (Intel real mode)
//! 0x1_0000_0000  RAM above the hole continues here
//! ```
//!
//! Guest RAM given as a size ([`ram_regions`]) stops at [`RAM_32BIT_END`] and continues at
//! [`HIGH_RAM_START`], as QEMU's `pc` machine (with gigabyte alignment), Firecracker and
//! Cloud Hypervisor do: 3 GiB keeps the low region gigabyte-aligned (so a guest can map it
//! with 1 GiB pages) and leaves the top gigabyte below 4 GiB to devices a 32-bit guest must
//! reach (the IOAPIC, the LAPICs, virtio-mmio windows, later 32-bit PCI BARs).

use crate::config::MemoryRegionConfig;

/// The global descriptor table for protected and long mode.
pub const GDT_ADDR: u64 = 0x500;
/// The PVH start info.
pub const START_INFO_ADDR: u64 = 0x6000;
/// The PVH module list (one initrd).
pub const MODLIST_ADDR: u64 = 0x6800;
/// The zero page of the 64-bit boot protocol.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The PVH memory map (PVH and the zero page are alternatives: one kernel uses one).
pub const MEMMAP_ADDR: u64 = 0x7000;
/// The identity map's PML4.
pub const PML4_ADDR: u64 = 0x9000;
/// The identity map's PDPT.
pub const PDPT_ADDR: u64 = 0xa000;
/// The first of the identity map's four page directories.
pub const PD_ADDR: u64 = 0xb000;
/// How much the identity map covers: the low 4 GiB, including the 32-bit hole.
pub const IDENTITY_MAPPED: u64 = 4 << 30;
/// The Multiboot information structure (its memory map, modules and strings follow, up to
/// [`CMDLINE_ADDR`]).
pub const MULTIBOOT_INFO_ADDR: u64 = 0x1_0000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// The longest command line.
pub const CMDLINE_MAX: usize = 0x1_0000;
/// The start of the EBDA/BIOS area below 1 MiB, reported reserved.
pub const LOW_RESERVED_START: u64 = 0x9_fc00;
/// The RSDP; the ACPI tables follow it up to [`ACPI_END`].
pub const RSDP_ADDR: u64 = 0xe_0000;
/// Where the ACPI tables must end.
pub const ACPI_END: u64 = 0xf_0000;
/// The MP floating pointer and configuration table, up to [`MPTABLE_END`].
pub const MPTABLE_ADDR: u64 = 0xf_0000;
/// Where the MP table must end.
pub const MPTABLE_END: u64 = 0x10_0000;
/// Where high memory starts: kernels load above it.
pub const HIGHMEM_START: u64 = 0x10_0000;
/// Highest initrd end: the boot protocol's `initrd_addr_max` for 64-bit kernels is 2 GiB.
pub const INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
/// Where RAM below 4 GiB ends and the 32-bit hole begins.
pub const RAM_32BIT_END: u64 = 0xc000_0000;
/// The first address of the hole that devices get MMIO windows from.
pub const MMIO32_START: u64 = RAM_32BIT_END;
/// Where those windows end: the IOAPIC and the LAPICs above are fixed.
pub const MMIO32_END: u64 = IOAPIC_ADDR as u64;
/// The IOAPIC (32-bit: the tables that name it have 32-bit fields).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APICs; writes to this window are also how MSIs are sent.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The TSS and identity-map page for real-mode emulation on Intel hosts: just below the
/// BIOS area at the top of the 32-bit space, as QEMU and Firecracker place them.
pub const TSS_ADDR: u64 = 0xfffb_d000;
/// Where RAM above the hole continues.
pub const HIGH_RAM_START: u64 = 1 << 32;

/// The RAM regions for `size` bytes of guest RAM: one region from 0 up to
/// [`RAM_32BIT_END`], the rest from [`HIGH_RAM_START`].
pub fn ram_regions(size: u64) -> Vec<MemoryRegionConfig> {
    if size <= RAM_32BIT_END {
        return vec![MemoryRegionConfig {
            guest_addr: 0,
            size,
        }];
    }
    vec![
        MemoryRegionConfig {
            guest_addr: 0,
            size: RAM_32BIT_END,
        },
        MemoryRegionConfig {
            guest_addr: HIGH_RAM_START,
            size: size - RAM_32BIT_END,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_up_to_3_gib_is_one_region_at_0() {
        assert_eq!(
            ram_regions(RAM_32BIT_END),
            vec![MemoryRegionConfig {
                guest_addr: 0,
                size: RAM_32BIT_END
            }]
        );
    }

    #[test]
    fn ram_past_3_gib_leaves_the_hole_free_and_continues_at_4_gib() {
        let regions = ram_regions(4 << 30);
        assert_eq!(
            regions,
            vec![
                MemoryRegionConfig {
                    guest_addr: 0,
                    size: 3 << 30
                },
                MemoryRegionConfig {
                    guest_addr: 4 << 30,
                    size: 1 << 30
                },
            ]
        );
        let apics = [IOAPIC_ADDR, LAPIC_ADDR].map(u64::from);
        for fixed in [MMIO32_START, apics[0], apics[1], TSS_ADDR] {
            assert!(
                regions
                    .iter()
                    .all(|r| !(r.guest_addr..r.guest_addr + r.size).contains(&fixed)),
                "{fixed:#x} is not RAM"
            );
        }
    }

    #[test]
    fn the_low_tables_do_not_overlap() {
        let ranges = [
            (GDT_ADDR, GDT_ADDR + 4 * 8),
            (START_INFO_ADDR, MODLIST_ADDR),
            (MODLIST_ADDR, ZERO_PAGE_ADDR),
            (ZERO_PAGE_ADDR, ZERO_PAGE_ADDR + 0x1000),
            (PML4_ADDR, PD_ADDR + 4 * 0x1000),
            (MULTIBOOT_INFO_ADDR, CMDLINE_ADDR),
            (CMDLINE_ADDR, CMDLINE_ADDR + CMDLINE_MAX as u64),
            (RSDP_ADDR, ACPI_END),
            (MPTABLE_ADDR, MPTABLE_END),
        ];
        for pair in ranges.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?}");
        }
    }
}
