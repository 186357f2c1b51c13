//! The device driven through mock queues, as a guest driver would, against real host sockets.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::connection::BUF_ALLOC;
use super::packet::*;
use super::{Vsock, VsockHost};
use crate::virtio::{Activation, Interrupt, Memory, VirtioDevice};

const CID: u64 = 3;
const QSIZE: u16 = 128;
const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;
const RX_DATA: u32 = 4096;
const SECOND: Duration = Duration::from_secs(1);

/// How a chain's bytes are cut into descriptors: the lengths of its first buffers, the last
/// taking the rest. The layouts the spec allows, as Linux and other drivers post them.
const LAYOUTS: [(&str, &[u32]); 4] = [
    ("header, then payload", &[44]),
    ("header and payload in one buffer", &[]),
    (
        "the header split, sharing a buffer with payload",
        &[20, 30, 7],
    ),
    ("header, then payload over three buffers", &[44, 3, 5]),
];

/// A guest packet from guest port `src` to host port `dst`.
fn guest(op: u16, src: u32, dst: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: src,
        dst_port: dst,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 64 * 1024,
        ..Header::default()
    }
}

struct Guest<'m> {
    mem: &'m Memory,
    queues: [MockSplitQueue<'m, Memory>; 3],
    /// Next free descriptor and next used entry to read, per queue.
    next_desc: [u16; 3],
    next_used: [u16; 3],
    /// Buffers of posted RX chains by head index: (address, length) of each.
    rx_bufs: HashMap<u16, Vec<(u64, u32)>>,
    next_buf: u64,
    dev: Vsock,
    interrupt: Arc<Interrupt>,
}

impl<'m> Guest<'m> {
    fn new(mem: &'m Memory, dev: Vsock) -> Self {
        let queues =
            [0x0, 0x4000, 0x8000].map(|a| MockSplitQueue::create(mem, GuestAddress(a), QSIZE));
        let mut g = Guest {
            mem,
            queues,
            next_desc: [0; 3],
            next_used: [0; 3],
            rx_bufs: HashMap::new(),
            next_buf: 0x10000,
            dev,
            interrupt: Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
        };
        let activation = Activation {
            mem: mem.clone(),
            queues: g.queues.iter().map(|q| q.create_queue().unwrap()).collect(),
            interrupt: Arc::clone(&g.interrupt),
            kicks: Vec::new(),
        };
        g.dev.activate(activation).unwrap();
        g
    }

    fn buf(&mut self, len: u32) -> u64 {
        let at = self.next_buf;
        self.next_buf += u64::from(len.max(64)).next_multiple_of(64);
        if self.next_buf > 0x3f0000 {
            self.next_buf = 0x10000;
        }
        at
    }

    fn chain(&mut self, q: usize, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc[q];
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let next = if i + 1 < descs.len() {
                    (head + i as u16 + 1) % QSIZE
                } else {
                    0
                };
                let flags = if i + 1 < descs.len() {
                    flags | VRING_DESC_F_NEXT as u16
                } else {
                    flags
                };
                RawDescriptor::from(Descriptor::new(addr, len, flags, next))
            })
            .collect();
        self.queues[q].add_desc_chains(&raw, head).unwrap();
        self.next_desc[q] = (head + descs.len() as u16) % QSIZE;
        head
    }

    /// Cuts `len` bytes by `cuts` ([`LAYOUTS`]) into buffers apart from each other.
    fn pieces(&mut self, len: u32, cuts: &[u32]) -> Vec<(u64, u32)> {
        let mut left = len;
        let mut out = Vec::new();
        for &cut in cuts {
            if left > cut {
                out.push((self.buf(cut), cut));
                left -= cut;
            }
        }
        out.push((self.buf(left), left));
        out
    }

    /// Posts `n` RX buffers of a header and [`RX_DATA`] bytes, laid out by `cuts`.
    fn post_rx_as(&mut self, n: usize, cuts: &[u32]) {
        for _ in 0..n {
            let pieces = self.pieces(44 + RX_DATA, cuts);
            let w = VRING_DESC_F_WRITE as u16;
            let descs: Vec<_> = pieces.iter().map(|&(a, l)| (a, l, w)).collect();
            let head = self.chain(RX, &descs);
            self.rx_bufs.insert(head, pieces);
        }
        self.dev.process_queue(RX);
    }

    /// Posts `n` RX buffers: a header, then the payload.
    fn post_rx(&mut self, n: usize) {
        self.post_rx_as(n, &[44]);
    }

    /// Sends a packet laid out by `cuts`.
    fn send_as(&mut self, mut h: Header, data: &[u8], cuts: &[u32]) {
        h.len = data.len() as u32;
        let bytes = [&h.to_bytes()[..], data].concat();
        let pieces = self.pieces(bytes.len() as u32, cuts);
        let mut at = 0;
        for &(addr, len) in &pieces {
            let end = at + len as usize;
            self.mem
                .write_slice(&bytes[at..end], GuestAddress(addr))
                .unwrap();
            at = end;
        }
        let descs: Vec<_> = pieces.iter().map(|&(a, l)| (a, l, 0)).collect();
        self.chain(TX, &descs);
        self.dev.process_queue(TX);
    }

    /// Sends a packet: a header, then the payload if any.
    fn send(&mut self, h: Header, data: &[u8]) {
        self.send_as(h, data, &[44]);
    }

    /// The used entries of queue `q` not read yet: (head, length).
    fn used(&mut self, q: usize) -> Vec<(u16, u32)> {
        let used = self.queues[q].used_addr();
        let idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
        let mut out = Vec::new();
        while self.next_used[q] != idx {
            let at = used.unchecked_add(4 + 8 * u64::from(self.next_used[q] % QSIZE));
            let id: u32 = self.mem.read_obj(at).unwrap();
            let len: u32 = self.mem.read_obj(at.unchecked_add(4)).unwrap();
            out.push((id as u16, len));
            self.next_used[q] = self.next_used[q].wrapping_add(1);
        }
        out
    }

    /// The packets received since the last call.
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.used(RX)
            .into_iter()
            .map(|(head, len)| {
                let mut bytes = Vec::new();
                for &(addr, n) in &self.rx_bufs[&head] {
                    let mut piece = vec![0u8; n as usize];
                    self.mem.read_slice(&mut piece, GuestAddress(addr)).unwrap();
                    bytes.extend(piece);
                }
                let h = Header::from_bytes(bytes[..HEADER_SIZE].try_into().unwrap());
                assert_eq!(len, 44 + h.len);
                (h, bytes[HEADER_SIZE..len as usize].to_vec())
            })
            .collect()
    }

    fn ops(&mut self) -> Vec<u16> {
        self.recv().into_iter().map(|(h, _)| h.op).collect()
    }

    fn host_events(&mut self) {
        self.dev.process_backend(0);
    }
}

fn memory() -> Memory {
    Memory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

fn listen(host: &VsockHost, port: u32) -> mpsc::Receiver<OwnedFd> {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    host.listen(
        port,
        Arc::new(move |fd| tx.lock().unwrap().send(fd).unwrap()),
    )
    .unwrap();
    rx
}

fn stream(fd: OwnedFd) -> UnixStream {
    let s = UnixStream::from(fd);
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s
}

/// A guest with RX buffers posted, and the host's handle on its device.
fn with_host(mem: &Memory) -> (Guest<'_>, VsockHost) {
    let dev = Vsock::new(CID, None).unwrap();
    let host = dev.host();
    let mut g = Guest::new(mem, dev);
    g.post_rx(8);
    (g, host)
}

/// A guest connected from port 5000 to a host listener on port 1234.
fn connected(mem: &Memory) -> (Guest<'_>, UnixStream) {
    let dev = Vsock::new(CID, None).unwrap();
    let accepted = listen(&dev.host(), 1234);
    let mut g = Guest::new(mem, dev);
    g.post_rx(32);
    g.send(guest(OP_REQUEST, 5000, 1234), &[]);
    let got = g.recv();
    assert_eq!(got.len(), 1);
    let h = got[0].0;
    assert_eq!(
        (h.op, h.src_cid, h.dst_cid, h.src_port, h.dst_port),
        (OP_RESPONSE, 2, CID, 1234, 5000)
    );
    assert_eq!(h.buf_alloc, BUF_ALLOC);
    (g, stream(accepted.try_recv().unwrap()))
}

#[test]
fn describes_itself_and_refuses_reserved_cids() {
    let dev = Vsock::new(0x1_0000_0007, None);
    assert_eq!(dev.unwrap_err().code(), "INVALID_CONFIG");
    let dev = Vsock::new(7, None).unwrap();
    assert_eq!((dev.device_type(), dev.queue_max_sizes().len()), (19, 3));
    let mut config = [0xffu8; 12];
    dev.read_config(0, &mut config);
    assert_eq!(config, [7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for cid in [0, 1, 2] {
        let e = Vsock::new(cid, None).unwrap_err();
        assert_eq!(e.code(), "INVALID_CONFIG");
        assert!(e.to_string().contains("vsock.cid"), "{e}");
    }
}

#[test]
fn a_guest_connection_carries_data_both_ways_and_shuts_down() {
    let mem = memory();
    let (mut g, mut host) = connected(&mem);
    g.send(guest(OP_RW, 5000, 1234), b"hello");
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    host.write_all(b"world").unwrap();
    g.host_events();
    let got = g.recv();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.op, got[0].1.as_slice()), (OP_RW, &b"world"[..]));
    assert_eq!(got[0].0.fwd_cnt, 5, "the guest hears what the host took");

    // The host is done sending: the guest is told, and can still send.
    host.shutdown(Shutdown::Write).unwrap();
    g.host_events();
    let got = g.recv();
    assert_eq!((got[0].0.op, got[0].0.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    g.send(guest(OP_RW, 5000, 1234), b"bye");
    let mut got = [0u8; 3];
    host.read_exact(&mut got).unwrap();
    // The guest closes: the host sees end of file, the guest gets the final reset.
    let mut shut = guest(OP_SHUTDOWN, 5000, 1234);
    shut.flags = SHUTDOWN_SEND | SHUTDOWN_RECEIVE;
    g.send(shut, &[]);
    assert_eq!(g.ops(), [OP_RST]);
    assert_eq!(host.read(&mut [0u8; 8]).unwrap(), 0);
    // The connection is gone: more data is refused.
    g.send(guest(OP_RW, 5000, 1234), b"late");
    assert_eq!(g.ops(), [OP_RST]);
}

#[test]
fn payloads_cross_every_layout_of_descriptors_both_ways() {
    for (layout, cuts) in LAYOUTS {
        let mem = memory();
        let dev = Vsock::new(CID, None).unwrap();
        let accepted = listen(&dev.host(), 1234);
        let mut g = Guest::new(&mem, dev);
        g.post_rx_as(8, cuts);
        g.send_as(guest(OP_REQUEST, 5000, 1234), &[], cuts);
        assert_eq!(g.ops(), [OP_RESPONSE], "{layout}");
        let mut host = stream(accepted.try_recv().unwrap());

        let out: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        g.send_as(guest(OP_RW, 5000, 1234), &out, cuts);
        let mut got = vec![0u8; out.len()];
        host.read_exact(&mut got).unwrap();
        assert!(got == out, "{layout}: guest to host");
        assert!(g.recv().is_empty(), "{layout}: no reset");

        // More than one RX buffer holds: two packets, each spread over the buffer's pieces.
        let back: Vec<u8> = (0..6000u32).map(|i| (i % 241) as u8).collect();
        host.write_all(&back).unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            g.host_events();
            for (h, data) in g.recv() {
                assert_eq!((h.op, h.len as usize), (OP_RW, data.len()), "{layout}");
                got.extend(data);
            }
        }
        assert!(got == back, "{layout}: host to guest, {} bytes", got.len());
    }
}

#[test]
fn a_hostile_guest_gets_resets_and_nothing_else() {
    let mem = memory();
    let (mut g, host) = connected(&mem);
    // Packets for no connection, to no listener, of a wrong type or to another CID.
    g.send(guest(OP_RW, 6000, 1234), b"x");
    g.send(guest(OP_REQUEST, 6000, 999), &[]);
    let mut dgram = guest(OP_REQUEST, 6000, 1234);
    dgram.type_ = 2;
    g.send(dgram, &[]);
    let mut elsewhere = guest(OP_REQUEST, 6000, 1234);
    elsewhere.dst_cid = 9;
    g.send(elsewhere, &[]);
    assert_eq!(g.ops(), [OP_RST; 4]);
    // A reset for nothing, and a packet claiming another guest's CID, get no answer.
    g.send(guest(OP_RST, 6000, 1234), &[]);
    let mut spoofed = guest(OP_REQUEST, 6000, 1234);
    spoofed.src_cid = 4;
    g.send(spoofed, &[]);
    assert!(g.recv().is_empty());
    // A length the chain does not hold, and a write-only TX buffer: returned unread.
    let mut long = guest(OP_RW, 5000, 1234);
    long.len = 10_000;
    let hdr = g.buf(44);
    mem.write_slice(&long.to_bytes(), GuestAddress(hdr))
        .unwrap();
    let data = g.buf(16);
    g.chain(TX, &[(hdr, 44, 0), (data, 16, 0)]);
    g.chain(TX, &[(hdr, 44, VRING_DESC_F_WRITE as u16)]);
    g.dev.process_queue(TX);
    assert_eq!(g.used(TX).len(), 9, "every TX chain is returned");
    assert!(g.recv().is_empty());
    // An unknown operation on a live connection resets it; the host sees it end.
    g.send(guest(99, 5000, 1234), &[]);
    assert_eq!(g.ops(), [OP_RST]);
    assert_eq!((&host).read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn host_data_fills_every_rx_buffer_it_needs_at_once() {
    let mem = memory();
    let (mut g, mut host) = connected(&mem);
    let data = vec![9u8; 3 * RX_DATA as usize + 100];
    host.write_all(&data).unwrap();
    g.host_events();
    let got = g.recv();
    let lens: Vec<usize> = got.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(
        lens,
        [RX_DATA as usize, RX_DATA as usize, RX_DATA as usize, 100]
    );
    // The socket is empty now: the next buffer went back to the ring, nothing else came.
    g.host_events();
    assert!(g.recv().is_empty());
}

#[test]
fn host_data_waits_for_the_guests_credit() {
    let mem = memory();
    let dev = Vsock::new(CID, None).unwrap();
    let accepted = listen(&dev.host(), 1234);
    let mut g = Guest::new(&mem, dev);
    g.post_rx(8);
    let mut request = guest(OP_REQUEST, 5000, 1234);
    request.buf_alloc = 8;
    g.send(request, &[]);
    assert_eq!(g.ops(), [OP_RESPONSE]);
    let mut host = stream(accepted.try_recv().unwrap());
    host.write_all(b"0123456789abcdefghij").unwrap();
    g.host_events();
    let got = g.recv();
    assert_eq!(got[0].1, b"01234567");
    assert_eq!(got[1].0.op, OP_CREDIT_REQUEST, "no credit left: it asks");
    g.host_events();
    assert!(g.recv().is_empty(), "and waits");
    let mut update = guest(OP_CREDIT_UPDATE, 5000, 1234);
    update.buf_alloc = 8;
    update.fwd_cnt = 8;
    g.send(update, &[]);
    g.host_events();
    assert_eq!(g.recv()[0].1, b"89abcdef");
}

#[test]
fn a_guest_sending_past_its_credit_is_reset() {
    let mem = memory();
    let (mut g, host) = connected(&mem);
    let chunk = vec![7u8; 60 * 1024];
    // The host does not read: its socket fills, then the device's buffer.
    let mut sent = 0;
    while !g.ops().contains(&OP_RST) {
        g.send(guest(OP_RW, 5000, 1234), &chunk);
        sent += chunk.len();
        assert!(sent < 8 << 20, "never reset");
    }
    let mut taken = 0;
    while let Ok(n) = (&host).read(&mut [0u8; 65536]) {
        if n == 0 {
            break;
        }
        taken += n;
    }
    assert!(
        taken < sent,
        "what was past the credit never reached the host"
    );
}

#[test]
fn the_host_connects_and_the_guest_accepts_or_refuses() {
    let mem = memory();
    let (mut g, host) = with_host(&mem);
    let (tx, rx) = mpsc::channel();
    let done = tx.clone();
    host.connect(77, SECOND, Box::new(move |r| done.send(r).unwrap()))
        .unwrap();
    g.host_events();
    let request = g.recv()[0].0;
    assert_eq!(
        (request.op, request.src_port, request.dst_port),
        (OP_REQUEST, 1 << 30, 77)
    );
    assert!(rx.try_recv().is_err(), "not before the guest answers");
    g.send(guest(OP_RESPONSE, 77, 1 << 30), &[]);
    let mut s = stream(rx.try_recv().unwrap().unwrap());
    s.write_all(b"ping").unwrap();
    g.host_events();
    assert_eq!(g.recv()[0].1, b"ping");

    host.connect(78, SECOND, Box::new(move |r| tx.send(r).unwrap()))
        .unwrap();
    g.host_events();
    let request = g.recv()[0].0;
    g.send(guest(OP_RST, 78, request.src_port), &[]);
    let refused = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn a_host_connection_the_guest_leaves_unanswered_times_out_and_is_reset() {
    let mem = memory();
    let (mut g, host) = with_host(&mem);
    let (tx, rx) = mpsc::channel();
    let done = tx.clone();
    host.connect(
        80,
        Duration::from_millis(30),
        Box::new(move |r| done.send(r).unwrap()),
    )
    .unwrap();
    host.connect(
        81,
        Duration::from_secs(60),
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .unwrap();
    g.host_events();
    let requests = g.recv();
    assert_eq!(requests.len(), 2);
    let request = requests[0].0;
    assert_eq!((request.op, request.dst_port), (OP_REQUEST, 80));
    // The guest says nothing: once the deadline passes, the timer wakes the muxer.
    std::thread::sleep(Duration::from_millis(60));
    g.host_events();
    let timed_out = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(timed_out.kind(), ErrorKind::TimedOut);
    assert!(rx.try_recv().is_err(), "the other connection still waits");
    let reset = g.recv();
    assert_eq!(reset.len(), 1);
    let h = reset[0].0;
    assert_eq!(
        (h.op, h.src_port, h.dst_port),
        (OP_RST, request.src_port, 80),
        "the guest hears the request is withdrawn"
    );
    // An answer too late finds no connection.
    g.send(guest(OP_RESPONSE, 80, request.src_port), &[]);
    assert_eq!(g.ops(), [OP_RST]);
    // The other one is accepted in time.
    let other = requests[1].0;
    g.send(guest(OP_RESPONSE, 81, other.src_port), &[]);
    let _accepted = rx.try_recv().unwrap().unwrap();
    // A timeout past any clock's end is no timeout (and no overflow).
    host.connect(82, Duration::MAX, Box::new(|_| {})).unwrap();
    g.host_events();
    assert_eq!(g.ops(), [OP_REQUEST]);
}

#[test]
fn firecrackers_unix_sockets_work_both_ways() {
    let dir = std::env::temp_dir().join(format!("kvmkit-vsock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let port_listener = UnixListener::bind(dir.join("v.sock_99")).unwrap();
    let mem = memory();
    let mut g = Guest::new(&mem, Vsock::new(CID, Some(&uds)).unwrap());
    g.post_rx(8);

    g.send(guest(OP_REQUEST, 4000, 99), &[]);
    assert_eq!(g.ops(), [OP_RESPONSE]);
    let (mut s, _) = port_listener.accept().unwrap();
    g.send(guest(OP_RW, 4000, 99), b"to 99");
    let mut got = [0u8; 5];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"to 99");

    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    g.host_events();
    g.host_events();
    let request = g.recv()[0].0;
    assert_eq!((request.op, request.dst_port), (OP_REQUEST, 52));
    g.send(guest(OP_RESPONSE, 52, request.src_port), &[]);
    let mut ok = [0u8; 14];
    c.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, format!("OK {}\n", 1u32 << 30).as_bytes());

    let mut bad = UnixStream::connect(&uds).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    g.host_events();
    g.host_events();
    bad.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        bad.read(&mut [0u8; 4]).unwrap(),
        0,
        "a bad line is hung up on"
    );
    drop(g);
    assert!(!uds.exists(), "the socket is removed with the device");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn closing_the_host_side_resets_the_transport() {
    let mem = memory();
    let (mut g, host_end) = connected(&mem);
    let ev = g.buf(4);
    g.chain(EVENT, &[(ev, 4, VRING_DESC_F_WRITE as u16)]);
    g.dev.process_queue(EVENT);
    assert!(g.used(EVENT).is_empty());
    let host = g.dev.host();
    host.close();
    host.close();
    g.host_events();
    assert_eq!(g.used(EVENT), [(0, 4)]);
    let id: u32 = mem.read_obj(GuestAddress(ev)).unwrap();
    assert_eq!(id, 0, "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET");
    assert_eq!((&host_end).read(&mut [0u8; 4]).unwrap(), 0);
    let e = host.listen(1, Arc::new(|_| {})).unwrap_err();
    assert_eq!(e.code(), "INVALID_STATE");
    assert!(host.connect(1, SECOND, Box::new(|_| {})).is_err());
}

#[test]
fn listening_twice_on_a_port_is_refused() {
    let dev = Vsock::new(CID, None).unwrap();
    let host = dev.host();
    host.listen(5, Arc::new(|_| {})).unwrap();
    assert_eq!(
        host.listen(5, Arc::new(|_| {})).unwrap_err().code(),
        "PORT_IN_USE"
    );
    assert!(host.unlisten(5));
    host.listen(5, Arc::new(|_| {})).unwrap();
}

#[test]
fn a_driver_reset_refuses_waiting_host_connections() {
    let mem = memory();
    let dev = Vsock::new(CID, None).unwrap();
    let host = dev.host();
    let mut g = Guest::new(&mem, dev);
    let (tx, rx) = mpsc::channel();
    host.connect(7, SECOND, Box::new(move |r| tx.send(r).unwrap()))
        .unwrap();
    g.host_events();
    g.dev.reset();
    assert_eq!(
        rx.try_recv().unwrap().unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
}

#[test]
fn an_avail_index_past_the_queue_size_breaks_the_device_instead_of_hanging_it() {
    let mem = memory();
    let (mut g, mut host) = connected(&mem);
    let avail = g.queues[RX].avail_addr();
    mem.write_obj(1000u16, avail.unchecked_add(2)).unwrap();
    host.write_all(b"for the guest").unwrap();
    g.host_events();
    let failure = g.interrupt.failure().unwrap();
    assert!(failure.contains("RX queue"), "{failure}");
}

#[test]
fn a_dropped_device_refuses_what_was_asked_of_it() {
    let dev = Vsock::new(CID, None).unwrap();
    let host = dev.host();
    let (tx, rx) = mpsc::channel();
    host.connect(7, SECOND, Box::new(move |r| tx.send(r).unwrap()))
        .unwrap();
    drop(dev);
    assert_eq!(
        rx.try_recv().unwrap().unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    assert_eq!(
        host.connect(7, SECOND, Box::new(|_| {}))
            .unwrap_err()
            .code(),
        "INVALID_STATE"
    );
}
