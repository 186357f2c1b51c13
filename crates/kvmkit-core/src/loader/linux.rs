//! Booting a Linux kernel: an ELF `vmlinux`, entered through PVH when it has the entry note
//! (Debian's has), otherwise through the 64-bit boot protocol with a zero page. The command
//! line, an initrd and an e820 map matching guest RAM go where each protocol wants them.

use std::fs::File;
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{Cmdline, KernelLoader, load_cmdline};
use vm_memory::{Address, GuestAddress};

use crate::config::MemoryRegionConfig;
use crate::error::{Error, Result};
use crate::memory::GuestRam;
use crate::vcpu::Vcpu;
use crate::x86::mode::CpuMode;

/// Where the PVH start info goes.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Where the PVH module list goes (one initrd).
pub const MODLIST_ADDR: u64 = 0x6800;
/// Where the zero page goes for the 64-bit boot protocol.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Where the PVH memory map goes.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Where the command line goes.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// The longest command line.
pub const CMDLINE_MAX: usize = 0x1_0000;
/// Where high memory starts: kernels load above it.
pub const HIGHMEM_START: u64 = 0x10_0000;
/// The start of the EBDA/BIOS area below 1 MiB, reported reserved.
const LOW_RESERVED_START: u64 = 0x9_fc00;
/// Highest initrd end: the boot protocol's `initrd_addr_max` for 64-bit kernels is 2 GiB.
const INITRD_ADDR_MAX: u64 = 0x7fff_ffff;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// What to boot.
#[derive(Debug, Clone)]
pub struct LinuxBoot<'a> {
    /// The kernel: an ELF `vmlinux`.
    pub kernel: &'a Path,
    /// An initrd (initramfs) to hand the kernel, if any.
    pub initrd: Option<&'a Path>,
    /// The kernel command line.
    pub cmdline: &'a str,
}

/// How the kernel was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH: 32-bit protected mode, EBX pointing to the start info.
    Pvh,
    /// The 64-bit boot protocol: long mode, RSI pointing to the zero page.
    Linux64,
}

/// The loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedKernel {
    /// The protocol it is entered through.
    pub protocol: BootProtocol,
    /// Its entry point.
    pub entry: u64,
    /// Where the kernel's image ends in guest RAM.
    pub kernel_end: u64,
    /// Where the initrd was put, and its size.
    pub initrd: Option<(u64, u64)>,
}

fn kernel_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Image {
        file: path.display().to_string(),
        what: "kernel",
        message: message.to_string(),
    }
}

fn initrd_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Image {
        file: path.display().to_string(),
        what: "initrd",
        message: message.to_string(),
    }
}

/// The memory map for guest RAM: low memory up to the EBDA, the BIOS area reserved, and
/// every region above as RAM.
pub fn e820(regions: &[MemoryRegionConfig]) -> Vec<(u64, u64, u32)> {
    let mut map = Vec::new();
    for r in regions {
        let end = r.guest_addr + r.size;
        if r.guest_addr < HIGHMEM_START {
            map.push((
                r.guest_addr,
                end.min(LOW_RESERVED_START) - r.guest_addr,
                E820_RAM,
            ));
            if end > HIGHMEM_START {
                map.push((HIGHMEM_START, end - HIGHMEM_START, E820_RAM));
            }
        } else {
            map.push((r.guest_addr, r.size, E820_RAM));
        }
    }
    map.push((
        LOW_RESERVED_START,
        HIGHMEM_START - LOW_RESERVED_START,
        E820_RESERVED,
    ));
    map.sort_by_key(|e| e.0);
    map
}

/// Puts the initrd high in RAM below 2 GiB, above the kernel, page-aligned.
fn place_initrd(ram: &GuestRam, path: &Path, kernel_end: u64) -> Result<(u64, u64)> {
    let data = std::fs::read(path).map_err(|e| initrd_error(path, e))?;
    if data.is_empty() {
        return Err(initrd_error(path, "the file is empty"));
    }
    let size = data.len() as u64;
    let top = ram
        .regions()
        .iter()
        .map(|r| (r.guest_addr + r.size).min(INITRD_ADDR_MAX + 1))
        .filter(|&end| end > kernel_end + size)
        .max()
        .ok_or_else(|| {
            initrd_error(
                path,
                format!("{size} bytes do not fit in guest RAM above the kernel"),
            )
        })?;
    let addr = (top - size) & !0xfff;
    if addr < kernel_end {
        return Err(initrd_error(
            path,
            format!("{size} bytes do not fit between the kernel and 2 GiB"),
        ));
    }
    ram.write(addr, &data)
        .map_err(|_| initrd_error(path, format!("{size} bytes do not fit at {addr:#x}")))?;
    Ok((addr, size))
}

/// Loads `boot` into `ram` and sets vCPU `vcpu` up to enter it.
pub fn load(ram: &GuestRam, vcpu: &Vcpu, boot: &LinuxBoot<'_>) -> Result<LoadedKernel> {
    let mut kernel = File::open(boot.kernel).map_err(|e| kernel_error(boot.kernel, e))?;
    let loaded = Elf::load(
        ram.memory(),
        None,
        &mut kernel,
        Some(GuestAddress(HIGHMEM_START)),
    )
    .map_err(|e| {
        kernel_error(
            boot.kernel,
            format!("not a loadable x86-64 ELF vmlinux: {e}"),
        )
    })?;
    let kernel_end = loaded.kernel_end;

    let mut cmdline = Cmdline::new(CMDLINE_MAX).map_err(|e| kernel_error(boot.kernel, e))?;
    cmdline
        .insert_str(boot.cmdline)
        .map_err(|e| Error::config("cmdline", format!("{e}")))?;
    load_cmdline(ram.memory(), GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(|e| Error::config("cmdline", format!("{e}")))?;
    let cmdline_len = boot.cmdline.len() as u32 + 1;

    let initrd = boot
        .initrd
        .map(|path| place_initrd(ram, path, kernel_end))
        .transpose()?;
    let map = e820(&ram.regions());

    let (protocol, entry) = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            let memmap: Vec<hvm_memmap_table_entry> = map
                .iter()
                .map(|&(addr, size, type_)| hvm_memmap_table_entry {
                    addr,
                    size,
                    type_,
                    reserved: 0,
                })
                .collect();
            let mut info = hvm_start_info {
                magic: XEN_HVM_START_MAGIC,
                version: 1,
                cmdline_paddr: CMDLINE_ADDR,
                memmap_paddr: MEMMAP_ADDR,
                memmap_entries: memmap.len() as u32,
                ..Default::default()
            };
            let mut params = BootParams::new(&info, GuestAddress(START_INFO_ADDR));
            if let Some((addr, size)) = initrd {
                info.nr_modules = 1;
                info.modlist_paddr = MODLIST_ADDR;
                params = BootParams::new(&info, GuestAddress(START_INFO_ADDR));
                let module = hvm_modlist_entry {
                    paddr: addr,
                    size,
                    ..Default::default()
                };
                params.set_modules(&[module], GuestAddress(MODLIST_ADDR));
            }
            params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
            PvhBootConfigurator::write_bootparams(&params, ram.memory()).map_err(|e| {
                kernel_error(boot.kernel, format!("cannot write the PVH start info: {e}"))
            })?;
            vcpu.setup(ram, CpuMode::Protected, entry.raw_value(), 0)?;
            let mut regs = vcpu.get_regs()?;
            regs.rbx = START_INFO_ADDR;
            vcpu.set_regs(&regs)?;
            (BootProtocol::Pvh, entry.raw_value())
        }
        _ => {
            let mut params = boot_params::default();
            params.hdr.type_of_loader = 0xff;
            params.hdr.boot_flag = 0xaa55;
            params.hdr.header = 0x5372_6448; // "HdrS"
            params.hdr.kernel_alignment = 0x100_0000;
            params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
            params.hdr.cmdline_size = cmdline_len;
            if let Some((addr, size)) = initrd {
                params.hdr.ramdisk_image = addr as u32;
                params.hdr.ramdisk_size = size as u32;
            }
            for (slot, &(addr, size, type_)) in params.e820_table.iter_mut().zip(&map) {
                *slot = boot_e820_entry {
                    addr,
                    size,
                    r#type: type_,
                };
            }
            params.e820_entries = map.len().min(params.e820_table.len()) as u8;
            let bp = BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR));
            LinuxBootConfigurator::write_bootparams(&bp, ram.memory()).map_err(|e| {
                kernel_error(boot.kernel, format!("cannot write the zero page: {e}"))
            })?;
            let entry = loaded.kernel_load.raw_value();
            vcpu.setup(ram, CpuMode::Long, entry, 0)?;
            let mut regs = vcpu.get_regs()?;
            regs.rsi = ZERO_PAGE_ADDR;
            vcpu.set_regs(&regs)?;
            (BootProtocol::Linux64, entry)
        }
    };
    Ok(LoadedKernel {
        protocol,
        entry,
        kernel_end,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_map_reserves_the_bios_area_and_follows_the_regions() {
        let map = e820(&[
            MemoryRegionConfig {
                guest_addr: 0,
                size: 0x2000_0000,
            },
            MemoryRegionConfig {
                guest_addr: 0x1_0000_0000,
                size: 0x1000_0000,
            },
        ]);
        assert_eq!(
            map,
            [
                (0, 0x9_fc00, E820_RAM),
                (0x9_fc00, 0x6_0400, E820_RESERVED),
                (0x10_0000, 0x1ff0_0000, E820_RAM),
                (0x1_0000_0000, 0x1000_0000, E820_RAM),
            ]
        );
    }
}
