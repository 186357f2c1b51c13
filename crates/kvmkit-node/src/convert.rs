//! Conversions between JS values and kvmkit-core types.

use kvmkit_core::kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_dtable, kvm_fpu, kvm_regs, kvm_segment,
    kvm_sregs, kvm_vcpu_events,
};
use napi::bindgen_prelude::{BigInt, Buffer};
use napi_derive::napi;

use kvmkit_core::bus::Space;
use kvmkit_core::x86::mode::CpuMode;

use crate::error::{Result, invalid_arg};

/// A guest-physical address or size from JS, which must be a whole number below 2^53.
pub fn u64_from_js(field: &str, value: f64) -> Result<u64> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= 9_007_199_254_740_991.0
    {
        Ok(value as u64)
    } else {
        Err(invalid_arg(
            field,
            format!("{value} is not a whole number from 0 to 2^53-1"),
        ))
    }
}

/// An address space from its name.
pub fn space_of(name: &str) -> Result<Space> {
    match name {
        "port" => Ok(Space::Port),
        "mmio" => Ok(Space::Mmio),
        other => Err(invalid_arg(
            "space",
            format!("{other:?} is not \"port\" or \"mmio\""),
        )),
    }
}

/// A CPU mode from its name.
pub fn mode(name: &str) -> Result<CpuMode> {
    match name {
        "real" => Ok(CpuMode::Real),
        "protected" => Ok(CpuMode::Protected),
        "long" => Ok(CpuMode::Long),
        other => Err(invalid_arg(
            "mode",
            format!("{other:?} is not one of \"real\", \"protected\", \"long\""),
        )),
    }
}

/// A 64-bit register value from a JS bigint, which must fit in 64 unsigned bits.
pub fn u64_from_bigint(field: &str, value: &BigInt) -> Result<u64> {
    let (negative, v, lossless) = value.get_u64();
    if negative || !lossless {
        return Err(invalid_arg(field, "must be a bigint from 0n to 2n**64n-1n"));
    }
    Ok(v)
}

/// The general registers, as bigints.
#[napi(object)]
pub struct Registers {
    pub rax: BigInt,
    pub rbx: BigInt,
    pub rcx: BigInt,
    pub rdx: BigInt,
    pub rsi: BigInt,
    pub rdi: BigInt,
    pub rsp: BigInt,
    pub rbp: BigInt,
    pub r8: BigInt,
    pub r9: BigInt,
    pub r10: BigInt,
    pub r11: BigInt,
    pub r12: BigInt,
    pub r13: BigInt,
    pub r14: BigInt,
    pub r15: BigInt,
    pub rip: BigInt,
    pub rflags: BigInt,
}

macro_rules! registers {
    ($($r:ident),*) => {
        impl From<kvm_regs> for Registers {
            fn from(r: kvm_regs) -> Self {
                Registers { $($r: BigInt::from(r.$r)),* }
            }
        }

        impl Registers {
            /// The registers as KVM takes them.
            pub fn to_kvm(&self) -> Result<kvm_regs> {
                Ok(kvm_regs { $($r: u64_from_bigint(concat!("registers.", stringify!($r)), &self.$r)?),* })
            }
        }
    };
}

registers!(
    rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags
);

fn flag(b: bool) -> u8 {
    u8::from(b)
}

/// A segment register.
#[napi(object)]
pub struct Segment {
    /// Base address.
    pub base: BigInt,
    /// Limit in bytes.
    pub limit: u32,
    /// Selector.
    pub selector: u32,
    /// Descriptor type (4 bits).
    pub r#type: u32,
    /// Present.
    pub present: bool,
    /// Privilege level (0–3).
    pub dpl: u32,
    /// Default operand size is 32 bits.
    pub db: bool,
    /// Code or data segment (not a system segment).
    pub s: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Limit counts 4 KiB pages.
    pub g: bool,
    /// Available for software.
    pub avl: bool,
    /// Unusable (a null selector was loaded).
    pub unusable: bool,
}

impl From<kvm_segment> for Segment {
    fn from(s: kvm_segment) -> Self {
        Segment {
            base: BigInt::from(s.base),
            limit: s.limit,
            selector: s.selector.into(),
            r#type: s.type_.into(),
            present: s.present != 0,
            dpl: s.dpl.into(),
            db: s.db != 0,
            s: s.s != 0,
            l: s.l != 0,
            g: s.g != 0,
            avl: s.avl != 0,
            unusable: s.unusable != 0,
        }
    }
}

impl Segment {
    fn to_kvm(&self, field: &str) -> Result<kvm_segment> {
        let small = |name: &str, v: u32, max: u32| {
            if v <= max {
                Ok(v)
            } else {
                Err(invalid_arg(
                    &format!("{field}.{name}"),
                    format!("{v} is more than {max}"),
                ))
            }
        };
        Ok(kvm_segment {
            base: u64_from_bigint(&format!("{field}.base"), &self.base)?,
            limit: self.limit,
            selector: small("selector", self.selector, 0xffff)? as u16,
            type_: small("type", self.r#type, 0xf)? as u8,
            present: flag(self.present),
            dpl: small("dpl", self.dpl, 3)? as u8,
            db: flag(self.db),
            s: flag(self.s),
            l: flag(self.l),
            g: flag(self.g),
            avl: flag(self.avl),
            unusable: flag(self.unusable),
            padding: 0,
        })
    }
}

/// The GDT or IDT register.
#[napi(object)]
pub struct DescriptorTable {
    /// Base address.
    pub base: BigInt,
    /// Limit in bytes.
    pub limit: u32,
}

/// The special registers: segments, descriptor tables, control registers and EFER.
#[napi(object)]
pub struct SpecialRegisters {
    /// Code segment.
    pub cs: Segment,
    /// Data segment.
    pub ds: Segment,
    /// Extra segment.
    pub es: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// Stack segment.
    pub ss: Segment,
    /// Task register.
    pub tr: Segment,
    /// Local descriptor table.
    pub ldt: Segment,
    /// Global descriptor table register.
    pub gdt: DescriptorTable,
    /// Interrupt descriptor table register.
    pub idt: DescriptorTable,
    /// CR0.
    pub cr0: BigInt,
    /// CR2, the last page-fault address.
    pub cr2: BigInt,
    /// CR3, the page-table root.
    pub cr3: BigInt,
    /// CR4.
    pub cr4: BigInt,
    /// CR8, the task priority.
    pub cr8: BigInt,
    /// EFER.
    pub efer: BigInt,
    /// The APIC base MSR.
    pub apic_base: BigInt,
}

impl From<kvm_sregs> for SpecialRegisters {
    fn from(s: kvm_sregs) -> Self {
        let table = |t: kvm_dtable| DescriptorTable {
            base: BigInt::from(t.base),
            limit: t.limit.into(),
        };
        SpecialRegisters {
            cs: s.cs.into(),
            ds: s.ds.into(),
            es: s.es.into(),
            fs: s.fs.into(),
            gs: s.gs.into(),
            ss: s.ss.into(),
            tr: s.tr.into(),
            ldt: s.ldt.into(),
            gdt: table(s.gdt),
            idt: table(s.idt),
            cr0: BigInt::from(s.cr0),
            cr2: BigInt::from(s.cr2),
            cr3: BigInt::from(s.cr3),
            cr4: BigInt::from(s.cr4),
            cr8: BigInt::from(s.cr8),
            efer: BigInt::from(s.efer),
            apic_base: BigInt::from(s.apic_base),
        }
    }
}

impl SpecialRegisters {
    /// These registers as KVM takes them; the pending-interrupt bitmap comes from `current`.
    pub fn to_kvm(&self, current: &kvm_sregs) -> Result<kvm_sregs> {
        let table = |name: &str, t: &DescriptorTable| -> Result<kvm_dtable> {
            Ok(kvm_dtable {
                base: u64_from_bigint(&format!("{name}.base"), &t.base)?,
                limit: u16::try_from(t.limit)
                    .map_err(|_| invalid_arg(&format!("{name}.limit"), "must be 0 to 0xffff"))?,
                padding: [0; 3],
            })
        };
        Ok(kvm_sregs {
            cs: self.cs.to_kvm("cs")?,
            ds: self.ds.to_kvm("ds")?,
            es: self.es.to_kvm("es")?,
            fs: self.fs.to_kvm("fs")?,
            gs: self.gs.to_kvm("gs")?,
            ss: self.ss.to_kvm("ss")?,
            tr: self.tr.to_kvm("tr")?,
            ldt: self.ldt.to_kvm("ldt")?,
            gdt: table("gdt", &self.gdt)?,
            idt: table("idt", &self.idt)?,
            cr0: u64_from_bigint("cr0", &self.cr0)?,
            cr2: u64_from_bigint("cr2", &self.cr2)?,
            cr3: u64_from_bigint("cr3", &self.cr3)?,
            cr4: u64_from_bigint("cr4", &self.cr4)?,
            cr8: u64_from_bigint("cr8", &self.cr8)?,
            efer: u64_from_bigint("efer", &self.efer)?,
            apic_base: u64_from_bigint("apicBase", &self.apic_base)?,
            interrupt_bitmap: current.interrupt_bitmap,
        })
    }
}

/// The x87 FPU and SSE state.
#[napi(object)]
pub struct Fpu {
    /// The eight x87 registers, 16 bytes each (80 bits used).
    pub fpr: Buffer,
    /// x87 control word.
    pub fcw: u32,
    /// x87 status word.
    pub fsw: u32,
    /// Abridged x87 tag word.
    pub ftwx: u32,
    /// Last x87 opcode.
    pub last_opcode: u32,
    /// Last x87 instruction pointer.
    pub last_ip: BigInt,
    /// Last x87 data pointer.
    pub last_dp: BigInt,
    /// XMM0–XMM15, 16 bytes each.
    pub xmm: Buffer,
    /// SSE control and status.
    pub mxcsr: u32,
}

impl From<kvm_fpu> for Fpu {
    fn from(f: kvm_fpu) -> Self {
        Fpu {
            fpr: f.fpr.concat().into(),
            fcw: f.fcw.into(),
            fsw: f.fsw.into(),
            ftwx: f.ftwx.into(),
            last_opcode: f.last_opcode.into(),
            last_ip: BigInt::from(f.last_ip),
            last_dp: BigInt::from(f.last_dp),
            xmm: f.xmm.concat().into(),
            mxcsr: f.mxcsr,
        }
    }
}

impl Fpu {
    /// This state as KVM takes it.
    pub fn to_kvm(&self) -> Result<kvm_fpu> {
        let mut f = kvm_fpu::default();
        if self.fpr.len() != 128 || self.xmm.len() != 256 {
            return Err(invalid_arg(
                "fpu",
                format!(
                    "fpr must be 128 bytes and xmm 256 bytes (got {} and {})",
                    self.fpr.len(),
                    self.xmm.len()
                ),
            ));
        }
        for (dst, src) in f.fpr.iter_mut().zip(self.fpr.chunks_exact(16)) {
            dst.copy_from_slice(src);
        }
        for (dst, src) in f.xmm.iter_mut().zip(self.xmm.chunks_exact(16)) {
            dst.copy_from_slice(src);
        }
        let word = |name: &str, v: u32| {
            u16::try_from(v).map_err(|_| invalid_arg(&format!("fpu.{name}"), "must be 0 to 0xffff"))
        };
        f.fcw = word("fcw", self.fcw)?;
        f.fsw = word("fsw", self.fsw)?;
        f.ftwx =
            u8::try_from(self.ftwx).map_err(|_| invalid_arg("fpu.ftwx", "must be 0 to 0xff"))?;
        f.last_opcode = word("lastOpcode", self.last_opcode)?;
        f.last_ip = u64_from_bigint("fpu.lastIp", &self.last_ip)?;
        f.last_dp = u64_from_bigint("fpu.lastDp", &self.last_dp)?;
        f.mxcsr = self.mxcsr;
        Ok(f)
    }
}

/// A model-specific register and its value.
#[napi(object)]
pub struct MsrEntry {
    /// The MSR's index, such as 0xc0000080 (EFER).
    pub index: u32,
    /// Its value.
    pub value: BigInt,
}

/// One CPUID leaf (and subleaf) as a vCPU presents it.
#[napi(object)]
pub struct CpuidEntry {
    /// The leaf (EAX on input).
    pub function: u32,
    /// The subleaf (ECX on input), where the leaf has subleaves.
    pub index: u32,
    /// KVM's flags (1: the subleaf matters).
    pub flags: u32,
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Converts a CPUID table.
pub fn cpuid_to_js(cpuid: &CpuId) -> Vec<CpuidEntry> {
    cpuid
        .as_slice()
        .iter()
        .map(|e| CpuidEntry {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect()
}

/// Converts CPUID entries from JS.
pub fn cpuid_from_js(entries: &[CpuidEntry]) -> Result<CpuId> {
    let raw: Vec<kvm_cpuid_entry2> = entries
        .iter()
        .map(|e| kvm_cpuid_entry2 {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            ..Default::default()
        })
        .collect();
    CpuId::from_entries(&raw).map_err(|_| {
        invalid_arg(
            "cpuid",
            format!(
                "{} entries are more than KVM takes (max {KVM_MAX_CPUID_ENTRIES})",
                entries.len()
            ),
        )
    })
}

/// A pending or injected exception.
#[napi(object)]
pub struct ExceptionEvent {
    /// Being delivered now.
    pub injected: bool,
    /// The vector (0–31).
    pub nr: u32,
    /// It pushes an error code.
    pub has_error_code: bool,
    /// Pending delivery.
    pub pending: bool,
    /// The error code.
    pub error_code: u32,
}

/// An injected external or software interrupt.
#[napi(object)]
pub struct InterruptEvent {
    /// Being delivered now.
    pub injected: bool,
    /// The vector.
    pub nr: u32,
    /// A software interrupt (`int n`).
    pub soft: bool,
    /// Interrupt shadow (after `sti` or `mov ss`).
    pub shadow: u32,
}

/// Non-maskable interrupt state.
#[napi(object)]
pub struct NmiEvent {
    /// Being delivered now.
    pub injected: bool,
    /// Pending.
    pub pending: bool,
    /// Blocked.
    pub masked: bool,
}

/// Exceptions, interrupts and NMIs pending or being injected into a vCPU.
#[napi(object)]
pub struct VcpuEvents {
    /// Exception state.
    pub exception: ExceptionEvent,
    /// Interrupt state.
    pub interrupt: InterruptEvent,
    /// NMI state.
    pub nmi: NmiEvent,
    /// The SIPI vector.
    pub sipi_vector: u32,
    /// KVM's `KVM_VCPUEVENT_VALID_*` flags.
    pub flags: u32,
}

impl From<kvm_vcpu_events> for VcpuEvents {
    fn from(e: kvm_vcpu_events) -> Self {
        VcpuEvents {
            exception: ExceptionEvent {
                injected: e.exception.injected != 0,
                nr: e.exception.nr.into(),
                has_error_code: e.exception.has_error_code != 0,
                pending: e.exception.pending != 0,
                error_code: e.exception.error_code,
            },
            interrupt: InterruptEvent {
                injected: e.interrupt.injected != 0,
                nr: e.interrupt.nr.into(),
                soft: e.interrupt.soft != 0,
                shadow: e.interrupt.shadow.into(),
            },
            nmi: NmiEvent {
                injected: e.nmi.injected != 0,
                pending: e.nmi.pending != 0,
                masked: e.nmi.masked != 0,
            },
            sipi_vector: e.sipi_vector,
            flags: e.flags,
        }
    }
}

impl VcpuEvents {
    /// These events as KVM takes them, over `current` for the fields JS does not carry.
    pub fn to_kvm(&self, mut current: kvm_vcpu_events) -> Result<kvm_vcpu_events> {
        let byte = |name: &str, v: u32| {
            u8::try_from(v).map_err(|_| invalid_arg(&format!("events.{name}"), "must be 0 to 0xff"))
        };
        current.exception.injected = flag(self.exception.injected);
        current.exception.nr = byte("exception.nr", self.exception.nr)?;
        current.exception.has_error_code = flag(self.exception.has_error_code);
        current.exception.pending = flag(self.exception.pending);
        current.exception.error_code = self.exception.error_code;
        current.interrupt.injected = flag(self.interrupt.injected);
        current.interrupt.nr = byte("interrupt.nr", self.interrupt.nr)?;
        current.interrupt.soft = flag(self.interrupt.soft);
        current.interrupt.shadow = byte("interrupt.shadow", self.interrupt.shadow)?;
        current.nmi.injected = flag(self.nmi.injected);
        current.nmi.pending = flag(self.nmi.pending);
        current.nmi.masked = flag(self.nmi.masked);
        current.sipi_vector = self.sipi_vector;
        current.flags = self.flags;
        Ok(current)
    }
}
