//! Identity-mapped page tables for 64-bit guests.

use crate::error::Result;
use crate::memory::GuestRam;
use crate::x86::layout::{PD_ADDR, PDPT_ADDR, PML4_ADDR};

const PRESENT_WRITABLE: u64 = 0x3;
const HUGE: u64 = 0x80;

/// Writes page tables that identity-map [`IDENTITY_MAPPED`](crate::x86::layout::IDENTITY_MAPPED) bytes with 2 MiB pages.
/// They occupy `PML4_ADDR..PD_ADDR + 4 * 4096`.
pub fn write_identity_map(ram: &GuestRam) -> Result<()> {
    let mut pml4 = [0u8; 4096];
    pml4[..8].copy_from_slice(&(PDPT_ADDR | PRESENT_WRITABLE).to_le_bytes());
    ram.write(PML4_ADDR, &pml4)?;

    let mut pdpt = [0u8; 4096];
    for i in 0..4u64 {
        let pd = PD_ADDR + i * 4096;
        pdpt[i as usize * 8..][..8].copy_from_slice(&(pd | PRESENT_WRITABLE).to_le_bytes());
    }
    ram.write(PDPT_ADDR, &pdpt)?;

    let mut pd = [0u8; 4096];
    for dir in 0..4u64 {
        for (i, slot) in pd.chunks_exact_mut(8).enumerate() {
            let addr = (dir * 512 + i as u64) << 21;
            slot.copy_from_slice(&(addr | PRESENT_WRITABLE | HUGE).to_le_bytes());
        }
        ram.write(PD_ADDR + dir * 4096, &pd)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryRegionConfig;

    #[test]
    fn maps_addresses_to_themselves() {
        let ram = GuestRam::new(&[MemoryRegionConfig {
            guest_addr: 0,
            size: 0x10_0000,
        }])
        .unwrap();
        write_identity_map(&ram).unwrap();
        let read = |addr: u64| {
            let mut b = [0u8; 8];
            ram.read(addr, &mut b).unwrap();
            u64::from_le_bytes(b)
        };
        // Walk 0xfee0_0000 (the local APIC): PML4[0] -> PDPT[3] -> PD[0x1f7].
        let va = 0xfee0_0000u64;
        let pdpt = read(PML4_ADDR) & !0xfff;
        let pd = read(pdpt + ((va >> 30) & 0x1ff) * 8) & !0xfff;
        let pde = read(pd + ((va >> 21) & 0x1ff) * 8);
        assert_eq!(pde & HUGE, HUGE);
        assert_eq!(pde & !0x1f_ffff, va & !0x1f_ffff);
    }
}
