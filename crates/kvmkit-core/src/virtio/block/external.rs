//! A disk served outside the device (by TypeScript in kvmkit's case): the device hands
//! requests over in batches and returns each to the driver when its completion arrives,
//! which may be much later and from any thread.
//!
//! Requests name their buffers as guest-physical (address, length) pairs, each inside one
//! RAM region, so the server can reach guest memory without a copy. Completions go through a
//! [`Completer`]: it queues them and writes an eventfd the I/O thread watches; the device
//! then writes each request's status and returns its chain. Request ids are never reused, so
//! a completion for a request the device forgot (it was reset meanwhile) is dropped.
//!
//! A server may also take discards and writes of zeroes ([`Trims`]): the device then offers
//! them, checks each segment itself and hands over only well-formed ones.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, Weak};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::error::{Error, Result};
use crate::sync::LockExt;
use crate::virtio::block::request::Buffer;

/// What an external request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalKind {
    /// Fill the buffers from the disk at the sector.
    Read,
    /// Write the buffers to the disk at the sector.
    Write,
    /// Make completed writes durable.
    Flush,
    /// The sectors are no longer needed (their content becomes unspecified).
    Discard,
    /// The sectors must read as zeroes; `unmap`: their space may be freed.
    WriteZeroes {
        /// The driver allows the space to be freed.
        unmap: bool,
    },
}

/// Which of discard and write-zeroes an external server takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trims {
    /// It takes [`ExternalKind::Discard`].
    pub discard: bool,
    /// It takes [`ExternalKind::WriteZeroes`].
    pub write_zeroes: bool,
}

impl Trims {
    /// Both.
    pub const BOTH: Trims = Trims {
        discard: true,
        write_zeroes: true,
    };
}

/// A request for the external server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRequest {
    /// Its id, for [`Completer::complete`].
    pub id: u64,
    /// What it asks for.
    pub kind: ExternalKind,
    /// The first sector (0 for a flush).
    pub sector: u64,
    /// How many sectors it covers (0 for a flush; reads and writes: their buffers').
    pub sectors: u64,
    /// The guest buffers, in order, each inside one RAM region.
    pub buffers: Vec<Buffer>,
}

/// Hands a batch of requests to the server; returns `false` if it cannot take them (it is
/// gone), and the device then fails them at once. Called on the I/O thread: it must not
/// block.
pub type Submit = Box<dyn FnMut(Vec<ExternalRequest>) -> bool + Send>;

#[derive(Debug)]
struct Shared {
    done: Mutex<Vec<(u64, bool)>>,
    ready: EventFd,
}

/// Completes external requests from any thread. It does not keep the device's eventfd
/// open: once the device is gone, completions go nowhere.
#[derive(Debug, Clone)]
pub struct Completer(Weak<Shared>);

impl Completer {
    /// Request `id` is done: `ok` or failed (the driver sees `VIRTIO_BLK_S_IOERR`).
    pub fn complete(&self, id: u64, ok: bool) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        shared.done.lock_or_recover().push((id, ok));
        // Fails only when the counter is saturated: the I/O thread is being woken anyway.
        let _ = shared.ready.write(1);
    }
}

/// The device's side of an external disk.
pub struct External {
    submit: Submit,
    shared: Arc<Shared>,
    size: u64,
    trims: Trims,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl External {
    /// A disk of `size` bytes served through `submit`, which also takes the `trims` named,
    /// and the completer its server uses.
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` if `size` is 0 or not a multiple of 512; `EVENTFD_FAILED` if the
    /// completion eventfd cannot be made.
    pub fn new(size: u64, trims: Trims, submit: Submit) -> Result<(Self, Completer)> {
        if size == 0 || !size.is_multiple_of(super::request::SECTOR_SIZE) {
            return Err(Error::config(
                "size",
                format!("{size} bytes is not a positive multiple of 512 (a disk is whole sectors)"),
            ));
        }
        let shared = Arc::new(Shared {
            done: Mutex::new(Vec::new()),
            ready: EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?,
        });
        let completer = Completer(Arc::downgrade(&shared));
        Ok((
            External {
                submit,
                shared,
                size,
                trims,
            },
            completer,
        ))
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Which of discard and write-zeroes its server takes.
    pub fn trims(&self) -> Trims {
        self.trims
    }

    /// Hands `batch` over; `false` if the server is gone.
    pub(super) fn submit(&mut self, batch: Vec<ExternalRequest>) -> bool {
        (self.submit)(batch)
    }

    /// The completion eventfd.
    pub(super) fn fd(&self) -> RawFd {
        self.shared.ready.as_raw_fd()
    }

    /// Takes the completions that arrived.
    pub(super) fn take_completions(&self) -> Vec<(u64, bool)> {
        let _ = self.shared.ready.read();
        std::mem::take(&mut *self.shared.done.lock_or_recover())
    }
}
