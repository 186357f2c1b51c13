//! The vCPU run loops, and what they share with their machine.
//!
//! - [`looper`]: the loop itself — `KVM_RUN`, dispatch the exit, repeat — and pause points;
//! - [`threaded`]: a vCPU on a thread of its own, handing user-device accesses over through
//!   the [`crate::handoff`];
//! - [`inline`]: a vCPU driven by its caller's thread, which answers accesses directly;
//! - [`route`]: where an access goes (a built-in device, a user device, or nowhere), a pure
//!   function of the bus and the exit;
//! - [`kvm_run`]: every read of the `kvm_run` union;
//! - [`emulate`]: the few instructions a software-assisted KVM leaves unfinished.

pub mod emulate;
pub(crate) mod inline;
mod kvm_run;
mod looper;
mod route;
pub(crate) mod threaded;

use std::sync::{Arc, Mutex};

use crate::bus::{Bus, SharedBus};
use crate::epoch::Epoch;
use crate::exit::{ExitKind, Outcome};
use crate::handoff::Handoff;
use crate::memory::GuestRam;
use crate::stats::VcpuStats;
use crate::vcpu::Vcpu;
use crate::vm::kick::KickRegistry;
use crate::vm::lifecycle::Lifecycle;
use crate::vm::options::MachineOptions;

/// State shared between a machine's owner and its vCPU loops.
pub(crate) struct Shared {
    /// What the loops poll on every exit: advanced by the buses and the lifecycle.
    pub(crate) epoch: Arc<Epoch>,
    pub(crate) ports: SharedBus,
    pub(crate) mmio: SharedBus,
    pub(crate) stats: Vec<Arc<VcpuStats>>,
    pub(crate) handoff: Arc<Handoff>,
    pub(crate) kicks: KickRegistry,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) options: MachineOptions,
}

impl Shared {
    /// Shared state for `vcpus` vCPUs.
    pub(crate) fn new(vcpus: usize, options: MachineOptions) -> Self {
        let epoch = Arc::new(Epoch::default());
        Shared {
            ports: SharedBus::new(Bus::ports(), Arc::clone(&epoch)),
            mmio: SharedBus::new(Bus::mmio(), Arc::clone(&epoch)),
            stats: (0..vcpus).map(|_| Arc::default()).collect(),
            handoff: Arc::new(Handoff::new(vcpus, options.handoff_spin)),
            kicks: KickRegistry::new(vcpus),
            lifecycle: Lifecycle::new(Arc::clone(&epoch)),
            options,
            epoch,
        }
    }

    /// Records the first terminal outcome and asks every vCPU to stop.
    pub(crate) fn end_with(&self, outcome: Outcome) {
        self.lifecycle.record(outcome);
        self.stop_all();
    }

    /// Asks every vCPU to leave its loop: the flag and the parked ones through the
    /// lifecycle, those waiting for an answer through the hand-off, a kick for those inside
    /// `KVM_RUN` (such as an application processor still waiting for its SIPI when the first
    /// vCPU powers off).
    pub(crate) fn stop_all(&self) {
        self.lifecycle.request_stop();
        self.handoff.cancel();
        self.kicks.kick_others();
    }
}

/// What a vCPU loop needs.
pub(crate) struct VcpuContext {
    pub(crate) index: u32,
    pub(crate) vcpu: Arc<Mutex<Vcpu>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ram: Arc<GuestRam>,
    pub(crate) vcpu_mmap_size: usize,
}

/// What the loop does after an exit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Re-enter the guest.
    Continue,
    /// A user device must see the access: answer it (or queue it, for a posted write).
    User {
        /// The device's registration id.
        device: u32,
        /// Offset of the access into the device's range.
        offset: u64,
        /// Whether the device takes posted writes.
        posted: bool,
    },
    /// The vCPU halted.
    Halt,
    /// The run ends with this outcome (boxed: an `Outcome` is ~190 bytes, and every exit
    /// moves a `Step`, which at that size is a call to `memcpy`, a code page of its own).
    End(Box<Outcome>),
    /// The run ends with an error.
    Fail {
        code: &'static str,
        exit: ExitKind,
        message: String,
    },
}
