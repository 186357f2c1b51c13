//! vhost: queues served by the host kernel (`/dev/vhost-net`, `/dev/vhost-vsock`) instead of
//! kvmkit's I/O thread, through rust-vmm's `vhost` crate.
//!
//! kvmkit keeps the virtio-mmio transport (registers, configuration space, feature
//! negotiation) and hands the kernel, on activation, what it needs to serve the queues
//! itself: guest RAM's regions (`VHOST_SET_MEM_TABLE`), each ring's size, addresses and next
//! available index, the negotiated features, and two eventfds per queue. The *kick* is the
//! queue's notify ioeventfd, which KVM signals on the guest's `QueueNotify`: the kernel
//! waits on it and the I/O thread leaves it alone ([`VirtioDevice::offloaded_queues`]). The
//! *call* cannot be the device's irqfd: virtio-mmio's driver reads `InterruptStatus` and
//! ignores an interrupt whose used-buffer bit is clear. So each queue gets its own call
//! eventfd, which the I/O thread watches as a backend descriptor and turns into
//! [`Interrupt::signal_used`] — what QEMU does for virtio-mmio too.
//!
//! [`VirtioDevice::offloaded_queues`]: crate::virtio::VirtioDevice::offloaded_queues
//! [`Interrupt::signal_used`]: crate::virtio::Interrupt::signal_used

pub mod device;
pub mod net;
pub mod vsock;

use std::os::fd::{AsRawFd, RawFd};

use vhost::vhost_kern::VhostKernBackend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::virtio::{Activation, Memory, TRANSPORT_FEATURES};

pub use device::{Personality, Vhost};
pub use net::VhostNet;
pub use vsock::VhostVsock;

/// Why a vhost backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// The device node is missing, or this process may not open it.
    #[error(
        "{path} is not available ({why}): {remedy}, or drop `vhost` to use kvmkit's own backend"
    )]
    Unavailable {
        /// The device node.
        path: &'static str,
        /// What went wrong (no such file, permission denied).
        why: std::io::Error,
        /// What to do about it.
        remedy: String,
    },
    /// The kernel's vhost lacks features the transport always offers.
    #[error(
        "{path} lacks the virtio features {missing:#x} (virtio 1.x, indirect descriptors, event index): use a newer host kernel, or drop `vhost`"
    )]
    MissingFeatures {
        /// The device node.
        path: &'static str,
        /// The feature bits it lacks.
        missing: u64,
    },
    /// Another VM on this host has the CID.
    #[error("vsock CID {cid} is in use by another VM on this host: give this guest another cid")]
    CidInUse {
        /// The CID.
        cid: u64,
    },
    /// A vhost request the kernel refused.
    #[error("{path}: {op}: {source}")]
    Kernel {
        /// The device node.
        path: &'static str,
        /// What failed.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: vhost::Error,
    },
    /// A host-side API that a device on vhost does not have: the kernel is its host side.
    #[error("{device} runs on vhost: {what}")]
    InKernel {
        /// The device.
        device: &'static str,
        /// What the kernel does instead, and what to do.
        what: &'static str,
    },
}

impl VhostError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            VhostError::Unavailable { .. } => "VHOST_UNAVAILABLE",
            VhostError::MissingFeatures { .. } | VhostError::Kernel { .. } => "VHOST_FAILED",
            VhostError::CidInUse { .. } => "VSOCK_CID_IN_USE",
            VhostError::InKernel { .. } => "VHOST_IN_KERNEL",
        }
    }
}

/// The guest memory handle vhost backends translate ring addresses with.
type Mem = std::sync::Arc<Memory>;

/// A kernel vhost backend, owned, with the call eventfds of the queues it serves.
pub(crate) struct Kernel<B> {
    backend: B,
    path: &'static str,
    /// What the kernel offers.
    features: u64,
    /// The queues it serves, by index.
    queues: &'static [usize],
    /// One call eventfd per served queue, in the order of `queues`.
    calls: Vec<EventFd>,
}

impl<B> std::fmt::Debug for Kernel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("path", &self.path)
            .field("features", &format_args!("{:#x}", self.features))
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl<B: VhostKernBackend<AS = Mem>> Kernel<B> {
    /// Opens the backend with `open` (which opens `path`), makes this process its owner and
    /// reads its features; it will serve queues `queues`.
    ///
    /// # Errors
    ///
    /// [`VhostError::Unavailable`] if `path` is missing or not permitted (`module` names the
    /// kernel module that provides it), [`VhostError::MissingFeatures`] if the kernel lacks
    /// what the transport offers, [`VhostError::Kernel`] for a refused request.
    pub(crate) fn open(
        path: &'static str,
        module: &str,
        queues: &'static [usize],
        open: impl FnOnce() -> vhost::Result<B>,
    ) -> Result<Self, VhostError> {
        let backend = open().map_err(|e| match e {
            vhost::Error::VhostOpen(why) => {
                let remedy = match why.raw_os_error() {
                    Some(libc::EACCES | libc::EPERM) => format!(
                        "run as root or give your user access (`sudo setfacl -m u:$USER:rw {path}`)"
                    ),
                    _ => format!("load the {module} module (`sudo modprobe {module}`)"),
                };
                VhostError::Unavailable { path, why, remedy }
            }
            source => VhostError::Kernel {
                path,
                op: "open",
                source,
            },
        })?;
        let kernel = |op| move |source| VhostError::Kernel { path, op, source };
        backend.set_owner().map_err(kernel("VHOST_SET_OWNER"))?;
        let features = backend
            .get_features()
            .map_err(kernel("VHOST_GET_FEATURES"))?;
        let missing = TRANSPORT_FEATURES & !features;
        if missing != 0 {
            return Err(VhostError::MissingFeatures { path, missing });
        }
        let calls = queues
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| kernel("eventfd")(vhost::Error::IOError(e)))?;
        Ok(Kernel {
            backend,
            path,
            features,
            queues,
            calls,
        })
    }

    /// The backend.
    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    /// The call eventfds, for [`VirtioDevice::backend_fds`](crate::virtio::VirtioDevice::backend_fds).
    pub(crate) fn call_fds(&self) -> Vec<RawFd> {
        self.calls.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Call eventfd `index` is readable: the kernel used buffers of that queue and the
    /// driver wants to hear of it. Consumes it and, while the device is `active`, interrupts
    /// the driver with the used-buffer bit set.
    pub(crate) fn on_call(&self, index: usize, active: Option<&Activation>) {
        let called = self.calls.get(index).is_some_and(|c| c.read().is_ok());
        if let (true, Some(active)) = (called, active) {
            active.interrupt.signal_used();
        }
    }

    /// Hands the queues of `activation` to the kernel: features `acked ∩` what it offers,
    /// the memory table, and for each served queue its size, addresses, next available
    /// index, kick (the queue's notify eventfd) and call eventfd. The device then attaches
    /// its backend (a TAP, or starts vsock).
    ///
    /// # Errors
    ///
    /// A message for [`VirtioDevice::activate`](crate::virtio::VirtioDevice::activate) naming
    /// the request the kernel refused.
    pub(crate) fn start(&self, activation: &Activation, acked: u64) -> Result<(), String> {
        let fail = |op: &'static str| {
            let path = self.path;
            move |e: vhost::Error| format!("{path}: {op}: {e}")
        };
        let b = &self.backend;
        b.set_features(negotiated(acked, self.features))
            .map_err(fail("VHOST_SET_FEATURES"))?;
        b.set_mem_table(&mem_table(&activation.mem))
            .map_err(fail("VHOST_SET_MEM_TABLE"))?;
        for (&index, call) in self.queues.iter().zip(&self.calls) {
            let (Some(queue), Some(kick)) =
                (activation.queues.get(index), activation.kicks.get(index))
            else {
                return Err(format!("{}: queue {index} was not handed over", self.path));
            };
            b.set_vring_num(index, queue.size())
                .map_err(fail("VHOST_SET_VRING_NUM"))?;
            b.set_vring_addr(index, &vring_config(queue))
                .map_err(fail("VHOST_SET_VRING_ADDR"))?;
            b.set_vring_base(index, queue.next_avail())
                .map_err(fail("VHOST_SET_VRING_BASE"))?;
            b.set_vring_call(index, call)
                .map_err(fail("VHOST_SET_VRING_CALL"))?;
            b.set_vring_kick(index, kick)
                .map_err(fail("VHOST_SET_VRING_KICK"))?;
        }
        Ok(())
    }
}

/// The features vhost is told to use: those the driver accepted that it offers (the device's
/// own, such as a MAC address, are kvmkit's business, not the kernel's).
pub fn negotiated(acked: u64, offered_by_kernel: u64) -> u64 {
    acked & offered_by_kernel
}

/// `VHOST_SET_MEM_TABLE`'s regions: each region of guest RAM at its guest address, size and
/// address in this process (kvmkit's RAM is split around the 32-bit hole, so several).
pub fn mem_table(mem: &Memory) -> Vec<VhostUserMemoryRegionInfo> {
    mem.iter()
        .map(|region| VhostUserMemoryRegionInfo {
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            mmap_offset: 0,
            mmap_handle: -1,
        })
        .collect()
}

/// `VHOST_SET_VRING_ADDR`'s ring description of `queue`, in guest addresses (the backend
/// translates them through its memory).
pub fn vring_config(queue: &Queue) -> VringConfigData {
    VringConfigData {
        queue_max_size: queue.max_size(),
        queue_size: queue.size(),
        flags: 0,
        desc_table_addr: queue.desc_table(),
        used_ring_addr: queue.used_ring(),
        avail_ring_addr: queue.avail_ring(),
        log_addr: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn the_memory_table_has_one_entry_per_ram_region_at_its_guest_and_host_address() {
        // RAM split around a hole, as kvmkit lays it out above 3 GiB.
        let mem = Memory::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x1_0000_0000), 0x20_0000),
        ])
        .unwrap();
        let table = mem_table(&mem);
        assert_eq!(table.len(), 2);
        for (entry, region) in table.iter().zip(mem.iter()) {
            assert_eq!(entry.guest_phys_addr, region.start_addr().0);
            assert_eq!(entry.memory_size, region.len());
            assert_eq!(entry.userspace_addr, region.as_ptr() as u64);
        }
        assert_eq!(table[1].guest_phys_addr, 0x1_0000_0000);
        assert_eq!(table[1].memory_size, 0x20_0000);
    }

    #[test]
    fn the_vring_description_is_the_queue_the_driver_set_up() {
        let mut queue = Queue::new(256).unwrap();
        queue.set_size(64);
        queue.set_desc_table_address(Some(0x1000), Some(0x1));
        queue.set_avail_ring_address(Some(0x2000), None);
        queue.set_used_ring_address(Some(0x3000), None);
        let config = vring_config(&queue);
        assert_eq!(config.queue_max_size, 256);
        assert_eq!(config.queue_size, 64);
        assert_eq!(config.desc_table_addr, 0x1_0000_1000);
        assert_eq!(config.avail_ring_addr, 0x2000);
        assert_eq!(config.used_ring_addr, 0x3000);
        assert_eq!(config.flags, 0);
        assert!(config.log_addr.is_none());
    }

    #[test]
    fn the_kernel_is_told_only_the_accepted_features_it_offers() {
        use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF};
        let kernel = TRANSPORT_FEATURES | (1 << VIRTIO_NET_F_MRG_RXBUF);
        let acked = TRANSPORT_FEATURES | (1 << VIRTIO_NET_F_MAC);
        assert_eq!(negotiated(acked, kernel), TRANSPORT_FEATURES);
    }
}
