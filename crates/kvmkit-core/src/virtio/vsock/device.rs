//! The virtio-vsock device: its three queues (RX, TX, event), its configuration space (the
//! guest's CID) and the muxer behind them, all served on the I/O thread.

use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::{QueueOwnedT, QueueT};

use super::host::{Shared, VsockHost};
use super::muxer::Muxer;
use super::packet::{RxPacket, read_tx};
use crate::error::{Error, Result};
use crate::virtio::{Activation, VirtioDevice, drain_queue, next_chain};

/// Each queue's size.
pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;
/// `virtio_vsock_event.id` of a transport reset.
const EVENT_TRANSPORT_RESET: u32 = 0;
/// The largest CID a guest may have: Linux keeps CIDs in 32 bits and `u32::MAX` means any.
const MAX_CID: u64 = u32::MAX as u64 - 1;

/// The vsock device of a guest with context ID `cid`.
pub struct Vsock {
    cid: u64,
    muxer: Muxer,
    host: VsockHost,
    active: Option<Activation>,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("cid", &self.cid)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Vsock {
    /// A device giving the guest context ID `cid`; with `uds`, it also serves Firecracker's
    /// Unix sockets (`<uds>` for the host to connect through, `<uds>_<port>` for guest
    /// connections to host port `port`).
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` for a CID below 3 (0–2 are reserved, 2 is the host) or above
    /// 4294967294, or a `uds` path that cannot be bound (see
    /// [`UdsListener::bind`](super::uds::UdsListener::bind)); `EVENTFD_FAILED` or
    /// `DEVICE_FAILED` if its eventfd or epoll instance cannot be made.
    pub fn new(cid: u64, uds: Option<&Path>) -> Result<Self> {
        check_cid(cid)?;
        let shared = Shared::new()?;
        Ok(Vsock {
            cid,
            muxer: Muxer::new(cid, uds, Arc::clone(&shared))?,
            host: VsockHost::new(shared),
            active: None,
        })
    }

    /// The host's handle: listen and connect.
    pub fn host(&self) -> VsockHost {
        self.host.clone()
    }

    /// Runs `work` on the active queues; a ring the driver broke fails the device.
    fn serve(&mut self, what: &str, work: impl FnOnce(&mut Activation, &mut Muxer) -> QueueResult) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if let Err(e) = work(active, &mut self.muxer) {
            Activation::fail(&mut self.active, format!("virtio-vsock {what} queue: {e}"));
            self.muxer.set_active(false);
        }
    }
}

/// Checks that `cid` can be a guest's context ID.
///
/// # Errors
///
/// `INVALID_CONFIG` for a CID below 3 (0–2 are reserved, 2 is the host) or above
/// 4294967294.
pub fn check_cid(cid: u64) -> Result<()> {
    if !(3..=MAX_CID).contains(&cid) {
        return Err(Error::config(
            "vsock.cid",
            format!(
                "{cid} cannot be a guest's CID: use 3 to {MAX_CID} (0 to 2 are reserved, 2 is \
                 the host)"
            ),
        ));
    }
    Ok(())
}

/// Reads `data.len()` bytes of the configuration space of a device with guest CID `cid`
/// (`le64 guest_cid`) at `offset` (past its end: 0).
pub fn read_cid_config(cid: u64, offset: u64, data: &mut [u8]) {
    let config = cid.to_le_bytes();
    for (i, byte) in data.iter_mut().enumerate() {
        let at = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok());
        *byte = at.and_then(|o| config.get(o)).copied().unwrap_or(0);
    }
}

type QueueResult = std::result::Result<(), virtio_queue::Error>;

/// Hands the guest's packets to the muxer.
fn process_tx(active: &mut Activation, muxer: &mut Muxer) -> QueueResult {
    let Activation {
        mem,
        queues,
        interrupt,
        ..
    } = active;
    drain_queue(&mut queues[TX], mem, interrupt, |mut chain| {
        // A chain that is not a packet is returned unread.
        if let Ok(pkt) = read_tx(mem, &mut chain) {
            muxer.send(&pkt);
        }
        0
    })
}

/// Fills RX buffers with what the muxer owes the guest, as long as both last. Not
/// `drain_queue_while`: the muxer may find out only once it holds a buffer that it has
/// nothing to put in it after all (a socket that said readable and is not), and the buffer
/// then goes back to the ring rather than to the driver empty.
fn process_rx(active: &mut Activation, muxer: &mut Muxer) -> QueueResult {
    let Activation {
        mem,
        queues,
        interrupt,
        ..
    } = active;
    let queue = &mut queues[RX];
    let mut used = false;
    loop {
        queue.disable_notification(mem)?;
        let mut stalled = false;
        let mut popped = false;
        while muxer.has_rx() {
            let Some(mut chain) = next_chain(queue, mem)? else {
                break;
            };
            popped = true;
            let head = chain.head_index();
            let len = match RxPacket::new(mem, &mut chain) {
                Ok(mut rx) => muxer.fill_rx(&mut rx),
                // A buffer that cannot hold a packet is returned empty.
                Err(_) => Some(0),
            };
            let Some(len) = len else {
                queue.go_to_previous_position();
                stalled = true;
                break;
            };
            queue.add_used(mem, head, len)?;
            used = true;
        }
        // Nothing found although the ring said work waited: a ring laid over itself.
        if stalled || !muxer.has_rx() || !queue.enable_notification(mem)? || !popped {
            break;
        }
    }
    if used && queue.needs_notification(mem)? {
        interrupt.signal_used();
    }
    Ok(())
}

/// Sends a transport reset event if one is owed and the driver posted a buffer for it.
fn process_event(active: &mut Activation, muxer: &mut Muxer) -> QueueResult {
    if !muxer.transport_reset_owed() {
        return Ok(());
    }
    let Activation {
        mem,
        queues,
        interrupt,
        ..
    } = active;
    let queue = &mut queues[EVENT];
    // Without an event buffer, it waits for the driver to post one.
    let Some(chain) = next_chain(queue, mem)? else {
        return Ok(());
    };
    muxer.transport_reset_sent();
    let head = chain.head_index();
    let written = chain
        .writer(mem)
        .ok()
        .and_then(|mut w| w.write_obj(EVENT_TRANSPORT_RESET.to_le()).ok())
        .map_or(0, |()| 4);
    queue.add_used(mem, head, written)?;
    if queue.needs_notification(mem)? {
        interrupt.signal_used();
    }
    Ok(())
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn name(&self) -> &'static str {
        "virtio-vsock"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_cid_config(self.cid, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> std::result::Result<(), String> {
        self.active = Some(activation.all_ready("virtio-vsock", 3)?);
        self.muxer.set_active(true);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) {
        match index {
            TX => self.serve("TX", process_tx),
            EVENT => self.serve("event", process_event),
            _ => {}
        }
        self.serve("RX", process_rx);
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        vec![self.muxer.epoll_fd()]
    }

    fn process_backend(&mut self, _index: usize) {
        self.muxer.process_host();
        self.serve("RX", process_rx);
        self.serve("event", process_event);
    }

    fn reset(&mut self) {
        self.active = None;
        self.muxer.set_active(false);
    }
}
