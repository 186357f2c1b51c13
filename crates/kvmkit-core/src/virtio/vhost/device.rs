//! The virtio device of every vhost backend: kvmkit answers the transport's questions through
//! a [`Personality`] (net, vsock), the kernel serves the offloaded queues.

use std::os::fd::RawFd;

use vhost::vhost_kern::VhostKernBackend;

use super::{Kernel, Mem};
use crate::virtio::{Activation, VirtioDevice};

/// What differs between vhost devices: what the guest sees of them, and how the kernel's
/// backend is started once its queues are set up and stopped on a reset.
pub trait Personality: Send {
    /// The kernel's backend.
    type Backend: VhostKernBackend<AS = Mem> + Send;
    /// The virtio device ID.
    const DEVICE_TYPE: u32;
    /// Its name in messages.
    const NAME: &'static str;
    /// Each queue's size; their number is the number of queues.
    const QUEUE_SIZES: &'static [u16];
    /// The queues the kernel serves.
    const OFFLOADED: &'static [usize];

    /// The device's own feature bits (the kernel is told only those it offers).
    fn features(&self) -> u64;

    /// Reads its configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Starts the backend on the queues the kernel now holds (a TAP, vsock's running state).
    ///
    /// # Errors
    ///
    /// A message naming what the kernel refused.
    fn attach(&self, backend: &Self::Backend) -> Result<(), String>;

    /// Stops the backend: the kernel no longer touches the queues.
    fn detach(&self, backend: &Self::Backend);
}

/// A virtio device whose queues [`Personality::OFFLOADED`] the kernel serves.
pub struct Vhost<P: Personality> {
    personality: P,
    kernel: Kernel<P::Backend>,
    acked: u64,
    active: Option<Activation>,
}

impl<P: Personality> std::fmt::Debug for Vhost<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(P::NAME)
            .field("kernel", &self.kernel)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Personality> Vhost<P> {
    /// The device of `personality` on `kernel`.
    pub(crate) fn new(personality: P, kernel: Kernel<P::Backend>) -> Self {
        Vhost {
            personality,
            kernel,
            acked: 0,
            active: None,
        }
    }
}

impl<P: Personality> VirtioDevice for Vhost<P> {
    fn device_type(&self) -> u32 {
        P::DEVICE_TYPE
    }

    fn name(&self) -> &'static str {
        P::NAME
    }

    fn queue_max_sizes(&self) -> &[u16] {
        P::QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        self.personality.features()
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.personality.read_config(offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), String> {
        let activation = activation.all_ready(P::NAME, P::QUEUE_SIZES.len())?;
        let started = self
            .kernel
            .start(&activation, self.acked)
            .and_then(|()| self.personality.attach(self.kernel.backend()));
        if let Err(why) = started {
            self.personality.detach(self.kernel.backend());
            return Err(why);
        }
        self.active = Some(activation);
        Ok(())
    }

    /// Only queues kvmkit keeps come here (vsock's event queue), and they carry nothing a
    /// vhost device must answer.
    fn process_queue(&mut self, _index: usize) {}

    fn offloaded_queues(&self) -> &[usize] {
        P::OFFLOADED
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        self.kernel.call_fds()
    }

    fn process_backend(&mut self, index: usize) {
        self.kernel.on_call(index, self.active.as_ref());
    }

    fn reset(&mut self) {
        self.personality.detach(self.kernel.backend());
        self.active = None;
    }
}
