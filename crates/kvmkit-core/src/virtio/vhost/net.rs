//! virtio-net on vhost-net: kvmkit answers the registers and the configuration space (MAC,
//! link status, MTU, as [`Net`](crate::virtio::net::Net) does), the kernel moves frames
//! between the queues and a TAP.
//!
//! The TAP is opened as for kvmkit's own backend ([`Tap::open`]): with `IFF_VNET_HDR` and a
//! 12-byte header, `virtio_net_hdr_v1`, the header a virtio 1.x driver puts in front of each
//! frame; vhost-net passes it through to the TAP (`VHOST_NET_F_VIRTIO_NET_HDR` is not
//! negotiated).

use std::os::fd::RawFd;
use std::sync::Arc;

use vhost::net::VhostNet as _;
use vhost::vhost_kern::net::Net as KernelNet;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;

use super::{Kernel, Mem, VhostError};
use crate::error::Result;
use crate::virtio::net::{NetConfig, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, Tap};
use crate::virtio::{Activation, Memory, VirtioDevice};

/// The device node.
pub const PATH: &str = "/dev/vhost-net";
const QUEUES: &[usize] = &[RX_QUEUE, TX_QUEUE];

/// A network device whose queues the kernel serves.
#[derive(Debug)]
pub struct VhostNet {
    config: NetConfig,
    tap: Tap,
    kernel: Kernel<KernelNet<Mem>>,
    acked: u64,
    active: Option<Activation>,
}

impl VhostNet {
    /// A device with `config` on `tap`, its queues served by `/dev/vhost-net` in guest RAM
    /// `mem`.
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` for an MTU below 68; `VHOST_UNAVAILABLE` if `/dev/vhost-net` is
    /// missing or not permitted; `VHOST_FAILED` if the kernel refuses to set it up.
    pub fn new(config: NetConfig, tap: Tap, mem: &Memory) -> Result<Self> {
        config.check()?;
        let mem = Arc::new(mem.clone());
        let kernel = Kernel::open(PATH, "vhost_net", QUEUES, || KernelNet::new(mem))?;
        Ok(VhostNet {
            config,
            tap,
            kernel,
            acked: 0,
            active: None,
        })
    }

    /// Detaches the TAP from the queues: the kernel stops serving them.
    fn stop(&self) {
        for &queue in QUEUES {
            // Fails only if the queue was never started; either way it is stopped.
            let _ = self.kernel.backend().set_backend(queue, None);
        }
    }

    fn start(&self, activation: &Activation) -> std::result::Result<(), String> {
        self.kernel.start(activation, self.acked)?;
        for &queue in QUEUES {
            self.kernel
                .backend()
                .set_backend(queue, Some(self.tap.file()))
                .map_err(|e| {
                    let e = VhostError::Kernel {
                        path: PATH,
                        op: "VHOST_NET_SET_BACKEND",
                        source: e,
                    };
                    format!("{e} (TAP {})", self.tap.name())
                })?;
        }
        Ok(())
    }
}

impl VirtioDevice for VhostNet {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn name(&self) -> &'static str {
        "virtio-net"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.config.features()
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn activate(&mut self, activation: Activation) -> std::result::Result<(), String> {
        let activation = activation.all_ready("virtio-net", 2)?;
        if let Err(why) = self.start(&activation) {
            self.stop();
            return Err(why);
        }
        self.active = Some(activation);
        Ok(())
    }

    fn process_queue(&mut self, _index: usize) {}

    fn offloaded_queues(&self) -> &[usize] {
        QUEUES
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        self.kernel.call_fds()
    }

    fn process_backend(&mut self, index: usize) {
        if self.kernel.take_call(index)
            && let Some(active) = &self.active
        {
            active.interrupt.signal_used();
        }
    }

    fn reset(&mut self) {
        self.stop();
        self.active = None;
    }
}
