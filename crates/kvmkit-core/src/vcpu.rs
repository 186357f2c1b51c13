//! One virtual CPU: its KVM fd, its start-up state and what it can tell about itself.

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_regs, kvm_sregs};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::error::{Error, Result};
use crate::exit::RegisterSnapshot;
use crate::memory::GuestRam;
use crate::x86::cpuid;
use crate::x86::mode::{self, CpuMode};

/// The longest x86 instruction.
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// A vCPU of a machine.
#[derive(Debug)]
pub struct Vcpu {
    fd: VcpuFd,
    index: u32,
}

impl Vcpu {
    /// Creates vCPU `index` of `vm` with the host's supported CPUID, made per-vCPU.
    pub fn new(kvm: &Kvm, vm: &VmFd, index: u32) -> Result<Self> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        cpuid::set_apic_id(&mut cpuid, index);
        fd.set_cpuid2(&cpuid)
            .map_err(Error::kvm("KVM_SET_CPUID2"))?;
        Ok(Vcpu { fd, index })
    }

    /// This vCPU's index (and initial APIC ID).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The kvm-ioctls vCPU, for state access and `KVM_RUN`.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// The kvm-ioctls vCPU, mutably.
    pub fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    /// Puts the vCPU into `mode`, ready to execute at `entry` with stack pointer `stack`.
    pub fn setup(&self, ram: &GuestRam, mode: CpuMode, entry: u64, stack: u64) -> Result<()> {
        let sregs = self.get_sregs()?;
        let sregs = mode::sregs_for(mode, sregs, ram)?;
        self.set_sregs(&sregs)?;
        self.set_regs(&mode::regs_for(entry, stack))
    }

    /// `KVM_GET_REGS`.
    pub fn get_regs(&self) -> Result<kvm_regs> {
        self.fd.get_regs().map_err(Error::kvm("KVM_GET_REGS"))
    }

    /// `KVM_SET_REGS`.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd.set_regs(regs).map_err(Error::kvm("KVM_SET_REGS"))
    }

    /// `KVM_GET_SREGS`.
    pub fn get_sregs(&self) -> Result<kvm_sregs> {
        self.fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))
    }

    /// `KVM_SET_SREGS`.
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd
            .set_sregs(sregs)
            .map_err(Error::kvm("KVM_SET_SREGS"))
    }

    /// The registers that explain where the guest is, if they can be read.
    pub fn snapshot(&self) -> Option<RegisterSnapshot> {
        let r = self.fd.get_regs().ok()?;
        let s = self.fd.get_sregs().ok()?;
        Some(RegisterSnapshot {
            rip: r.rip,
            rflags: r.rflags,
            gprs: [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp],
            cs: s.cs.selector,
            cs_base: s.cs.base,
            cr0: s.cr0,
            efer: s.efer,
        })
    }

    /// The bytes at the guest's instruction pointer (up to 15; fewer at the end of RAM, none
    /// if the address does not translate).
    pub fn instruction_bytes(&self, ram: &GuestRam, regs: &RegisterSnapshot) -> Vec<u8> {
        const CR0_PG: u64 = 1 << 31;
        let linear = regs.cs_base.wrapping_add(regs.rip);
        let phys = if regs.cr0 & CR0_PG != 0 {
            match self.fd.translate_gva(linear) {
                Ok(t) if t.valid != 0 => t.physical_address,
                _ => return Vec::new(),
            }
        } else {
            linear & 0xffff_ffff
        };
        let mut buf = [0u8; MAX_INSTRUCTION_LEN];
        (1..=MAX_INSTRUCTION_LEN)
            .rev()
            .find(|&n| ram.read(phys, &mut buf[..n]).is_ok())
            .map(|n| buf[..n].to_vec())
            .unwrap_or_default()
    }
}
