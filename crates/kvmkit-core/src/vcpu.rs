//! One virtual CPU: its KVM fd, its start-up state and what it can tell about itself.

use kvm_bindings::{
    CpuId, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_fpu,
    kvm_guest_debug, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events,
};
use kvm_ioctls::{Cap, VcpuFd, VmFd};

use crate::error::{Error, Result};
use crate::exit::RegisterSnapshot;
use crate::kvm::KvmHost;
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
    /// Creates vCPU `index` of `count` of `vm` with the host's supported CPUID, given its
    /// APIC ID and the machine's topology, the host's brand string and cache leaves (see
    /// [`cpuid::take_from_host`]), presented as a KVM guest's (see [`cpuid::present_kvm`]).
    pub fn new(host: &KvmHost, vm: &VmFd, index: u32, count: u32) -> Result<Self> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
        let mut cpuid = host.supported_cpuid()?;
        cpuid::normalize(&mut cpuid, index, count);
        cpuid::take_from_host(&mut cpuid, cpuid::host_cpuid);
        let timers = cpuid::HostTimers {
            tsc_deadline: host.kvm().check_extension(Cap::TscDeadlineTimer),
            tsc_khz: fd.get_tsc_khz().ok().filter(|&khz| khz != 0),
        };
        cpuid::present_kvm(&mut cpuid, timers);
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

    /// `KVM_GET_FPU`.
    pub fn get_fpu(&self) -> Result<kvm_fpu> {
        self.fd.get_fpu().map_err(Error::kvm("KVM_GET_FPU"))
    }

    /// `KVM_SET_FPU`.
    pub fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()> {
        self.fd.set_fpu(fpu).map_err(Error::kvm("KVM_SET_FPU"))
    }

    /// Reads the MSRs `indices`; returns `(index, value)` for each one KVM could read, in
    /// order, stopping at the first it could not.
    pub fn get_msrs(&self, indices: &[u32]) -> Result<Vec<(u32, u64)>> {
        let entries: Vec<kvm_msr_entry> = indices
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| too_many_msrs(indices.len()))?;
        let read = self
            .fd
            .get_msrs(&mut msrs)
            .map_err(Error::kvm("KVM_GET_MSRS"))?;
        Ok(msrs.as_slice()[..read]
            .iter()
            .map(|e| (e.index, e.data))
            .collect())
    }

    /// Writes MSRs; returns how many KVM accepted (in order, up to the first it refused).
    pub fn set_msrs(&self, values: &[(u32, u64)]) -> Result<usize> {
        let entries: Vec<kvm_msr_entry> = values
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| too_many_msrs(values.len()))?;
        self.fd.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))
    }

    /// The CPUID this vCPU presents (`KVM_GET_CPUID2`).
    pub fn get_cpuid(&self) -> Result<CpuId> {
        self.fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_CPUID2"))
    }

    /// Sets the CPUID this vCPU presents (`KVM_SET_CPUID2`); KVM allows it only before the
    /// vCPU first runs.
    pub fn set_cpuid(&self, cpuid: &CpuId) -> Result<()> {
        self.fd
            .set_cpuid2(cpuid)
            .map_err(Error::kvm("KVM_SET_CPUID2"))
    }

    /// The local APIC's register page (`KVM_GET_LAPIC`; needs the in-kernel irqchip).
    pub fn get_lapic(&self) -> Result<kvm_lapic_state> {
        self.fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))
    }

    /// Sets the local APIC's register page (`KVM_SET_LAPIC`).
    pub fn set_lapic(&self, lapic: &kvm_lapic_state) -> Result<()> {
        self.fd
            .set_lapic(lapic)
            .map_err(Error::kvm("KVM_SET_LAPIC"))
    }

    /// `KVM_GET_MP_STATE`: runnable, halted, waiting for INIT/SIPI…
    pub fn get_mp_state(&self) -> Result<kvm_mp_state> {
        self.fd
            .get_mp_state()
            .map_err(Error::kvm("KVM_GET_MP_STATE"))
    }

    /// `KVM_SET_MP_STATE`.
    pub fn set_mp_state(&self, state: kvm_mp_state) -> Result<()> {
        self.fd
            .set_mp_state(state)
            .map_err(Error::kvm("KVM_SET_MP_STATE"))
    }

    /// Pending and injected exceptions, interrupts and NMIs (`KVM_GET_VCPU_EVENTS`).
    pub fn get_events(&self) -> Result<kvm_vcpu_events> {
        self.fd
            .get_vcpu_events()
            .map_err(Error::kvm("KVM_GET_VCPU_EVENTS"))
    }

    /// Injects or clears exceptions, interrupts and NMIs (`KVM_SET_VCPU_EVENTS`).
    pub fn set_events(&self, events: &kvm_vcpu_events) -> Result<()> {
        self.fd
            .set_vcpu_events(events)
            .map_err(Error::kvm("KVM_SET_VCPU_EVENTS"))
    }

    /// Turns single-stepping on or off: with it on, the vCPU exits with
    /// [`crate::exit::ExitKind::Debug`] after every instruction (`KVM_SET_GUEST_DEBUG`).
    pub fn set_single_step(&self, enabled: bool) -> Result<()> {
        let control = if enabled {
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP
        } else {
            0
        };
        let debug = kvm_guest_debug {
            control,
            ..Default::default()
        };
        self.fd
            .set_guest_debug(&debug)
            .map_err(Error::kvm("KVM_SET_GUEST_DEBUG"))
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

fn too_many_msrs(n: usize) -> Error {
    Error::config(
        "msrs",
        format!(
            "{n} MSRs are more than one call can carry (max {})",
            kvm_bindings::KVM_MAX_MSR_ENTRIES
        ),
    )
}
