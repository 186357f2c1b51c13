//! Machine configuration and its validation against the host's limits.

use crate::error::{Error, Result};
use crate::kvm::KvmInfo;

/// Guest memory is mapped in pages of this size; region addresses and sizes must be multiples.
pub const PAGE_SIZE: u64 = 4096;

/// One contiguous range of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegionConfig {
    /// Guest-physical start address.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What a machine is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// Guest RAM regions; holes between them (such as the PCI gap) are left unmapped, so guest
    /// accesses there become MMIO exits.
    pub memory: Vec<MemoryRegionConfig>,
    /// Number of vCPUs.
    pub vcpus: u32,
}

/// The host's physical address width, which bounds guest-physical addresses.
pub fn host_phys_addr_bits() -> u32 {
    let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max_ext >= 0x8000_0008 {
        std::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff
    } else {
        36
    }
}

impl MachineConfig {
    /// Checks the configuration against `host`'s limits and returns the regions sorted by address.
    pub fn validate(&self, host: &KvmInfo) -> Result<Vec<MemoryRegionConfig>> {
        if self.vcpus == 0 {
            return Err(Error::config("vcpus", "must be at least 1"));
        }
        if self.vcpus > host.max_vcpus {
            return Err(Error::config(
                "vcpus",
                format!(
                    "{} is more than the host's KVM allows per VM (max {})",
                    self.vcpus, host.max_vcpus
                ),
            ));
        }
        if self.memory.is_empty() {
            return Err(Error::config("memory", "at least one region is needed"));
        }
        if self.memory.len() as u64 > u64::from(host.max_memslots) {
            return Err(Error::config(
                "memory",
                format!(
                    "{} regions are more than the host's KVM memory slots (max {})",
                    self.memory.len(),
                    host.max_memslots
                ),
            ));
        }
        let addr_limit = 1u64 << host_phys_addr_bits();
        for (i, r) in self.memory.iter().enumerate() {
            let field = |name: &str| format!("memory[{i}].{name}");
            if r.size == 0 {
                return Err(Error::config(field("size"), "must be greater than 0"));
            }
            if r.size % PAGE_SIZE != 0 {
                return Err(Error::config(
                    field("size"),
                    format!("{:#x} is not a multiple of the page size (4 KiB)", r.size),
                ));
            }
            if r.guest_addr % PAGE_SIZE != 0 {
                return Err(Error::config(
                    field("guestAddr"),
                    format!(
                        "{:#x} is not aligned to the page size (4 KiB)",
                        r.guest_addr
                    ),
                ));
            }
            match r.guest_addr.checked_add(r.size) {
                Some(end) if end <= addr_limit => {}
                _ => {
                    return Err(Error::config(
                        field("size"),
                        format!(
                            "region {:#x} + {:#x} ends beyond the host's {}-bit physical \
                             address space (limit {addr_limit:#x})",
                            r.guest_addr,
                            r.size,
                            host_phys_addr_bits()
                        ),
                    ));
                }
            }
            if usize::try_from(r.size).is_err() {
                return Err(Error::config(
                    field("size"),
                    "larger than the host address space",
                ));
            }
        }
        let mut sorted = self.memory.clone();
        sorted.sort_by_key(|r| r.guest_addr);
        for pair in sorted.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.guest_addr + a.size > b.guest_addr {
                let i = self.memory.iter().position(|r| *r == b).unwrap_or(0);
                return Err(Error::config(
                    format!("memory[{i}].guestAddr"),
                    format!(
                        "region at {:#x} overlaps the region {:#x}..{:#x}",
                        b.guest_addr,
                        a.guest_addr,
                        a.guest_addr + a.size
                    ),
                ));
            }
        }
        Ok(sorted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> KvmInfo {
        KvmInfo {
            path: "/dev/kvm".into(),
            api_version: 12,
            recommended_vcpus: 4,
            max_vcpus: 8,
            max_memslots: 4,
            vcpu_mmap_size: 12288,
            capabilities: Vec::new(),
            missing: Vec::new(),
        }
    }

    fn config(memory: &[(u64, u64)], vcpus: u32) -> MachineConfig {
        MachineConfig {
            memory: memory
                .iter()
                .map(|&(guest_addr, size)| MemoryRegionConfig { guest_addr, size })
                .collect(),
            vcpus,
        }
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidConfig { field, .. } => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_layout_with_a_hole() {
        let sorted = config(&[(0x1_0000_0000, 0x10_0000), (0, 0x10_0000)], 2)
            .validate(&host())
            .unwrap();
        assert_eq!(sorted[0].guest_addr, 0);
        assert_eq!(sorted[1].guest_addr, 0x1_0000_0000);
    }

    #[test]
    fn rejects_each_bad_field_by_name() {
        let h = host();
        assert_eq!(
            field_of(config(&[(0, 4096)], 0).validate(&h).unwrap_err()),
            "vcpus"
        );
        assert_eq!(
            field_of(config(&[(0, 4096)], 9).validate(&h).unwrap_err()),
            "vcpus"
        );
        assert_eq!(field_of(config(&[], 1).validate(&h).unwrap_err()), "memory");
        assert_eq!(
            field_of(config(&[(0, 0)], 1).validate(&h).unwrap_err()),
            "memory[0].size"
        );
        assert_eq!(
            field_of(config(&[(0, 100)], 1).validate(&h).unwrap_err()),
            "memory[0].size"
        );
        assert_eq!(
            field_of(config(&[(0x10, 4096)], 1).validate(&h).unwrap_err()),
            "memory[0].guestAddr"
        );
        assert_eq!(
            field_of(
                config(&[(0, 0x2000), (0x1000, 0x1000)], 1)
                    .validate(&h)
                    .unwrap_err()
            ),
            "memory[1].guestAddr"
        );
        assert_eq!(
            field_of(
                config(&[(u64::MAX - 4095, 4096)], 1)
                    .validate(&h)
                    .unwrap_err()
            ),
            "memory[0].size"
        );
        let five = [
            (0, 4096),
            (0x1000, 4096),
            (0x2000, 4096),
            (0x3000, 4096),
            (0x4000, 4096),
        ];
        assert_eq!(
            field_of(config(&five, 1).validate(&h).unwrap_err()),
            "memory"
        );
    }
}
