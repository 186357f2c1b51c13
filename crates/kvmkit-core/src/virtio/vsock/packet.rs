//! vsock packets: the header fields and operations of the virtio-vsock stream protocol, read
//! from the guest's TX chains and written into its RX chains through `virtio-vsock`'s
//! [`VsockPacket`], which checks every descriptor a guest hands over.

use virtio_vsock::packet::{PKT_HEADER_SIZE, VsockPacket};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, VolatileSlice};

use crate::virtio::{Chain, Memory};

/// The host's context ID: guests reach the host at CID 2.
pub const HOST_CID: u64 = 2;
/// The most payload one packet carries (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_DATA: u32 = 64 * 1024;

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
    fn of<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Self {
        Header {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
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

/// Why a chain was not a packet.
pub type ParseError = virtio_vsock::packet::Error;

/// A packet the guest sent: its header and, for `RW`, a view of its payload in guest memory.
pub struct TxPacket<'a> {
    /// The header, read once.
    pub header: Header,
    /// The payload (`header.len` bytes), if any.
    pub data: Option<VolatileSlice<'a, ()>>,
}

impl std::fmt::Debug for TxPacket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxPacket")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Reads the packet in TX `chain`.
///
/// # Errors
///
/// The chain is too short, a buffer is writable, outside RAM or split across regions, or the
/// payload is longer than [`MAX_PKT_DATA`] or than its buffer.
pub fn read_tx<'a>(mem: &'a Memory, chain: &mut Chain<'_>) -> Result<TxPacket<'a>, ParseError> {
    let pkt = VsockPacket::from_tx_virtq_chain(mem, chain, MAX_PKT_DATA)?;
    Ok(TxPacket {
        header: Header::of(&pkt),
        data: pkt.data_slice().copied(),
    })
}

/// An RX buffer the guest posted, to be filled with one packet.
pub struct RxPacket<'a> {
    pkt: VsockPacket<'a, ()>,
}

impl std::fmt::Debug for RxPacket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxPacket").finish_non_exhaustive()
    }
}

impl<'a> RxPacket<'a> {
    /// The RX buffer in `chain`.
    ///
    /// # Errors
    ///
    /// The chain is too short, a buffer is read-only, outside RAM, split across regions, or
    /// its payload buffer is longer than [`MAX_PKT_DATA`].
    pub fn new(mem: &'a Memory, chain: &mut Chain<'_>) -> Result<Self, ParseError> {
        Ok(RxPacket {
            pkt: VsockPacket::from_rx_virtq_chain(mem, chain, MAX_PKT_DATA)?,
        })
    }

    /// Room for payload.
    pub fn capacity(&self) -> usize {
        self.pkt.data_slice().map_or(0, |s| s.len())
    }

    /// The payload buffer, if it has one.
    pub fn data(&self) -> Option<VolatileSlice<'a, ()>> {
        self.pkt.data_slice().copied()
    }

    /// Writes `header` (its `len` says how much payload was put in [`RxPacket::data`]) and
    /// returns the bytes used, for the used ring.
    pub fn finish(&mut self, header: &Header) -> u32 {
        // The header slice is PKT_HEADER_SIZE bytes long by construction: these writes fit.
        let _ = self.pkt.header_slice().write(&[0u8; PKT_HEADER_SIZE], 0);
        self.pkt
            .set_src_cid(header.src_cid)
            .set_dst_cid(header.dst_cid)
            .set_src_port(header.src_port)
            .set_dst_port(header.dst_port)
            .set_len(header.len)
            .set_type(header.type_)
            .set_op(header.op)
            .set_flags(header.flags)
            .set_buf_alloc(header.buf_alloc)
            .set_fwd_cnt(header.fwd_cnt);
        PKT_HEADER_SIZE as u32 + header.len
    }
}
