//! The wire format between the binding and TypeScript, exported to JS so that
//! `src/handoff.ts` reads these numbers instead of copying them.
//!
//! A record travels in a `Float64Array` slot of [`SLOT_FIELDS`] numbers (posted writes in a
//! batch of such slots): its kind, then the fields below. Every field fits a double exactly
//! (addresses are below 2^53; a value is split into two 32-bit halves).

use napi_derive::napi;

/// Numbers per record in a slot.
#[napi]
pub const SLOT_FIELDS: u32 = 10;
/// Slot field: the record kind (`RECORD_*`).
#[napi]
pub const SLOT_KIND: u32 = 0;
/// Slot field: the vCPU that made the access.
#[napi]
pub const SLOT_VCPU: u32 = 1;
/// Slot field: the exit kind (`EXIT_*`).
#[napi]
pub const SLOT_EXIT: u32 = 2;
/// Slot field: the device's registration id.
#[napi]
pub const SLOT_DEVICE: u32 = 3;
/// Slot field: the offset into the device's range.
#[napi]
pub const SLOT_OFFSET: u32 = 4;
/// Slot field: the absolute port or guest-physical address.
#[napi]
pub const SLOT_ADDR: u32 = 5;
/// Slot field: the access width in bytes.
#[napi]
pub const SLOT_SIZE: u32 = 6;
/// Slot field: the repeat count of string I/O (its bytes are fetched separately).
#[napi]
pub const SLOT_COUNT: u32 = 7;
/// Slot field: the low 32 bits of a single write's value.
#[napi]
pub const SLOT_VALUE: u32 = 8;
/// Slot field: the high 32 bits of a single write's value.
#[napi]
pub const SLOT_VALUE_HI: u32 = 9;

/// Record kind: an access a vCPU waits on.
#[napi]
pub const RECORD_ACCESS: u32 = 1;
/// Record kind: a posted write (no vCPU waits on it).
#[napi]
pub const RECORD_POSTED_WRITE: u32 = 2;

/// `servePoll`/`serveReply` result: no access came.
#[napi]
pub const POLL_NONE: u32 = 0;
/// `servePoll`/`serveReply` result: an access is in the slot.
#[napi]
pub const POLL_ACCESS: u32 = 1;
/// `servePoll`/`serveReply` result: an access is in the slot, and posted writes made
/// before it wait to be taken first.
#[napi]
pub const POLL_ACCESS_AFTER_POSTED: u32 = 2;

/// Exit kind: port read (`ExitKind::IoIn`).
#[napi]
pub const EXIT_IO_IN: u32 = kvmkit_core::exit::ExitKind::IoIn as u32;
/// Exit kind: port write (`ExitKind::IoOut`).
#[napi]
pub const EXIT_IO_OUT: u32 = kvmkit_core::exit::ExitKind::IoOut as u32;
/// Exit kind: MMIO read (`ExitKind::MmioRead`).
#[napi]
pub const EXIT_MMIO_READ: u32 = kvmkit_core::exit::ExitKind::MmioRead as u32;
/// Exit kind: MMIO write (`ExitKind::MmioWrite`).
#[napi]
pub const EXIT_MMIO_WRITE: u32 = kvmkit_core::exit::ExitKind::MmioWrite as u32;

/// Event type: an access waits in the hand-off (a doorbell: take it with `servePoll`).
#[napi]
pub const EVENT_ACCESS: u32 = 0;
/// Event type: every vCPU has paused.
#[napi]
pub const EVENT_PAUSED: u32 = 1;
/// Event type: the run ended (`outcome` says how).
#[napi]
pub const EVENT_END: u32 = 2;
/// Event type: posted writes wait (a doorbell: take them with `takePosted`).
#[napi]
pub const EVENT_POSTED: u32 = 3;
/// Event type: serial port `device` has output (take it with `takeSerialOutput`).
#[napi]
pub const EVENT_OUTPUT: u32 = 4;
/// Event type: the virtio device whose window is at `device` failed (`name`, `message`).
#[napi]
pub const EVENT_DEVICE_ERROR: u32 = 5;
