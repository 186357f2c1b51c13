//! Guest RAM: anonymous host mappings registered with KVM as memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

use crate::config::MemoryRegionConfig;
use crate::error::{Error, Result};

/// The guest's RAM, shared by the VM, its vCPU threads and host-side accessors.
#[derive(Debug)]
pub struct GuestRam {
    mem: GuestMemoryMmap,
}

impl GuestRam {
    /// Maps `regions` (sorted, validated) as anonymous, lazily populated host memory
    /// (`MAP_NORESERVE`: pages the guest never touches cost nothing).
    pub fn new(regions: &[MemoryRegionConfig]) -> Result<Self> {
        let mapped = regions
            .iter()
            .map(|r| {
                let map_err = |message: String| Error::MemoryMap {
                    guest_addr: r.guest_addr,
                    size: r.size,
                    message,
                };
                let size = usize::try_from(r.size).map_err(|e| map_err(e.to_string()))?;
                let mapping = MmapRegion::build(
                    None,
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                )
                .map_err(|e| map_err(e.to_string()))?;
                GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
                    .ok_or_else(|| map_err("region wraps the address space".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mem = GuestMemoryMmap::from_regions(mapped).map_err(|e| Error::MemoryMap {
            guest_addr: regions.first().map_or(0, |r| r.guest_addr),
            size: regions.iter().map(|r| r.size).sum(),
            message: e.to_string(),
        })?;
        Ok(GuestRam { mem })
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

    /// Returns the host address and length of the guest range `addr..addr+len`, which must lie
    /// inside one region. The pointer stays valid as long as this `GuestRam` lives.
    pub fn host_range(&self, addr: u64, len: u64) -> Result<*mut u8> {
        self.check(addr, len)?;
        self.mem
            .get_host_address(GuestAddress(addr))
            .map_err(|_| Error::GuestMemoryRange { addr, len })
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
    fn rejects_accesses_that_leave_a_region() {
        let ram = ram();
        for (addr, len) in [(0x1ffe, 4u64), (0x3000, 1), (0x10fff, 2), (u64::MAX, 2)] {
            let err = ram.write(addr, &vec![0; len as usize]).unwrap_err();
            assert_eq!(err.code(), "GUEST_MEMORY_RANGE", "{addr:#x}+{len}");
        }
    }
}
