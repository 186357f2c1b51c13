//! What the vCPU threads tell the machine's owner.

use crate::exit::Outcome;

/// Receives what the vCPU threads cannot settle in Rust.
///
/// The methods are called on vCPU threads and must not block: each is a doorbell that hands
/// the news over to whoever acts on it (the Node binding queues it to the JS thread), which
/// then takes the payload from the machine.
pub trait ExitHandler: Send + Sync {
    /// An access to a user device is waiting in the hand-off and no thread is polling for it:
    /// take it with [`crate::handoff::Handoff::poll`] and answer it with
    /// [`crate::handoff::Handoff::reply`] or [`crate::handoff::Handoff::fail`]. The vCPU waits
    /// until then. A doorbell may find nothing to take: a poll took the access first.
    fn on_access(&self);
    /// Posted writes are waiting: take them with [`crate::handoff::Handoff::take_posted`].
    /// Called when the queue goes from empty to non-empty, not for every write.
    fn on_posted(&self);
    /// A device has news for its host side: its output buffer stopped being empty (take it:
    /// [`crate::devices::serial::SerialHandle::take_output`] for a serial port, named by its first
    /// port; a virtio console's or network device's, named by its MMIO base), or a byte
    /// stream (serial port, virtio console) has room again for input it refused (offer the
    /// rest again). Called when the buffer goes from empty to non-empty, and once per
    /// refusal when room appears: never per byte.
    fn on_output(&self, device: u32);
    /// virtio device `device`, whose window is at `base`, stopped working because of
    /// `message` (a ring the driver broke, a device-model failure): it set
    /// `DEVICE_NEEDS_RESET` and waits for the driver to reset it. Called once per failure,
    /// from a vCPU thread or the I/O thread. Ignored by default.
    fn on_device_error(&self, _device: &str, _base: u64, _message: &str) {}
    /// Every running vCPU has stopped at a pause point.
    fn on_paused(&self);
    /// The run ended; no further calls follow.
    fn on_end(&self, outcome: &Outcome);
}
