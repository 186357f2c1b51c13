//! virtio-console with one port (`hvc0`, no `VIRTIO_CONSOLE_F_MULTIPORT`): what the guest
//! puts in the transmit queue goes to a bounded host buffer, what the host writes is queued
//! and delivered into the buffers the guest posts on the receive queue.
//!
//! Unlike the 16550 (two exits per byte), a whole chain of output costs one notification.
//! As for the UART, the guest never waits for the host: while nobody takes the output the
//! buffer keeps the latest [`ConsoleOutput::CAPACITY`] bytes. Host input is bounded too
//! ([`INPUT_CAPACITY`]): [`VirtioConsoleHandle::input`] takes what fits, and once the guest
//! has taken the pending input down to half the bound, the host is told of room through the
//! same callback as for output.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::devices::output::ConsoleOutput;
use crate::error::{Error, Result};
use crate::sync::LockExt;
use crate::virtio::{Activation, Chain, VirtioDevice, drain_queue, drain_queue_while};

/// The receive queue (host to guest).
pub const RX_QUEUE: usize = 0;
/// The transmit queue (guest to host).
pub const TX_QUEUE: usize = 1;
/// Each queue's size.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes of host input waiting for the guest's receive buffers.
pub const INPUT_CAPACITY: usize = 64 * 1024;

/// A callback telling the host that output is waiting, or that input it was refused fits
/// again.
pub type Notify = Box<dyn Fn() + Send + Sync>;

/// Host input waiting for the guest's receive buffers.
#[derive(Default)]
struct PendingInput {
    bytes: VecDeque<u8>,
    /// Input was refused since the host was last told of room.
    refused: bool,
}

/// What the device and its host side share.
#[derive(Default)]
struct Shared {
    output: Mutex<ConsoleOutput>,
    input: Mutex<PendingInput>,
    notify: Mutex<Option<Notify>>,
}

impl Shared {
    /// Appends `data` to the output and tells the host if the buffer was empty.
    fn push_output(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut output = self.output.lock_or_recover();
        let was_empty = output.is_empty();
        output.push(data);
        drop(output);
        if was_empty {
            self.notify();
        }
    }

    fn notify(&self) {
        if let Some(notify) = self.notify.lock_or_recover().as_ref() {
            notify();
        }
    }
}

/// The console device.
pub struct VirtioConsole {
    shared: Arc<Shared>,
    wake: EventFd,
    active: Option<Activation>,
}

impl std::fmt::Debug for VirtioConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioConsole")
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

/// The host's side of a virtio console.
#[derive(Debug, Clone)]
pub struct VirtioConsoleHandle {
    shared: Arc<Shared>,
    wake: Arc<EventFd>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl VirtioConsole {
    /// A console and its host side.
    ///
    /// # Errors
    ///
    /// `EVENTFD_FAILED` if the eventfd that wakes the I/O thread for host input cannot be
    /// created.
    pub fn new() -> Result<(Self, VirtioConsoleHandle)> {
        let wake = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
        let shared = Arc::new(Shared::default());
        let handle = VirtioConsoleHandle {
            shared: Arc::clone(&shared),
            wake: Arc::new(wake.try_clone().map_err(Error::EventFd)?),
        };
        let device = VirtioConsole {
            shared,
            wake,
            active: None,
        };
        Ok((device, handle))
    }

    /// Moves queued host input into the receive buffers the guest posted.
    fn deliver_input(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(queue) = active.queues.get_mut(RX_QUEUE) else {
            return;
        };
        let mut input = self.shared.input.lock_or_recover();
        let result = drain_queue_while(
            queue,
            &active.mem,
            &active.interrupt,
            &mut input.bytes,
            |bytes| !bytes.is_empty(),
            fill_from,
        );
        // Room for what was refused: once the guest took the pending input down to half the
        // bound, not per buffer it posts.
        let room = input.refused && input.bytes.len() <= INPUT_CAPACITY / 2;
        if room {
            input.refused = false;
        }
        drop(input);
        if room {
            self.shared.notify();
        }
        if let Err(e) = result {
            Activation::fail(
                &mut self.active,
                format!("virtio-console receive queue: {e}"),
            );
        }
    }

    /// Takes what the guest transmitted.
    fn take_output(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(queue) = active.queues.get_mut(TX_QUEUE) else {
            return;
        };
        let shared = &self.shared;
        let mut chunk = [0u8; 4096];
        let result = drain_queue(queue, &active.mem, &active.interrupt, |chain| {
            let mem = chain.memory();
            if let Ok(mut reader) = chain.clone().reader(mem) {
                while let Ok(n) = reader.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    shared.push_output(&chunk[..n]);
                }
            }
            0
        });
        if let Err(e) = result {
            Activation::fail(
                &mut self.active,
                format!("virtio-console transmit queue: {e}"),
            );
        }
    }
}

/// Writes as much of `input` as fits into `chain`'s writable buffers; returns how much.
fn fill_from(input: &mut VecDeque<u8>, chain: Chain<'_>) -> u32 {
    let mem = chain.memory();
    let Ok(mut writer) = chain.clone().writer(mem) else {
        return 0;
    };
    let mut written = 0;
    while !input.is_empty() && writer.available_bytes() > 0 {
        let (front, _) = input.as_slices();
        let n = front.len().min(writer.available_bytes());
        if writer.write_all(&front[..n]).is_err() {
            break;
        }
        input.drain(..n);
        written += n;
    }
    u32::try_from(written).unwrap_or(u32::MAX)
}

impl VirtioDevice for VirtioConsole {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn name(&self) -> &'static str {
        "virtio-console"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // Without SIZE, MULTIPORT or EMERG_WRITE no field of the configuration space is valid.
        data.fill(0);
    }

    fn activate(&mut self, activation: Activation) -> std::result::Result<(), String> {
        self.active = Some(activation.all_ready("virtio-console", 2)?);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) {
        match index {
            RX_QUEUE => self.deliver_input(),
            TX_QUEUE => self.take_output(),
            _ => {}
        }
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        vec![self.wake.as_raw_fd()]
    }

    fn process_backend(&mut self, _index: usize) {
        let _ = self.wake.read();
        self.deliver_input();
    }

    fn reset(&mut self) {
        // Host input not yet delivered waits for the next driver.
        self.active = None;
    }
}

impl VirtioConsoleHandle {
    /// Queues `data` for the guest; returns how many bytes fit (at most [`INPUT_CAPACITY`]
    /// bytes wait). The rest must be offered again when the callback of
    /// [`VirtioConsoleHandle::set_notify`] tells of room.
    pub fn input(&self, data: &[u8]) -> usize {
        let mut input = self.shared.input.lock_or_recover();
        let n = data.len().min(INPUT_CAPACITY - input.bytes.len());
        input.bytes.extend(&data[..n]);
        if n < data.len() {
            input.refused = true;
        }
        drop(input);
        if n > 0 {
            // Cannot fail short of the counter saturating, when a wake-up is pending anyway.
            let _ = self.wake.write(1);
        }
        n
    }

    /// Takes what the guest transmitted so far.
    pub fn take_output(&self) -> Vec<u8> {
        self.shared.output.lock_or_recover().take()
    }

    /// How many bytes of output were dropped because nobody took them in time.
    pub fn dropped(&self) -> u64 {
        self.shared.output.lock_or_recover().dropped()
    }

    /// Calls `notify` whenever the output buffer stops being empty (and now, if output is
    /// already waiting), and when input refused fits again.
    pub fn set_notify(&self, notify: Notify) {
        let waiting = !self.shared.output.lock_or_recover().is_empty();
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

    fn memory() -> Memory {
        Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// A console activated with a receive queue at 0x1000 and a transmit queue at 0x8000.
    fn active(
        mem: &Memory,
    ) -> (
        VirtioConsole,
        VirtioConsoleHandle,
        MockSplitQueue<'_, Memory>,
        MockSplitQueue<'_, Memory>,
    ) {
        let (mut dev, handle) = VirtioConsole::new().unwrap();
        let rx = MockSplitQueue::create(mem, GuestAddress(0x1000), 16);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x8000), 16);
        let queues = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        dev.activate(Activation {
            mem: mem.clone(),
            queues,
            interrupt: Arc::new(Interrupt::new(irq)),
            kicks: Vec::new(),
        })
        .unwrap();
        (dev, handle, rx, tx)
    }

    fn used_len(mem: &Memory, q: &MockSplitQueue<'_, Memory>, i: u64) -> u32 {
        mem.read_obj(q.used_addr().unchecked_add(4 + 8 * i + 4))
            .unwrap()
    }

    /// Counts the notices `handle`'s device gives.
    fn counted(handle: &VirtioConsoleHandle) -> Arc<AtomicUsize> {
        let notices = Arc::new(AtomicUsize::new(0));
        let n = Arc::clone(&notices);
        handle.set_notify(Box::new(move || {
            n.fetch_add(1, Ordering::Relaxed);
        }));
        notices
    }

    #[test]
    fn transmitted_chains_reach_the_output_and_notify_once_per_batch() {
        let mem = memory();
        let (mut dev, handle, _rx, tx) = active(&mem);
        let notices = counted(&handle);
        mem.write_slice(b"hello ", GuestAddress(0x2_0000)).unwrap();
        mem.write_slice(b"world", GuestAddress(0x3_0000)).unwrap();
        let descs = [
            RawDescriptor::from(Descriptor::new(0x2_0000, 6, 0, 0)),
            RawDescriptor::from(Descriptor::new(0x3_0000, 5, 0, 0)),
        ];
        tx.build_multiple_desc_chains(&descs).unwrap();
        dev.process_queue(TX_QUEUE);
        assert_eq!(handle.take_output(), b"hello world");
        assert_eq!(notices.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn host_input_fills_receive_buffers_as_the_guest_posts_them() {
        let mem = memory();
        let (mut dev, handle, rx, _tx) = active(&mem);
        assert_eq!(handle.input(b"abcdef"), 6);
        dev.process_backend(0); // no buffers yet: the input waits
        let descs = [
            RawDescriptor::from(Descriptor::new(0x2_0000, 4, WRITE, 0)),
            RawDescriptor::from(Descriptor::new(0x3_0000, 4, WRITE, 0)),
        ];
        rx.build_multiple_desc_chains(&descs).unwrap();
        dev.process_queue(RX_QUEUE);
        let mut got = [0u8; 6];
        mem.read_slice(&mut got[..4], GuestAddress(0x2_0000))
            .unwrap();
        mem.read_slice(&mut got[4..], GuestAddress(0x3_0000))
            .unwrap();
        assert_eq!(&got, b"abcdef");
        assert_eq!((used_len(&mem, &rx, 0), used_len(&mem, &rx, 1)), (4, 2));
    }

    #[test]
    fn host_input_is_bounded() {
        let (_dev, handle) = VirtioConsole::new().unwrap();
        assert_eq!(
            handle.input(&vec![b'x'; INPUT_CAPACITY + 10]),
            INPUT_CAPACITY
        );
        assert_eq!(handle.input(b"y"), 0);
    }

    /// Posts `count` receive buffers of `len` bytes, from descriptor `first` on.
    fn post_receive_buffers(rx: &MockSplitQueue<'_, Memory>, count: u64, len: u32) {
        let descs: Vec<_> = (0..count)
            .map(|i| RawDescriptor::from(Descriptor::new(0x2_0000 + i * 0x1_0000, len, WRITE, 0)))
            .collect();
        rx.build_multiple_desc_chains(&descs).unwrap();
    }

    #[test]
    fn room_is_announced_once_after_a_refusal_when_half_the_input_was_taken() {
        let mem = memory();
        let (mut dev, handle, rx, _tx) = active(&mem);
        let notices = counted(&handle);
        let chunk = u32::try_from(INPUT_CAPACITY / 8).unwrap();
        assert_eq!(
            handle.input(&vec![b'a'; INPUT_CAPACITY / 2]),
            INPUT_CAPACITY / 2
        );
        post_receive_buffers(&rx, 1, chunk);
        dev.process_queue(RX_QUEUE);
        assert_eq!(notices.load(Ordering::Relaxed), 0, "nothing was refused");

        assert_eq!(
            handle.input(&vec![b'b'; INPUT_CAPACITY]),
            INPUT_CAPACITY * 5 / 8
        );
        // The guest takes an eighth of the bound per buffer: half is free after four.
        for taken in 1..=3 {
            post_receive_buffers(&rx, 1, chunk);
            dev.process_queue(RX_QUEUE);
            assert_eq!(
                notices.load(Ordering::Relaxed),
                0,
                "{taken} eighths: not yet"
            );
        }
        post_receive_buffers(&rx, 1, chunk);
        dev.process_queue(RX_QUEUE);
        assert_eq!(notices.load(Ordering::Relaxed), 1, "half the bound free");
        post_receive_buffers(&rx, 1, chunk);
        dev.process_queue(RX_QUEUE);
        assert_eq!(notices.load(Ordering::Relaxed), 1, "once per refusal");
    }

    #[test]
    fn a_transmit_buffer_outside_ram_is_skipped_and_the_device_goes_on() {
        let mem = memory();
        let (mut dev, handle, _rx, tx) = active(&mem);
        mem.write_slice(b"ok", GuestAddress(0x2_0000)).unwrap();
        let descs = [
            RawDescriptor::from(Descriptor::new(0xffff_0000, 16, 0, 0)),
            RawDescriptor::from(Descriptor::new(0x2_0000, 2, 0, 0)),
        ];
        tx.build_multiple_desc_chains(&descs).unwrap();
        dev.process_queue(TX_QUEUE);
        assert_eq!(handle.take_output(), b"ok");
        assert!(dev.active.is_some());
    }
}
