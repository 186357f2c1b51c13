//! bzImage kernels (the x86 boot protocol, version 2.12 and later for the 64-bit entry):
//! the setup header is checked, then either the payload is decompressed on the host into
//! the ELF `vmlinux` it holds (the fast path: no guest time spent in the kernel's own
//! decompressor, and the result cached by the image's SHA-256), or the protected-mode
//! kernel is loaded as the boot protocol says and entered at its 64-bit entry point.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use linux_loader::loader::KernelLoader;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::bzimage::BzImage;
use sha2::{Digest, Sha256};
use vm_memory::{ByteValued, GuestAddress};

use crate::loader::decompress::{Compression, DecompressError, decompress, split_size};
use crate::memory::GuestRam;

/// Where the setup header starts in the image.
const HEADER_OFFSET: usize = 0x1f1;
/// `HdrS`.
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// The boot sector's signature, where the setup header begins.
pub const BOOT_FLAG: u16 = 0xaa55;
/// The oldest protocol with a 64-bit entry point (`xloadflags`).
const MIN_VERSION: u16 = 0x020c;
/// `loadflags`: the protected-mode kernel loads at 1 MiB.
const LOADED_HIGH: u8 = 1 << 0;
/// `xloadflags`: the kernel has the 64-bit entry point at `startup_32 + 0x200`.
const XLF_KERNEL_64: u16 = 1 << 0;
/// The 64-bit entry point's offset from the start of the protected-mode kernel.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// The largest decompressed kernel accepted (a bomb stops here).
const MAX_VMLINUX: u64 = 1 << 30;

/// Recognises a bzImage by its boot flag and `HdrS` magic.
pub fn is_bzimage(data: &[u8]) -> bool {
    data.len() >= HEADER_OFFSET + std::mem::size_of::<setup_header>()
        && u16::from_le_bytes([data[0x1fe], data[0x1ff]]) == BOOT_FLAG
        && u32::from_le_bytes([data[0x202], data[0x203], data[0x204], data[0x205]]) == HEADER_MAGIC
}

/// A checked bzImage.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Its setup header.
    pub setup: setup_header,
    /// Where its protected-mode kernel starts in the file.
    pub kernel_offset: usize,
}

impl Header {
    /// Checks `data` is a whole bzImage that can be entered in 64-bit mode; the error says
    /// what is wrong.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if !is_bzimage(data) {
            return Err("not a bzImage: no boot flag 0xaa55 and HdrS magic at 0x1fe".into());
        }
        let end = HEADER_OFFSET + std::mem::size_of::<setup_header>();
        let setup = *setup_header::from_slice(&data[HEADER_OFFSET..end])
            .ok_or("the setup header is cut short")?;
        let version = setup.version;
        if version < MIN_VERSION {
            return Err(format!(
                "boot protocol {}.{:02} is older than 2.12, which has the 64-bit entry point",
                version >> 8,
                version & 0xff
            ));
        }
        if setup.loadflags & LOADED_HIGH == 0 {
            return Err("a zImage (not loaded high): only bzImages are supported".into());
        }
        if setup.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(
                "wrong architecture: a 32-bit kernel (no 64-bit entry point in xloadflags)".into(),
            );
        }
        let sects = match setup.setup_sects {
            0 => 4,
            n => usize::from(n),
        };
        let kernel_offset = (sects + 1) * 512;
        let syssize = setup.syssize;
        let kernel_len = syssize as usize * 16;
        if data.len() < kernel_offset + kernel_len {
            return Err(format!(
                "truncated: the header says {} bytes, the file has {}",
                kernel_offset + kernel_len,
                data.len()
            ));
        }
        let (offset, length) = (setup.payload_offset, setup.payload_length);
        if offset as usize + length as usize > kernel_len || length < 4 {
            return Err(format!(
                "the payload ({length} bytes at {offset:#x}) lies outside the protected-mode kernel ({kernel_len} bytes)"
            ));
        }
        Ok(Header {
            setup,
            kernel_offset,
        })
    }

    /// The compressed payload, with the uncompressed size after it.
    pub fn payload<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        let start = self.kernel_offset + self.setup.payload_offset as usize;
        &data[start..start + self.setup.payload_length as usize]
    }

    /// The uncompressed size the kernel's build appended to the payload.
    pub fn uncompressed_size(&self, data: &[u8]) -> u64 {
        // `parse` checked the payload holds at least the size field.
        split_size(self.payload(data)).map_or(0, |(_, size)| size)
    }

    /// The payload's compression, if recognised.
    pub fn compression(&self, data: &[u8]) -> Option<Compression> {
        Compression::detect(self.payload(data))
    }
}

/// How a bzImage's `vmlinux` was obtained on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decompressed {
    /// The payload's compression.
    pub compression: Compression,
    /// Whether it came from the cache rather than being decompressed now.
    pub from_cache: bool,
}

/// Decompressed kernels, stored by the SHA-256 of the bzImage they came from.
#[derive(Debug, Clone)]
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: &Path) -> Self {
        KernelCache { dir: dir.into() }
    }

    /// Where the kernel decompressed from `image` is (or would be) cached.
    pub fn entry(&self, image: &[u8]) -> PathBuf {
        let digest = Sha256::digest(image);
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.vmlinux"))
    }

    /// The kernel cached for `image`, if there is an ELF of the `size` the image records.
    fn get(&self, image: &[u8], size: u64) -> Option<Vec<u8>> {
        std::fs::read(self.entry(image))
            .ok()
            .filter(|data| data.len() as u64 == size && data.starts_with(b"\x7fELF"))
    }

    /// Stores `vmlinux` for `image`, atomically (a rename), so concurrent boots never read
    /// half a file. A cache that cannot be written is not an error: the boot goes on.
    fn put(&self, image: &[u8], vmlinux: &[u8]) {
        let path = self.entry(image);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, vmlinux))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// The ELF `vmlinux` inside bzImage `data`: from `cache` if it has it, else decompressed
/// (and then cached).
pub fn vmlinux(
    header: &Header,
    data: &[u8],
    cache: Option<&KernelCache>,
) -> Result<(Vec<u8>, Decompressed), DecompressError> {
    let compression = header.compression(data);
    let size = header.uncompressed_size(data);
    if let (Some(compression), Some(hit)) = (compression, cache.and_then(|c| c.get(data, size))) {
        return Ok((
            hit,
            Decompressed {
                compression,
                from_cache: true,
            },
        ));
    }
    let (compression, vmlinux) = decompress(header.payload(data), MAX_VMLINUX)?;
    if let Some(cache) = cache {
        cache.put(data, &vmlinux);
    }
    Ok((
        vmlinux,
        Decompressed {
            compression,
            from_cache: false,
        },
    ))
}

/// Loads the protected-mode kernel of bzImage `data` at `code32_start` (1 MiB); returns
/// the header as the zero page should carry it, the load address and where the kernel
/// may extend to while it decompresses itself.
pub fn load_protected_mode(
    ram: &GuestRam,
    data: &[u8],
    header: &Header,
) -> Result<(setup_header, u64, u64), String> {
    // The kernel decompresses itself to at least `pref_address`, needing `init_size` there.
    let (pref, init) = (header.setup.pref_address, u64::from(header.setup.init_size));
    let start = pref.max(u64::from(header.setup.code32_start));
    super::check_fits(ram, start, start + init)?;
    let loaded = BzImage::load(ram.memory(), None, &mut Cursor::new(data), None)
        .map_err(|e| format!("cannot load the protected-mode kernel: {e}"))?;
    let setup = loaded.setup_header.unwrap_or(header.setup);
    let load = loaded.kernel_load.0;
    let (pref, init) = (setup.pref_address, u64::from(setup.init_size));
    let end = loaded.kernel_end.max(pref.max(load) + init);
    Ok((setup, load, end))
}

/// Guest address of the 64-bit entry point of a protected-mode kernel loaded at `load`.
pub fn entry_64(load: u64) -> GuestAddress {
    GuestAddress(load + ENTRY_64_OFFSET)
}
