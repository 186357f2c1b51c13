//! Booting a Linux kernel: an ELF `vmlinux`, entered through PVH when it has the entry note
//! (Debian's has), otherwise through the 64-bit boot protocol with a zero page; or a
//! bzImage, whose payload is decompressed on the host into that `vmlinux` (see
//! [`bzimage`]) or which is entered through its own decompressor. The command
//! line, an initrd and an e820 map matching guest RAM go where each protocol wants them.

use std::io::Cursor;
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{Cmdline, KernelLoader, load_cmdline};
use vm_memory::GuestAddress;

use crate::config::MemoryRegionConfig;
use crate::error::{Error, Result};
use crate::loader::bzimage::{self, Decompressed};
use crate::loader::{check_fits, describe_start, read_failure, u16_at, u32_at, u64_at};
use crate::memory::GuestRam;
use crate::vcpu::Vcpu;
use crate::x86::layout::{
    CMDLINE_ADDR, CMDLINE_MAX, HIGHMEM_START, INITRD_ADDR_MAX, LOW_RESERVED_START, MEMMAP_ADDR,
    MODLIST_ADDR, START_INFO_ADDR, ZERO_PAGE_ADDR,
};
use crate::x86::mode::CpuMode;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// What to do with a bzImage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BzImageMode {
    /// Decompress its payload on the host and enter the `vmlinux` inside (the fast path);
    /// fall back to [`BzImageMode::Standard`] for compressions kvmkit does not decompress.
    #[default]
    Decompress,
    /// Load it as the boot protocol says and let its own decompressor run in the guest.
    Standard,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct LinuxBoot<'a> {
    /// The kernel: an ELF `vmlinux` or a bzImage.
    pub kernel: &'a Path,
    /// An initrd (initramfs) to hand the kernel, if any.
    pub initrd: Option<&'a Path>,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// How a bzImage is entered.
    pub bzimage: BzImageMode,
    /// Where decompressed bzImage payloads are cached; `None` for no cache.
    pub cache: Option<&'a Path>,
}

/// How the kernel was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH: 32-bit protected mode, EBX pointing to the start info.
    Pvh,
    /// The 64-bit boot protocol at the ELF entry: long mode, RSI pointing to the zero page.
    Linux64,
    /// The 64-bit boot protocol at a bzImage's 64-bit entry, its decompressor running first.
    BzImage,
}

impl BootProtocol {
    /// `pvh`, `linux64` or `bzimage`.
    pub fn name(self) -> &'static str {
        match self {
            BootProtocol::Pvh => "pvh",
            BootProtocol::Linux64 => "linux64",
            BootProtocol::BzImage => "bzimage",
        }
    }
}

/// The loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedKernel {
    /// The protocol it is entered through.
    pub protocol: BootProtocol,
    /// Its entry point.
    pub entry: u64,
    /// Where the kernel's image ends in guest RAM (for a bzImage entered through its own
    /// decompressor, the end of the room it needs).
    pub kernel_end: u64,
    /// Where the initrd was put, and its size.
    pub initrd: Option<(u64, u64)>,
    /// For a bzImage whose payload was decompressed on the host: how.
    pub decompressed: Option<Decompressed>,
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

/// Puts the initrd high in RAM below `max`, above the kernel, page-aligned.
fn place_initrd(
    ram: &GuestRam,
    path: &Path,
    data: &[u8],
    kernel_end: u64,
    max: u64,
) -> Result<(u64, u64)> {
    let size = data.len() as u64;
    let top = ram
        .regions()
        .iter()
        .map(|r| (r.guest_addr + r.size).min(max + 1))
        .filter(|&end| end > kernel_end + size)
        .max()
        .ok_or_else(|| {
            initrd_error(
                path,
                format!("{size} bytes do not fit in guest RAM between the kernel and {max:#x}"),
            )
        })?;
    let addr = (top - size) & !0xfff;
    if addr < kernel_end {
        return Err(initrd_error(
            path,
            format!("{size} bytes do not fit between the kernel and {max:#x}"),
        ));
    }
    ram.write(addr, data)
        .map_err(|_| initrd_error(path, format!("{size} bytes do not fit at {addr:#x}")))?;
    Ok((addr, size))
}

/// The ELF machine number of x86-64.
const EM_X86_64: u16 = 62;

/// Checks an ELF's class and machine, so a wrong-architecture kernel is named as such.
fn check_elf(data: &[u8]) -> std::result::Result<(), String> {
    if data.len() < 20 {
        return Err("an ELF file cut short before its header ends".into());
    }
    if data[4] != 2 {
        return Err("wrong architecture: a 32-bit ELF (x86-64 kernels are ELF64)".into());
    }
    let machine = u16::from_le_bytes([data[18], data[19]]);
    if machine != EM_X86_64 {
        return Err(format!(
            "wrong architecture: ELF machine {machine}, not x86-64 ({EM_X86_64})"
        ));
    }
    Ok(())
}

/// The guest-physical range an ELF64's loadable segments cover, from its program headers.
fn elf_extent(elf: &[u8]) -> Option<(u64, u64)> {
    let phoff = usize::try_from(u64_at(elf, 32)?).ok()?;
    let phentsize = usize::from(u16_at(elf, 54)?);
    let phnum = usize::from(u16_at(elf, 56)?);
    let segments = (0..phnum).filter_map(|i| {
        let ph = phoff + i * phentsize;
        // PT_LOAD: p_paddr at 24, p_memsz at 40.
        (u32_at(elf, ph)? == 1).then_some((u64_at(elf, ph + 24)?, u64_at(elf, ph + 40)?))
    });
    segments.fold(None, |acc, (addr, size)| {
        let end = addr.checked_add(size)?;
        Some(acc.map_or((addr, end), |(lo, hi): (u64, u64)| {
            (lo.min(addr), hi.max(end))
        }))
    })
}

/// Checks that an ELF kernel's segments fit in guest RAM, saying how much it needs if not.
fn fits_in_ram(ram: &GuestRam, elf: &[u8]) -> std::result::Result<(), String> {
    // Malformed headers pass: the ELF loader says what is wrong with them.
    elf_extent(elf).map_or(Ok(()), |(start, end)| check_fits(ram, start, end))
}

/// Loads `boot` into `ram` and sets vCPU `vcpu` up to enter it; the kernel finds the ACPI
/// tables at `rsdp`. Nothing is written to `ram` before the kernel image has been checked.
pub fn load(ram: &GuestRam, vcpu: &Vcpu, boot: &LinuxBoot<'_>, rsdp: u64) -> Result<LoadedKernel> {
    let path = boot.kernel;
    let data = std::fs::read(path).map_err(|e| kernel_error(path, read_failure(&e)))?;
    let mut cmdline = Cmdline::new(CMDLINE_MAX).map_err(|e| kernel_error(path, e))?;
    cmdline
        .insert_str(boot.cmdline)
        .map_err(|e| Error::config("cmdline", format!("{e}")))?;
    let initrd = boot
        .initrd
        .map(|p| {
            let data = std::fs::read(p).map_err(|e| initrd_error(p, read_failure(&e)))?;
            if data.is_empty() {
                return Err(initrd_error(p, "the file is empty"));
            }
            Ok((p, data))
        })
        .transpose()?;

    let image = if data.starts_with(b"\x7fELF") {
        check_elf(&data).map_err(|m| kernel_error(path, m))?;
        Image::Elf(data, None)
    } else if bzimage::is_bzimage(&data) {
        let header = bzimage::Header::parse(&data).map_err(|m| kernel_error(path, m))?;
        let host_decompresses = header.compression(&data).is_some_and(|c| c.supported());
        if boot.bzimage == BzImageMode::Decompress && host_decompresses {
            let cache = boot.cache.map(bzimage::KernelCache::new);
            let (vmlinux, how) = bzimage::vmlinux(&header, &data, cache.as_ref())
                .map_err(|e| kernel_error(path, e))?;
            check_elf(&vmlinux).map_err(|m| kernel_error(path, format!("its payload: {m}")))?;
            Image::Elf(vmlinux, Some(how))
        } else {
            Image::BzImage(data, header)
        }
    } else {
        return Err(kernel_error(
            path,
            format!(
                "neither an ELF vmlinux nor a bzImage: {}; a vmlinux starts with \"\\x7fELF\", \
                 a bzImage has \"HdrS\" at offset 0x202",
                describe_start(&data)
            ),
        ));
    };

    let (kernel, setup, initrd_max) = match &image {
        Image::Elf(elf, how) => {
            fits_in_ram(ram, elf).map_err(|m| kernel_error(path, m))?;
            let loaded = Elf::load(
                ram.memory(),
                None,
                &mut Cursor::new(elf),
                Some(GuestAddress(HIGHMEM_START)),
            )
            .map_err(|e| kernel_error(path, format!("not a loadable x86-64 ELF vmlinux: {e}")))?;
            let (protocol, entry) = match loaded.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => (BootProtocol::Pvh, entry.0),
                _ => (BootProtocol::Linux64, loaded.kernel_load.0),
            };
            let kernel = LoadedKernel {
                protocol,
                entry,
                kernel_end: loaded.kernel_end,
                initrd: None,
                decompressed: *how,
            };
            (kernel, None, INITRD_ADDR_MAX)
        }
        Image::BzImage(data, header) => {
            let (setup, load, end) = bzimage::load_protected_mode(ram, data, header)
                .map_err(|m| kernel_error(path, m))?;
            let kernel = LoadedKernel {
                protocol: BootProtocol::BzImage,
                entry: bzimage::entry_64(load).0,
                kernel_end: end,
                initrd: None,
                decompressed: None,
            };
            let max = u64::from(setup.initrd_addr_max).min(INITRD_ADDR_MAX);
            (kernel, Some(setup), max)
        }
    };

    load_cmdline(ram.memory(), GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(|e| Error::config("cmdline", format!("{e}")))?;
    let initrd = initrd
        .map(|(p, data)| place_initrd(ram, p, &data, kernel.kernel_end, initrd_max))
        .transpose()?;
    let map = e820(&ram.regions());
    let params = BootInfo {
        cmdline_len: boot.cmdline.len() as u32 + 1,
        initrd,
        map: &map,
        rsdp,
    };
    match kernel.protocol {
        BootProtocol::Pvh => {
            write_start_info(ram, &params)
                .map_err(|e| kernel_error(path, format!("cannot write the PVH start info: {e}")))?;
            vcpu.setup(ram, CpuMode::Protected, kernel.entry, 0)?;
            let mut regs = vcpu.get_regs()?;
            regs.rbx = START_INFO_ADDR;
            vcpu.set_regs(&regs)?;
        }
        BootProtocol::Linux64 | BootProtocol::BzImage => {
            write_zero_page(ram, setup, &params)
                .map_err(|e| kernel_error(path, format!("cannot write the zero page: {e}")))?;
            vcpu.setup(ram, CpuMode::Long, kernel.entry, 0)?;
            let mut regs = vcpu.get_regs()?;
            regs.rsi = ZERO_PAGE_ADDR;
            vcpu.set_regs(&regs)?;
        }
    }
    Ok(LoadedKernel { initrd, ..kernel })
}

/// A checked kernel image, ready to load.
enum Image {
    /// An ELF vmlinux (possibly decompressed from a bzImage, and how).
    Elf(Vec<u8>, Option<Decompressed>),
    /// A bzImage to enter through its own decompressor.
    BzImage(Vec<u8>, bzimage::Header),
}

/// What both boot protocols tell the kernel.
struct BootInfo<'a> {
    cmdline_len: u32,
    initrd: Option<(u64, u64)>,
    map: &'a [(u64, u64, u32)],
    rsdp: u64,
}

fn write_start_info(
    ram: &GuestRam,
    boot: &BootInfo<'_>,
) -> std::result::Result<(), linux_loader::configurator::Error> {
    let memmap: Vec<hvm_memmap_table_entry> = boot
        .map
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
        rsdp_paddr: boot.rsdp,
        ..Default::default()
    };
    if boot.initrd.is_some() {
        info.nr_modules = 1;
        info.modlist_paddr = MODLIST_ADDR;
    }
    let mut params = BootParams::new(&info, GuestAddress(START_INFO_ADDR));
    if let Some((addr, size)) = boot.initrd {
        let module = hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(MODLIST_ADDR));
    }
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    PvhBootConfigurator::write_bootparams(&params, ram.memory())
}

/// The zero page: a bzImage's own setup header when there is one, else a minimal one.
fn zero_page(setup: Option<setup_header>, boot: &BootInfo<'_>) -> boot_params {
    let mut params = boot_params {
        hdr: setup.unwrap_or(setup_header {
            boot_flag: bzimage::BOOT_FLAG,
            header: bzimage::HEADER_MAGIC,
            kernel_alignment: 0x100_0000,
            ..Default::default()
        }),
        ..Default::default()
    };
    params.hdr.type_of_loader = 0xff;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = boot.cmdline_len;
    if let Some((addr, size)) = boot.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = boot.rsdp;
    for (slot, &(addr, size, type_)) in params.e820_table.iter_mut().zip(boot.map) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: type_,
        };
    }
    params.e820_entries = boot.map.len().min(params.e820_table.len()) as u8;
    params
}

fn write_zero_page(
    ram: &GuestRam,
    setup: Option<setup_header>,
    boot: &BootInfo<'_>,
) -> std::result::Result<(), linux_loader::configurator::Error> {
    let params = zero_page(setup, boot);
    let bp = BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR));
    LinuxBootConfigurator::write_bootparams(&bp, ram.memory())
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

    #[test]
    fn the_memory_map_of_ram_past_3_gib_leaves_the_32_bit_hole_out() {
        let map = e820(&crate::x86::layout::ram_regions(5 << 30));
        assert_eq!(
            map,
            [
                (0, 0x9_fc00, E820_RAM),
                (0x9_fc00, 0x6_0400, E820_RESERVED),
                (0x10_0000, 0xbff0_0000, E820_RAM),
                (0x1_0000_0000, 0x8000_0000, E820_RAM),
            ]
        );
    }

    #[test]
    fn the_zero_page_carries_the_command_line_initrd_acpi_and_memory_map() {
        let map = [(0, 0x9_fc00, E820_RAM), (0x10_0000, 0x100_0000, E820_RAM)];
        let info = BootInfo {
            cmdline_len: 12,
            initrd: Some((0x80_0000, 0x1234)),
            map: &map,
            rsdp: 0xe_0000,
        };
        let p = zero_page(None, &info);
        let hdr = p.hdr;
        assert_eq!(
            (hdr.boot_flag, hdr.header, hdr.type_of_loader),
            (0xaa55, 0x5372_6448, 0xff)
        );
        assert_eq!(
            (hdr.cmd_line_ptr, hdr.cmdline_size),
            (CMDLINE_ADDR as u32, 12)
        );
        assert_eq!((hdr.ramdisk_image, hdr.ramdisk_size), (0x80_0000, 0x1234));
        assert_eq!({ p.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(p.e820_entries, 2);
        let second = p.e820_table[1];
        assert_eq!(
            ({ second.addr }, { second.size }, { second.r#type }),
            (0x10_0000, 0x100_0000, E820_RAM)
        );
    }

    #[test]
    fn a_bzimage_keeps_its_own_setup_header_in_the_zero_page() {
        let setup = setup_header {
            version: 0x020f,
            init_size: 0x3f9_8000,
            kernel_alignment: 0x20_0000,
            xloadflags: 1,
            ..Default::default()
        };
        let info = BootInfo {
            cmdline_len: 1,
            initrd: None,
            map: &[],
            rsdp: 0,
        };
        let hdr = zero_page(Some(setup), &info).hdr;
        assert_eq!(
            ({ hdr.version }, { hdr.init_size }, { hdr.kernel_alignment }),
            (0x020f, 0x3f9_8000, 0x20_0000)
        );
        assert_eq!((hdr.type_of_loader, { hdr.ramdisk_image }), (0xff, 0));
    }
}
