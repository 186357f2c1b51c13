//! vsock packets: the header fields and operations of the virtio-vsock stream protocol, read
//! from the guest's TX chains and written into its RX chains.
//!
//! A packet is a 44-byte header followed by its payload, laid over a chain's buffers however
//! the driver likes (virtio 1.2, 2.7.4: a device must not assume a particular layout): the
//! header alone in one descriptor or sharing it with the payload, the header itself split,
//! the payload over several descriptors. Linux posts TX packets as header + payload and RX
//! buffers as one descriptor (6.2 on) or header + payload (before). So the chain is taken as
//! one run of bytes: its buffers as slices of guest RAM (through `get_slices`, which checks
//! each one is in RAM), the header copied out once, the payload left in place for the host
//! socket to read from or write into. (`virtio-vsock`'s `VsockPacket` takes only the first
//! two layouts and drops the others.)

use vm_memory::{GuestMemory, Permissions, VolatileSlice};

use crate::virtio::{Chain, Memory};

/// The host's context ID: guests reach the host at CID 2.
pub const HOST_CID: u64 = 2;
/// The most payload one packet carries (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_DATA: u32 = 64 * 1024;

/// A header's size.
pub const HEADER_SIZE: usize = 44;

/// `type`: a stream socket, the only type this device carries.
pub const TYPE_STREAM: u16 = 1;

/// `op`: connection request.
pub const OP_REQUEST: u16 = 1;
/// `op`: connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// `op`: connection refused or torn down.
pub const OP_RST: u16 = 3;
/// `op`: one side stops receiving and/or sending (`flags`).
pub const OP_SHUTDOWN: u16 = 4;
/// `op`: payload.
pub const OP_RW: u16 = 5;
/// `op`: the sender's `buf_alloc` and `fwd_cnt` changed.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// `op`: the sender asks for a credit update.
pub const OP_CREDIT_REQUEST: u16 = 7;

/// `SHUTDOWN` flag: the sender will receive no more.
pub const SHUTDOWN_RECEIVE: u32 = 1;
/// `SHUTDOWN` flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet header, as read once from guest memory (so a guest rewriting it meanwhile changes
/// nothing) or as the host fills it in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Sender's CID.
    pub src_cid: u64,
    /// Receiver's CID.
    pub dst_cid: u64,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Operation (`OP_*`).
    pub op: u16,
    /// `SHUTDOWN` flags.
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// How many bytes the sender has taken out of that buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

impl Header {
    /// The header in its wire format (little-endian, 44 bytes).
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let u64_at = |o: usize| u64::from_le_bytes(field(b, o));
        let u32_at = |o: usize| u32::from_le_bytes(field(b, o));
        let u16_at = |o: usize| u16::from_le_bytes(field(b, o));
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The header's wire format.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// A header answering `self` (ports and CIDs swapped), with no payload and no credit yet.
    pub fn reply(&self, op: u16) -> Self {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op,
            ..Header::default()
        }
    }
}

/// The `N` bytes of `b` at `at` (a header field: always inside the header).
fn field<const N: usize>(b: &[u8; HEADER_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// Why a chain was not a packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The chain holds fewer bytes than a header (and, for TX, its payload).
    #[error("the chain holds {have} bytes, too few for {need}")]
    TooShort {
        /// What it holds.
        have: usize,
        /// What it should.
        need: usize,
    },
    /// A TX buffer the device may write or an RX buffer it may only read.
    #[error("a {0} buffer in a chain the device should {1}")]
    WrongDirection(&'static str, &'static str),
    /// The header announces more payload than a packet carries.
    #[error("a payload of {0} bytes, more than {MAX_PKT_DATA}")]
    TooLong(u32),
    /// A buffer is not in guest RAM.
    #[error("a buffer outside guest RAM: {0}")]
    Memory(String),
}

/// Slices of guest RAM, in order: a chain's buffers or part of them.
type Slices<'a> = Vec<VolatileSlice<'a, ()>>;

/// The buffers of `chain` as slices of guest RAM, checking each descriptor is device-writable
/// (`write`) or device-readable (not `write`) as the queue demands.
fn slices<'a>(
    mem: &'a Memory,
    chain: &mut Chain<'_>,
    write: bool,
) -> Result<Slices<'a>, ParseError> {
    let access = if write {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let mut out = Vec::new();
    for desc in chain {
        if desc.is_write_only() != write {
            return Err(if write {
                ParseError::WrongDirection("read-only", "write")
            } else {
                ParseError::WrongDirection("writable", "read")
            });
        }
        let parts = mem
            .get_slices(desc.addr(), desc.len() as usize, access)
            .map_err(|e| ParseError::Memory(e.to_string()))?;
        for part in parts {
            out.push(part.map_err(|e| ParseError::Memory(e.to_string()))?);
        }
    }
    Ok(out)
}

fn total(slices: &[VolatileSlice<'_, ()>]) -> usize {
    slices.iter().map(VolatileSlice::len).sum()
}

/// Splits `slices` after `at` bytes (at most all of them): (the first `at`, the rest).
fn split_at<'a>(slices: Slices<'a>, mut at: usize) -> (Slices<'a>, Slices<'a>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    for s in slices {
        if at == 0 {
            tail.push(s);
        } else if s.len() <= at {
            at -= s.len();
            head.push(s);
        } else {
            // `at < s.len()`: both halves are inside the slice.
            if let Ok((front, back)) = s.split_at(at) {
                head.push(front);
                tail.push(back);
            }
            at = 0;
        }
    }
    (head, tail)
}

/// The buffers of `chain` (as [`slices`] checks them) cut after the header: (the header's,
/// the rest, how many bytes the chain holds).
fn header_first<'a>(
    mem: &'a Memory,
    chain: &mut Chain<'_>,
    write: bool,
) -> Result<(Slices<'a>, Slices<'a>, usize), ParseError> {
    let all = slices(mem, chain, write)?;
    let have = total(&all);
    if have < HEADER_SIZE {
        return Err(ParseError::TooShort {
            have,
            need: HEADER_SIZE,
        });
    }
    let (header, rest) = split_at(all, HEADER_SIZE);
    Ok((header, rest, have))
}

/// A packet the guest sent: its header, and its payload where the guest put it.
pub struct TxPacket<'a> {
    /// The header, read once (a guest rewriting it meanwhile changes nothing).
    pub header: Header,
    /// The payload (`header.len` bytes), over as many slices as the guest spread it.
    pub data: Slices<'a>,
}

impl std::fmt::Debug for TxPacket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxPacket")
            .field("header", &self.header)
            .field("slices", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Reads the packet in TX `chain`, whatever its layout.
///
/// # Errors
///
/// A buffer is device-writable or outside RAM, the chain is shorter than a header and the
/// payload it announces, or that payload is longer than [`MAX_PKT_DATA`].
pub fn read_tx<'a>(mem: &'a Memory, chain: &mut Chain<'_>) -> Result<TxPacket<'a>, ParseError> {
    let (head, rest, have) = header_first(mem, chain, false)?;
    let mut bytes = [0u8; HEADER_SIZE];
    let mut at = 0;
    for s in &head {
        at += s.copy_to(&mut bytes[at..]);
    }
    let header = Header::from_bytes(&bytes);
    if header.len > MAX_PKT_DATA {
        return Err(ParseError::TooLong(header.len));
    }
    let need = HEADER_SIZE + header.len as usize;
    if have < need {
        return Err(ParseError::TooShort { have, need });
    }
    let (data, _) = split_at(rest, header.len as usize);
    Ok(TxPacket { header, data })
}

/// An RX buffer the guest posted, to be filled with one packet.
pub struct RxPacket<'a> {
    header: Slices<'a>,
    data: Slices<'a>,
}

impl std::fmt::Debug for RxPacket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxPacket")
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl<'a> RxPacket<'a> {
    /// The RX buffer in `chain`, whatever its layout.
    ///
    /// # Errors
    ///
    /// A buffer is device-readable or outside RAM, or the chain cannot hold a header.
    pub fn new(mem: &'a Memory, chain: &mut Chain<'_>) -> Result<Self, ParseError> {
        let (header, rest, _) = header_first(mem, chain, true)?;
        let (data, _) = split_at(rest, MAX_PKT_DATA as usize);
        Ok(RxPacket { header, data })
    }

    /// Room for payload (at most [`MAX_PKT_DATA`]).
    pub fn capacity(&self) -> usize {
        total(&self.data)
    }

    /// The first `len` bytes of room for payload (fewer if there are not so many), over as
    /// many slices as the guest spread it.
    pub fn data(&self, len: usize) -> Slices<'a> {
        split_at(self.data.clone(), len).0
    }

    /// Writes `header` (its `len` says how much payload was put in [`RxPacket::data`]) and
    /// returns the bytes used, for the used ring.
    pub fn finish(&mut self, header: &Header) -> u32 {
        let bytes = header.to_bytes();
        let mut at = 0;
        for s in &self.header {
            let end = at + s.len();
            s.copy_from(&bytes[at..end]);
            at = end;
        }
        HEADER_SIZE as u32 + header.len
    }
}
