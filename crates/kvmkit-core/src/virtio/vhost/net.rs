//! virtio-net on vhost-net: kvmkit answers the registers and the configuration space (MAC,
//! link status, MTU, as [`Net`](crate::virtio::net::Net) does), the kernel moves frames
//! between the queues and a TAP.
//!
//! The TAP is opened as for kvmkit's own backend ([`Tap::open`]): with `IFF_VNET_HDR` and a
//! 12-byte header, `virtio_net_hdr_v1`, the header a virtio 1.x driver puts in front of each
//! frame; vhost-net passes it through to the TAP (`VHOST_NET_F_VIRTIO_NET_HDR` is not
//! negotiated).

use std::sync::Arc;

use vhost::net::VhostNet as _;
use vhost::vhost_kern::net::Net as KernelNet;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;

use super::device::{Personality, Vhost};
use super::{Kernel, Mem, VhostError};
use crate::error::Result;
use crate::virtio::Memory;
use crate::virtio::net::{NetConfig, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, Tap};

/// The device node.
pub const PATH: &str = "/dev/vhost-net";

/// A network device whose queues the kernel serves.
pub type VhostNet = Vhost<NetSide>;

/// What kvmkit keeps of a vhost-net device: its configuration and its TAP.
#[derive(Debug)]
pub struct NetSide {
    config: NetConfig,
    tap: Tap,
}

impl VhostNet {
    /// A device with `config` on `tap`, its queues served by `/dev/vhost-net` in guest RAM
    /// `mem`.
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` for an MTU below 68; `VHOST_UNAVAILABLE` if `/dev/vhost-net` is
    /// missing or not permitted; `VHOST_FAILED` if the kernel refuses to set it up.
    pub fn open(config: NetConfig, tap: Tap, mem: &Memory) -> Result<Self> {
        config.check()?;
        let mem = Arc::new(mem.clone());
        let kernel = Kernel::open(PATH, "vhost_net", NetSide::OFFLOADED, || {
            KernelNet::new(mem)
        })?;
        Ok(Vhost::new(NetSide { config, tap }, kernel))
    }
}

impl Personality for NetSide {
    type Backend = KernelNet<Mem>;
    const DEVICE_TYPE: u32 = VIRTIO_ID_NET;
    const NAME: &'static str = "virtio-net";
    const QUEUE_SIZES: &'static [u16] = &[QUEUE_SIZE, QUEUE_SIZE];
    const OFFLOADED: &'static [usize] = &[RX_QUEUE, TX_QUEUE];

    fn features(&self) -> u64 {
        self.config.features()
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn attach(&self, backend: &Self::Backend) -> std::result::Result<(), String> {
        for &queue in Self::OFFLOADED {
            backend
                .set_backend(queue, Some(self.tap.file()))
                .map_err(|source| {
                    let e = VhostError::Kernel {
                        path: PATH,
                        op: "VHOST_NET_SET_BACKEND",
                        source,
                    };
                    format!("{e} (TAP {})", self.tap.name())
                })?;
        }
        Ok(())
    }

    fn detach(&self, backend: &Self::Backend) {
        for &queue in Self::OFFLOADED {
            // Fails only if the queue was never started; either way it is stopped.
            let _ = backend.set_backend(queue, None);
        }
    }
}
