//! The vsock muxer: routes the guest's packets to connections by port, watches every host
//! socket (connections, the Unix socket at `<uds>`, handshakes on it, the host handle's
//! wake-up) and a timer (host connections the guest leaves unanswered) on one epoll instance
//! the I/O thread polls, and queues what is owed to the guest.
//!
//! Every queue here is bounded: connections ([`MAX_CONNECTIONS`]), handshakes
//! ([`MAX_HANDSHAKES`]), resets for packets no connection owns ([`MAX_RESETS`], beyond which
//! they are dropped: the guest gets nothing for a packet it should not have sent).

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connected, Connection, OnAccept, Verdict};
use super::host::{Request, Shared, UDS_CONNECT_TIMEOUT};
use super::packet::{HOST_CID, Header, OP_REQUEST, OP_RST, RxPacket, TYPE_STREAM, TxPacket};
use super::uds::{Handshake, Progress, UdsListener};
use crate::error::{Error, Result};

/// The most connections at once.
pub const MAX_CONNECTIONS: usize = 256;
/// The most host connections on `<uds>` still writing their `CONNECT` line.
pub const MAX_HANDSHAKES: usize = 64;
/// The most resets waiting for an RX buffer.
pub const MAX_RESETS: usize = 256;
/// Host-initiated connections take local ports from here up (as Firecracker's do).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// A connection's ports: the host's and the guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    local: u32,
    peer: u32,
}

/// What an epoll event is about.
#[derive(Debug, Clone, Copy)]
enum Watched {
    Wake,
    Timer,
    Uds,
    Handshake,
    Connection(Key),
}

fn epoll_error(e: std::io::Error) -> Error {
    Error::Device {
        device: "virtio-vsock",
        message: format!("epoll: {e}"),
    }
}

/// The muxer of one vsock device.
pub struct Muxer {
    cid: u64,
    epoll: Epoll,
    /// Fires at the earliest deadline of the host connections the guest has not answered.
    timer: TimerFd,
    host: Arc<Shared>,
    uds: Option<UdsListener>,
    watched: HashMap<RawFd, Watched>,
    handshakes: HashMap<RawFd, Handshake>,
    connections: HashMap<Key, Connection>,
    /// Connections that owe the guest a packet, in turn.
    rxq: VecDeque<Key>,
    queued: HashSet<Key>,
    resets: VecDeque<Header>,
    next_local_port: u32,
    active: bool,
    transport_reset: bool,
}

impl std::fmt::Debug for Muxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("cid", &self.cid)
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        self.host.detach();
        self.drop_connections();
    }
}

impl Muxer {
    /// A muxer for guest `cid`, serving `host`'s requests, and Firecracker's Unix sockets
    /// at `uds` if given.
    pub(super) fn new(cid: u64, uds: Option<&Path>, host: Arc<Shared>) -> Result<Self> {
        let uds = uds.map(UdsListener::bind).transpose()?;
        let mut muxer = Muxer {
            cid,
            epoll: Epoll::new().map_err(epoll_error)?,
            timer: TimerFd::new().map_err(|e| Error::Device {
                device: "virtio-vsock",
                message: format!("timerfd: {e}"),
            })?,
            host,
            uds: None,
            watched: HashMap::new(),
            handshakes: HashMap::new(),
            connections: HashMap::new(),
            rxq: VecDeque::new(),
            queued: HashSet::new(),
            resets: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            active: false,
            transport_reset: false,
        };
        muxer.watch(muxer.host.wake_fd(), Watched::Wake, EventSet::IN)?;
        muxer.watch(muxer.timer.as_raw_fd(), Watched::Timer, EventSet::IN)?;
        if let Some(uds) = uds {
            muxer.watch(uds.listener().as_raw_fd(), Watched::Uds, EventSet::IN)?;
            muxer.uds = Some(uds);
        }
        Ok(muxer)
    }

    /// The epoll instance the I/O thread polls.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn watch(&mut self, fd: RawFd, what: Watched, events: EventSet) -> Result<()> {
        let event = EpollEvent::new(events, fd as u64);
        self.epoll
            .ctl(ControlOperation::Add, fd, event)
            .map_err(epoll_error)?;
        self.watched.insert(fd, what);
        Ok(())
    }

    fn unwatch(&mut self, fd: RawFd) {
        if self.watched.remove(&fd).is_some() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }

    /// The driver is running (`true`) or was reset (`false`): a reset drops every
    /// connection, and host connections wait for the next activation no more.
    pub fn set_active(&mut self, active: bool) {
        if !active {
            self.drop_connections();
            self.transport_reset = false;
        }
        self.active = active;
    }

    fn drop_connections(&mut self) {
        for (key, conn) in std::mem::take(&mut self.connections) {
            self.unwatch(conn.stream().as_raw_fd());
            self.queued.remove(&key);
            conn.abandon();
        }
        self.rxq.clear();
        self.queued.clear();
        self.resets.clear();
    }

    /// Whether a transport reset event is owed to the guest.
    pub fn transport_reset_owed(&self) -> bool {
        self.transport_reset
    }

    /// The transport reset event went out.
    pub fn transport_reset_sent(&mut self) {
        self.transport_reset = false;
    }

    /// Whether a packet is owed to the guest.
    pub fn has_rx(&self) -> bool {
        !self.resets.is_empty() || !self.rxq.is_empty()
    }

    /// Takes a packet from the guest.
    pub fn send(&mut self, pkt: &TxPacket<'_>) {
        let h = pkt.header;
        if h.src_cid != self.cid {
            // Not from this guest: nobody to answer.
            return;
        }
        if h.dst_cid != HOST_CID || h.type_ != TYPE_STREAM {
            self.refuse(&h);
            return;
        }
        let key = Key {
            local: h.dst_port,
            peer: h.src_port,
        };
        if let Some(conn) = self.connections.get_mut(&key) {
            let verdict = conn.on_guest(pkt);
            self.settle(key, verdict);
            return;
        }
        match h.op {
            OP_REQUEST => self.guest_connect(&h),
            OP_RST => {}
            _ => self.refuse(&h),
        }
    }

    /// Answers `h` with a reset (unless it is one).
    fn refuse(&mut self, h: &Header) {
        if h.op != OP_RST && self.resets.len() < MAX_RESETS {
            self.resets.push_back(h.reply(OP_RST));
        }
    }

    fn guest_connect(&mut self, request: &Header) {
        let port = request.dst_port;
        let stream = if self.connections.len() >= MAX_CONNECTIONS {
            None
        } else if let Some(accept) = self.host.listener(port) {
            UnixStream::pair().ok().and_then(|(ours, theirs)| {
                ours.set_nonblocking(true).ok()?;
                accept(OwnedFd::from(theirs));
                Some(ours)
            })
        } else {
            self.uds.as_ref().and_then(|uds| uds.connect_port(port))
        };
        match stream {
            Some(stream) => {
                let conn = Connection::from_guest(stream, self.cid, request);
                let key = Key {
                    local: port,
                    peer: request.src_port,
                };
                self.add(key, conn);
            }
            None => self.refuse(request),
        }
    }

    fn host_connect(
        &mut self,
        stream: UnixStream,
        port: u32,
        on_accept: OnAccept,
        timeout: Duration,
    ) {
        if !self.active || self.connections.len() >= MAX_CONNECTIONS {
            on_accept.refuse();
            return;
        }
        let mut key = Key {
            local: self.next_local_port,
            peer: port,
        };
        while self.connections.contains_key(&key) {
            key.local = key.local.wrapping_add(1).max(FIRST_LOCAL_PORT);
        }
        self.next_local_port = key.local.wrapping_add(1).max(FIRST_LOCAL_PORT);
        // A timeout too long to be a moment is none.
        let deadline = Instant::now().checked_add(timeout);
        let conn = Connection::from_host(stream, self.cid, (key.local, port), on_accept, deadline);
        self.add(key, conn);
        self.arm_timer();
    }

    fn node_connect(&mut self, port: u32, timeout: Duration, done: Connected) {
        match UnixStream::pair() {
            Ok((ours, theirs)) if ours.set_nonblocking(true).is_ok() => {
                let host = OwnedFd::from(theirs);
                self.host_connect(ours, port, OnAccept::Node { host, done }, timeout);
            }
            Ok(_) => done(Err(std::io::ErrorKind::Other.into())),
            Err(e) => done(Err(e)),
        }
    }

    /// Sets the timer to the earliest deadline of the connections waiting for the guest,
    /// or disarms it. Either way it is no longer readable (no read of it can block).
    fn arm_timer(&mut self) {
        let next = self
            .connections
            .values()
            .filter_map(Connection::deadline)
            .min();
        // A timer that cannot be set leaves the connections waiting, as without a deadline.
        let _ = match next {
            Some(at) => {
                // A zero duration would disarm it: a deadline already past fires at once.
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                self.timer.reset(wait, None)
            }
            None => self.timer.clear(),
        };
    }

    /// Resets the host connections the guest left unanswered past their deadline.
    fn time_out(&mut self) {
        let now = Instant::now();
        let expired: Vec<Key> = self
            .connections
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            if let Some(conn) = self.connections.get_mut(&key) {
                conn.time_out();
            }
            self.settle(key, Verdict::Reset);
        }
        self.arm_timer();
    }

    fn add(&mut self, key: Key, conn: Connection) {
        let fd = conn.stream().as_raw_fd();
        if self
            .watch(fd, Watched::Connection(key), EventSet::empty())
            .is_err()
        {
            conn.abandon();
            return;
        }
        self.connections.insert(key, conn);
        self.settle(key, Verdict::Keep);
    }

    /// Ends the connection `key` or brings its watch and its turn in the RX queue up to date.
    fn settle(&mut self, key: Key, verdict: Verdict) {
        let Some(conn) = self.connections.get_mut(&key) else {
            return;
        };
        let verdict = if verdict == Verdict::Keep && conn.hung_up() {
            // Unwatched: act on what it would wait for.
            let (readable, writable) = conn.interest();
            if readable {
                conn.on_host_readable();
            }
            if writable {
                conn.on_host_writable()
            } else {
                Verdict::Keep
            }
        } else {
            verdict
        };
        match verdict {
            Verdict::Keep => {
                let fd = conn.stream().as_raw_fd();
                if !conn.hung_up() {
                    let (readable, writable) = conn.interest();
                    let mut events = EventSet::empty();
                    if readable {
                        events |= EventSet::IN;
                    }
                    if writable {
                        events |= EventSet::OUT;
                    }
                    let event = EpollEvent::new(events, fd as u64);
                    let _ = self.epoll.ctl(ControlOperation::Modify, fd, event);
                }
                if conn.has_rx() && self.queued.insert(key) {
                    self.rxq.push_back(key);
                }
            }
            Verdict::Reset | Verdict::Drop => {
                let Some(mut conn) = self.connections.remove(&key) else {
                    return;
                };
                self.unwatch(conn.stream().as_raw_fd());
                if verdict == Verdict::Reset && self.resets.len() < MAX_RESETS {
                    self.resets.push_back(conn.reset_header());
                }
                conn.abandon();
            }
        }
    }

    /// Fills `rx` with the next packet owed to the guest; returns its length, or `None` if
    /// nothing could be sent after all.
    pub fn fill_rx(&mut self, rx: &mut RxPacket<'_>) -> Option<u32> {
        if let Some(h) = self.resets.pop_front() {
            return Some(rx.finish(&h));
        }
        for _ in 0..self.rxq.len() {
            let key = self.rxq.pop_front()?;
            self.queued.remove(&key);
            let Some(conn) = self.connections.get_mut(&key) else {
                continue;
            };
            let (len, verdict) = conn.fill_rx(rx);
            self.settle(key, verdict);
            if len.is_some() {
                return len;
            }
        }
        None
    }

    /// Serves what the host sockets have for it (called when the epoll instance is readable).
    pub fn process_host(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        let Ok(n) = self.epoll.wait(0, &mut events) else {
            return;
        };
        for event in &events[..n] {
            let fd = event.fd();
            let set = EventSet::from_bits_truncate(event.events());
            match self.watched.get(&fd).copied() {
                Some(Watched::Wake) => self.host_requests(),
                Some(Watched::Timer) => self.time_out(),
                Some(Watched::Uds) => self.accept_uds(),
                Some(Watched::Handshake) => self.handshake(fd),
                Some(Watched::Connection(key)) => self.host_event(key, set),
                None => {}
            }
        }
    }

    fn host_requests(&mut self) {
        for request in self.host.take_requests() {
            match request {
                Request::Connect(port, timeout, done) => self.node_connect(port, timeout, done),
            }
        }
        if self.host.closed() && (self.uds.is_some() || !self.connections.is_empty()) {
            self.close();
        }
    }

    /// The host closed the device: every connection is dropped (the guest is told with a
    /// transport reset), `<uds>` is closed and removed.
    fn close(&mut self) {
        self.drop_connections();
        for fd in std::mem::take(&mut self.handshakes).into_keys() {
            self.unwatch(fd);
        }
        if let Some(uds) = self.uds.take() {
            self.unwatch(uds.listener().as_raw_fd());
        }
        self.transport_reset = self.active;
    }

    fn accept_uds(&mut self) {
        while let Some(stream) = self.uds.as_ref().and_then(UdsListener::accept) {
            if self.handshakes.len() >= MAX_HANDSHAKES {
                continue;
            }
            let fd = stream.as_raw_fd();
            if self.watch(fd, Watched::Handshake, EventSet::IN).is_ok() {
                self.handshakes.insert(fd, Handshake::new(stream));
            }
        }
    }

    fn handshake(&mut self, fd: RawFd) {
        let Some(handshake) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let progress = handshake.read();
        if progress == Progress::Pending {
            return;
        }
        self.unwatch(fd);
        let Some(handshake) = self.handshakes.remove(&fd) else {
            return;
        };
        if let Progress::Connect(port) = progress {
            let stream = handshake.into_stream();
            self.host_connect(stream, port, OnAccept::UdsAck, UDS_CONNECT_TIMEOUT);
        }
    }

    fn host_event(&mut self, key: Key, set: EventSet) {
        let Some(conn) = self.connections.get_mut(&key) else {
            return;
        };
        let verdict = if set.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            let fd = conn.stream().as_raw_fd();
            let verdict = conn.on_host_hang_up();
            self.unwatch(fd);
            verdict
        } else {
            if set.contains(EventSet::IN) {
                conn.on_host_readable();
            }
            if set.contains(EventSet::OUT) {
                conn.on_host_writable()
            } else {
                Verdict::Keep
            }
        };
        self.settle(key, verdict);
    }
}
