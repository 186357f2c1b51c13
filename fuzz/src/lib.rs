//! What the fuzz targets share: a guest RAM to load kernels into, and the reading of an
//! input as a sequence of register accesses.

use std::sync::LazyLock;

use kvmkit_core::bus::BusDevice;
use kvmkit_core::config::MemoryRegionConfig;
use kvmkit_core::memory::GuestRam;

/// 64 MiB of guest RAM from address 0, shared by every run of a loader target: loaders
/// write into it and never read what an earlier input left. No KVM is needed for it.
pub static RAM: LazyLock<GuestRam> = LazyLock::new(|| {
    let region = MemoryRegionConfig {
        guest_addr: 0,
        size: 64 << 20,
    };
    GuestRam::new(&[region]).expect("64 MiB of anonymous memory")
});

/// One access to a device's registers, as a vCPU's exit would bring it.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// A write (of `value`) rather than a read.
    pub write: bool,
    /// The register's offset in the device's range.
    pub offset: u64,
    /// 1 to 4 bytes, as port I/O allows.
    pub size: usize,
    /// What a write writes (its low `size` bytes).
    pub value: u32,
    /// The first byte of the chunk, for targets that read more into it.
    pub op: u8,
}

/// Reads `data` as accesses to a device of `ports` registers: 3 bytes each (an op byte
/// whose bit 0 chooses a write and bits 1-2 the size; the offset; the value).
pub fn accesses(data: &[u8], ports: u64) -> impl Iterator<Item = Access> + '_ {
    data.chunks_exact(3).map(move |c| Access {
        write: c[0] & 1 != 0,
        offset: u64::from(c[1]) % ports,
        size: usize::from((c[0] >> 1) & 3) + 1,
        value: u32::from(c[2]) * 0x0101_0101,
        op: c[0],
    })
}

/// Applies `access` to `device` as the bus does; returns what a read read.
pub fn apply(device: &mut dyn BusDevice, access: Access) -> [u8; 4] {
    let mut bytes = access.value.to_le_bytes();
    if access.write {
        let _ = device.write(access.offset, &bytes[..access.size]);
    } else {
        device.read(access.offset, &mut bytes[..access.size]);
    }
    bytes
}
