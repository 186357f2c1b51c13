//! Run-time behaviour of a machine, chosen when it is created.

use std::time::Duration;

use crate::memory::MemoryOptions;
use crate::sandbox::Sandbox;

/// What to do with an access to a port or address no device claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhandledPolicy {
    /// Stop the machine with an `UNHANDLED_EXIT` error naming the exit, address and RIP.
    Error,
    /// Reads return all-ones and writes are dropped, as on a bus with nothing on it.
    Ignore,
}

/// Run-time behaviour of a machine.
#[derive(Debug, Clone)]
pub struct MachineOptions {
    /// The longest a vCPU spins waiting for a user device's answer before it sleeps. It
    /// spins only while spinning pays: when answers have lately taken longer than this, it
    /// sleeps almost at once (see [`crate::handoff`]).
    pub handoff_spin: Duration,
    /// What to do with unclaimed port and MMIO accesses.
    pub unhandled: UnhandledPolicy,
    /// Create the in-kernel interrupt controllers (PIC, IOAPIC, LAPICs) and PIT. With them,
    /// `hlt` waits for an interrupt inside KVM instead of exiting.
    pub irqchip: bool,
    /// How guest RAM is backed and mapped.
    pub memory: MemoryOptions,
    /// Finish in kvmkit the instructions a software-assisted KVM's emulator gives up on,
    /// where kvmkit can (`int3` and `int n`, by injecting the vector past them; `fwait`;
    /// `xgetbv`; `clac`/`stac`; `clwb`/`clflushopt`; `ldmxcsr`/`stmxcsr`): see [`crate::vm::run::emulate`].
    /// Harmless on hardware virtualization, where those instructions never exit.
    pub emulation_fallbacks: bool,
    /// Confine each vCPU thread with a seccomp filter (see [`crate::sandbox`]); off by
    /// default. Such a machine cannot be started inline.
    pub sandbox: Option<Sandbox>,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            handoff_spin: Duration::from_micros(200),
            unhandled: UnhandledPolicy::Error,
            irqchip: false,
            memory: MemoryOptions::default(),
            emulation_fallbacks: true,
            sandbox: None,
        }
    }
}
