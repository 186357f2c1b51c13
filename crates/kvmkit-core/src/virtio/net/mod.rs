//! virtio-net with one queue pair: `VIRTIO_NET_F_MAC`, `VIRTIO_NET_F_STATUS` (the link is
//! always up) and, when asked for, `VIRTIO_NET_F_MTU`; no offloads, so the 12-byte
//! `virtio_net_hdr_v1` in front of each frame is stripped on transmit and an all-zero one
//! prepended on receive.
//!
//! Frames go to and come from a backend ([`Backend`]): a TAP interface ([`tap`]), whose fd
//! the I/O thread watches, or the host program itself ([`NetHandle`]): transmitted frames
//! wait in a bounded queue the host takes from (the guest's transmit ring backs up while it
//! is full), and frames the host sends wait in a bounded queue for the guest's receive
//! buffers (past it they are dropped and counted, as a NIC drops what it has no buffers
//! for).

pub mod tap;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::error::{Error, Result};
use crate::sync::LockExt;
use crate::virtio::console::Notify;
use crate::virtio::{Activation, Chain, VirtioDevice, drain_queue_while};

pub use tap::{Tap, TapError};

/// The receive queue (host to guest).
pub const RX_QUEUE: usize = 0;
/// The transmit queue (guest to host).
pub const TX_QUEUE: usize = 1;
/// Each queue's size.
pub const QUEUE_SIZE: u16 = 256;
/// The length of `virtio_net_hdr_v1` (with `num_buffers`), in front of every frame.
pub const HEADER_LEN: usize = 12;
/// The shortest frame: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// The longest frame either way (an IPv4 or IPv6 datagram's most plus its Ethernet and VLAN
/// headers; without GSO a guest sends at most its MTU plus 18).
pub const MAX_FRAME: usize = 65_535 + 18;
/// Most frames waiting for the guest's receive buffers, and most transmitted frames waiting
/// for the host.
pub const QUEUE_FRAMES: usize = 256;
/// Most frames read from a TAP per wake-up (the rest wait in the TAP for the next round).
const TAP_BATCH: usize = 64;

/// Where frames go and come from.
#[derive(Debug)]
pub enum Backend {
    /// A TAP interface.
    Tap(Tap),
    /// The host program, through [`NetHandle`].
    Host,
}

/// How the device looks to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Its MAC address.
    pub mac: [u8; 6],
    /// The MTU the guest should use, if any.
    pub mtu: Option<u16>,
}

impl NetConfig {
    /// The device's feature bits: a MAC address, the link status and, if set, the MTU.
    pub fn features(&self) -> u64 {
        let mtu = if self.mtu.is_some() {
            1 << VIRTIO_NET_F_MTU
        } else {
            0
        };
        (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS) | mtu
    }

    /// Reads `data.len()` bytes of the configuration space at `offset` (past its end: 0).
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu (le16 each).
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&self.mtu.unwrap_or(0).to_le_bytes());
        data.fill(0);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(config.len());
        let src = &config[start..];
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }

    /// Checks the MTU (at least 68, IPv4's least).
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` for an MTU below 68.
    pub fn check(&self) -> Result<()> {
        if self.mtu.is_some_and(|mtu| mtu < 68) {
            return Err(Error::config("mtu", "must be at least 68"));
        }
        Ok(())
    }
}

/// Frame counts of a device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frames for the guest dropped: no receive buffers for them in time, or a buffer too
    /// short for the frame.
    pub rx_dropped: u64,
    /// Frames the guest transmitted.
    pub tx_frames: u64,
    /// Chains the guest transmitted that held no valid frame (shorter than a header and an
    /// Ethernet header, longer than [`MAX_FRAME`], unreadable), and frames a TAP refused.
    pub tx_dropped: u64,
}

#[derive(Default)]
struct Counters {
    rx_frames: AtomicU64,
    rx_dropped: AtomicU64,
    tx_frames: AtomicU64,
    tx_dropped: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Frames waiting each way.
#[derive(Default)]
struct Frames {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

/// What the device and its host side share.
#[derive(Default)]
struct Shared {
    frames: Mutex<Frames>,
    counters: Counters,
    notify: Mutex<Option<Notify>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Queues `frame` for the guest; returns whether there was room.
    fn push_rx(&self, frame: Vec<u8>) -> bool {
        let mut frames = self.frames.lock_or_recover();
        if frames.rx.len() < QUEUE_FRAMES {
            frames.rx.push_back(frame);
            true
        } else {
            drop(frames);
            bump(&self.counters.rx_dropped);
            false
        }
    }
}

/// The network device.
pub struct Net {
    config: NetConfig,
    backend: Backend,
    shared: Arc<Shared>,
    wake: EventFd,
    active: Option<Activation>,
    /// A frame read from the TAP, reused.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("config", &self.config)
            .field("backend", &self.backend)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

/// The host's side of a network device.
#[derive(Debug, Clone)]
pub struct NetHandle {
    shared: Arc<Shared>,
    wake: Arc<EventFd>,
}

impl Net {
    /// A device with `config` on `backend`, and its host side.
    ///
    /// # Errors
    ///
    /// `EVENTFD_FAILED` if the eventfd that wakes the I/O thread for the host cannot be
    /// created; `INVALID_CONFIG` for an MTU below 68 (IPv4's least).
    pub fn new(config: NetConfig, backend: Backend) -> Result<(Self, NetHandle)> {
        config.check()?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
        let shared = Arc::new(Shared::default());
        let handle = NetHandle {
            shared: Arc::clone(&shared),
            wake: Arc::new(wake.try_clone().map_err(Error::EventFd)?),
        };
        let scratch = match backend {
            Backend::Tap(_) => vec![0; MAX_FRAME],
            Backend::Host => Vec::new(),
        };
        let device = Net {
            config,
            backend,
            shared,
            wake,
            active: None,
            scratch,
        };
        Ok((device, handle))
    }

    /// Delivers waiting frames into the receive buffers the guest posted.
    fn receive(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(queue) = active.queues.get_mut(RX_QUEUE) else {
            return;
        };
        let counters = &self.shared.counters;
        let mut frames = self.shared.frames.lock_or_recover();
        let result = drain_queue_while(
            queue,
            &active.mem,
            &active.interrupt,
            &mut frames.rx,
            |rx| !rx.is_empty(),
            |rx, chain| {
                let frame = rx.pop_front().unwrap_or_default();
                match write_frame(chain, &frame) {
                    Some(n) => {
                        bump(&counters.rx_frames);
                        n
                    }
                    None => {
                        bump(&counters.rx_dropped);
                        0
                    }
                }
            },
        );
        drop(frames);
        if let Err(e) = result {
            Activation::fail(&mut self.active, format!("virtio-net receive queue: {e}"));
        }
    }

    /// Takes transmitted frames: to the TAP, or into the host's queue while it has room.
    fn transmit(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(queue) = active.queues.get_mut(TX_QUEUE) else {
            return;
        };
        let shared = &*self.shared;
        let backend = &self.backend;
        let mut frames = shared.frames.lock_or_recover();
        let was_empty = frames.tx.is_empty();
        let result = drain_queue_while(
            queue,
            &active.mem,
            &active.interrupt,
            &mut frames.tx,
            |tx| tx.len() < QUEUE_FRAMES,
            |tx, chain| {
                let Some(frame) = read_frame(chain) else {
                    bump(&shared.counters.tx_dropped);
                    return 0;
                };
                match backend {
                    Backend::Tap(tap) => {
                        if !tap.write_frame(&frame) {
                            bump(&shared.counters.tx_dropped);
                            return 0;
                        }
                    }
                    Backend::Host => tx.push_back(frame),
                }
                bump(&shared.counters.tx_frames);
                0
            },
        );
        let announce = was_empty && !frames.tx.is_empty();
        drop(frames);
        if announce && let Some(notify) = shared.notify.lock_or_recover().as_ref() {
            notify();
        }
        if let Err(e) = result {
            Activation::fail(&mut self.active, format!("virtio-net transmit queue: {e}"));
        }
    }

    /// Reads what the TAP has (a bounded batch) into the receive queue.
    fn read_tap(&mut self) {
        let Backend::Tap(tap) = &self.backend else {
            return;
        };
        for _ in 0..TAP_BATCH {
            let Some(n) = tap.read_frame(&mut self.scratch) else {
                break;
            };
            self.shared.push_rx(self.scratch[..n].to_vec());
        }
    }
}

/// The frame in a transmitted chain, past its header; `None` if the chain holds no valid
/// frame.
fn read_frame(chain: Chain<'_>) -> Option<Vec<u8>> {
    let mem = chain.memory();
    let mut reader = chain.clone().reader(mem).ok()?;
    let len = reader.available_bytes().checked_sub(HEADER_LEN)?;
    if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
        return None;
    }
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header).ok()?;
    let mut frame = vec![0u8; len];
    reader.read_exact(&mut frame).ok()?;
    Some(frame)
}

/// Writes an all-zero header (one buffer: `num_buffers` 1) and `frame` into a receive
/// chain; returns the length written, or `None` if the chain is too short or unwritable.
fn write_frame(chain: Chain<'_>, frame: &[u8]) -> Option<u32> {
    let mem = chain.memory();
    let mut writer = chain.clone().writer(mem).ok()?;
    if writer.available_bytes() < HEADER_LEN + frame.len() {
        return None;
    }
    let mut header = [0u8; HEADER_LEN];
    header[10] = 1; // num_buffers, little-endian
    writer.write_all(&header).ok()?;
    writer.write_all(frame).ok()?;
    u32::try_from(HEADER_LEN + frame.len()).ok()
}

impl VirtioDevice for Net {
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

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn activate(&mut self, activation: Activation) -> std::result::Result<(), String> {
        self.active = Some(activation.all_ready("virtio-net", 2)?);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) {
        match index {
            RX_QUEUE => self.receive(),
            TX_QUEUE => self.transmit(),
            _ => {}
        }
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.wake.as_raw_fd()];
        if let Backend::Tap(tap) = &self.backend {
            fds.push(tap.as_raw_fd());
        }
        fds
    }

    fn process_backend(&mut self, index: usize) {
        if index == 0 {
            // The host sent frames, or took transmitted ones and made room.
            let _ = self.wake.read();
            self.transmit();
        } else {
            self.read_tap();
        }
        self.receive();
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

impl NetHandle {
    /// Queues `frame` for the guest; returns whether there was room (a frame that does not
    /// fit is dropped and counted).
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` for a frame shorter than an Ethernet header or longer than
    /// [`MAX_FRAME`].
    pub fn send(&self, frame: &[u8]) -> Result<bool> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            return Err(Error::config(
                "frame",
                format!(
                    "{} bytes: an Ethernet frame has {MIN_FRAME} to {MAX_FRAME} bytes (header and payload, no FCS)",
                    frame.len()
                ),
            ));
        }
        let queued = self.shared.push_rx(frame.to_vec());
        if queued {
            // Cannot fail short of the counter saturating, when a wake-up is pending anyway.
            let _ = self.wake.write(1);
        }
        Ok(queued)
    }

    /// Takes the frames the guest transmitted so far (with the host backend), and lets the
    /// device take more from the guest.
    pub fn take_frames(&self) -> Vec<Vec<u8>> {
        let frames: Vec<_> = self.shared.frames.lock_or_recover().tx.drain(..).collect();
        if !frames.is_empty() {
            let _ = self.wake.write(1);
        }
        frames
    }

    /// The device's frame counts.
    pub fn counters(&self) -> NetCounters {
        let c = &self.shared.counters;
        NetCounters {
            rx_frames: c.rx_frames.load(Ordering::Relaxed),
            rx_dropped: c.rx_dropped.load(Ordering::Relaxed),
            tx_frames: c.tx_frames.load(Ordering::Relaxed),
            tx_dropped: c.tx_dropped.load(Ordering::Relaxed),
        }
    }

    /// Calls `notify` whenever transmitted frames start waiting for the host (and now, if
    /// some already are).
    pub fn set_notify(&self, notify: Notify) {
        let waiting = !self.shared.frames.lock_or_recover().tx.is_empty();
        if waiting {
            notify();
        }
        *self.shared.notify.lock_or_recover() = Some(notify);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{Interrupt, Memory};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

    fn memory() -> Memory {
        Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn frame(byte: u8, len: usize) -> Vec<u8> {
        vec![byte; len]
    }

    fn active(
        mem: &Memory,
    ) -> (
        Net,
        NetHandle,
        MockSplitQueue<'_, Memory>,
        MockSplitQueue<'_, Memory>,
    ) {
        let config = NetConfig {
            mac: MAC,
            mtu: None,
        };
        let (mut dev, handle) = Net::new(config, Backend::Host).unwrap();
        let rx = MockSplitQueue::create(mem, GuestAddress(0x1000), 16);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x8000), 16);
        let queues = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];
        dev.activate(Activation {
            mem: mem.clone(),
            queues,
            interrupt: Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            kicks: Vec::new(),
        })
        .unwrap();
        (dev, handle, rx, tx)
    }

    fn used_len(mem: &Memory, q: &MockSplitQueue<'_, Memory>, i: u64) -> u32 {
        mem.read_obj(q.used_addr().unchecked_add(4 + 8 * i + 4))
            .unwrap()
    }

    #[test]
    fn the_configuration_space_holds_the_mac_a_link_up_status_and_the_mtu() {
        let config = NetConfig {
            mac: MAC,
            mtu: Some(1500),
        };
        let (dev, _) = Net::new(config, Backend::Host).unwrap();
        let mut data = [0xffu8; 12];
        dev.read_config(0, &mut data);
        assert_eq!(data, [2, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0xdc, 0x05]);
        let mut status = [0u8; 2];
        dev.read_config(6, &mut status);
        assert_eq!(status, [1, 0]);
        let mut past = [0xffu8; 4];
        dev.read_config(100, &mut past);
        assert_eq!(past, [0; 4]);
        assert_ne!(dev.features() & (1 << VIRTIO_NET_F_MTU), 0);
        assert!(
            Net::new(
                NetConfig {
                    mac: MAC,
                    mtu: Some(10)
                },
                Backend::Host
            )
            .is_err()
        );
    }

    #[test]
    fn transmitted_frames_lose_their_header_and_wait_for_the_host() {
        let mem = memory();
        let (mut dev, handle, _rx, tx) = active(&mem);
        let sent = frame(0xab, 60);
        mem.write_slice(&[0; HEADER_LEN], GuestAddress(0x2_0000))
            .unwrap();
        mem.write_slice(&sent, GuestAddress(0x3_0000)).unwrap();
        let descs = [
            RawDescriptor::from(Descriptor::new(0x2_0000, HEADER_LEN as u32, 1, 1)),
            RawDescriptor::from(Descriptor::new(0x3_0000, 60, 0, 0)),
            // Too short to hold a frame, and too long for one: dropped and counted.
            RawDescriptor::from(Descriptor::new(0x4_0000, 20, 0, 0)),
            RawDescriptor::from(Descriptor::new(0x5_0000, 70_000, 0, 0)),
        ];
        tx.build_multiple_desc_chains(&descs).unwrap();
        dev.process_queue(TX_QUEUE);
        assert_eq!(handle.take_frames(), vec![sent]);
        let counters = handle.counters();
        assert_eq!((counters.tx_frames, counters.tx_dropped), (1, 2));
    }

    #[test]
    fn host_frames_reach_receive_buffers_with_a_header_and_the_rest_are_dropped() {
        let mem = memory();
        let (mut dev, handle, rx, _tx) = active(&mem);
        assert!(handle.send(&frame(1, 60)).unwrap());
        assert!(handle.send(&frame(2, 100)).unwrap());
        let descs = [
            RawDescriptor::from(Descriptor::new(0x2_0000, 2048, WRITE, 0)),
            // Too short for the second frame: it is dropped, the chain returned empty.
            RawDescriptor::from(Descriptor::new(0x3_0000, 64, WRITE, 0)),
        ];
        rx.build_multiple_desc_chains(&descs).unwrap();
        dev.process_backend(0);
        assert_eq!(used_len(&mem, &rx, 0), 72);
        assert_eq!(used_len(&mem, &rx, 1), 0);
        let mut got = [0u8; 72];
        mem.read_slice(&mut got, GuestAddress(0x2_0000)).unwrap();
        assert_eq!(&got[..HEADER_LEN], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(&got[HEADER_LEN..], &frame(1, 60)[..]);
        let counters = handle.counters();
        assert_eq!((counters.rx_frames, counters.rx_dropped), (1, 1));
        assert!(handle.send(&[0; 4]).is_err(), "a runt is refused");
    }

    /// Found by the `virtio_net` fuzz target: an avail index more than a queue's size ahead
    /// of the device made virtio-queue's `pop_descriptor_chain` return nothing while
    /// `enable_notification` said more was available, and `drain_queue` looped forever on
    /// the I/O thread.
    #[test]
    fn an_avail_index_too_far_ahead_breaks_the_device_instead_of_spinning() {
        let mem = memory();
        let (mut dev, handle, _rx, tx) = active(&mem);
        mem.write_obj(100u16, tx.avail_addr().unchecked_add(2))
            .unwrap();
        dev.process_queue(TX_QUEUE);
        assert!(dev.active.is_none(), "the device gave its queues up");
        assert_eq!(handle.counters().tx_frames, 0);
    }

    #[test]
    fn without_receive_buffers_frames_queue_up_to_a_bound_then_drop() {
        let (_dev, handle) = Net::new(
            NetConfig {
                mac: MAC,
                mtu: None,
            },
            Backend::Host,
        )
        .unwrap();
        for _ in 0..QUEUE_FRAMES {
            assert!(handle.send(&frame(0, 64)).unwrap());
        }
        assert!(!handle.send(&frame(0, 64)).unwrap());
        assert_eq!(handle.counters().rx_dropped, 1);
    }

    #[test]
    fn a_full_host_queue_leaves_transmitted_chains_in_the_ring_until_the_host_takes_some() {
        let mem = memory();
        let (mut dev, handle, _rx, tx) = active(&mem);
        for _ in 0..QUEUE_FRAMES {
            handle
                .shared
                .frames
                .lock_or_recover()
                .tx
                .push_back(frame(0, 60));
        }
        mem.write_slice(&frame(7, HEADER_LEN + 60), GuestAddress(0x2_0000))
            .unwrap();
        let descs = [RawDescriptor::from(Descriptor::new(
            0x2_0000,
            (HEADER_LEN + 60) as u32,
            0,
            0,
        ))];
        tx.build_multiple_desc_chains(&descs).unwrap();
        dev.process_queue(TX_QUEUE);
        assert_eq!(
            handle.counters().tx_frames,
            0,
            "the chain waits in the ring"
        );
        assert_eq!(handle.take_frames().len(), QUEUE_FRAMES);
        dev.process_backend(0);
        assert_eq!(handle.take_frames(), vec![frame(7, 60)]);
    }
}
