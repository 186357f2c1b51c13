//! A virtio device's interrupt: the transport's `InterruptStatus` bits and the irqfd that
//! raises the device's line, shared by the transport (vCPU threads) and the device (the I/O
//! thread).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use vmm_sys_util::eventfd::EventFd;

use crate::sync::LockExt;

/// Told of a device's failure, once per failure.
pub type FailureReport = Box<dyn Fn(&str) + Send + Sync>;

/// The interrupt of one device.
pub struct Interrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    yielded: AtomicBool,
    failure: Mutex<Option<String>>,
    line: EventFd,
    report: Option<FailureReport>,
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt")
            .field("status", &self.status())
            .field("failure", &self.failure())
            .finish_non_exhaustive()
    }
}

impl Interrupt {
    /// An interrupt raised by writing `line` (an irqfd on the device's GSI).
    pub fn new(line: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            yielded: AtomicBool::new(false),
            failure: Mutex::new(None),
            line,
            report: None,
        }
    }

    /// An interrupt on `line` that also tells `report` why, whenever the device fails.
    pub fn with_report(line: EventFd, report: FailureReport) -> Self {
        Interrupt {
            report: Some(report),
            ..Interrupt::new(line)
        }
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        // An irqfd write fails only when its counter is saturated, i.e. it is pending anyway.
        let _ = self.line.write(1);
    }

    /// Tells the driver a queue has new used buffers.
    pub fn signal_used(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// Tells the driver the configuration space (or the device status) changed.
    pub fn signal_config(&self) {
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    /// Marks the device broken (`DEVICE_NEEDS_RESET`) because of `why`, keeps the first
    /// reason for the host (and reports it), and tells the driver.
    pub fn fail(&self, why: impl std::fmt::Display) {
        let mut failure = self.failure.lock_or_recover();
        let first = failure.is_none();
        if first {
            *failure = Some(why.to_string());
        }
        let reason = failure.clone().unwrap_or_default();
        drop(failure);
        self.needs_reset.store(true, Ordering::SeqCst);
        self.signal_config();
        if let (true, Some(report)) = (first, &self.report) {
            report(&reason);
        }
    }

    /// Why the device was marked broken, if it was since the last reset.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock_or_recover().clone()
    }

    /// Says the device stopped serving a queue at its budget with chains left: the I/O
    /// thread calls it again for that queue once the other devices had their turn.
    pub fn yield_queue(&self) {
        self.yielded.store(true, Ordering::SeqCst);
    }

    /// Whether the device yielded since the last call (and forgets it).
    pub fn take_yielded(&self) -> bool {
        self.yielded.swap(false, Ordering::SeqCst)
    }

    /// Whether the device needs a reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// The pending `InterruptStatus` bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver's `InterruptACK`: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Forgets every pending bit and failure (a device reset).
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
        *self.failure.lock_or_recover() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn each_signal_sets_its_bit_and_raises_the_line() {
        let line = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = Interrupt::new(line.try_clone().unwrap());
        irq.signal_used();
        irq.signal_config();
        assert_eq!(irq.status(), 3);
        assert_eq!(line.read().unwrap(), 2);
        irq.ack(1);
        assert_eq!(irq.status(), 2);
    }

    #[test]
    fn a_failure_keeps_its_first_reason_until_reset() {
        let reported = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&reported);
        let irq = Interrupt::with_report(
            EventFd::new(EFD_NONBLOCK).unwrap(),
            Box::new(move |why| sink.lock().unwrap().push(why.to_string())),
        );
        irq.fail("ring outside RAM");
        irq.fail("second");
        assert!(irq.needs_reset());
        assert_eq!(irq.failure().as_deref(), Some("ring outside RAM"));
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(
            *reported.lock().unwrap(),
            ["ring outside RAM"],
            "reported once"
        );
        irq.reset();
        assert!(!irq.needs_reset());
        assert_eq!((irq.status(), irq.failure()), (0, None));
    }
}
