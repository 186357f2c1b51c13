//! Guest RAM: anonymous host mappings registered with KVM as memory slots.

use std::fs::{File, OpenOptions};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

use crate::config::MemoryRegionConfig;
use crate::error::{Error, Result};

/// What backs guest RAM on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backing {
    /// Private anonymous memory (the default).
    #[default]
    Anonymous,
    /// A memfd, mapped shared: hand its fd to another process to share the guest's RAM.
    Memfd,
    /// A file, created or resized to the total RAM size and mapped shared; the regions lie
    /// in it one after another, in address order.
    File(PathBuf),
}

/// How guest RAM is mapped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryOptions {
    /// What backs it.
    pub backing: Backing,
    /// Ask for transparent huge pages (`MADV_HUGEPAGE`) where the host has them.
    pub huge_pages: bool,
}

/// The guest's RAM, shared by the VM, its vCPU threads and host-side accessors.
#[derive(Debug)]
pub struct GuestRam {
    mem: GuestMemoryMmap,
    file: Option<Arc<File>>,
}

fn memfd() -> std::io::Result<File> {
    // SAFETY: the name is a valid C string; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"kvmkit-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl GuestRam {
    /// Maps `regions` (sorted, validated) as anonymous, lazily populated host memory
    /// (`MAP_NORESERVE`: pages the guest never touches cost nothing).
    pub fn new(regions: &[MemoryRegionConfig]) -> Result<Self> {
        Self::with_options(regions, &MemoryOptions::default())
    }

    /// Maps `regions` (sorted, validated) as `options` say, lazily populated
    /// (`MAP_NORESERVE`: pages the guest never touches cost nothing).
    pub fn with_options(regions: &[MemoryRegionConfig], options: &MemoryOptions) -> Result<Self> {
        let total: u64 = regions.iter().map(|r| r.size).sum();
        let whole = |message: String| Error::MemoryMap {
            guest_addr: regions.first().map_or(0, |r| r.guest_addr),
            size: total,
            message,
        };
        let file = match &options.backing {
            Backing::Anonymous => None,
            Backing::Memfd => Some(memfd().map_err(|e| whole(format!("memfd_create: {e}")))?),
            Backing::File(path) => Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(|e| whole(format!("{}: {e}", path.display())))?,
            ),
        };
        if let Some(f) = &file {
            f.set_len(total)
                .map_err(|e| whole(format!("cannot size the backing to {total} bytes: {e}")))?;
        }
        let file = file.map(Arc::new);
        let mut offset = 0u64;
        let mapped = regions
            .iter()
            .map(|r| {
                let map_err = |message: String| Error::MemoryMap {
                    guest_addr: r.guest_addr,
                    size: r.size,
                    message,
                };
                let size = usize::try_from(r.size).map_err(|e| map_err(e.to_string()))?;
                let (file_offset, sharing) = match &file {
                    Some(f) => (
                        Some(FileOffset::from_arc(Arc::clone(f), offset)),
                        libc::MAP_SHARED,
                    ),
                    None => (None, libc::MAP_ANONYMOUS | libc::MAP_PRIVATE),
                };
                offset += r.size;
                let mapping = MmapRegion::build(
                    file_offset,
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    sharing | libc::MAP_NORESERVE,
                )
                .map_err(|e| map_err(e.to_string()))?;
                if options.huge_pages {
                    // SAFETY: the range is exactly the mapping just created; madvise only
                    // changes how the kernel backs it.
                    let rc = unsafe {
                        libc::madvise(mapping.as_ptr().cast(), size, libc::MADV_HUGEPAGE)
                    };
                    if rc != 0 {
                        return Err(map_err(format!(
                            "the host does not offer transparent huge pages here: {}",
                            std::io::Error::last_os_error()
                        )));
                    }
                }
                GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
                    .ok_or_else(|| map_err("region wraps the address space".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mem = GuestMemoryMmap::from_regions(mapped).map_err(|e| Error::MemoryMap {
            guest_addr: regions.first().map_or(0, |r| r.guest_addr),
            size: regions.iter().map(|r| r.size).sum(),
            message: e.to_string(),
        })?;
        Ok(GuestRam { mem, file })
    }

    /// The memfd or file backing guest RAM, if any: its regions lie in it one after
    /// another, in address order.
    pub fn backing_file(&self) -> Option<&File> {
        self.file.as_deref()
    }

    /// The host mapping of region `index` (in address order): its guest address, host
    /// pointer and length. The pointer stays valid as long as this `GuestRam` lives.
    pub fn host_region(&self, index: usize) -> Option<(u64, *mut u8, usize)> {
        let region = self.mem.iter().nth(index)?;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .ok()?;
        Some((region.start_addr().0, host, region.len() as usize))
    }

    /// Registers every region with `vm` as a KVM memory slot, in order, from slot 0.
    pub fn register(&self, vm: &VmFd) -> Result<()> {
        for (slot, region) in self.mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| Error::MemoryMap {
                    guest_addr: region.start_addr().0,
                    size: region.len(),
                    message: e.to_string(),
                })?;
            let desc = kvm_userspace_memory_region {
                slot: u32::try_from(slot).unwrap_or(u32::MAX),
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range is a live mapping owned by `self.mem`, which the `Vm` keeps
            // alive until after the VM fd (and so the slot) is closed.
            unsafe { vm.set_user_memory_region(desc) }
                .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// The vm-memory view of guest RAM, for loaders and devices.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Copies `data` into guest RAM at `addr`; the range must lie inside one region.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.check(addr, data.len() as u64)?;
        self.mem
            .write_slice(data, GuestAddress(addr))
            .map_err(|_| Error::GuestMemoryRange {
                addr,
                len: data.len() as u64,
            })
    }

    /// Copies guest RAM at `addr` into `buf`; the range must lie inside one region.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.check(addr, buf.len() as u64)?;
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| Error::GuestMemoryRange {
                addr,
                len: buf.len() as u64,
            })
    }

    /// Whether `addr..addr+len` lies inside a single region.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        self.check(addr, len).is_ok()
    }

    /// Succeeds when `addr..addr+len` lies inside a single region.
    fn check(&self, addr: u64, len: u64) -> Result<()> {
        let out_of_range = || Error::GuestMemoryRange { addr, len };
        let end = addr.checked_add(len).ok_or_else(out_of_range)?;
        let region = self
            .mem
            .find_region(GuestAddress(addr))
            .ok_or_else(out_of_range)?;
        if end > region.start_addr().0 + region.len() {
            return Err(out_of_range());
        }
        Ok(())
    }

    /// The regions as configured, in address order.
    pub fn regions(&self) -> Vec<MemoryRegionConfig> {
        self.mem
            .iter()
            .map(|r| MemoryRegionConfig {
                guest_addr: r.start_addr().0,
                size: r.len(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> GuestRam {
        GuestRam::new(&[
            MemoryRegionConfig {
                guest_addr: 0,
                size: 0x2000,
            },
            MemoryRegionConfig {
                guest_addr: 0x10000,
                size: 0x1000,
            },
        ])
        .unwrap()
    }

    #[test]
    fn round_trips_bytes_within_a_region() {
        let ram = ram();
        ram.write(0x1ffc, &[1, 2, 3, 4]).unwrap();
        let mut buf = [0u8; 4];
        ram.read(0x1ffc, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
    }

    #[test]
    fn file_backing_shares_guest_ram_with_the_file() {
        let path = std::env::temp_dir().join(format!("kvmkit-ram-{}", std::process::id()));
        let options = MemoryOptions {
            backing: Backing::File(path.clone()),
            huge_pages: false,
        };
        let regions = [
            MemoryRegionConfig {
                guest_addr: 0,
                size: 0x1000,
            },
            MemoryRegionConfig {
                guest_addr: 0x10000,
                size: 0x1000,
            },
        ];
        let ram = GuestRam::with_options(&regions, &options).unwrap();
        ram.write(0x10010, b"shared").unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(on_disk.len(), 0x2000);
        assert_eq!(
            &on_disk[0x1010..0x1016],
            b"shared",
            "the second region follows the first"
        );
    }

    #[test]
    fn memfd_backing_is_shared_through_its_fd() {
        use std::io::{Read, Seek, SeekFrom};
        let options = MemoryOptions {
            backing: Backing::Memfd,
            huge_pages: true,
        };
        let ram = GuestRam::with_options(
            &[MemoryRegionConfig {
                guest_addr: 0,
                size: 0x20_0000,
            }],
            &options,
        )
        .unwrap();
        ram.write(0x100, b"memfd").unwrap();
        let mut f = ram.backing_file().unwrap().try_clone().unwrap();
        let mut buf = [0u8; 5];
        f.seek(SeekFrom::Start(0x100)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"memfd");
    }

    #[test]
    fn rejects_accesses_that_leave_a_region() {
        let ram = ram();
        for (addr, len) in [(0x1ffe, 4u64), (0x3000, 1), (0x10fff, 2), (u64::MAX, 2)] {
            let err = ram.write(addr, &vec![0; len as usize]).unwrap_err();
            assert_eq!(err.code(), "GUEST_MEMORY_RANGE", "{addr:#x}+{len}");
        }
    }
}
