//! The `NativeVcpu` class behind the façade's `Vcpu`: one vCPU's registers, state and
//! counters.

use std::sync::{Arc, Weak};

use kvmkit_core::exit::ExitKind;
use kvmkit_core::kvm_bindings::{
    KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_UNINITIALIZED, kvm_lapic_state, kvm_mp_state,
};
use kvmkit_core::stats::bucket_bounds;
use kvmkit_core::vm::Machine;
use napi::bindgen_prelude::{BigInt, Buffer};
use napi_derive::napi;

use crate::convert::{
    CpuidEntry, Fpu, MsrEntry, Registers, SpecialRegisters, VcpuEvents, cpuid_from_js, cpuid_to_js,
    mode, u64_from_bigint, u64_from_js,
};
use crate::error::{Result, core, invalid_arg};
use crate::machine::upgrade;

/// The x86 multiprocessing states (`KVM_MP_STATE_*`) by name.
const MP_STATES: [(&str, u32); 5] = [
    ("runnable", KVM_MP_STATE_RUNNABLE),
    ("uninitialized", KVM_MP_STATE_UNINITIALIZED),
    ("init-received", KVM_MP_STATE_INIT_RECEIVED),
    ("halted", KVM_MP_STATE_HALTED),
    ("sipi-received", KVM_MP_STATE_SIPI_RECEIVED),
];

/// Exit counters and latency histogram of one vCPU.
#[napi(object)]
pub struct NativeStats {
    /// Counts by exit kind name.
    pub exits: Vec<ExitCount>,
    /// Exits whose handling time was measured.
    pub measured: f64,
    /// Median handling time (ns).
    pub p50_ns: f64,
    /// 99th percentile (ns).
    pub p99_ns: f64,
    /// 99.9th percentile (ns).
    pub p999_ns: f64,
    /// The non-empty histogram buckets.
    pub buckets: Vec<LatencyBucket>,
}

/// Exits whose handling took from `lowNs` up to (not including) `highNs`.
#[napi(object)]
pub struct LatencyBucket {
    pub low_ns: f64,
    pub high_ns: f64,
    pub count: f64,
}

/// The count of one exit kind.
#[napi(object)]
pub struct ExitCount {
    pub kind: String,
    pub count: f64,
}

/// One vCPU of a machine. Its calls fail with `INVALID_STATE` once the machine is closed.
#[napi]
pub struct NativeVcpu {
    machine: Weak<Machine>,
    index: u32,
}

impl NativeVcpu {
    pub(crate) fn new(machine: &Arc<Machine>, index: u32) -> Self {
        NativeVcpu {
            machine: Arc::downgrade(machine),
            index,
        }
    }

    fn machine(&self) -> Result<Arc<Machine>> {
        upgrade(&self.machine)
    }

    /// Runs `f` on this vCPU while it is not running guest code.
    fn with<T>(
        &self,
        f: impl FnOnce(&kvmkit_core::vcpu::Vcpu) -> kvmkit_core::Result<T>,
    ) -> Result<T> {
        self.machine()?.with_vcpu(self.index, f).map_err(core)
    }
}

#[napi]
impl NativeVcpu {
    /// Puts this vCPU into `mode` ("real", "protected" or "long") at `entry`.
    #[napi(catch_unwind)]
    pub fn setup(
        &self,
        #[napi(ts_arg_type = "'real' | 'protected' | 'long'")] mode_name: String,
        entry: f64,
        stack: f64,
    ) -> Result<()> {
        let mode = mode(&mode_name)?;
        let entry = u64_from_js("entry", entry)?;
        let stack = u64_from_js("stack", stack)?;
        let m = self.machine()?;
        m.with_vcpu(self.index, |v| v.setup(m.ram(), mode, entry, stack))
            .map_err(core)
    }

    /// The general registers of this vCPU.
    #[napi(catch_unwind)]
    pub fn get_registers(&self) -> Result<Registers> {
        self.machine()?
            .with_vcpu(self.index, |v| v.get_regs())
            .map(Registers::from)
            .map_err(core)
    }

    /// Sets the general registers of this vCPU.
    #[napi(catch_unwind)]
    pub fn set_registers(&self, registers: Registers) -> Result<()> {
        let regs = registers.to_kvm()?;
        self.machine()?
            .with_vcpu(self.index, |v| v.set_regs(&regs))
            .map_err(core)
    }

    /// Turns single-stepping of this vCPU on or off.
    #[napi(catch_unwind)]
    pub fn set_single_step(&self, enabled: bool) -> Result<()> {
        self.with(|v| v.set_single_step(enabled))
    }

    /// The special registers of this vCPU.
    #[napi(catch_unwind)]
    pub fn get_special_registers(&self) -> Result<SpecialRegisters> {
        self.with(|v| v.get_sregs()).map(Into::into)
    }

    /// Sets the special registers of this vCPU.
    #[napi(catch_unwind)]
    pub fn set_special_registers(&self, sregs: SpecialRegisters) -> Result<()> {
        let m = self.machine()?;
        m.with_vcpu(self.index, |v| {
            let current = v.get_sregs()?;
            let next = sregs
                .to_kvm(&current)
                .map_err(|e| kvmkit_core::Error::config("specialRegisters", e.reason.clone()))?;
            v.set_sregs(&next)
        })
        .map_err(core)
    }

    /// The FPU and SSE state of this vCPU.
    #[napi(catch_unwind)]
    pub fn get_fpu(&self) -> Result<Fpu> {
        self.with(|v| v.get_fpu()).map(Into::into)
    }

    /// Sets the FPU and SSE state of this vCPU.
    #[napi(catch_unwind)]
    pub fn set_fpu(&self, fpu: Fpu) -> Result<()> {
        let fpu = fpu.to_kvm()?;
        self.with(|v| v.set_fpu(&fpu))
    }

    /// Reads MSRs of this vCPU; stops at the first one KVM cannot read.
    #[napi(catch_unwind)]
    pub fn get_msrs(&self, indices: Vec<u32>) -> Result<Vec<MsrEntry>> {
        let values = self.with(|v| v.get_msrs(&indices))?;
        Ok(values
            .into_iter()
            .map(|(index, value)| MsrEntry {
                index,
                value: BigInt::from(value),
            })
            .collect())
    }

    /// Writes MSRs of this vCPU; returns how many KVM accepted.
    #[napi(catch_unwind)]
    pub fn set_msrs(&self, msrs: Vec<MsrEntry>) -> Result<u32> {
        let values = msrs
            .iter()
            .map(|e| Ok((e.index, u64_from_bigint("msrs.value", &e.value)?)))
            .collect::<Result<Vec<_>>>()?;
        self.with(|v| v.set_msrs(&values)).map(|n| n as u32)
    }

    /// The CPUID this vCPU presents.
    #[napi(catch_unwind)]
    pub fn get_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        self.with(|v| v.get_cpuid()).map(|c| cpuid_to_js(&c))
    }

    /// Sets the CPUID this vCPU presents (before it first runs).
    #[napi(catch_unwind)]
    pub fn set_cpuid(&self, entries: Vec<CpuidEntry>) -> Result<()> {
        let cpuid = cpuid_from_js(&entries)?;
        self.with(|v| v.set_cpuid(&cpuid))
    }

    /// The local APIC register page (1024 bytes) of this vCPU.
    #[napi(catch_unwind)]
    pub fn get_lapic(&self) -> Result<Buffer> {
        let lapic = self.with(|v| v.get_lapic())?;
        Ok(lapic
            .regs
            .iter()
            .map(|&b| b as u8)
            .collect::<Vec<u8>>()
            .into())
    }

    /// Sets the local APIC register page (1024 bytes) of this vCPU.
    #[napi(catch_unwind)]
    pub fn set_lapic(&self, regs: Buffer) -> Result<()> {
        let mut lapic = kvm_lapic_state::default();
        if regs.len() != lapic.regs.len() {
            return Err(invalid_arg(
                "lapic",
                format!("must be {} bytes, got {}", lapic.regs.len(), regs.len()),
            ));
        }
        for (dst, &src) in lapic.regs.iter_mut().zip(regs.iter()) {
            *dst = src as _;
        }
        self.with(|v| v.set_lapic(&lapic))
    }

    /// The multiprocessing state of this vCPU (`KVM_MP_STATE_*`).
    #[napi(
        catch_unwind,
        ts_return_type = "'runnable' | 'uninitialized' | 'init-received' | 'halted' | 'sipi-received'"
    )]
    pub fn get_mp_state(&self) -> Result<&'static str> {
        let state = self.with(|v| v.get_mp_state())?.mp_state;
        MP_STATES
            .iter()
            .find(|(_, s)| *s == state)
            .map(|(name, _)| *name)
            .ok_or_else(|| {
                core(kvmkit_core::Error::Device {
                    device: "vcpu",
                    message: format!("KVM reports MP state {state}, which an x86 vCPU never has"),
                })
            })
    }

    /// Sets the multiprocessing state of this vCPU.
    #[napi(catch_unwind)]
    pub fn set_mp_state(
        &self,
        #[napi(
            ts_arg_type = "'runnable' | 'uninitialized' | 'init-received' | 'halted' | 'sipi-received'"
        )]
        state: String,
    ) -> Result<()> {
        let (_, mp_state) = MP_STATES
            .iter()
            .find(|(name, _)| *name == state)
            .ok_or_else(|| {
                let names: Vec<&str> = MP_STATES.iter().map(|(n, _)| *n).collect();
                invalid_arg("mpState", format!("{state:?} is not one of {names:?}"))
            })?;
        self.with(|v| {
            v.set_mp_state(kvm_mp_state {
                mp_state: *mp_state,
            })
        })
    }

    /// Pending and injected events of this vCPU.
    #[napi(catch_unwind)]
    pub fn get_events(&self) -> Result<VcpuEvents> {
        self.with(|v| v.get_events()).map(Into::into)
    }

    /// Sets pending and injected events of this vCPU.
    #[napi(catch_unwind)]
    pub fn set_events(&self, events: VcpuEvents) -> Result<()> {
        let m = self.machine()?;
        m.with_vcpu(self.index, |v| {
            let next = events
                .to_kvm(v.get_events()?)
                .map_err(|e| kvmkit_core::Error::config("events", e.reason.clone()))?;
            v.set_events(&next)
        })
        .map_err(core)
    }

    /// Exit counters and latency histogram of this vCPU.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> Result<NativeStats> {
        let s = self.machine()?.stats(self.index).map_err(core)?;
        Ok(NativeStats {
            exits: ExitKind::ALL
                .iter()
                .map(|k| ExitCount {
                    kind: k.name().into(),
                    count: s.exits[*k as usize] as f64,
                })
                .collect(),
            measured: s.measured() as f64,
            p50_ns: s.percentile(0.5).unwrap_or(0) as f64,
            p99_ns: s.percentile(0.99).unwrap_or(0) as f64,
            p999_ns: s.percentile(0.999).unwrap_or(0) as f64,
            buckets: s
                .latency
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, &count)| {
                    let (low, high) = bucket_bounds(i);
                    LatencyBucket {
                        low_ns: low as f64,
                        high_ns: high as f64,
                        count: count as f64,
                    }
                })
                .collect(),
        })
    }
}
