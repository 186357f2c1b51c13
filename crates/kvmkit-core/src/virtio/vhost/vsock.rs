//! virtio-vsock on vhost-vsock: the kernel serves the RX and TX queues and the host side is
//! the kernel's own `AF_VSOCK` (a host program connects to the guest's CID with an
//! `AF_VSOCK` socket; a guest reaches host sockets at CID 2). kvmkit answers the registers,
//! the configuration space (the CID) and keeps the event queue, which only carries transport
//! resets kvmkit never owes here.

use std::sync::Arc;

use vhost::vhost_kern::vsock::Vsock as KernelVsock;
use vhost::vsock::VhostVsock as _;
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;

use super::device::{Personality, Vhost};
use super::{Kernel, Mem, VhostError};
use crate::error::Result;
use crate::virtio::Memory;
use crate::virtio::vsock::device::{QUEUE_SIZE, check_cid, read_cid_config};

/// The device node.
pub const PATH: &str = "/dev/vhost-vsock";

/// A vsock device whose RX and TX queues the kernel serves.
pub type VhostVsock = Vhost<VsockSide>;

/// What kvmkit keeps of a vhost-vsock device: the guest's CID (and its event queue, which
/// carries only transport resets, which kvmkit never owes here).
#[derive(Debug)]
pub struct VsockSide {
    cid: u64,
}

impl VhostVsock {
    /// A device giving the guest context ID `cid`, its queues served by `/dev/vhost-vsock`
    /// in guest RAM `mem`.
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` for a CID below 3 or above 4294967294; `VHOST_UNAVAILABLE` if
    /// `/dev/vhost-vsock` is missing or not permitted; `VSOCK_CID_IN_USE` if another VM on
    /// this host has `cid`; `VHOST_FAILED` if the kernel refuses to set it up.
    pub fn open(cid: u64, mem: &Memory) -> Result<Self> {
        check_cid(cid)?;
        let mem = Arc::new(mem.clone());
        let kernel = Kernel::open(PATH, "vhost_vsock", VsockSide::OFFLOADED, || {
            KernelVsock::new(mem)
        })?;
        kernel.backend().set_guest_cid(cid).map_err(|e| match e {
            vhost::Error::IoctlError(ref io) if io.raw_os_error() == Some(libc::EADDRINUSE) => {
                VhostError::CidInUse { cid }
            }
            source => VhostError::Kernel {
                path: PATH,
                op: "VHOST_VSOCK_SET_GUEST_CID",
                source,
            },
        })?;
        Ok(Vhost::new(VsockSide { cid }, kernel))
    }
}

impl Personality for VsockSide {
    type Backend = KernelVsock<Mem>;
    const DEVICE_TYPE: u32 = VIRTIO_ID_VSOCK;
    const NAME: &'static str = "virtio-vsock";
    const QUEUE_SIZES: &'static [u16] = &[QUEUE_SIZE; 3];
    /// RX and TX; the event queue stays with kvmkit.
    const OFFLOADED: &'static [usize] = &[0, 1];

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_cid_config(self.cid, offset, data);
    }

    fn attach(&self, backend: &Self::Backend) -> std::result::Result<(), String> {
        backend
            .start()
            .map_err(|e| format!("{PATH}: VHOST_VSOCK_SET_RUNNING: {e}"))
    }

    fn detach(&self, backend: &Self::Backend) {
        // Fails only if it never ran; either way it is stopped.
        let _ = backend.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use vm_memory::GuestAddress;

    #[test]
    fn opens_where_the_node_is_usable_and_names_it_with_a_remedy_where_not() {
        let mem = Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(PATH)
            .is_ok();
        match VhostVsock::open(u64::from(std::process::id()) + 1000, &mem) {
            Ok(dev) => assert!(usable, "opened {PATH} though this process cannot: {dev:?}"),
            Err(e) => {
                assert!(!usable, "{PATH} is usable here, yet: {e}");
                assert_eq!(e.code(), "VHOST_UNAVAILABLE", "{e}");
                let message = e.to_string();
                assert!(message.contains(PATH), "{message}");
                assert!(message.contains("drop `vhost`"), "{message}");
                assert!(matches!(e, Error::Vhost(_)));
            }
        }
    }

    #[test]
    fn a_reserved_cid_is_refused_before_the_node_is_opened() {
        let mem = Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let err = VhostVsock::open(2, &mem).unwrap_err();
        assert_eq!(err.code(), "INVALID_CONFIG");
    }
}
