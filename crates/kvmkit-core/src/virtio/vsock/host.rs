//! The host's handle on a vsock device: listening on ports the guest connects to and
//! connecting to ports the guest listens on, each connection one end of a Unix socket pair
//! whose other end the device's muxer serves on the I/O thread.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::connection::Connected;
use crate::error::{Error, Result};
use crate::sync::LockExt;

/// How long a host connection through `<uds>` waits for the guest to answer its request
/// (a Linux guest answers at once, accepting or refusing).
pub const UDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes the host end of a connection the guest opened to a listened-on port.
pub type Accept = Arc<dyn Fn(OwnedFd) + Send + Sync>;

/// What the host asked of the muxer.
pub(super) enum Request {
    /// Connect to guest port `port`, giving up after `timeout` without an answer.
    Connect(u32, Duration, Connected),
}

/// State shared by the handle and the muxer.
pub(super) struct Shared {
    listeners: Mutex<HashMap<u32, Accept>>,
    requests: Mutex<Vec<Request>>,
    /// Wakes the muxer for `requests` and for `close`.
    pub(super) wake: EventFd,
    closed: AtomicBool,
}

impl Shared {
    pub(super) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(Shared {
            listeners: Mutex::default(),
            requests: Mutex::default(),
            wake: EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?,
            closed: AtomicBool::new(false),
        }))
    }

    pub(super) fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The listener on `port`, if any.
    pub(super) fn listener(&self, port: u32) -> Option<Accept> {
        self.listeners.lock_or_recover().get(&port).cloned()
    }

    /// Takes the pending requests (after a wake-up).
    pub(super) fn take_requests(&self) -> Vec<Request> {
        let _ = self.wake.read();
        std::mem::take(&mut *self.requests.lock_or_recover())
    }

    pub(super) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The device is gone (its machine was closed): every later call fails, and requests
    /// nobody will serve are refused.
    pub(super) fn detach(&self) {
        self.closed.store(true, Ordering::Release);
        self.listeners.lock_or_recover().clear();
        for request in self.take_requests() {
            let Request::Connect(_, _, done) = request;
            done(Err(std::io::ErrorKind::ConnectionRefused.into()));
        }
    }
}

/// The host side of a vsock device (cheap to clone; every clone is the same device).
#[derive(Clone)]
pub struct VsockHost {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for VsockHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockHost")
            .field("closed", &self.shared.closed())
            .finish_non_exhaustive()
    }
}

impl VsockHost {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        VsockHost { shared }
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        if self.shared.closed() {
            return Err(Error::InvalidState {
                op,
                state: "closed (its vsock device or its machine was closed)",
            });
        }
        Ok(())
    }

    /// Hands every connection the guest opens to host port `port` to `accept` (on the I/O
    /// thread), ahead of a Unix socket `<uds>_<port>`.
    ///
    /// # Errors
    ///
    /// `PORT_IN_USE` if `port` is listened on already; `INVALID_STATE` after
    /// [`VsockHost::close`].
    pub fn listen(&self, port: u32, accept: Accept) -> Result<()> {
        self.check_open("listen on a vsock port")?;
        let mut listeners = self.shared.listeners.lock_or_recover();
        if listeners.contains_key(&port) {
            return Err(Error::PortInUse { port });
        }
        listeners.insert(port, accept);
        Ok(())
    }

    /// Stops listening on `port`; returns whether it was listened on. Connections already
    /// made go on.
    pub fn unlisten(&self, port: u32) -> bool {
        self.shared
            .listeners
            .lock_or_recover()
            .remove(&port)
            .is_some()
    }

    /// Connects to guest port `port`: `done` gets the host end once the guest accepts,
    /// `ConnectionRefused` if it refuses, has no driver running, or the device is reset, or
    /// `TimedOut` if it does not answer within `timeout` (the guest then gets a reset for
    /// the request, so a late answer finds no connection).
    ///
    /// # Errors
    ///
    /// `INVALID_STATE` after [`VsockHost::close`] or once the machine is closed.
    pub fn connect(&self, port: u32, timeout: Duration, done: Connected) -> Result<()> {
        let mut requests = self.shared.requests.lock_or_recover();
        // Checked under the lock, so a device going away refuses what was queued before.
        self.check_open("connect to a vsock port")?;
        requests.push(Request::Connect(port, timeout, done));
        drop(requests);
        // An eventfd write fails only when its counter is saturated: it is signalled anyway.
        let _ = self.shared.wake.write(1);
        Ok(())
    }

    /// Stops listening on every port and resets every connection (the guest hears of it
    /// through a transport reset event); later calls fail. Closing twice does nothing.
    pub fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.listeners.lock_or_recover().clear();
        let _ = self.shared.wake.write(1);
    }
}
