//! Interrupts: `NativeMachine`'s IRQ lines and MSIs, and the `NativeEventFd` class behind
//! irqfds and ioeventfds.

use std::sync::{Arc, Mutex, Weak};

use kvmkit_core::irq::IoEvent;
use kvmkit_core::vm::Machine;
use kvmkit_core::vmm_sys_util::eventfd::EventFd;
use napi::bindgen_prelude::BigInt;
use napi_derive::napi;

use crate::convert::{space_of, u64_from_bigint, u64_from_js};
use crate::error::{Result, core};
use crate::machine::NativeMachine;

#[napi]
impl NativeMachine {
    /// Raises (`level` true) or lowers interrupt line `irq`.
    #[napi(catch_unwind)]
    pub fn set_irq_line(&self, irq: u32, level: bool) -> Result<()> {
        self.m()?.set_irq_line(irq, level).map_err(core)
    }

    /// Sends an MSI; returns whether it was delivered.
    #[napi(catch_unwind)]
    pub fn signal_msi(&self, address: f64, data: u32) -> Result<bool> {
        let address = u64_from_js("address", address)?;
        self.m()?.signal_msi(address, data).map_err(core)
    }

    /// An eventfd that raises `gsi` when triggered.
    #[napi(catch_unwind)]
    pub fn create_irqfd(&self, gsi: u32) -> Result<NativeEventFd> {
        let m = self.m()?;
        let fd = m.register_irqfd(gsi).map_err(core)?;
        Ok(NativeEventFd::new(&m, fd, EventFdKind::Irq { gsi }))
    }

    /// An eventfd KVM signals when the guest writes `addr` (`space` "port" or "mmio").
    #[napi(catch_unwind)]
    pub fn create_ioeventfd(
        &self,
        #[napi(ts_arg_type = "'port' | 'mmio'")] space: String,
        addr: f64,
        len: u32,
        datamatch: Option<BigInt>,
    ) -> Result<NativeEventFd> {
        let event = IoEvent {
            space: space_of(&space)?,
            addr: u64_from_js("address", addr)?,
            len,
            datamatch: datamatch
                .map(|d| u64_from_bigint("datamatch", &d))
                .transpose()?,
        };
        let m = self.m()?;
        let fd = m.register_ioeventfd(&event).map_err(core)?;
        Ok(NativeEventFd::new(&m, fd, EventFdKind::Io(event)))
    }
}

enum EventFdKind {
    Irq { gsi: u32 },
    Io(IoEvent),
}

/// An irqfd or ioeventfd of a machine.
#[napi]
pub struct NativeEventFd {
    fd: Mutex<Option<EventFd>>,
    machine: Weak<Machine>,
    kind: EventFdKind,
}

impl NativeEventFd {
    fn new(machine: &Arc<Machine>, fd: EventFd, kind: EventFdKind) -> Self {
        NativeEventFd {
            fd: Mutex::new(Some(fd)),
            machine: Arc::downgrade(machine),
            kind,
        }
    }
}

#[napi]
impl NativeEventFd {
    /// Signals the eventfd (for an irqfd: raises its interrupt).
    #[napi(catch_unwind)]
    pub fn trigger(&self) -> Result<()> {
        match self.fd.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(fd) => fd
                .write(1)
                .map_err(|e| core(kvmkit_core::Error::EventFd(e))),
            None => Err(closed()),
        }
    }

    /// How many times it was signalled since the last call.
    #[napi(catch_unwind)]
    pub fn take(&self) -> Result<f64> {
        match self.fd.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(fd) => Ok(kvmkit_core::irq::take_count(fd) as f64),
            None => Err(closed()),
        }
    }

    /// Detaches it from the machine and closes it. Idempotent.
    #[napi(catch_unwind)]
    pub fn close(&self) -> Result<()> {
        let Some(fd) = self.fd.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        // A closed machine took its registrations with it.
        let Some(m) = self.machine.upgrade() else {
            return Ok(());
        };
        match self.kind {
            EventFdKind::Irq { gsi } => m.unregister_irqfd(&fd, gsi),
            EventFdKind::Io(event) => m.unregister_ioeventfd(&fd, &event),
        }
        .map_err(core)
    }
}

fn closed() -> crate::error::JsError {
    core(kvmkit_core::Error::InvalidState {
        op: "use the eventfd",
        state: "closed",
    })
}
