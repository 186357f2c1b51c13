//! Instructions a software-assisted KVM's emulator (such as `kvm_pvm`'s) gives up on, with
//! `KVM_EXIT_INTERNAL_ERROR`, finished here where their effect is simple enough to apply
//! from outside the guest. Hardware virtualization runs them itself and never exits.
//!
//! - `int3` and `int imm8` (`cd ib`): that emulator cannot deliver software interrupts
//!   outside real mode. RIP moves past the instruction and the vector is injected (#BP as
//!   an exception, `int n` as an interrupt), which the guest takes through its IDT as if
//!   the CPU had raised it. The gate's privilege level is not checked against the CPL.
//! - `fwait`: it only waits for pending unmasked x87 exceptions, which a guest kvmkit runs
//!   never leaves pending across an exit; RIP moves past it.
//! - `xgetbv` (`0f 01 d0`) with CR4.OSXSAVE set: ECX 0 reads XCR0 (`KVM_GET_XCRS`), ECX 1
//!   the components in use (XCR0 and XSTATE_BV); any other ECX raises #GP(0).
//! - `clac` / `stac` (`0f 01 ca`, `cb`) at CPL 0: clear or set RFLAGS.AC.
//! - `clwb m8` / `clflushopt m8` (`66 0f ae /6`, `/7`) in 64-bit mode: guest RAM is
//!   ordinary host memory, coherent for every reader, so there is nothing to write back;
//!   the operand is decoded only for the instruction's length.
//! - `ldmxcsr m32` / `stmxcsr m32` (`0f ae /2`, `/3`) in 64-bit mode: the memory operand is
//!   decoded, translated through the guest's page tables, and MXCSR moved through
//!   `KVM_GET_XSAVE`/`KVM_SET_XSAVE`. Linux's `kernel_fpu_begin` resets MXCSR this way.
//!
//! [`decode`] is a pure function of the instruction's bytes and registers (and is fuzzed);
//! applying its result needs the vCPU.

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::error::{Error, Result};
use crate::memory::GuestRam;
use crate::vcpu::Vcpu;

const INT3: u8 = 0xcc;
const INT_IMM8: u8 = 0xcd;
const FWAIT: u8 = 0x9b;
const TWO_BYTE: u8 = 0x0f;
/// `0f 01` with these ModRM bytes.
const XGETBV: u8 = 0xd0;
const CLAC: u8 = 0xca;
const STAC: u8 = 0xcb;
const BREAKPOINT: u8 = 3;
const GENERAL_PROTECTION: u8 = 13;
const EFER_LMA: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const RFLAGS_AC: u64 = 1 << 18;
/// MXCSR's place in the XSAVE area (byte 24), in 32-bit words.
const XSAVE_MXCSR: usize = 6;
/// XSTATE_BV's place in the XSAVE header (byte 512), in 32-bit words.
const XSAVE_XSTATE_BV: usize = 128;
/// XSTATE_BV's bit for the SSE state, MXCSR included.
const XFEATURE_SSE: u32 = 1 << 1;

/// An instruction kvmkit finishes, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unemulated {
    /// `int3`.
    Breakpoint,
    /// `int imm8`, with its vector.
    SoftwareInterrupt(u8),
    /// `fwait`.
    Fwait,
    /// `xgetbv`.
    Xgetbv,
    /// `clac` (false) or `stac` (true).
    AlignmentCheck(bool),
    /// `clwb` or `clflushopt`, this many bytes long.
    CacheLineFlush(u64),
    /// `ldmxcsr` or `stmxcsr`.
    Mxcsr(MxcsrAccess),
}

impl Unemulated {
    /// The instruction's length in bytes.
    pub fn length(&self) -> u64 {
        match self {
            Unemulated::Breakpoint | Unemulated::Fwait => 1,
            Unemulated::SoftwareInterrupt(_) => 2,
            Unemulated::Xgetbv | Unemulated::AlignmentCheck(_) => 3,
            Unemulated::CacheLineFlush(len) => *len,
            Unemulated::Mxcsr(access) => access.len,
        }
    }
}

/// A decoded `ldmxcsr`/`stmxcsr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MxcsrAccess {
    /// `ldmxcsr` (memory to MXCSR) rather than `stmxcsr`.
    pub load: bool,
    /// The operand's linear address.
    pub address: u64,
    /// The instruction's length.
    pub len: u64,
}

/// The general register `n` (0 = RAX … 15 = R15) in `regs`.
fn gpr(regs: &kvm_regs, n: u8) -> u64 {
    [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8,
        regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ][usize::from(n & 15)]
}

/// The prefixes before an opcode.
#[derive(Debug, Default)]
struct Prefixes {
    /// The segment base `fs`/`gs` select (others are 0 in 64-bit mode).
    segment: u64,
    rex: u8,
    /// `66`.
    operand_size: bool,
    /// `f2`, `f3`, `f0` or `67`: none of the forms finished here take them.
    other: bool,
    /// Where the opcode starts.
    len: usize,
}

fn prefixes(bytes: &[u8], sregs: &kvm_sregs) -> Option<Prefixes> {
    let mut p = Prefixes::default();
    loop {
        match *bytes.get(p.len)? {
            0x64 => p.segment = sregs.fs.base,
            0x65 => p.segment = sregs.gs.base,
            0x2e | 0x36 | 0x3e | 0x26 => {}
            0x66 => p.operand_size = true,
            0x67 | 0xf0 | 0xf2 | 0xf3 => p.other = true,
            b @ 0x40..=0x4f => {
                // REX counts only right before the opcode.
                p.rex = b;
                p.len += 1;
                return Some(p);
            }
            _ => return Some(p),
        }
        p.len += 1;
    }
}

/// A 64-bit-mode memory operand: the ModRM's reg field, the address (without the segment
/// base) and where the instruction ends. `None` for a register operand or too few bytes.
fn memory_operand(
    bytes: &[u8],
    mut at: usize,
    rex: u8,
    regs: &kvm_regs,
) -> Option<(u8, u64, usize)> {
    let disp32 = |at: usize| -> Option<u64> {
        Some(i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as i64 as u64)
    };
    let modrm = *bytes.get(at)?;
    at += 1;
    let (mode, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if mode == 3 {
        return None;
    }
    let rex_b = (rex & 1) << 3;
    let rex_x = (rex & 2) << 2;
    let mut rip_relative = false;
    let mut address = match rm {
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
                let disp = disp32(at)?;
                at += 4;
                scaled.wrapping_add(disp)
            } else {
                scaled.wrapping_add(gpr(regs, sib_base | rex_b))
            }
        }
        5 if mode == 0 => {
            rip_relative = true;
            let disp = disp32(at)?;
            at += 4;
            disp
        }
        _ => gpr(regs, rm | rex_b),
    };
    match mode {
        1 => {
            address = address.wrapping_add(*bytes.get(at)? as i8 as i64 as u64);
            at += 1;
        }
        2 => {
            address = address.wrapping_add(disp32(at)?);
            at += 4;
        }
        _ => {}
    }
    if rip_relative {
        address = address.wrapping_add(regs.rip.wrapping_add(at as u64));
    }
    Some((reg, address, at))
}

/// Decodes `bytes`, taken at RIP, as one of the instructions kvmkit finishes; `None` for
/// any other instruction, a form this module does not handle, or too few bytes.
pub fn decode(bytes: &[u8], regs: &kvm_regs, sregs: &kvm_sregs) -> Option<Unemulated> {
    match bytes {
        [INT3, ..] => return Some(Unemulated::Breakpoint),
        [FWAIT, ..] => return Some(Unemulated::Fwait),
        [INT_IMM8, vector, ..] => return Some(Unemulated::SoftwareInterrupt(*vector)),
        [TWO_BYTE, 0x01, XGETBV, ..] => return Some(Unemulated::Xgetbv),
        [TWO_BYTE, 0x01, CLAC, ..] => return Some(Unemulated::AlignmentCheck(false)),
        [TWO_BYTE, 0x01, STAC, ..] => return Some(Unemulated::AlignmentCheck(true)),
        _ => {}
    }
    // The memory forms of `0f ae`, decoded for 64-bit addressing only.
    if sregs.efer & EFER_LMA == 0 || sregs.cs.l == 0 {
        return None;
    }
    let p = prefixes(bytes, sregs)?;
    if p.other || bytes.get(p.len..p.len + 2)? != [TWO_BYTE, 0xae] {
        return None;
    }
    let (reg, address, end) = memory_operand(bytes, p.len + 2, p.rex, regs)?;
    match (p.operand_size, reg) {
        (false, 2 | 3) => Some(Unemulated::Mxcsr(MxcsrAccess {
            load: reg == 2,
            address: address.wrapping_add(p.segment),
            len: end as u64,
        })),
        (true, 6 | 7) => Some(Unemulated::CacheLineFlush(end as u64)),
        _ => None,
    }
}

/// Moves MXCSR between the guest's memory and its FPU state as `access` says.
fn finish_mxcsr(ram: &GuestRam, vcpu: &Vcpu, access: MxcsrAccess) -> Result<bool> {
    let page_end = (access.address | 0xfff).wrapping_add(1);
    let translated = vcpu.fd().translate_gva(access.address);
    let Ok(t) = translated else {
        return Ok(false);
    };
    if t.valid == 0 || access.address.wrapping_add(4) > page_end {
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

/// The value `xgetbv` reads for `index` (ECX), or `None` where it raises #GP.
fn read_xcr(vcpu: &Vcpu, index: u64) -> Result<Option<u64>> {
    let xcrs = vcpu.fd().get_xcrs().map_err(Error::kvm("KVM_GET_XCRS"))?;
    let n = (xcrs.nr_xcrs as usize).min(xcrs.xcrs.len());
    let Some(xcr0) = xcrs.xcrs[..n].iter().find(|x| x.xcr == 0).map(|x| x.value) else {
        return Ok(None);
    };
    Ok(match index {
        0 => Some(xcr0),
        1 => {
            // XINUSE: the enabled components not in their initial state.
            let xsave = vcpu.fd().get_xsave().map_err(Error::kvm("KVM_GET_XSAVE"))?;
            let low = u64::from(xsave.region[XSAVE_XSTATE_BV]);
            let high = u64::from(xsave.region[XSAVE_XSTATE_BV + 1]);
            Some(xcr0 & (high << 32 | low))
        }
        _ => None,
    })
}

/// Queues exception `vector` (with `error_code`, if it has one) for the next entry.
fn inject_exception(vcpu: &Vcpu, vector: u8, error_code: Option<u32>) -> Result<()> {
    let mut events = vcpu.get_events()?;
    events.exception.injected = 1;
    events.exception.nr = vector;
    events.exception.has_error_code = u8::from(error_code.is_some());
    events.exception.error_code = error_code.unwrap_or(0);
    vcpu.set_events(&events)
}

/// Applies `instruction`'s effect; false where it must be left to fail (its operand cannot
/// be reached, or the CPU would refuse it in a way not reproduced here).
fn finish(
    ram: &GuestRam,
    vcpu: &Vcpu,
    instruction: Unemulated,
    regs: &mut kvm_regs,
    sregs: &kvm_sregs,
) -> Result<bool> {
    let next = regs.rip.wrapping_add(instruction.length());
    match instruction {
        Unemulated::Breakpoint => {
            regs.rip = next;
            vcpu.set_regs(regs)?;
            inject_exception(vcpu, BREAKPOINT, None)?;
        }
        Unemulated::SoftwareInterrupt(vector) => {
            regs.rip = next;
            vcpu.set_regs(regs)?;
            let mut events = vcpu.get_events()?;
            events.interrupt.injected = 1;
            events.interrupt.nr = vector;
            events.interrupt.soft = 0;
            vcpu.set_events(&events)?;
        }
        Unemulated::Fwait | Unemulated::CacheLineFlush(_) => {
            regs.rip = next;
            vcpu.set_regs(regs)?;
        }
        Unemulated::AlignmentCheck(set) => {
            // Outside ring 0 the CPU raises #UD.
            if sregs.cs.selector & 3 != 0 {
                return Ok(false);
            }
            regs.rflags = if set {
                regs.rflags | RFLAGS_AC
            } else {
                regs.rflags & !RFLAGS_AC
            };
            regs.rip = next;
            vcpu.set_regs(regs)?;
        }
        Unemulated::Xgetbv => {
            // Without CR4.OSXSAVE the CPU raises #UD.
            if sregs.cr4 & CR4_OSXSAVE == 0 {
                return Ok(false);
            }
            match read_xcr(vcpu, regs.rcx & 0xffff_ffff)? {
                Some(value) => {
                    regs.rax = value & 0xffff_ffff;
                    regs.rdx = value >> 32;
                    regs.rip = next;
                    vcpu.set_regs(regs)?;
                }
                None => inject_exception(vcpu, GENERAL_PROTECTION, Some(0))?,
            }
        }
        Unemulated::Mxcsr(access) => {
            if !finish_mxcsr(ram, vcpu, access)? {
                return Ok(false);
            }
            regs.rip = next;
            vcpu.set_regs(regs)?;
        }
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
        let sregs = vcpu.get_sregs()?;
        match decode(&bytes, &regs, &sregs) {
            Some(instruction) => finish(ram, vcpu, instruction, &mut regs, &sregs),
            None => Ok(false),
        }
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

    /// 64-bit mode with FS at 0x7000_0000 and GS at 0x9000_0000.
    fn long_mode() -> kvm_sregs {
        let mut s = kvm_sregs {
            efer: EFER_LMA,
            ..Default::default()
        };
        s.cs.l = 1;
        s.fs.base = 0x7000_0000;
        s.gs.base = 0x9000_0000;
        s
    }

    fn mxcsr(bytes: &[u8]) -> Option<MxcsrAccess> {
        match decode(bytes, &regs(), &long_mode()) {
            Some(Unemulated::Mxcsr(access)) => Some(access),
            _ => None,
        }
    }

    #[test]
    fn decodes_the_operand_forms_linux_and_compilers_use() {
        // ldmxcsr 0x4(%rsp): SIB with RSP base, disp8 (Linux's kernel_fpu_begin).
        assert_eq!(
            mxcsr(&[0x0f, 0xae, 0x54, 0x24, 0x04]),
            Some(MxcsrAccess {
                load: true,
                address: 0x8004,
                len: 5
            })
        );
        // stmxcsr (%rbx)
        assert_eq!(
            mxcsr(&[0x0f, 0xae, 0x1b]),
            Some(MxcsrAccess {
                load: false,
                address: 0x100,
                len: 3
            })
        );
        // ldmxcsr -8(%r12,%rcx,8) with REX.B and REX.X clear for the index: 0x2000 + 24 - 8.
        assert_eq!(
            mxcsr(&[0x41, 0x0f, 0xae, 0x54, 0xcc, 0xf8]).map(|a| (a.address, a.len)),
            Some((0x2010, 6))
        );
        // ldmxcsr 0x10(%rip): relative to the next instruction.
        assert_eq!(
            mxcsr(&[0x0f, 0xae, 0x15, 0x10, 0, 0, 0]).map(|a| a.address),
            Some(0x10_0000 + 7 + 0x10)
        );
        // ldmxcsr %gs:0x20 (absolute disp32 through SIB with no base or index).
        assert_eq!(
            mxcsr(&[0x65, 0x0f, 0xae, 0x14, 0x25, 0x20, 0, 0, 0]).map(|a| (a.address, a.len)),
            Some((0x9000_0020, 9))
        );
        // stmxcsr 0x100(%rbx), disp32.
        assert_eq!(
            mxcsr(&[0x0f, 0xae, 0x9b, 0, 1, 0, 0]).map(|a| (a.load, a.address)),
            Some((false, 0x200))
        );
    }

    #[test]
    fn decodes_the_one_and_two_byte_forms_in_any_mode() {
        let real = kvm_sregs::default();
        let at = |bytes: &[u8]| decode(bytes, &regs(), &real);
        assert_eq!(at(&[0xcc]), Some(Unemulated::Breakpoint));
        assert_eq!(at(&[0x9b, 0xdb, 0xe3]), Some(Unemulated::Fwait));
        assert_eq!(at(&[0xcd, 0x21]), Some(Unemulated::SoftwareInterrupt(0x21)));
        assert_eq!(at(&[0xcd]), None, "int cut short");
        assert_eq!(at(&[0x0f, 0x01, 0xd0]), Some(Unemulated::Xgetbv));
        assert_eq!(
            at(&[0x0f, 0x01, 0xca]),
            Some(Unemulated::AlignmentCheck(false))
        );
        assert_eq!(
            at(&[0x0f, 0x01, 0xcb]),
            Some(Unemulated::AlignmentCheck(true))
        );
        assert_eq!(at(&[0x0f, 0x01, 0xd1]), None, "xsetbv: KVM emulates it");
        let lengths: Vec<u64> = [&[0xcc][..], &[0xcd, 3], &[0x0f, 0x01, 0xd0]]
            .iter()
            .filter_map(|b| at(b))
            .map(|i| i.length())
            .collect();
        assert_eq!(lengths, [1, 2, 3]);
    }

    #[test]
    fn decodes_clwb_and_clflushopt_for_their_length() {
        let at = |bytes: &[u8]| decode(bytes, &regs(), &long_mode());
        // clwb (%rbx)
        assert_eq!(
            at(&[0x66, 0x0f, 0xae, 0x33]),
            Some(Unemulated::CacheLineFlush(4))
        );
        // clwb 0x40(%r12,%rcx,4)
        assert_eq!(
            at(&[0x66, 0x41, 0x0f, 0xae, 0x74, 0x8c, 0x40]),
            Some(Unemulated::CacheLineFlush(7))
        );
        // clflushopt 0x1000(%rip)
        assert_eq!(
            at(&[0x66, 0x0f, 0xae, 0x3d, 0, 0x10, 0, 0]),
            Some(Unemulated::CacheLineFlush(8))
        );
        assert_eq!(at(&[0x0f, 0xae, 0x33]), None, "xsaveopt: no 66 prefix");
        assert_eq!(
            at(&[0x66, 0x0f, 0xae, 0xf3]),
            None,
            "tpause: a register form"
        );
        assert_eq!(
            at(&[0x66, 0x0f, 0xae, 0x13]),
            None,
            "ldmxcsr takes no 66 prefix"
        );
        let compat = kvm_sregs::default();
        assert_eq!(
            decode(&[0x66, 0x0f, 0xae, 0x33], &regs(), &compat),
            None,
            "memory forms are decoded in 64-bit mode only"
        );
    }

    #[test]
    fn leaves_other_instructions_alone() {
        let at = |bytes: &[u8]| decode(bytes, &regs(), &long_mode());
        assert_eq!(at(&[0x0f, 0xae, 0x2f]), None, "xrstor");
        assert_eq!(at(&[0x0f, 0xae, 0xf0]), None, "mfence: a register form");
        assert_eq!(at(&[0x0f, 0xae]), None, "cut short");
        assert_eq!(
            at(&[0x0f, 0xae, 0x54, 0x24]),
            None,
            "cut short in its SIB form"
        );
        assert_eq!(at(&[0xf3, 0x0f, 0xae, 0x13]), None, "an unexpected prefix");
        assert_eq!(at(&[0x66; 15]), None, "prefixes only");
        assert_eq!(at(&[0x90]), None);
        assert_eq!(at(&[]), None);
    }
}
