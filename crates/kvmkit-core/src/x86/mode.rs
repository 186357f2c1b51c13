//! Putting a vCPU into real mode, 32-bit flat protected mode or 64-bit long mode.

use kvm_bindings::{kvm_regs, kvm_sregs};

use super::gdt::{self, CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR};
use super::layout::{GDT_ADDR, PML4_ADDR};
use super::paging;
use crate::error::Result;
use crate::memory::GuestRam;

/// The processor mode a vCPU starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// 16-bit real mode with all segments based at 0: `rip` is the physical entry address.
    Real,
    /// 32-bit protected mode with flat 4 GiB segments and no paging.
    Protected,
    /// 64-bit long mode with the low 4 GiB identity-mapped.
    Long,
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Writes what `mode` needs into guest RAM (GDT, page tables) and returns the special
/// registers for it, starting from `sregs` as KVM reset them.
pub fn sregs_for(mode: CpuMode, mut sregs: kvm_sregs, ram: &GuestRam) -> Result<kvm_sregs> {
    match mode {
        CpuMode::Real => {
            for seg in [
                &mut sregs.cs,
                &mut sregs.ds,
                &mut sregs.es,
                &mut sregs.fs,
                &mut sregs.gs,
                &mut sregs.ss,
            ] {
                seg.base = 0;
                seg.selector = 0;
            }
        }
        CpuMode::Protected | CpuMode::Long => {
            let table: Vec<u8> = gdt::TABLE.iter().flat_map(|e| e.to_le_bytes()).collect();
            ram.write(GDT_ADDR, &table)?;
            sregs.gdt.base = GDT_ADDR;
            sregs.gdt.limit = (table.len() - 1) as u16;
            let code = if mode == CpuMode::Long {
                CODE64_SELECTOR
            } else {
                CODE32_SELECTOR
            };
            sregs.cs = gdt::segment(code);
            let data = gdt::segment(DATA_SELECTOR);
            sregs.ds = data;
            sregs.es = data;
            sregs.fs = data;
            sregs.gs = data;
            sregs.ss = data;
            sregs.cr0 |= CR0_PE | CR0_ET;
            if mode == CpuMode::Long {
                paging::write_identity_map(ram)?;
                sregs.cr3 = PML4_ADDR;
                sregs.cr4 |= CR4_PAE;
                sregs.cr0 |= CR0_PG;
                sregs.efer |= EFER_LME | EFER_LMA;
            }
        }
    }
    Ok(sregs)
}

/// General registers for starting at `entry` with stack pointer `stack`.
pub fn regs_for(entry: u64, stack: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: stack,
        rbp: stack,
        // Bit 1 of RFLAGS is reserved and must be set.
        rflags: 0x2,
        ..Default::default()
    }
}
