//! One stream connection between a guest port and a host socket: its state machine and its
//! credit accounting (virtio 1.2, 5.10.6.3).
//!
//! Guest to host: payload is written to the host socket as it comes; what the socket does not
//! take at once waits in a buffer of [`BUF_ALLOC`] bytes, the credit this side advertises, so
//! a guest that respects credit never overflows it and one that does not is reset. Host to
//! guest: the socket is read only while the guest has advertised room, and only when an RX
//! buffer is there to read into, so nothing is buffered on this side.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vm_memory::{ReadVolatile, VolatileSlice};

use super::packet::{
    Header, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, RxPacket, SHUTDOWN_RECEIVE, SHUTDOWN_SEND, TYPE_STREAM, TxPacket,
};

/// The receive buffer this side advertises per connection (`buf_alloc`).
pub const BUF_ALLOC: u32 = 128 * 1024;
/// A credit update is sent when the guest's view of the free room drops below this.
const CREDIT_UPDATE_THRESHOLD: u32 = 64 * 1024;

/// Called once a host-initiated connection is accepted (with the host end) or refused.
pub type Connected = Box<dyn FnOnce(std::io::Result<OwnedFd>) + Send>;

/// What to do when the guest accepts a connection the host asked for.
pub enum OnAccept {
    /// Nothing (the guest opened it).
    Nothing,
    /// Write `OK <local port>\n` to the socket (Firecracker's Unix-socket protocol).
    UdsAck,
    /// Hand `host` to `done`.
    Node {
        /// The end of the socket pair the host uses.
        host: OwnedFd,
        /// Who waits for it.
        done: Connected,
    },
}

impl OnAccept {
    /// Tells a waiting host that the connection was refused.
    pub fn refuse(self) {
        self.fail(ErrorKind::ConnectionRefused);
    }

    /// Tells a waiting host that the connection failed (`kind`).
    fn fail(self, kind: ErrorKind) {
        if let OnAccept::Node { done, .. } = self {
            done(Err(kind.into()));
        }
    }
}

/// What becomes of a connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It goes on.
    Keep,
    /// It ends with a `RST` to the guest.
    Reset,
    /// It ends without a word (the guest reset it).
    Drop,
}

/// Packets owed to the guest, sent in this order as RX buffers come.
#[derive(Debug, Default, Clone, Copy)]
struct Owed {
    request: bool,
    response: bool,
    credit_update: bool,
    /// The host socket is readable (data or end of file).
    rw: bool,
    credit_request: bool,
}

/// A connection.
pub struct Connection {
    stream: UnixStream,
    /// The host-side port (the guest's `dst_port`).
    local_port: u32,
    /// The guest-side port.
    peer_port: u32,
    guest_cid: u64,
    established: bool,
    on_accept: OnAccept,
    /// When a host-initiated connection the guest has not answered is given up.
    deadline: Option<Instant>,
    owed: Owed,
    /// Guest payload the host socket has not taken yet.
    tx_buf: VecDeque<u8>,
    /// Payload bytes received from the guest, ever.
    recv_cnt: Wrapping<u32>,
    /// Of those, bytes handed to the host socket (`fwd_cnt`).
    fwd_cnt: Wrapping<u32>,
    /// The `fwd_cnt` last told to the guest.
    fwd_cnt_told: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Payload bytes sent to the guest, ever.
    rx_cnt: Wrapping<u32>,
    /// A credit request is out and unanswered.
    asked_credit: bool,
    peer_shut_send: bool,
    peer_shut_recv: bool,
    /// The host socket reached end of file (and the guest is or will be told).
    host_eof: bool,
    /// The host socket stopped working: it is watched no more, its state is read directly.
    host_hung_up: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("local_port", &self.local_port)
            .field("peer_port", &self.peer_port)
            .field("established", &self.established)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(stream: UnixStream, local_port: u32, peer_port: u32, guest_cid: u64) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            guest_cid,
            established: false,
            on_accept: OnAccept::Nothing,
            deadline: None,
            owed: Owed::default(),
            tx_buf: VecDeque::new(),
            recv_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_told: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            asked_credit: false,
            peer_shut_send: false,
            peer_shut_recv: false,
            host_eof: false,
            host_hung_up: false,
        }
    }

    /// A connection the guest asked for with `request`, to the host socket `stream` (which
    /// must be non-blocking): accepted, a `RESPONSE` owed.
    pub fn from_guest(stream: UnixStream, guest_cid: u64, request: &Header) -> Self {
        let mut c = Connection::new(stream, request.dst_port, request.src_port, guest_cid);
        c.established = true;
        c.owed.response = true;
        c.take_credit(request);
        c
    }

    /// A connection the host asks for from `local_port` to guest port `peer_port`: a
    /// `REQUEST` owed, `on_accept` done when the guest answers, given up at `deadline` if
    /// there is one.
    pub fn from_host(
        stream: UnixStream,
        guest_cid: u64,
        (local_port, peer_port): (u32, u32),
        on_accept: OnAccept,
        deadline: Option<Instant>,
    ) -> Self {
        let mut c = Connection::new(stream, local_port, peer_port, guest_cid);
        c.owed.request = true;
        c.on_accept = on_accept;
        c.deadline = deadline;
        c
    }

    /// When the guest's answer stops being waited for, while it is.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| !self.established)
    }

    /// The guest did not answer in time: a waiting host hears so (`TimedOut`); the
    /// connection is to be reset.
    pub fn time_out(&mut self) {
        std::mem::replace(&mut self.on_accept, OnAccept::Nothing).fail(ErrorKind::TimedOut);
    }

    /// The host socket.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The header of a packet to the guest on this connection.
    fn header(&mut self, op: u16) -> Header {
        self.fwd_cnt_told = self.fwd_cnt;
        Header {
            src_cid: super::packet::HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The `RST` that ends this connection.
    pub fn reset_header(&mut self) -> Header {
        self.header(OP_RST)
    }

    /// Ends the connection from the host's side: a waiting host hears it was refused.
    pub fn abandon(self) {
        self.on_accept.refuse();
    }

    fn take_credit(&mut self, header: &Header) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = Wrapping(header.fwd_cnt);
    }

    /// How many more bytes the guest has room for.
    fn peer_room(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the host socket may be read now (and the guest hears of it).
    fn wants_host_input(&self) -> bool {
        self.established && !self.owed.rw && !self.host_eof && !self.peer_shut_recv
    }

    /// The readiness of the host socket this connection waits for: (readable, writable).
    pub fn interest(&self) -> (bool, bool) {
        let readable = self.wants_host_input() && self.peer_room() > 0;
        (readable, !self.tx_buf.is_empty())
    }

    /// Whether the host socket is no longer watched.
    pub fn hung_up(&self) -> bool {
        self.host_hung_up
    }

    /// Whether a packet is owed to the guest.
    pub fn has_rx(&self) -> bool {
        let o = &self.owed;
        o.request || o.response || o.credit_update || o.rw || o.credit_request
    }

    /// A packet from the guest on this connection.
    pub fn on_guest(&mut self, pkt: &TxPacket<'_>) -> Verdict {
        let h = &pkt.header;
        self.take_credit(h);
        if !self.established {
            return match h.op {
                OP_RESPONSE => self.accepted(),
                OP_RST => Verdict::Drop,
                _ => Verdict::Reset,
            };
        }
        let verdict = match h.op {
            OP_RW => self.guest_data(pkt),
            OP_CREDIT_UPDATE => Verdict::Keep,
            OP_CREDIT_REQUEST => {
                self.owed.credit_update = true;
                Verdict::Keep
            }
            OP_SHUTDOWN => {
                self.peer_shut_send |= h.flags & SHUTDOWN_SEND != 0;
                self.peer_shut_recv |= h.flags & SHUTDOWN_RECEIVE != 0;
                self.flush_host()
            }
            OP_RST => Verdict::Drop,
            _ => Verdict::Reset,
        };
        if self.peer_room() > 0 {
            self.asked_credit = false;
        }
        verdict.and(|| self.finished())
    }

    fn accepted(&mut self) -> Verdict {
        self.established = true;
        match std::mem::replace(&mut self.on_accept, OnAccept::Nothing) {
            OnAccept::Nothing => Verdict::Keep,
            OnAccept::UdsAck => {
                // A fresh socket's buffer takes a short line at once.
                let ack = format!("OK {}\n", self.local_port);
                match send(&self.stream, ack.as_bytes()) {
                    Ok(n) if n == ack.len() => Verdict::Keep,
                    _ => Verdict::Reset,
                }
            }
            OnAccept::Node { host, done } => {
                done(Ok(host));
                Verdict::Keep
            }
        }
    }

    fn guest_data(&mut self, pkt: &TxPacket<'_>) -> Verdict {
        let len = pkt.header.len as usize;
        let buffered = self.tx_buf.len() + len;
        if self.peer_shut_send || buffered > BUF_ALLOC as usize {
            // Data after SHUTDOWN, or past the credit this side gave.
            return Verdict::Reset;
        }
        self.recv_cnt += len as u32;
        let mut written = 0;
        for data in &pkt.data {
            let mut sent = 0;
            if self.tx_buf.is_empty() {
                match send_guest_data(&self.stream, data) {
                    Ok(n) => sent = n,
                    Err(e) if e.would_block() => {}
                    Err(_) => return Verdict::Reset,
                }
            }
            written += sent;
            if sent < data.len() {
                // What the socket did not take waits, and so does everything after it.
                let rest = data.offset(sent).unwrap_or(*data);
                let mut copy = vec![0u8; rest.len()];
                rest.copy_to(&mut copy[..]);
                self.tx_buf.extend(copy);
            }
        }
        self.forwarded(written);
        Verdict::Keep
    }

    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt += n as u32;
        let unacked = (self.recv_cnt - self.fwd_cnt_told).0;
        if self.fwd_cnt != self.fwd_cnt_told
            && BUF_ALLOC.saturating_sub(unacked) < CREDIT_UPDATE_THRESHOLD
        {
            self.owed.credit_update = true;
        }
    }

    /// Writes what waits for the host socket; shuts its write side once the guest will send
    /// no more.
    fn flush_host(&mut self) -> Verdict {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match send(&self.stream, front) {
                Ok(0) => return Verdict::Reset,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.forwarded(n);
                }
                Err(e) if e.would_block() => return Verdict::Keep,
                Err(_) => return Verdict::Reset,
            }
        }
        if self.peer_shut_send {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Verdict::Keep
    }

    /// Whether both directions are done: the guest sends no more (and all it sent reached
    /// the host), and the host sends no more or the guest would not take it.
    fn finished(&self) -> Verdict {
        let done =
            self.peer_shut_send && self.tx_buf.is_empty() && (self.host_eof || self.peer_shut_recv);
        if done { Verdict::Reset } else { Verdict::Keep }
    }

    /// The host socket became readable.
    pub fn on_host_readable(&mut self) {
        if self.wants_host_input() {
            if self.peer_room() > 0 {
                self.owed.rw = true;
            } else if !self.asked_credit {
                self.asked_credit = true;
                self.owed.credit_request = true;
            }
        }
    }

    /// The host socket became writable.
    pub fn on_host_writable(&mut self) -> Verdict {
        self.flush_host().and(|| self.finished())
    }

    /// The host socket hung up or failed: it is watched no more; what it still holds is
    /// read as credit allows, and what it will not take resets the connection.
    pub fn on_host_hang_up(&mut self) -> Verdict {
        self.host_hung_up = true;
        self.on_host_readable();
        self.on_host_writable()
    }

    /// Fills `rx` with the next packet owed to the guest; returns its length, or `None` when
    /// nothing turned out to be owed (the socket had nothing to read after all).
    pub fn fill_rx(&mut self, rx: &mut RxPacket<'_>) -> (Option<u32>, Verdict) {
        let o = &mut self.owed;
        let op = if std::mem::take(&mut o.request) {
            OP_REQUEST
        } else if std::mem::take(&mut o.response) {
            OP_RESPONSE
        } else if std::mem::take(&mut o.credit_update) {
            OP_CREDIT_UPDATE
        } else if std::mem::take(&mut o.rw) {
            return self.fill_data(rx);
        } else if std::mem::take(&mut o.credit_request) {
            OP_CREDIT_REQUEST
        } else {
            return (None, Verdict::Keep);
        };
        let h = self.header(op);
        (Some(rx.finish(&h)), Verdict::Keep)
    }

    fn fill_data(&mut self, rx: &mut RxPacket<'_>) -> (Option<u32>, Verdict) {
        let room = (self.peer_room() as usize).min(rx.capacity());
        if room == 0 {
            // An RX buffer without room for payload: try again with the next one.
            self.owed.rw = self.peer_room() > 0;
            return (None, Verdict::Keep);
        }
        let mut read = 0;
        for mut buf in rx.data(room) {
            match (&self.stream).read_volatile(&mut buf) {
                Ok(n) => {
                    read += n;
                    if n < buf.len() {
                        break;
                    }
                }
                // Nothing more now: what was read goes out.
                Err(e) if e.would_block() && read > 0 => break,
                Err(e) if e.would_block() => return (None, Verdict::Keep),
                Err(_) if read > 0 => break,
                Err(_) => return (None, Verdict::Reset),
            }
        }
        if read == 0 {
            self.host_eof = true;
            let mut h = self.header(OP_SHUTDOWN);
            h.flags = SHUTDOWN_SEND;
            return (Some(rx.finish(&h)), self.finished());
        }
        self.rx_cnt += read as u32;
        let mut h = self.header(OP_RW);
        h.len = read as u32;
        if self.host_hung_up || self.peer_room() == 0 || read == room {
            // Nobody will say it is readable again (keep reading until end of file), the
            // guest's room ran out (ask for more), or the buffer is full and the socket may
            // hold more: the next RX buffer is tried at once, not after another trip through
            // epoll and an interrupt per buffer (Linux posts 4 KiB ones).
            self.on_host_readable();
        }
        (Some(rx.finish(&h)), Verdict::Keep)
    }
}

/// `send(2)` with `MSG_NOSIGNAL`: a host end that is gone is an error (`EPIPE`), not a
/// `SIGPIPE` that would end a process that does not ignore it.
///
/// # Safety
///
/// `ptr` must be valid for reads of `len` bytes for the call.
unsafe fn send_raw(stream: &UnixStream, ptr: *const u8, len: usize) -> std::io::Result<usize> {
    // SAFETY: the caller vouches for `ptr` and `len`; the descriptor is the stream's own.
    let n = unsafe { libc::send(stream.as_raw_fd(), ptr.cast(), len, libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

fn send(stream: &UnixStream, buf: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    unsafe { send_raw(stream, buf.as_ptr(), buf.len()) }
}

fn send_guest_data(stream: &UnixStream, data: &VolatileSlice<'_, ()>) -> std::io::Result<usize> {
    let guard = data.ptr_guard();
    // SAFETY: a VolatileSlice is valid for reads of its length while its guard lives (the
    // kernel copies from guest RAM as vm-memory's own `write_volatile` has it do).
    unsafe { send_raw(stream, guard.as_ptr(), data.len()) }
}

impl Verdict {
    /// `self`, or if it is [`Verdict::Keep`], `then()`.
    fn and(self, then: impl FnOnce() -> Verdict) -> Verdict {
        if self == Verdict::Keep { then() } else { self }
    }
}

trait WouldBlock {
    fn would_block(&self) -> bool;
}

impl WouldBlock for std::io::Error {
    fn would_block(&self) -> bool {
        self.kind() == ErrorKind::WouldBlock
    }
}

impl WouldBlock for vm_memory::VolatileMemoryError {
    fn would_block(&self) -> bool {
        matches!(self, vm_memory::VolatileMemoryError::IOError(e) if e.kind() == ErrorKind::WouldBlock)
    }
}
