//! Instructions a software-assisted KVM's emulator (such as `kvm_pvm`'s) gives up on, with
//! `KVM_EXIT_INTERNAL_ERROR`, finished here where their effect is simple enough to apply
//! from outside the guest. Hardware virtualization runs them itself and never exits.
//!
//! - `int3`: that emulator cannot deliver software interrupts outside real mode. RIP moves
//!   past it and the breakpoint exception is injected, which the guest takes through its IDT
//!   as if the CPU had raised it.
//! - `fwait`: it only waits for pending unmasked x87 exceptions, which a guest kvmkit runs
//!   never leaves pending across an exit; RIP moves past it.
//! - `ldmxcsr m32` / `stmxcsr m32` (`0f ae /2`, `/3`) in 64-bit mode: the memory operand is
//!   decoded, translated through the guest's page tables, and MXCSR moved through
//!   `KVM_GET_XSAVE`/`KVM_SET_XSAVE`. Linux's `kernel_fpu_begin` resets MXCSR this way.

use kvm_bindings::kvm_regs;

use crate::error::{Error, Result};
use crate::memory::GuestRam;
use crate::vcpu::Vcpu;

const INT3: u8 = 0xcc;
const FWAIT: u8 = 0x9b;
const BREAKPOINT: u8 = 3;
const EFER_LMA: u64 = 1 << 10;
/// MXCSR's place in the XSAVE area (byte 24), in 32-bit words.
const XSAVE_MXCSR: usize = 6;
/// XSTATE_BV's place in the XSAVE header (byte 512), in 32-bit words.
const XSAVE_XSTATE_BV: usize = 128;
/// XSTATE_BV's bit for the SSE state, MXCSR included.
const XFEATURE_SSE: u32 = 1 << 1;

/// A decoded `ldmxcsr`/`stmxcsr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MxcsrAccess {
    /// `ldmxcsr` (memory to MXCSR) rather than `stmxcsr`.
    pub(crate) load: bool,
    /// The operand's linear address.
    pub(crate) address: u64,
    /// The instruction's length.
    pub(crate) len: u64,
}

/// The general register `n` (0 = RAX … 15 = R15) in `regs`.
fn gpr(regs: &kvm_regs, n: u8) -> u64 {
    [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8,
        regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ][usize::from(n & 15)]
}

/// Decodes `bytes` as a 64-bit-mode `ldmxcsr`/`stmxcsr` with a memory operand, with `fs`
/// and `gs` the segment bases those prefixes select.
pub(crate) fn decode_mxcsr(bytes: &[u8], regs: &kvm_regs, fs: u64, gs: u64) -> Option<MxcsrAccess> {
    let mut at = 0;
    let mut segment = 0;
    let mut rex = 0;
    loop {
        match *bytes.get(at)? {
            0x64 => segment = fs,
            0x65 => segment = gs,
            0x2e | 0x36 | 0x3e | 0x26 => {}
            b @ 0x40..=0x4f => {
                rex = b;
                at += 1;
                break;
            }
            _ => break,
        }
        at += 1;
    }
    if bytes.get(at..at + 2)? != [0x0f, 0xae] {
        return None;
    }
    at += 2;
    let modrm = *bytes.get(at)?;
    at += 1;
    let (mode, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if mode == 3 || !(reg == 2 || reg == 3) {
        return None;
    }
    let rex_b = (rex & 1) << 3;
    let rex_x = (rex & 2) << 2;
    let mut rip_relative = false;
    let mut base = match rm {
        4 => {
            let sib = *bytes.get(at)?;
            at += 1;
            let (scale, index, sib_base) = (sib >> 6, ((sib >> 3) & 7) | rex_x, sib & 7);
            let scaled = if index == 4 {
                0
            } else {
                gpr(regs, index) << scale
            };
            if sib_base == 5 && mode == 0 {
                // No base: a 32-bit displacement follows.
                let disp = i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
                at += 4;
                scaled.wrapping_add(disp as i64 as u64)
            } else {
                scaled.wrapping_add(gpr(regs, sib_base | rex_b))
            }
        }
        5 if mode == 0 => {
            rip_relative = true;
            let disp = i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
            at += 4;
            disp as i64 as u64
        }
        _ => gpr(regs, rm | rex_b),
    };
    match mode {
        1 => {
            base = base.wrapping_add(*bytes.get(at)? as i8 as i64 as u64);
            at += 1;
        }
        2 => {
            let disp = i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
            base = base.wrapping_add(disp as i64 as u64);
            at += 4;
        }
        _ => {}
    }
    let len = at as u64;
    if rip_relative {
        base = base.wrapping_add(regs.rip + len);
    }
    Some(MxcsrAccess {
        load: reg == 2,
        address: base.wrapping_add(segment),
        len,
    })
}

/// Moves MXCSR between the guest's memory and its FPU state as `access` says.
fn finish_mxcsr(ram: &GuestRam, vcpu: &Vcpu, access: MxcsrAccess) -> Result<bool> {
    let page_end = (access.address | 0xfff) + 1;
    let translated = vcpu.fd().translate_gva(access.address);
    let Ok(t) = translated else {
        return Ok(false);
    };
    if t.valid == 0 || access.address + 4 > page_end {
        return Ok(false);
    }
    // MXCSR through the XSAVE area: this host's KVM_GET_FPU reports it as 0.
    let mut xsave = vcpu.fd().get_xsave().map_err(Error::kvm("KVM_GET_XSAVE"))?;
    if access.load {
        let mut value = [0u8; 4];
        ram.read(t.physical_address, &mut value)?;
        xsave.region[XSAVE_MXCSR] = u32::from_le_bytes(value);
        // KVM takes MXCSR only with the SSE state marked present in XSTATE_BV.
        xsave.region[XSAVE_XSTATE_BV] |= XFEATURE_SSE;
        // SAFETY: the area came from KVM_GET_XSAVE on this vCPU, with MXCSR and one bit
        // of its header changed; KVM checks both.
        unsafe { vcpu.fd().set_xsave(&xsave) }.map_err(Error::kvm("KVM_SET_XSAVE"))?;
    } else {
        ram.write(t.physical_address, &xsave.region[XSAVE_MXCSR].to_le_bytes())?;
    }
    Ok(true)
}

/// Finishes the instruction at the vCPU's RIP if it is one of those above; returns false
/// for any other instruction (or one whose operand cannot be reached), leaving it to fail.
pub(crate) fn finish_unemulated(ram: &GuestRam, vcpu: &Vcpu) -> bool {
    let Some(snapshot) = vcpu.snapshot() else {
        return false;
    };
    let bytes = vcpu.instruction_bytes(ram, &snapshot);
    let finished = (|| -> Result<bool> {
        let mut regs = vcpu.get_regs()?;
        match bytes.first().copied() {
            Some(INT3) => {
                regs.rip += 1;
                vcpu.set_regs(&regs)?;
                let mut events = vcpu.get_events()?;
                events.exception.injected = 1;
                events.exception.nr = BREAKPOINT;
                events.exception.has_error_code = 0;
                events.exception.error_code = 0;
                vcpu.set_events(&events)?;
            }
            Some(FWAIT) => {
                regs.rip += 1;
                vcpu.set_regs(&regs)?;
            }
            _ => {
                let sregs = vcpu.get_sregs()?;
                if sregs.efer & EFER_LMA == 0 || sregs.cs.l == 0 {
                    return Ok(false);
                }
                let Some(access) = decode_mxcsr(&bytes, &regs, sregs.fs.base, sregs.gs.base) else {
                    return Ok(false);
                };
                if !finish_mxcsr(ram, vcpu, access)? {
                    return Ok(false);
                }
                regs.rip += access.len;
                vcpu.set_regs(&regs)?;
            }
        }
        Ok(true)
    })();
    finished.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> kvm_regs {
        kvm_regs {
            rsp: 0x8000,
            rbx: 0x100,
            rcx: 3,
            r12: 0x2000,
            rip: 0x10_0000,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_the_operand_forms_linux_and_compilers_use() {
        let r = regs();
        let at = |bytes: &[u8]| decode_mxcsr(bytes, &r, 0x7000_0000, 0x9000_0000);
        // ldmxcsr 0x4(%rsp): SIB with RSP base, disp8 (Linux's kernel_fpu_begin).
        assert_eq!(
            at(&[0x0f, 0xae, 0x54, 0x24, 0x04]),
            Some(MxcsrAccess {
                load: true,
                address: 0x8004,
                len: 5
            })
        );
        // stmxcsr (%rbx)
        assert_eq!(
            at(&[0x0f, 0xae, 0x1b]),
            Some(MxcsrAccess {
                load: false,
                address: 0x100,
                len: 3
            })
        );
        // ldmxcsr -8(%r12,%rcx,8) with REX.B and REX.X clear for the index: 0x2000 + 24 - 8.
        assert_eq!(
            at(&[0x41, 0x0f, 0xae, 0x54, 0xcc, 0xf8]).map(|a| (a.address, a.len)),
            Some((0x2010, 6))
        );
        // ldmxcsr 0x10(%rip): relative to the next instruction.
        assert_eq!(
            at(&[0x0f, 0xae, 0x15, 0x10, 0, 0, 0]).map(|a| a.address),
            Some(0x10_0000 + 7 + 0x10)
        );
        // ldmxcsr %gs:0x20 (absolute disp32 through SIB with no base or index).
        assert_eq!(
            at(&[0x65, 0x0f, 0xae, 0x14, 0x25, 0x20, 0, 0, 0]).map(|a| (a.address, a.len)),
            Some((0x9000_0020, 9))
        );
        // stmxcsr 0x100(%rbx), disp32.
        assert_eq!(
            at(&[0x0f, 0xae, 0x9b, 0, 1, 0, 0]).map(|a| (a.load, a.address)),
            Some((false, 0x200))
        );
    }

    #[test]
    fn leaves_other_instructions_alone() {
        let r = regs();
        let at = |bytes: &[u8]| decode_mxcsr(bytes, &r, 0, 0);
        assert_eq!(at(&[0x0f, 0xae, 0x2f]), None, "xrstor");
        assert_eq!(at(&[0x0f, 0xae, 0xf0]), None, "mfence: a register form");
        assert_eq!(at(&[0x0f, 0xae]), None, "cut short");
        assert_eq!(
            at(&[0x0f, 0xae, 0x54, 0x24]),
            None,
            "cut short in its SIB form"
        );
        assert_eq!(at(&[0x90]), None);
    }
}
