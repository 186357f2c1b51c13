//! Multiboot (v1) kernels, as QEMU's `-kernel` loads them: a 32-bit ELF (or any image
//! whose header gives its load addresses), entered in flat 32-bit protected mode with EAX
//! holding the boot loader magic and EBX the multiboot information: memory sizes, the
//! memory map, the command line and modules.

use std::path::Path;

use crate::config::MemoryRegionConfig;
use crate::error::{Error, Result};
use crate::loader::linux::e820;
use crate::loader::{u16_at, u32_at};
use crate::memory::GuestRam;
use crate::vcpu::Vcpu;
use crate::x86::layout::{CMDLINE_ADDR, CMDLINE_MAX, HIGHMEM_START, MULTIBOOT_INFO_ADDR};
use crate::x86::mode::CpuMode;

/// The header's magic.
const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What the kernel finds in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// The header must lie, 4-byte aligned, within the image's first 8 KiB.
const HEADER_SEARCH: usize = 8192;
/// Header flags kvmkit honours: page-aligned modules (0), memory information (1), and the
/// load addresses in the header (16). Video mode (2) is refused: there is no framebuffer.
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_ADDRESSES: u32 = 1 << 16;
/// Information flags: mem_lower/upper, cmdline, mods, mmap, boot loader name.
const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

// The multiboot information at MULTIBOOT_INFO_ADDR is followed by the memory map, the
// module list and the strings; the command line goes at CMDLINE_ADDR.
const MMAP_ADDR: u64 = MULTIBOOT_INFO_ADDR + 0x100;
const MODS_ADDR: u64 = MULTIBOOT_INFO_ADDR + 0x800;
const STRINGS_ADDR: u64 = MULTIBOOT_INFO_ADDR + 0x1000;
const STRINGS_END: u64 = CMDLINE_ADDR;
const LOADER_NAME: &[u8] = b"kvmkit\0";

/// A module to hand the kernel: a file and its command line.
#[derive(Debug, Clone, Copy)]
pub struct Module<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its string (often its name or arguments).
    pub cmdline: &'a str,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct MultibootBoot<'a> {
    /// The kernel.
    pub kernel: &'a Path,
    /// Its command line.
    pub cmdline: &'a str,
    /// Modules, loaded page-aligned after the kernel in order.
    pub modules: &'a [Module<'a>],
}

/// The loaded kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedMultiboot {
    /// Its entry point.
    pub entry: u64,
    /// Where its image ends.
    pub kernel_end: u64,
    /// Where each module was put: (start, end).
    pub modules: Vec<(u64, u64)>,
}

/// One piece of the image to copy: file bytes to a guest address, then zeroes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The guest-physical address it goes to.
    pub addr: u64,
    /// The bytes of the image it takes (always within the image).
    pub file: std::ops::Range<usize>,
    /// Its size in guest memory (at least the file bytes; the rest is zeroed).
    pub mem_size: u64,
}

/// The image's layout: its segments and entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// What to copy where.
    pub segments: Vec<Segment>,
    /// The entry point.
    pub entry: u64,
}

/// Finds the multiboot header: its offset and flags.
pub fn find_header(data: &[u8]) -> Option<(usize, u32)> {
    (0..data.len().min(HEADER_SEARCH).saturating_sub(11))
        .step_by(4)
        .find_map(|at| {
            let magic = u32_at(data, at)?;
            let flags = u32_at(data, at + 4)?;
            let checksum = u32_at(data, at + 8)?;
            (magic == HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(checksum) == 0)
                .then_some((at, flags))
        })
}

/// The layout from the header's address fields (flag 16).
fn layout_from_header(data: &[u8], at: usize) -> std::result::Result<Layout, String> {
    let field = |i: usize| u32_at(data, at + 12 + 4 * i).ok_or("the header is cut short");
    let (header_addr, load_addr, load_end, bss_end, entry) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    let start = (at as u64)
        .checked_sub(u64::from(header_addr.wrapping_sub(load_addr)))
        .ok_or("load_addr lies after header_addr")? as usize;
    let end = if load_end == 0 {
        data.len()
    } else {
        start
            + load_end
                .checked_sub(load_addr)
                .ok_or("load_end_addr < load_addr")? as usize
    };
    if end > data.len() || start > end {
        return Err(format!(
            "truncated: the header loads {} bytes from offset {start}, the file has {}",
            end.saturating_sub(start),
            data.len()
        ));
    }
    let file_size = (end - start) as u64;
    let mem_size = if bss_end == 0 {
        file_size
    } else {
        u64::from(bss_end.saturating_sub(load_addr)).max(file_size)
    };
    Ok(Layout {
        segments: vec![Segment {
            addr: load_addr.into(),
            file: start..end,
            mem_size,
        }],
        entry: entry.into(),
    })
}

/// The layout from a 32-bit ELF's program headers (PT_LOAD at their physical addresses).
fn layout_from_elf(data: &[u8]) -> std::result::Result<Layout, String> {
    if !data.starts_with(b"\x7fELF") {
        return Err("neither an ELF nor a header with load addresses (flag 16)".into());
    }
    match (data.get(4), u16_at(data, 18)) {
        (Some(1), Some(3)) => {}
        (Some(2), _) => {
            return Err(
                "wrong architecture: a 64-bit ELF; Multiboot kernels are 32-bit ELFs".into(),
            );
        }
        (_, machine) => {
            return Err(format!(
                "wrong architecture: ELF machine {machine:?}, not i386 (3)"
            ));
        }
    }
    let short = || "truncated: the ELF headers are cut short".to_string();
    let entry = u32_at(data, 24).ok_or_else(short)?;
    let phoff = u32_at(data, 28).ok_or_else(short)? as usize;
    let phentsize = usize::from(u16_at(data, 42).ok_or_else(short)?);
    let phnum = usize::from(u16_at(data, 44).ok_or_else(short)?);
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let field = |n: usize| u32_at(data, ph + 4 * n).ok_or_else(short);
        if field(0)? != 1 {
            continue; // not PT_LOAD
        }
        let (offset, paddr, filesz, memsz) = (field(1)?, field(3)?, field(4)?, field(5)?);
        let file = offset as usize..offset as usize + filesz as usize;
        if file.end > data.len() {
            return Err(format!(
                "truncated: a segment needs bytes up to {}, the file has {}",
                file.end,
                data.len()
            ));
        }
        segments.push(Segment {
            addr: paddr.into(),
            file,
            mem_size: memsz.max(filesz).into(),
        });
    }
    if segments.is_empty() {
        return Err("the ELF has nothing to load".into());
    }
    Ok(Layout {
        segments,
        entry: entry.into(),
    })
}

/// Checks `data` is a Multiboot kernel kvmkit can boot and works out its layout, without
/// loading anything.
///
/// # Errors
///
/// A message saying what is wrong with the image.
pub fn layout(data: &[u8]) -> std::result::Result<Layout, String> {
    let (at, flags) =
        find_header(data).ok_or("no Multiboot header (magic 0x1badb002) in the first 8 KiB")?;
    if flags & FLAG_VIDEO_MODE != 0 {
        return Err("it asks for a video mode, and kvmkit has no framebuffer".into());
    }
    let unknown = flags & 0xffff & !(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO);
    if unknown != 0 {
        return Err(format!(
            "it requires features kvmkit does not know ({unknown:#x})"
        ));
    }
    if flags & FLAG_ADDRESSES != 0 {
        layout_from_header(data, at)
    } else {
        layout_from_elf(data)
    }
}

fn image_error(path: &Path, what: &'static str, message: impl std::fmt::Display) -> Error {
    Error::Image {
        file: path.display().to_string(),
        what,
        message: message.to_string(),
    }
}

/// KiB of RAM from 1 MiB up to the first hole, and below 640 KiB.
fn memory_kib(regions: &[MemoryRegionConfig]) -> (u32, u32) {
    let low = regions
        .iter()
        .find(|r| r.guest_addr == 0)
        .map_or(0, |r| r.size.min(0xa_0000) / 1024);
    let upper = regions
        .iter()
        .find(|r| r.guest_addr <= HIGHMEM_START && r.guest_addr + r.size > HIGHMEM_START)
        .map_or(0, |r| (r.guest_addr + r.size - HIGHMEM_START) / 1024);
    (low as u32, upper.min(u64::from(u32::MAX)) as u32)
}

/// Loads `boot` into `ram` and sets vCPU `vcpu` up to enter it. Every file is read and
/// checked before anything is written.
pub fn load(ram: &GuestRam, vcpu: &Vcpu, boot: &MultibootBoot<'_>) -> Result<LoadedMultiboot> {
    let path = boot.kernel;
    let data = std::fs::read(path).map_err(|e| image_error(path, "kernel", e))?;
    let layout = layout(&data).map_err(|m| image_error(path, "kernel", m))?;
    if boot.cmdline.len() >= CMDLINE_MAX || boot.cmdline.contains('\0') {
        return Err(Error::config(
            "cmdline",
            format!("must be under {CMDLINE_MAX} bytes, without NUL"),
        ));
    }
    let modules = boot
        .modules
        .iter()
        .map(|m| {
            std::fs::read(m.path)
                .map(|data| (m, data))
                .map_err(|e| image_error(m.path, "module", e))
        })
        .collect::<Result<Vec<_>>>()?;

    let mut kernel_end = 0;
    for s in &layout.segments {
        let end = s.addr + s.mem_size;
        if !ram.contains(s.addr, s.mem_size) {
            return Err(image_error(
                path,
                "kernel",
                format!("it loads at {:#x}-{end:#x}, outside guest RAM", s.addr),
            ));
        }
        kernel_end = kernel_end.max(end);
    }
    for s in &layout.segments {
        ram.write(s.addr, &data[s.file.clone()])?;
        let zeroes = s.mem_size - s.file.len() as u64;
        ram.write(s.addr + s.file.len() as u64, &vec![0; zeroes as usize])?;
    }

    let page = |a: u64| (a + 0xfff) & !0xfff;
    let mut next = page(kernel_end);
    let mut strings = STRINGS_ADDR;
    let mut put_string = |s: &str| -> Result<u32> {
        let at = strings;
        let bytes = [s.as_bytes(), b"\0"].concat();
        if at + bytes.len() as u64 > STRINGS_END {
            return Err(Error::config(
                "modules",
                "their command lines do not fit in the 60 KiB kvmkit gives them",
            ));
        }
        ram.write(at, &bytes)?;
        strings += bytes.len() as u64;
        Ok(at as u32)
    };
    let mut placed = Vec::new();
    let mut list = Vec::new();
    for (m, bytes) in &modules {
        let (start, end) = (next, next + bytes.len() as u64);
        if !ram.contains(start, bytes.len() as u64) || end > u64::from(u32::MAX) {
            return Err(image_error(
                m.path,
                "module",
                format!(
                    "{} bytes do not fit in guest RAM at {start:#x}",
                    bytes.len()
                ),
            ));
        }
        ram.write(start, bytes)?;
        for field in [start as u32, end as u32, put_string(m.cmdline)?, 0] {
            list.extend_from_slice(&field.to_le_bytes());
        }
        placed.push((start, end));
        next = page(end);
    }
    ram.write(MODS_ADDR, &list)?;
    ram.write(CMDLINE_ADDR, &[boot.cmdline.as_bytes(), b"\0"].concat())?;
    let name = STRINGS_END - LOADER_NAME.len() as u64;
    ram.write(name, LOADER_NAME)?;

    let mut mmap = Vec::new();
    for (addr, size, kind) in e820(&ram.regions()) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&addr.to_le_bytes());
        mmap.extend_from_slice(&size.to_le_bytes());
        mmap.extend_from_slice(&kind.to_le_bytes());
    }
    ram.write(MMAP_ADDR, &mmap)?;
    let (mem_lower, mem_upper) = memory_kib(&ram.regions());
    let mut info = [0u32; 22];
    info[0] = INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MMAP | INFO_LOADER_NAME;
    info[1] = mem_lower;
    info[2] = mem_upper;
    info[4] = CMDLINE_ADDR as u32;
    info[5] = modules.len() as u32;
    info[6] = MODS_ADDR as u32;
    info[11] = mmap.len() as u32;
    info[12] = MMAP_ADDR as u32;
    info[16] = name as u32;
    let info: Vec<u8> = info.iter().flat_map(|w| w.to_le_bytes()).collect();
    ram.write(MULTIBOOT_INFO_ADDR, &info)?;

    vcpu.setup(ram, CpuMode::Protected, layout.entry, 0)?;
    let mut regs = vcpu.get_regs()?;
    regs.rax = BOOTLOADER_MAGIC.into();
    regs.rbx = MULTIBOOT_INFO_ADDR;
    vcpu.set_regs(&regs)?;
    Ok(LoadedMultiboot {
        entry: layout.entry,
        kernel_end,
        modules: placed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u32, extra: &[u32]) -> Vec<u8> {
        let mut h = vec![0u8; 32]; // something before the header
        for w in [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
        ]
        .iter()
        .chain(extra)
        {
            h.extend_from_slice(&w.to_le_bytes());
        }
        h
    }

    #[test]
    fn finds_the_header_only_with_a_good_checksum_within_8_kib() {
        let image = header(FLAG_MEMORY_INFO, &[]);
        assert_eq!(find_header(&image), Some((32, FLAG_MEMORY_INFO)));
        let mut bad = image.clone();
        bad[40] ^= 1;
        assert_eq!(find_header(&bad), None);
        let late = [vec![0u8; 8192], image].concat();
        assert_eq!(find_header(&late), None);
    }

    #[test]
    fn the_address_fields_give_the_layout_of_a_flat_image() {
        // header_addr, load_addr, load_end_addr (0: to the end), bss_end_addr, entry_addr.
        let mut image = header(
            FLAG_ADDRESSES,
            &[0x10_0020, 0x10_0000, 0, 0x10_2000, 0x10_0040],
        );
        image.resize(0x100, 0x90);
        let flat = layout(&image).unwrap();
        assert_eq!(flat.entry, 0x10_0040);
        assert_eq!(
            flat.segments,
            [Segment {
                addr: 0x10_0000,
                file: 0..0x100,
                mem_size: 0x2000
            }]
        );
        let mut short = header(
            FLAG_ADDRESSES,
            &[0x10_0020, 0x10_0000, 0x10_1000, 0, 0x10_0040],
        );
        short.resize(0x100, 0);
        assert!(layout(&short).unwrap_err().starts_with("truncated"));
    }

    #[test]
    fn says_why_an_image_cannot_be_booted() {
        assert!(
            layout(b"just text")
                .unwrap_err()
                .contains("no Multiboot header")
        );
        assert!(
            layout(&header(FLAG_VIDEO_MODE, &[]))
                .unwrap_err()
                .contains("video")
        );
        assert!(
            layout(&header(1 << 5, &[]))
                .unwrap_err()
                .contains("does not know")
        );
        assert!(
            layout(&header(0, &[]))
                .unwrap_err()
                .contains("neither an ELF")
        );
        let mut elf64 = b"\x7fELF\x02".to_vec();
        elf64.resize(64, 0);
        elf64.extend(header(0, &[]));
        assert!(layout(&elf64).unwrap_err().contains("64-bit ELF"));
    }

    #[test]
    fn memory_sizes_count_from_zero_and_from_1_mib_to_the_first_hole() {
        let regions = [
            MemoryRegionConfig {
                guest_addr: 0,
                size: 0x200_0000,
            },
            MemoryRegionConfig {
                guest_addr: 0x1_0000_0000,
                size: 0x1000_0000,
            },
        ];
        assert_eq!(memory_kib(&regions), (640, 31 * 1024));
    }
}
