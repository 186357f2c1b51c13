//! The vsock device under any sequence of guest packets (headers, lengths, operations and
//! descriptor layouts of its choosing: header and payload in one buffer or apart, the header
//! split, the payload over several buffers, buffers outside RAM included), RX buffers, driver
//! resets and host activity (data, hang-ups, connections, close): nothing panics or hangs,
//! and every chain the guest posts on TX comes back.
#![no_main]

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvmkit_core::virtio::vsock::Vsock;
use kvmkit_core::virtio::{Activation, Interrupt, VirtioDevice};
use kvmkit_core::vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

const QSIZE: u16 = 16;
const RAM: usize = 0x10_0000;
const RING_BASES: [u64; 3] = [0x0, 0x1000, 0x2000];
const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// A driver's view of one queue: where its table and avail ring are, what it posted.
struct Ring {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    next_desc: u16,
    posted: u16,
}

impl Ring {
    fn of(q: &MockSplitQueue<'_, GuestMemoryMmap>) -> Self {
        Ring {
            desc: q.desc_table_addr(),
            avail: q.avail_addr(),
            used: q.used_addr(),
            next_desc: 0,
            posted: 0,
        }
    }

    /// Posts a chain of `(addr, len, flags)` buffers.
    fn post(&mut self, mem: &GuestMemoryMmap, buffers: &[(u64, u32, u16)]) {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % QSIZE;
            let last = i + 1 == buffers.len();
            let flags = if last { flags } else { flags | NEXT };
            let at = self.desc.unchecked_add(16 * u64::from(index));
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..].copy_from_slice(&((index + 1) % QSIZE).to_le_bytes());
            mem.write_slice(&raw, at).expect("the table is in RAM");
        }
        self.next_desc = (head + buffers.len() as u16) % QSIZE;
        let slot = self
            .avail
            .unchecked_add(4 + 2 * u64::from(self.posted % QSIZE));
        mem.write_obj(head, slot).expect("the ring is in RAM");
        self.posted = self.posted.wrapping_add(1);
        mem.write_obj(self.posted, self.avail.unchecked_add(2))
            .expect("the ring is in RAM");
    }

    fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(self.used.unchecked_add(2))
            .expect("the ring is in RAM")
    }
}

/// Reads the input a field at a time; past its end, zeroes.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A buffer address: mostly in the data area, sometimes anywhere (outside RAM too).
    fn addr(&mut self) -> u64 {
        let a = self.u16();
        if a & 0x8000 != 0 {
            u64::from(a) << 8
        } else {
            0x8000 + u64::from(a & 0x7fff) * 16
        }
    }
}

/// Activates `dev` on `queues`; returns its interrupt, which says whether it failed.
fn activate(
    dev: &mut Vsock,
    queues: &[MockSplitQueue<'_, GuestMemoryMmap>; 3],
    mem: &GuestMemoryMmap,
) -> Arc<Interrupt> {
    let interrupt = Arc::new(Interrupt::new(
        EventFd::new(EFD_NONBLOCK).expect("an eventfd"),
    ));
    let activation = Activation {
        mem: mem.clone(),
        queues: queues
            .iter()
            .map(|q| q.create_queue().expect("a valid queue"))
            .collect(),
        interrupt: Arc::clone(&interrupt),
        kicks: Vec::new(),
    };
    dev.activate(activation).expect("three queues");
    interrupt
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).expect("RAM");
    let queues = RING_BASES.map(|a| MockSplitQueue::create(&mem, GuestAddress(a), QSIZE));
    let mut rings = queues.each_ref().map(Ring::of);
    let mut dev = Vsock::new(3, None).expect("a valid CID");
    let host = dev.host();
    let accepted: Arc<Mutex<Vec<OwnedFd>>> = Arc::default();
    for port in [1, 2] {
        let accepted = Arc::clone(&accepted);
        let accept = move |fd| accepted.lock().expect("not poisoned").push(fd);
        host.listen(port, Arc::new(accept)).expect("a free port");
    }
    let connected: Arc<Mutex<Vec<OwnedFd>>> = Arc::default();
    let mut interrupt = activate(&mut dev, &queues, &mem);

    let mut input = Input(data);
    while !input.0.is_empty() {
        match input.u8() % 8 {
            0 => {
                // A TX packet: a header of the guest's choosing, payload in a shape it picks.
                let mut h = [0u8; 44];
                let (op, ports, shape) = (input.u8(), input.u8(), input.u8());
                let len = u32::from(input.u16());
                h[0..8].copy_from_slice(&(if shape & 0x80 != 0 { 4u64 } else { 3 }).to_le_bytes());
                h[8..16].copy_from_slice(&(if shape & 0x40 != 0 { 9u64 } else { 2 }).to_le_bytes());
                h[16..20].copy_from_slice(&u32::from(ports & 3).to_le_bytes());
                h[20..24].copy_from_slice(
                    &(u32::from(ports >> 2 & 3) | (u32::from(ports >> 4) << 30)).to_le_bytes(),
                );
                h[24..28].copy_from_slice(&len.to_le_bytes());
                h[28..30].copy_from_slice(&u16::from(shape & 0x20 == 0).to_le_bytes());
                h[30..32].copy_from_slice(&u16::from((op & 0xf) % 9).to_le_bytes());
                h[32..36].copy_from_slice(&u32::from(op >> 4).to_le_bytes());
                h[36..40].copy_from_slice(&u32::from(input.u16()).to_le_bytes());
                h[40..44].copy_from_slice(&u32::from(input.u16()).to_le_bytes());
                let hdr = input.addr();
                let _ = mem.write_slice(&h, GuestAddress(hdr));
                let write = if shape & 0x10 != 0 { WRITE } else { 0 };
                let data_len = u32::from(input.u16());
                // With 0x08, the same layouts cut further: the header split where the input
                // says (sharing its second buffer with the payload, if any), or the payload
                // over two buffers.
                let cut = if shape & 0x08 != 0 {
                    Some(u32::from(input.u8()))
                } else {
                    None
                };
                match (shape & 3, cut) {
                    (0, None) => rings[1].post(&mem, &[(hdr, 44, write)]),
                    (0, Some(c)) => {
                        let c = c % 44;
                        rings[1].post(&mem, &[(hdr, c, 0), (hdr + u64::from(c), 44 - c, write)]);
                    }
                    (1, None) => rings[1].post(&mem, &[(hdr, 44 + data_len, write)]),
                    (1, Some(c)) => {
                        let c = c % 44;
                        let rest = (hdr + u64::from(c), 44 + data_len - c, write);
                        rings[1].post(&mem, &[(hdr, c, 0), rest]);
                    }
                    (_, None) => {
                        let data = input.addr();
                        rings[1].post(&mem, &[(hdr, 44, 0), (data, data_len, write)]);
                    }
                    (_, Some(c)) => {
                        let data = input.addr();
                        let c = c.min(data_len);
                        let rest = (data + u64::from(c), data_len - c, write);
                        rings[1].post(&mem, &[(hdr, 44, 0), (data, c, 0), rest]);
                    }
                }
                let before = rings[1].posted;
                dev.process_queue(1);
                // Unless a broken ring (more posted than the queue holds) stopped the device.
                if !interrupt.needs_reset() {
                    assert_eq!(rings[1].used_idx(&mem), before, "every TX chain comes back");
                }
            }
            1 => {
                // RX buffers: a header and a data buffer, or one buffer for both.
                let (hdr, data) = (input.addr(), input.addr());
                let (hdr_len, data_len, flags) =
                    (u32::from(input.u8()), u32::from(input.u16()), input.u8());
                let w = if flags & 1 != 0 { 0 } else { WRITE };
                // With 4, cut further where the input says: the one buffer in two, or the
                // data buffer in two.
                let cut = if flags & 4 != 0 {
                    Some(u32::from(input.u8()))
                } else {
                    None
                };
                match (flags & 2 != 0, cut) {
                    (true, None) => rings[0].post(&mem, &[(hdr, hdr_len + data_len, w)]),
                    (true, Some(c)) => {
                        let c = c.min(hdr_len + data_len);
                        let rest = (hdr + u64::from(c), hdr_len + data_len - c, w);
                        rings[0].post(&mem, &[(hdr, c, w), rest]);
                    }
                    (false, None) => rings[0].post(&mem, &[(hdr, hdr_len, w), (data, data_len, w)]),
                    (false, Some(c)) => {
                        let c = c.min(data_len);
                        let rest = (data + u64::from(c), data_len - c, w);
                        rings[0].post(&mem, &[(hdr, hdr_len, w), (data, c, w), rest]);
                    }
                }
                dev.process_queue(0);
            }
            2 => {
                let ev = input.addr();
                rings[2].post(&mem, &[(ev, u32::from(input.u8()), WRITE)]);
                dev.process_queue(2);
            }
            3 => dev.process_backend(0),
            4 => {
                // The host writes to, half-closes or drops one of its connections.
                let (which, what) = (usize::from(input.u8()), input.u8());
                let mut fds = accepted.lock().expect("not poisoned");
                fds.append(&mut connected.lock().expect("not poisoned"));
                if !fds.is_empty() {
                    let i = which % fds.len();
                    match what % 3 {
                        0 => {
                            let fd = fds.remove(i);
                            drop(fd);
                        }
                        1 => {
                            let s = UnixStream::from(fds.remove(i));
                            let _ = s.shutdown(std::net::Shutdown::Write);
                            fds.push(s.into());
                        }
                        _ => {
                            let mut s = UnixStream::from(fds.remove(i));
                            let _ = s.set_nonblocking(true);
                            let _ = s.write(&vec![what; usize::from(what) * 64]);
                            fds.push(s.into());
                        }
                    }
                }
                drop(fds);
                dev.process_backend(0);
            }
            5 => {
                let connected = Arc::clone(&connected);
                let port = u32::from(input.u8() & 3);
                let done = move |r: std::io::Result<OwnedFd>| {
                    if let Ok(fd) = r {
                        connected.lock().expect("not poisoned").push(fd);
                    }
                };
                // Never timed out here: the fuzzer's time is not the guest's.
                let _ = host.connect(port, Duration::from_secs(3600), Box::new(done));
                dev.process_backend(0);
            }
            6 => {
                dev.reset();
                rings = queues.each_ref().map(Ring::of);
                for q in &queues {
                    let _ = mem.write_obj(0u16, q.avail_addr().unchecked_add(2));
                    let _ = mem.write_obj(0u16, q.used_addr().unchecked_add(2));
                }
                interrupt = activate(&mut dev, &queues, &mem);
            }
            _ => {
                if input.u8() == 0xc1 {
                    host.close();
                    dev.process_backend(0);
                }
            }
        }
    }
});
