//! A virtio-blk request read out of a descriptor chain (virtio 1.2 §5.2.6): a 16-byte
//! header the device reads, data buffers, and a status byte the device writes last.
//!
//! Parsing never trusts the chain: the header may be split over descriptors, every data
//! buffer is checked to lie in guest RAM (and split where it crosses from one RAM region
//! into the next), and a chain with no room for a status byte is reported as such so the
//! device can return it with nothing written.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::virtio::{Chain, Memory};

/// The size of a sector, the unit of every offset in the protocol.
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u32 = 9;
/// The size of the request header (type, reserved, sector).
pub const HEADER_LEN: usize = 16;
/// The most data buffers a request may carry (the `seg_max` the device announces).
pub const SEG_MAX: u32 = 128;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `VIRTIO_BLK_T_IN`: read sectors into the writable buffers.
    Read,
    /// `VIRTIO_BLK_T_OUT`: write the readable buffers to sectors.
    Write,
    /// `VIRTIO_BLK_T_FLUSH`: make completed writes durable.
    Flush,
    /// `VIRTIO_BLK_T_GET_ID`: the device's serial, 20 bytes.
    GetId,
    /// `VIRTIO_BLK_T_DISCARD`: the readable buffers hold discard segments.
    Discard,
    /// `VIRTIO_BLK_T_WRITE_ZEROES`: the readable buffers hold write-zeroes segments.
    WriteZeroes,
    /// Any other type: answered `VIRTIO_BLK_S_UNSUPP`.
    Unsupported(u32),
}

impl RequestKind {
    /// The kind of request type `value`.
    pub fn from_type(value: u32) -> Self {
        match value {
            VIRTIO_BLK_T_IN => RequestKind::Read,
            VIRTIO_BLK_T_OUT => RequestKind::Write,
            VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
            VIRTIO_BLK_T_GET_ID => RequestKind::GetId,
            VIRTIO_BLK_T_DISCARD => RequestKind::Discard,
            VIRTIO_BLK_T_WRITE_ZEROES => RequestKind::WriteZeroes,
            other => RequestKind::Unsupported(other),
        }
    }

    /// Whether its data is written by the device (into the driver's writable buffers).
    fn device_writes(self) -> bool {
        matches!(self, RequestKind::Read | RequestKind::GetId)
    }
}

/// A guest-physical buffer that lies inside one RAM region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Its guest-physical address.
    pub addr: u64,
    /// Its length in bytes (never 0).
    pub len: u32,
}

/// A well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What it asks for.
    pub kind: RequestKind,
    /// The first sector it touches (reads and writes).
    pub sector: u64,
    /// Its data buffers, each inside one RAM region, in order.
    pub data: Vec<Buffer>,
    /// Their total length.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No writable byte ends the chain, so there is nowhere to put a status.
    #[error("the chain ends without a writable status byte")]
    NoStatus,
    /// The readable part is shorter than a header.
    #[error("the header is {0} bytes, shorter than {HEADER_LEN}")]
    ShortHeader(u64),
    /// A readable descriptor comes after a writable one.
    #[error("a readable descriptor follows a writable one")]
    Order,
    /// A data buffer is not inside guest RAM.
    #[error("a buffer of {len} bytes at {addr:#x} is not inside guest RAM")]
    OutsideRam {
        /// Its guest-physical address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// More data buffers than `seg_max` allows.
    #[error("more than {SEG_MAX} data buffers")]
    TooManySegments,
}

/// A chain that is not a well-formed request, and where its status byte goes if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// What is wrong with it.
    pub error: RequestError,
    /// Where `VIRTIO_BLK_S_IOERR` goes, when the chain has room for it.
    pub status: Option<GuestAddress>,
}

/// The (address, length) pairs of a chain's descriptors, readable ones first.
#[derive(Default)]
struct Parts {
    readable: Vec<(u64, u32)>,
    writable: Vec<(u64, u32)>,
    misordered: bool,
    too_many: bool,
}

/// Reads the descriptors of `chain`, keeping at most what a request may have.
fn parts(chain: Chain<'_>) -> Parts {
    // Header + data + status, with room for buffers the driver split across descriptors.
    const MAX_DESCRIPTORS: usize = SEG_MAX as usize + 2;
    let mut parts = Parts::default();
    for desc in chain {
        if parts.readable.len() + parts.writable.len() == MAX_DESCRIPTORS {
            parts.too_many = true;
            break;
        }
        let piece = (desc.addr().raw_value(), desc.len());
        if desc.is_write_only() {
            parts.writable.push(piece);
        } else {
            parts.misordered |= !parts.writable.is_empty();
            parts.readable.push(piece);
        }
    }
    parts
}

/// Splits `len` bytes at `addr` into pieces that each lie inside one RAM region.
///
/// # Errors
///
/// [`RequestError::OutsideRam`] if any byte is outside guest RAM (or the range wraps).
pub fn split_in_ram(mem: &Memory, addr: u64, len: u32) -> Result<Vec<Buffer>, RequestError> {
    let outside = RequestError::OutsideRam { addr, len };
    let mut pieces = Vec::new();
    let (mut at, mut left) = (addr, u64::from(len));
    while left > 0 {
        let region = mem.find_region(GuestAddress(at)).ok_or(outside.clone())?;
        let in_region = region.start_addr().raw_value() + region.len() - at;
        let take = left.min(in_region);
        pieces.push(Buffer {
            addr: at,
            // `take` is at most `len`.
            len: take as u32,
        });
        left -= take;
        if left > 0 {
            at = at.checked_add(take).ok_or(outside.clone())?;
        }
    }
    Ok(pieces)
}

/// Drops the first `skip` bytes of `pieces`.
fn skip_bytes(pieces: &[(u64, u32)], mut skip: u64) -> Vec<(u64, u32)> {
    let mut rest = Vec::with_capacity(pieces.len());
    for &(addr, len) in pieces {
        let len64 = u64::from(len);
        if skip >= len64 {
            skip -= len64;
            continue;
        }
        // `skip < len`, so both fit.
        rest.push((addr.wrapping_add(skip), (len64 - skip) as u32));
        skip = 0;
    }
    rest
}

/// Reads the header gathered from the first bytes of `readable`.
fn read_header(mem: &Memory, readable: &[(u64, u32)]) -> Option<[u8; HEADER_LEN]> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    for &(addr, len) in readable {
        if filled == HEADER_LEN {
            break;
        }
        let take = (HEADER_LEN - filled).min(len as usize);
        mem.read_slice(&mut header[filled..filled + take], GuestAddress(addr))
            .ok()?;
        filled += take;
    }
    (filled == HEADER_LEN).then_some(header)
}

/// Parses the request in `chain`.
///
/// # Errors
///
/// [`Rejected`] when the chain is not a well-formed request, with the status byte's address
/// when it has one.
pub fn parse(chain: Chain<'_>) -> Result<Request, Rejected> {
    let mem = chain.memory();
    let parts = parts(chain.clone());
    let status = match parts.writable.last() {
        Some(&(addr, len)) if len > 0 => addr.checked_add(u64::from(len) - 1).map(GuestAddress),
        _ => None,
    };
    let reject = |error| Rejected { error, status };
    let Some(status) = status else {
        return Err(reject(RequestError::NoStatus));
    };
    if parts.misordered {
        return Err(reject(RequestError::Order));
    }
    if parts.too_many {
        return Err(reject(RequestError::TooManySegments));
    }
    let readable_len: u64 = parts.readable.iter().map(|&(_, l)| u64::from(l)).sum();
    let header = read_header(mem, &parts.readable)
        .ok_or_else(|| reject(RequestError::ShortHeader(readable_len)))?;
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let kind = RequestKind::from_type(word(0));
    let sector = u64::from(word(8)) | (u64::from(word(12)) << 32);
    let raw_data = match kind {
        RequestKind::Flush | RequestKind::Unsupported(_) => Vec::new(),
        k if k.device_writes() => {
            // Everything writable but the status byte.
            let mut data = parts.writable.clone();
            if let Some(last) = data.last_mut() {
                last.1 -= 1;
            }
            data
        }
        _ => skip_bytes(&parts.readable, HEADER_LEN as u64),
    };
    let mut data = Vec::with_capacity(raw_data.len());
    for (addr, len) in raw_data.into_iter().filter(|&(_, len)| len > 0) {
        data.extend(split_in_ram(mem, addr, len).map_err(reject)?);
    }
    if data.len() > 2 * SEG_MAX as usize {
        return Err(reject(RequestError::TooManySegments));
    }
    let data_len = data.iter().map(|b| u64::from(b.len)).sum();
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status,
    })
}
