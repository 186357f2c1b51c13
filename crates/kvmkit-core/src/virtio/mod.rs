//! virtio devices: the virtio-mmio transport ([`mmio`]), interrupts ([`interrupt`]), the
//! I/O thread that serves queues ([`worker`]) and the device models.
//!
//! A device implements [`VirtioDevice`]: what it is (type, queues, features, configuration
//! space) and what it does with its queues once the driver has set them up. The transport
//! owns the register file and hands the queues over on `DRIVER_OK` ([`Activation`]);
//! notifications reach the device on the machine's I/O thread through ioeventfds, never on a
//! vCPU thread and never on Node's event loop; it interrupts the guest through an irqfd.
//! Queues come from rust-vmm's `virtio-queue`, which validates every ring index, descriptor
//! and address a guest hands over.
//!
//! A device may instead have the host kernel serve some of its queues ([`vhost`]): it names
//! them in [`VirtioDevice::offloaded_queues`] and hands the kernel their notify eventfds.

pub mod block;
pub mod console;
pub mod interrupt;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vhost;
pub mod vsock;
pub mod worker;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

pub use interrupt::Interrupt;

/// Guest memory as devices see it.
pub type Memory = vm_memory::GuestMemoryMmap;

/// A chain popped from a queue.
pub type Chain<'a> = DescriptorChain<&'a Memory>;

/// The feature bits every kvmkit device offers besides its own: virtio 1.x, indirect
/// descriptors and `VIRTIO_F_EVENT_IDX` (interrupt and notification suppression).
pub const TRANSPORT_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Whether `features` has bit `bit`.
pub fn has_feature(features: u64, bit: u32) -> bool {
    features & (1 << bit) != 0
}

/// What a device gets on `DRIVER_OK`.
pub struct Activation {
    /// Guest RAM, for the queues' rings and buffers.
    pub mem: Memory,
    /// Its queues, in order, as the driver set them up (a queue the driver left out is not
    /// ready; see [`QueueT::ready`]).
    pub queues: Vec<Queue>,
    /// Interrupts to the driver, and the way to report a broken device.
    pub interrupt: Arc<Interrupt>,
    /// For a device with [offloaded queues](VirtioDevice::offloaded_queues): every queue's
    /// notify eventfd, in order, for the backend that serves it to wait on. Empty otherwise.
    pub kicks: Vec<EventFd>,
}

impl Activation {
    /// Checks that the driver set up every one of the `count` queues of `device` (for a
    /// device that cannot run with fewer).
    ///
    /// # Errors
    ///
    /// A message naming the device, for [`VirtioDevice::activate`] to return.
    pub fn all_ready(self, device: &str, count: usize) -> Result<Self, String> {
        if self.queues.len() == count && self.queues.iter().all(QueueT::ready) {
            Ok(self)
        } else {
            Err(format!("{device} needs all its {count} queues set up"))
        }
    }

    /// Reports the device broken because of `why` ([`Interrupt::fail`]) and gives its
    /// queues up: what a device does with `active` when the driver broke a ring.
    pub fn fail(active: &mut Option<Activation>, why: impl std::fmt::Display) {
        if let Some(active) = active.take() {
            active.interrupt.fail(why);
        }
    }
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("queues", &self.queues.len())
            .finish()
    }
}

/// What a device with one queue holds between activation and reset.
pub struct OneQueue {
    /// Guest RAM.
    pub mem: Memory,
    /// The queue.
    pub queue: Queue,
    /// Interrupts to the driver.
    pub interrupt: Arc<Interrupt>,
}

impl OneQueue {
    /// Takes the one queue of `activation`.
    ///
    /// # Errors
    ///
    /// A message naming `device` if the activation holds no queue.
    pub fn take(activation: Activation, device: &str) -> Result<Self, String> {
        let Activation {
            mem,
            queues,
            interrupt,
            ..
        } = activation;
        let queue = queues
            .into_iter()
            .next()
            .ok_or_else(|| format!("{device} has one queue"))?;
        Ok(OneQueue {
            mem,
            queue,
            interrupt,
        })
    }
}

impl std::fmt::Debug for OneQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneQueue").finish_non_exhaustive()
    }
}

/// A virtio device model.
///
/// The transport calls the register-side methods on a vCPU thread and the queue-side ones
/// on the I/O thread, always under the same lock, so a device never sees two calls at once.
/// Nothing a guest puts in a queue may make it panic: a malformed request completes with an
/// error status, a broken ring is reported through [`Interrupt::fail`].
pub trait VirtioDevice: Send {
    /// The virtio device ID (`virtio_bindings::virtio_ids`).
    fn device_type(&self) -> u32;

    /// Its name in messages and on the bus (`virtio-blk`).
    fn name(&self) -> &'static str;

    /// The largest size of each queue; their number is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Its own feature bits (the transport adds [`TRANSPORT_FEATURES`]).
    fn features(&self) -> u64;

    /// The features the driver accepted (a subset of those offered, with the transport's),
    /// before [`VirtioDevice::activate`].
    fn ack_features(&mut self, _features: u64) {}

    /// Reads `data.len()` bytes of its configuration space at `offset` (bytes past its end
    /// read as 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Takes a driver's write to its configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// Takes the queues on `DRIVER_OK`. Runs on a vCPU thread: store them and return.
    ///
    /// # Errors
    ///
    /// A message saying why the device cannot run; the transport then sets
    /// `DEVICE_NEEDS_RESET`.
    fn activate(&mut self, activation: Activation) -> Result<(), String>;

    /// Queue `index` was notified (or may hold work: after activation every queue is
    /// looked at once). Runs on the I/O thread, only while the device is active.
    fn process_queue(&mut self, index: usize);

    /// The queues a backend outside kvmkit serves (the kernel's vhost): the I/O thread does
    /// not watch their notify eventfds, so [`VirtioDevice::process_queue`] never hears of
    /// them, and the device finds the eventfds in [`Activation::kicks`] to hand over. None
    /// by default.
    fn offloaded_queues(&self) -> &[usize] {
        &[]
    }

    /// File descriptors the I/O thread watches for this device besides its queues (host
    /// input, a backend's completions); the device hears of them through
    /// [`VirtioDevice::process_backend`]. Asked once, when the device is attached.
    fn backend_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Backend descriptor `index` (into [`VirtioDevice::backend_fds`]) is readable. Runs on
    /// the I/O thread whether or not the device is active: drain what is there.
    fn process_backend(&mut self, _index: usize) {}

    /// The driver reset the device: drop the queues and anything in flight, and be ready to
    /// be activated again.
    fn reset(&mut self);
}

/// The next chain the driver made available on `queue`, or `None` when there is none.
///
/// # Errors
///
/// The ring's error when the driver broke it (an available index more than the queue's size
/// ahead, or a ring entry outside RAM): `pop_descriptor_chain` alone would answer `None` while the ring still shows work,
/// and a loop waiting for the ring to drain would never end.
pub fn next_chain<'m>(
    queue: &mut Queue,
    mem: &'m Memory,
) -> Result<Option<Chain<'m>>, virtio_queue::Error> {
    if !queue.ready() {
        return Ok(None);
    }
    // Read before the pop: the pop sees at least this index, so if it finds nothing while
    // this says entries wait, the ring is broken, not raced.
    let published = queue.avail_idx(mem, Ordering::Acquire)?;
    match queue.pop_descriptor_chain(mem) {
        Some(chain) => Ok(Some(chain)),
        None if published.0 == queue.next_avail() => Ok(None),
        // Entries wait that cannot be read: an avail index too far ahead (`iter` says so) or
        // a ring entry outside RAM — without this, `enable_notification` would keep saying
        // work waits and the drain would spin.
        None => queue
            .iter(mem)
            .and(Err(virtio_queue::Error::InvalidAvailRingIndex)),
    }
}

/// Pops every chain available on `queue`, hands each to `handle` (which returns how many
/// bytes it wrote into the chain's writable buffers), returns them to the driver, and
/// interrupts it when the ring asks for it — the loop of virtio-queue's documentation, with
/// notifications suppressed while it drains. It serves at most [`CHAINS_PER_TURN`] chains,
/// then yields ([`Interrupt::yield_queue`]); a queue the driver did not make ready is left
/// alone.
///
/// # Errors
///
/// The ring's error when the driver broke it (an avail index more than the queue size
/// ahead, rings outside RAM); chains already handled are returned first.
pub fn drain_queue(
    queue: &mut Queue,
    mem: &Memory,
    interrupt: &Interrupt,
    mut handle: impl FnMut(Chain<'_>) -> u32,
) -> Result<(), virtio_queue::Error> {
    drain_queue_while(
        queue,
        mem,
        interrupt,
        &mut (),
        |_| true,
        |_, chain| handle(chain),
    )
}

/// The most chains one call of [`drain_queue`] serves before it yields the I/O thread to
/// the other devices. It also bounds a driver whose rings feed themselves (a used ring or a
/// device-written buffer laid over the avail index): served forever, it would hold the
/// thread.
pub const CHAINS_PER_TURN: usize = 256;

/// [`drain_queue`] for a device that can take a chain only at times: a chain is popped
/// only while `ready(state)` holds (host input waits for the guest's buffers, output for
/// room on the host), and the others stay in the ring until the device is called again.
///
/// # Errors
///
/// As [`drain_queue`].
pub fn drain_queue_while<S: ?Sized>(
    queue: &mut Queue,
    mem: &Memory,
    interrupt: &Interrupt,
    state: &mut S,
    ready: impl Fn(&S) -> bool,
    mut handle: impl FnMut(&mut S, Chain<'_>) -> u32,
) -> Result<(), virtio_queue::Error> {
    if !queue.ready() {
        // The driver left it out: nothing to serve, whatever its avail index says.
        return Ok(());
    }
    let mut served = 0;
    let result = (|| loop {
        queue.disable_notification(mem)?;
        let mut popped = false;
        while ready(state) {
            if served == CHAINS_PER_TURN {
                // Yield with notifications off: the I/O thread calls again after the
                // other devices' events.
                interrupt.yield_queue();
                return Ok(());
            }
            let Some(chain) = next_chain(queue, mem)? else {
                break;
            };
            popped = true;
            let head = chain.head_index();
            let len = handle(state, chain);
            queue.add_used(mem, head, len)?;
            served += 1;
        }
        // A round that found nothing although the ring said work waited: the ring changes
        // under the device's own writes (laid over itself), so stop rather than spin.
        if !queue.enable_notification(mem)? || !ready(state) || !popped {
            return Ok(());
        }
    })();
    let used = served > 0;
    if used && queue.needs_notification(mem)? {
        interrupt.signal_used();
    }
    result
}
