//! virtio-blk: a disk on one request queue.
//!
//! [`request`] reads a request out of a descriptor chain; [`device`] is the device model,
//! which serves requests on the I/O thread through a synchronous [`backend::DiskBackend`] —
//! a raw image ([`file`]) or a copy-on-write overlay over a shared base ([`overlay`]) — or
//! hands them in batches to an [`external`] server and returns them when it completes them.
//!
//! It offers `VIRTIO_BLK_F_FLUSH`, `BLK_SIZE`, `SEG_MAX`, `RO` on a read-only disk, and
//! `DISCARD` and `WRITE_ZEROES` on a writable file or overlay, or on a writable external
//! disk whose server takes them; `GET_ID` answers the disk's serial. A discard or
//! write-zeroes request carries one segment, checked against the disk and the limits of the
//! configuration space before any backend sees it. A request past the disk's end, with a sector count that overflows, with data not
//! a whole number of sectors, or with a buffer outside guest RAM, ends with
//! `VIRTIO_BLK_S_IOERR`; a chain with no status byte is returned with nothing written.

pub mod backend;
pub mod device;
pub mod external;
pub mod file;
pub mod overlay;
pub mod request;

pub use backend::DiskBackend;
pub use device::{Backend, Block, BlockOptions};
pub use external::{Completer, External, ExternalKind, ExternalRequest, Submit, Trims};
pub use file::RawFile;
pub use overlay::{Overlay, OverlayFile};
