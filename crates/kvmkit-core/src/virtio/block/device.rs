//! The virtio-blk device: one request queue served on the I/O thread, a synchronous
//! backend answering each request at once or an external one answering later.

use std::collections::HashMap;
use std::os::fd::RawFd;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileSlice};

use crate::virtio::block::backend::DiskBackend;
use crate::virtio::block::external::{External, ExternalKind, ExternalRequest, Trims};
use crate::virtio::block::request::{
    Buffer, Request, RequestKind, SECTOR_SHIFT, SECTOR_SIZE, SEG_MAX, parse,
};
#[cfg(test)]
use crate::virtio::has_feature;
use crate::virtio::{
    Activation, Chain, Interrupt, Memory, OneQueue, VirtioDevice, drain_queue, next_chain,
};

/// The request queue's size.
pub const QUEUE_SIZE: u16 = 256;
/// The most sectors one discard segment may cover (2 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// The most sectors one write-zeroes segment may cover (32 MiB: the overlay writes them).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 16;
/// Segments per discard or write-zeroes request: one, as QEMU and Cloud Hypervisor take
/// (Linux sends one unless the device announces more).
const MAX_SEGMENTS: u32 = 1;
/// The size of a discard / write-zeroes segment.
const SEGMENT_LEN: usize = 16;
/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
const FLAG_UNMAP: u32 = 1;
/// The length of `struct virtio_blk_config` up to `write_zeroes_may_unmap` and padding.
const CONFIG_LEN: usize = 60;
/// The length of a `GET_ID` answer.
const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;

/// Where the device's data lives.
#[derive(Debug)]
pub enum Backend {
    /// Served on the I/O thread (a file, an overlay).
    Sync(Box<dyn DiskBackend>),
    /// Served elsewhere and completed later.
    External(External),
}

/// How a disk looks to the guest.
#[derive(Debug, Clone, Default)]
pub struct BlockOptions {
    /// Offer `VIRTIO_BLK_F_RO` and fail every write.
    pub read_only: bool,
    /// The serial `GET_ID` answers (at most 20 bytes are used).
    pub serial: String,
}

/// An external request waiting for its completion.
#[derive(Debug)]
struct Pending {
    head: u16,
    status: GuestAddress,
    /// The bytes the device writes into the chain when it succeeds.
    len: u32,
}

/// What requests a disk takes, and the answers it gives without its backend.
#[derive(Debug)]
struct Policy {
    read_only: bool,
    /// Which of discard and write-zeroes it takes (none on a read-only disk).
    trims: Trims,
    serial: [u8; ID_LEN],
    size: u64,
}

/// A discard or write-zeroes segment that lies on the disk and within the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    sector: u64,
    sectors: u64,
    /// Write-zeroes only: the space may be freed.
    unmap: bool,
}

/// A virtio-blk device.
#[derive(Debug)]
pub struct Block {
    policy: Policy,
    backend: Backend,
    active: Option<OneQueue>,
    /// External requests handed over and not yet completed, by id.
    pending: HashMap<u64, Pending>,
    next_id: u64,
}

/// How a request ends: its status, and how many data bytes the device wrote into it.
type Outcome = (u8, u32);

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Writes `status` at `at`; the used length of the chain: `written` and the status byte, or
/// 0 if the status byte is not in RAM.
fn finish(mem: &Memory, at: GuestAddress, (status, written): Outcome) -> u32 {
    match mem.write_obj(status, at) {
        Ok(()) => written.saturating_add(1),
        Err(_) => 0,
    }
}

/// The slices of guest RAM `buffers` name (each lies in one region: checked by the parser).
fn slices<'m>(mem: &'m Memory, buffers: &[Buffer]) -> Option<Vec<VolatileSlice<'m>>> {
    buffers
        .iter()
        .map(|b| mem.get_slice(GuestAddress(b.addr), b.len as usize).ok())
        .collect()
}

impl Policy {
    /// Whether `sectors` sectors from `sector` lie on the disk.
    fn on_disk(&self, sector: u64, sectors: u64) -> bool {
        sector
            .checked_add(sectors)
            .and_then(|end| end.checked_mul(SECTOR_SIZE))
            .is_some_and(|end| end <= self.size)
    }

    /// The answer to `req` when it can be given without the backend, or `None` when the
    /// backend must serve it.
    fn precheck(&self, mem: &Memory, req: &Request) -> Option<Outcome> {
        match req.kind {
            RequestKind::Unsupported(_) => Some((UNSUPP, 0)),
            RequestKind::Discard | RequestKind::WriteZeroes if self.read_only => Some((IOERR, 0)),
            RequestKind::Discard if !self.trims.discard => Some((UNSUPP, 0)),
            RequestKind::WriteZeroes if !self.trims.write_zeroes => Some((UNSUPP, 0)),
            RequestKind::Write if self.read_only => Some((IOERR, 0)),
            RequestKind::Read | RequestKind::Write => {
                let whole = req.data_len.is_multiple_of(SECTOR_SIZE);
                let fits = u32::try_from(req.data_len).is_ok();
                (!whole || !fits || !self.on_disk(req.sector, req.data_len >> SECTOR_SHIFT))
                    .then_some((IOERR, 0))
            }
            RequestKind::GetId => Some(self.get_id(mem, req)),
            RequestKind::Flush | RequestKind::Discard | RequestKind::WriteZeroes => None,
        }
    }

    fn get_id(&self, mem: &Memory, req: &Request) -> Outcome {
        let mut written = 0;
        for b in &req.data {
            let n = (b.len as usize).min(ID_LEN - written);
            if n == 0 {
                break;
            }
            if mem
                .write_slice(&self.serial[written..written + n], GuestAddress(b.addr))
                .is_err()
            {
                return (IOERR, 0);
            }
            written += n;
        }
        (OK, written as u32)
    }

    /// Serves `req` on the synchronous backend `disk`.
    fn serve(&self, disk: &mut dyn DiskBackend, mem: &Memory, req: &Request) -> Outcome {
        if let Some(outcome) = self.precheck(mem, req) {
            return outcome;
        }
        let offset = req.sector << SECTOR_SHIFT;
        let result = match req.kind {
            RequestKind::Read => slices(mem, &req.data).map(|s| disk.read_at(offset, &s)),
            RequestKind::Write => slices(mem, &req.data).map(|s| disk.write_at(offset, &s)),
            RequestKind::Flush => Some(disk.flush()),
            RequestKind::Discard | RequestKind::WriteZeroes => {
                return match self.segment(mem, req) {
                    Ok(segment) => Self::serve_segment(disk, req.kind, segment),
                    Err(outcome) => outcome,
                };
            }
            RequestKind::GetId | RequestKind::Unsupported(_) => None,
        };
        match result {
            // `precheck` made sure the length fits.
            Some(Ok(())) if req.kind == RequestKind::Read => (OK, req.data_len as u32),
            Some(Ok(())) => (OK, 0),
            _ => (IOERR, 0),
        }
    }

    /// The segment of a discard or write-zeroes request, checked: one 16-byte segment
    /// (else `IOERR`), no flag but write-zeroes' unmap (else `UNSUPP`, as virtio 1.2
    /// §5.2.6.2 asks), at most the sectors the configuration space allows and all on the
    /// disk (else `IOERR`).
    fn segment(&self, mem: &Memory, req: &Request) -> Result<Segment, Outcome> {
        if req.data_len != SEGMENT_LEN as u64 * u64::from(MAX_SEGMENTS) {
            return Err((IOERR, 0));
        }
        let mut fields = [0u8; SEGMENT_LEN];
        let mut at = 0;
        for b in &req.data {
            let end = at + b.len as usize;
            if mem
                .read_slice(&mut fields[at..end], GuestAddress(b.addr))
                .is_err()
            {
                return Err((IOERR, 0));
            }
            at = end;
        }
        let [
            s0,
            s1,
            s2,
            s3,
            s4,
            s5,
            s6,
            s7,
            n0,
            n1,
            n2,
            n3,
            f0,
            f1,
            f2,
            f3,
        ] = fields;
        let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        let sectors = u32::from_le_bytes([n0, n1, n2, n3]);
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        let zeroes = req.kind == RequestKind::WriteZeroes;
        let (allowed_flags, max) = if zeroes {
            (FLAG_UNMAP, MAX_WRITE_ZEROES_SECTORS)
        } else {
            (0, MAX_DISCARD_SECTORS)
        };
        if flags & !allowed_flags != 0 {
            return Err((UNSUPP, 0));
        }
        let sectors = u64::from(sectors);
        if sectors > u64::from(max) || !self.on_disk(sector, sectors) {
            return Err((IOERR, 0));
        }
        Ok(Segment {
            sector,
            sectors,
            unmap: flags & FLAG_UNMAP != 0,
        })
    }

    /// Serves a checked discard or write-zeroes request on `disk`.
    fn serve_segment(disk: &mut dyn DiskBackend, kind: RequestKind, segment: Segment) -> Outcome {
        let (offset, len) = (
            segment.sector << SECTOR_SHIFT,
            segment.sectors << SECTOR_SHIFT,
        );
        let result = if kind == RequestKind::WriteZeroes {
            disk.write_zeroes(offset, len, segment.unmap)
        } else {
            disk.discard(offset, len)
        };
        if result.is_ok() { (OK, 0) } else { (IOERR, 0) }
    }

    /// Serves `chain` on `disk`; returns its used length.
    fn serve_chain(&self, disk: &mut dyn DiskBackend, chain: Chain<'_>) -> u32 {
        let mem = chain.memory();
        match parse(chain.clone()) {
            Ok(req) => finish(mem, req.status, self.serve(disk, mem, &req)),
            Err(rejected) => rejected.status.map_or(0, |at| finish(mem, at, (IOERR, 0))),
        }
    }

    /// The bytes of the configuration space (`struct virtio_blk_config`).
    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &(self.size >> SECTOR_SHIFT).to_le_bytes()); // capacity
        put(12, &SEG_MAX.to_le_bytes()); // seg_max
        put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
        put(34, &1u16.to_le_bytes()); // num_queues
        if self.trims.discard {
            put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
            put(40, &MAX_SEGMENTS.to_le_bytes()); // max_discard_seg
            put(44, &8u32.to_le_bytes()); // discard_sector_alignment: 4 KiB
        }
        if self.trims.write_zeroes {
            put(48, &MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
            put(52, &MAX_SEGMENTS.to_le_bytes()); // max_write_zeroes_seg
            put(56, &[1]); // write_zeroes_may_unmap
        }
        c
    }
}

impl Block {
    /// A disk on `backend`.
    pub fn new(backend: Backend, options: &BlockOptions) -> Self {
        let size = match &backend {
            Backend::Sync(b) => b.size(),
            Backend::External(e) => e.size(),
        };
        let mut serial = [0u8; ID_LEN];
        let bytes = options.serial.as_bytes();
        let n = bytes.len().min(ID_LEN);
        serial[..n].copy_from_slice(&bytes[..n]);
        let trims = match &backend {
            _ if options.read_only => Trims::default(),
            Backend::Sync(_) => Trims::BOTH,
            Backend::External(e) => e.trims(),
        };
        Block {
            policy: Policy {
                read_only: options.read_only,
                trims,
                serial,
                size,
            },
            backend,
            active: None,
            pending: HashMap::new(),
            next_id: 0,
        }
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.policy.size
    }

    /// Serves the queue on a synchronous backend.
    fn process_sync(policy: &Policy, disk: &mut dyn DiskBackend, active: &mut OneQueue) {
        let OneQueue {
            mem,
            queue,
            interrupt,
        } = active;
        if let Err(e) = drain_queue(queue, mem, interrupt, |chain| {
            policy.serve_chain(disk, chain)
        }) {
            interrupt.fail(format!("virtio-blk queue: {e}"));
        }
    }

    /// Hands the queue's requests to an external backend, answering at once those it need
    /// not see.
    fn process_external(&mut self) {
        let Block {
            policy,
            backend: Backend::External(external),
            active: Some(active),
            pending,
            next_id,
        } = self
        else {
            return;
        };
        let OneQueue {
            mem,
            queue,
            interrupt,
        } = active;
        let mut batch = Vec::new();
        let mut used = false;
        let result = (|| loop {
            queue.disable_notification(mem)?;
            let mut popped = false;
            while let Some(chain) = next_chain(queue, mem)? {
                popped = true;
                let head = chain.head_index();
                let req = match parse(chain) {
                    Ok(req) => req,
                    Err(rejected) => {
                        let len = rejected.status.map_or(0, |at| finish(mem, at, (IOERR, 0)));
                        queue.add_used(mem, head, len)?;
                        used = true;
                        continue;
                    }
                };
                let checked = match policy.precheck(mem, &req) {
                    Some(outcome) => Err(outcome),
                    None => external_request(policy, mem, &req),
                };
                let (kind, sector, sectors) = match checked {
                    Ok(what) => what,
                    Err(outcome) => {
                        queue.add_used(mem, head, finish(mem, req.status, outcome))?;
                        used = true;
                        continue;
                    }
                };
                let id = *next_id;
                *next_id += 1;
                let len = if kind == ExternalKind::Read {
                    // `precheck` made sure it fits.
                    req.data_len as u32
                } else {
                    0
                };
                pending.insert(
                    id,
                    Pending {
                        head,
                        status: req.status,
                        len,
                    },
                );
                let buffers = match kind {
                    ExternalKind::Read | ExternalKind::Write => req.data,
                    // The segment was read here; a flush has no data.
                    _ => Vec::new(),
                };
                batch.push(ExternalRequest {
                    id,
                    kind,
                    sector,
                    sectors,
                    buffers,
                });
            }
            // Nothing found although the ring said work waited: a ring laid over itself.
            if !queue.enable_notification(mem)? || !popped {
                return Ok::<(), virtio_queue::Error>(());
            }
        })();
        if let Err(e) = result {
            interrupt.fail(format!("virtio-blk queue: {e}"));
        }
        if !batch.is_empty() {
            let ids: Vec<u64> = batch.iter().map(|r| r.id).collect();
            if !external.submit(batch) {
                // The server is gone: fail the requests rather than leave them hanging.
                let failed = ids.into_iter().map(|id| (id, false)).collect();
                self.complete(failed);
                return;
            }
        }
        if used {
            notify(queue, mem, interrupt);
        }
    }

    /// Returns completed external requests to the driver.
    fn complete(&mut self, done: Vec<(u64, bool)>) {
        let Some(OneQueue {
            mem,
            queue,
            interrupt,
        }) = self.active.as_mut()
        else {
            return;
        };
        let mut used = false;
        for (id, ok) in done {
            // An unknown id belongs to a request dropped by a reset.
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let outcome = if ok { (OK, p.len) } else { (IOERR, 0) };
            let len = finish(mem, p.status, outcome);
            if let Err(e) = queue.add_used(mem, p.head, len) {
                interrupt.fail(format!("virtio-blk queue: {e}"));
                return;
            }
            used = true;
        }
        if used {
            notify(queue, mem, interrupt);
        }
    }
}

/// What an external server is asked for `req`, which passed [`Policy::precheck`]: its
/// kind, first sector and sector count, or the answer a bad discard or write-zeroes segment
/// gets at once.
fn external_request(
    policy: &Policy,
    mem: &Memory,
    req: &Request,
) -> Result<(ExternalKind, u64, u64), Outcome> {
    let data = (req.sector, req.data_len >> SECTOR_SHIFT);
    Ok(match req.kind {
        RequestKind::Read => (ExternalKind::Read, data.0, data.1),
        RequestKind::Write => (ExternalKind::Write, data.0, data.1),
        RequestKind::Discard => {
            let s = policy.segment(mem, req)?;
            (ExternalKind::Discard, s.sector, s.sectors)
        }
        RequestKind::WriteZeroes => {
            let s = policy.segment(mem, req)?;
            (
                ExternalKind::WriteZeroes { unmap: s.unmap },
                s.sector,
                s.sectors,
            )
        }
        _ => (ExternalKind::Flush, 0, 0),
    })
}

/// Interrupts the driver if the ring asks for it.
fn notify(queue: &mut Queue, mem: &Memory, interrupt: &Interrupt) {
    match queue.needs_notification(mem) {
        Ok(true) => interrupt.signal_used(),
        Ok(false) => {}
        Err(e) => interrupt.fail(format!("virtio-blk queue: {e}")),
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn name(&self) -> &'static str {
        "virtio-blk"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut bits = [
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_BLK_SIZE,
            VIRTIO_BLK_F_FLUSH,
        ]
        .iter()
        .fold(0u64, |f, &b| f | (1 << b));
        if self.policy.read_only {
            bits |= 1 << VIRTIO_BLK_F_RO;
        }
        if self.policy.trims.discard {
            bits |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        if self.policy.trims.write_zeroes {
            bits |= 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        bits
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.policy.config();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start < CONFIG_LEN {
            let n = data.len().min(CONFIG_LEN - start);
            data[..n].copy_from_slice(&config[start..start + n]);
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), String> {
        self.active = Some(OneQueue::take(activation, "virtio-blk")?);
        Ok(())
    }

    fn process_queue(&mut self, _index: usize) {
        match (&mut self.backend, self.active.as_mut()) {
            (Backend::Sync(disk), Some(active)) => {
                Self::process_sync(&self.policy, disk.as_mut(), active);
            }
            (Backend::External(_), Some(_)) => self.process_external(),
            (_, None) => {}
        }
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        match &self.backend {
            Backend::External(e) => vec![e.fd()],
            Backend::Sync(_) => Vec::new(),
        }
    }

    fn process_backend(&mut self, _index: usize) {
        if let Backend::External(e) = &self.backend {
            let done = e.take_completions();
            self.complete(done);
        }
    }

    fn reset(&mut self) {
        self.active = None;
        // Completions still to come for these find nothing and are dropped.
        self.pending.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use virtio_bindings::virtio_blk::{
        VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    };
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    use super::*;
    use crate::virtio::block::{Completer, RawFile};

    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    /// The second RAM region starts here (the first ends): buffers may straddle it.
    const SPLIT: u64 = 0x8_0000;
    const HEADER: u64 = 0x1_0000;
    const DATA: u64 = 0x2_0000;
    const STATUS: u64 = 0x3_0000;
    const SECTORS: u64 = 64;

    /// A file under the temporary directory, removed when dropped.
    pub(crate) struct TempPath(pub PathBuf);

    impl TempPath {
        pub(crate) fn with(content: &[u8]) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "kvmkit-blk-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, content).unwrap();
            TempPath(path)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A disk image whose every byte says which sector it belongs to.
    pub(crate) fn pattern(sectors: u64) -> Vec<u8> {
        (0..sectors * SECTOR_SIZE)
            .map(|i| (i / SECTOR_SIZE) as u8)
            .collect()
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), SPLIT as usize),
            (GuestAddress(SPLIT), SPLIT as usize),
        ])
        .unwrap()
    }

    struct Rig {
        mem: &'static GuestMemoryMmap,
        /// The driver's side of the queue (made once: making one zeroes the rings).
        mq: MockSplitQueue<'static, GuestMemoryMmap>,
        block: Block,
        interrupt: Arc<Interrupt>,
        posted: u16,
        used: u16,
    }

    impl Rig {
        fn new(backend: Backend, options: &BlockOptions) -> Self {
            // Leaked: the mock queue borrows it for the whole test.
            let mem: &'static GuestMemoryMmap = Box::leak(Box::new(memory()));
            let mq = MockSplitQueue::new(mem, 16);
            let mut block = Block::new(backend, options);
            let queue = mq.create_queue::<Queue>().unwrap();
            let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
            block
                .activate(Activation {
                    mem: mem.clone(),
                    queues: vec![queue],
                    interrupt: Arc::clone(&interrupt),
                    kicks: Vec::new(),
                })
                .unwrap();
            Rig {
                mem,
                mq,
                block,
                interrupt,
                posted: 0,
                used: 0,
            }
        }

        fn file(content: &[u8], options: &BlockOptions) -> (Self, TempPath) {
            let file = TempPath::with(content);
            let disk = RawFile::open(&file.0, options.read_only).unwrap();
            (Rig::new(Backend::Sync(Box::new(disk)), options), file)
        }

        /// Posts a chain of (address, length, device-writable) buffers.
        fn post(&mut self, descs: &[(u64, u32, bool)]) {
            let mq = &self.mq;
            let base = (self.posted * 4) % 16;
            let raw: Vec<RawDescriptor> = descs
                .iter()
                .enumerate()
                .map(|(i, &(addr, len, write))| {
                    let last = i + 1 == descs.len();
                    let flags = if write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
                    let next = if last { 0 } else { base + i as u16 + 1 };
                    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
                })
                .collect();
            mq.add_desc_chains(&raw, base).unwrap();
            self.posted += 1;
        }

        fn header(&self, kind: u32, sector: u64) -> (u64, u32, bool) {
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&kind.to_le_bytes());
            h[8..].copy_from_slice(&sector.to_le_bytes());
            self.mem.write_slice(&h, GuestAddress(HEADER)).unwrap();
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            (HEADER, 16, false)
        }

        /// Posts a request, serves the queue and returns (status, used length) of each
        /// chain returned.
        fn request(&mut self, descs: &[(u64, u32, bool)]) -> Vec<(u8, u32)> {
            self.post(descs);
            self.block.process_queue(0);
            self.returned()
        }

        /// Posts a discard or write-zeroes request (`kind`) whose first `len` bytes of
        /// segment are `seg`, like [`Rig::request`].
        fn trim(&mut self, kind: u32, seg: [u8; 16], len: u32) -> Vec<(u8, u32)> {
            self.mem.write_slice(&seg, GuestAddress(DATA)).unwrap();
            let h = self.header(kind, 0);
            self.request(&[h, (DATA, len, false), STATUS_DESC])
        }

        fn returned(&mut self) -> Vec<(u8, u32)> {
            let mq = &self.mq;
            let idx = mq.used().idx().load();
            let mut out = Vec::new();
            while self.used != idx {
                let elem = mq
                    .used()
                    .ring()
                    .ref_at(usize::from(self.used % 16))
                    .unwrap()
                    .load();
                out.push((
                    self.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
                    elem.len(),
                ));
                self.used = self.used.wrapping_add(1);
            }
            out
        }

        fn data(&self, len: usize) -> Vec<u8> {
            let mut buf = vec![0; len];
            self.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
            buf
        }
    }

    const STATUS_DESC: (u64, u32, bool) = (STATUS, 1, true);

    #[test]
    fn reads_a_sector_into_split_buffers() {
        let (mut rig, _file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        let h = rig.header(VIRTIO_BLK_T_IN, 3);
        let got = rig.request(&[h, (DATA, 100, true), (DATA + 100, 412, true), STATUS_DESC]);
        assert_eq!(got, vec![(OK, 513)]);
        assert_eq!(rig.data(512), vec![3u8; 512]);
    }

    #[test]
    fn a_buffer_across_two_ram_regions_is_split() {
        let (mut rig, _file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        let h = rig.header(VIRTIO_BLK_T_IN, 1);
        let got = rig.request(&[h, (SPLIT - 512, 1024, true), STATUS_DESC]);
        assert_eq!(got, vec![(OK, 1025)]);
        let mut buf = vec![0; 1024];
        rig.mem
            .read_slice(&mut buf, GuestAddress(SPLIT - 512))
            .unwrap();
        assert_eq!((buf[0], buf[1023]), (1, 2));
    }

    #[test]
    fn writes_reach_the_file_and_flush_succeeds() {
        let (mut rig, file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        rig.mem
            .write_slice(&[0xaa; 1024], GuestAddress(DATA))
            .unwrap();
        let h = rig.header(VIRTIO_BLK_T_OUT, 10);
        assert_eq!(
            rig.request(&[h, (DATA, 1024, false), STATUS_DESC]),
            vec![(OK, 1)]
        );
        let h = rig.header(VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(rig.request(&[h, STATUS_DESC]), vec![(OK, 1)]);
        let content = std::fs::read(&file.0).unwrap();
        assert_eq!(&content[10 * 512..12 * 512], &[0xaa; 1024][..]);
        assert_eq!(content[12 * 512], 12);
    }

    #[test]
    fn a_read_only_disk_says_so_and_fails_writes() {
        let options = BlockOptions {
            read_only: true,
            serial: String::new(),
        };
        let (mut rig, file) = Rig::file(&pattern(SECTORS), &options);
        assert!(has_feature(rig.block.features(), VIRTIO_BLK_F_RO));
        assert!(!has_feature(rig.block.features(), VIRTIO_BLK_F_DISCARD));
        let h = rig.header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            rig.request(&[h, (DATA, 512, false), STATUS_DESC]),
            vec![(IOERR, 1)]
        );
        assert_eq!(std::fs::read(&file.0).unwrap(), pattern(SECTORS));
    }

    #[test]
    fn requests_past_the_end_or_overflowing_fail() {
        let (mut rig, _file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        for sector in [SECTORS, SECTORS - 1, u64::MAX, u64::MAX >> 9] {
            let h = rig.header(VIRTIO_BLK_T_IN, sector);
            let got = rig.request(&[h, (DATA, 1024, true), STATUS_DESC]);
            assert_eq!(got, vec![(IOERR, 1)], "sector {sector}");
        }
        // Not a whole number of sectors.
        let h = rig.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            rig.request(&[h, (DATA, 100, true), STATUS_DESC]),
            vec![(IOERR, 1)]
        );
    }

    #[test]
    fn malformed_chains_are_returned_without_harm() {
        let (mut rig, _file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        // No status byte: returned with nothing written.
        let h = rig.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(rig.request(&[h, (DATA, 512, false)]), vec![(0xff, 0)]);
        // A header too short.
        rig.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            rig.request(&[(HEADER, 8, false), STATUS_DESC]),
            vec![(IOERR, 1)]
        );
        // A data buffer outside RAM.
        let h = rig.header(VIRTIO_BLK_T_IN, 0);
        let got = rig.request(&[h, (2 * SPLIT + 0x1000, 512, true), STATUS_DESC]);
        assert_eq!(got, vec![(IOERR, 1)]);
        // A readable descriptor after a writable one.
        let h = rig.header(VIRTIO_BLK_T_OUT, 0);
        let got = rig.request(&[h, (DATA, 512, true), (DATA, 512, false), STATUS_DESC]);
        assert_eq!(got, vec![(IOERR, 1)]);
        // An unknown request type.
        let h = rig.header(99, 0);
        assert_eq!(rig.request(&[h, STATUS_DESC]), vec![(UNSUPP, 1)]);
    }

    #[test]
    fn an_avail_index_past_the_queue_breaks_the_device_without_spinning() {
        let (mut rig, _file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        rig.mq.avail().idx().store(100);
        rig.block.process_queue(0);
        assert!(rig.interrupt.needs_reset());
        let (mut rig, _seen, _completer) = external(SECTORS * 512);
        rig.mq.avail().idx().store(100);
        rig.block.process_queue(0);
        assert!(rig.interrupt.needs_reset());
    }

    #[test]
    fn get_id_answers_the_serial() {
        let options = BlockOptions {
            read_only: false,
            serial: "kvmkit-serial-0123456789".into(),
        };
        let (mut rig, _file) = Rig::file(&pattern(SECTORS), &options);
        let h = rig.header(VIRTIO_BLK_T_GET_ID, 0);
        assert_eq!(
            rig.request(&[h, (DATA, 20, true), STATUS_DESC]),
            vec![(OK, 21)]
        );
        assert_eq!(rig.data(20), b"kvmkit-serial-012345");
    }

    fn segment(sector: u64, sectors: u32, flags: u32) -> [u8; 16] {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&sector.to_le_bytes());
        s[8..12].copy_from_slice(&sectors.to_le_bytes());
        s[12..].copy_from_slice(&flags.to_le_bytes());
        s
    }

    #[test]
    fn discard_and_write_zeroes_zero_the_file() {
        let (mut rig, file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        assert!(has_feature(rig.block.features(), VIRTIO_BLK_F_WRITE_ZEROES));
        for (kind, sector, flags) in [
            (VIRTIO_BLK_T_WRITE_ZEROES, 8, 0),
            (VIRTIO_BLK_T_WRITE_ZEROES, 16, 1),
        ] {
            assert_eq!(rig.trim(kind, segment(sector, 8, flags), 16), vec![(OK, 1)]);
        }
        let discard = segment(32, 8, 0);
        assert_eq!(rig.trim(VIRTIO_BLK_T_DISCARD, discard, 16), vec![(OK, 1)]);
        let content = std::fs::read(&file.0).unwrap();
        assert_eq!(content.len() as u64, SECTORS * 512);
        assert!(content[8 * 512..24 * 512].iter().all(|&b| b == 0));
        assert_eq!((content[8 * 512 - 1], content[24 * 512]), (7, 24));
        // A fresh rig: the mock queue serves at most eight chains.
        let (mut rig, file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        for (kind, seg, len, status) in hostile_segments() {
            assert_eq!(
                rig.trim(kind, seg, len),
                vec![(status, 1)],
                "{kind} {seg:?}"
            );
        }
        assert_eq!(std::fs::read(&file.0).unwrap(), pattern(SECTORS));
    }

    /// Discard and write-zeroes requests that must fail: (type, segment, length given,
    /// status) on a disk of [`SECTORS`] sectors.
    fn hostile_segments() -> Vec<(u32, [u8; 16], u32, u8)> {
        let (wz, discard) = (VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_T_DISCARD);
        vec![
            (wz, segment(SECTORS - 4, 8, 0), 16, IOERR), // past the end
            (discard, segment(u64::MAX, 2, 0), 16, IOERR), // overflowing
            (wz, segment(0, MAX_WRITE_ZEROES_SECTORS + 1, 0), 16, IOERR), // over the limit
            (discard, segment(0, MAX_DISCARD_SECTORS + 1, 0), 16, IOERR),
            (wz, segment(0, 8, 2), 16, UNSUPP), // an unknown flag
            (discard, segment(0, 8, 1), 16, UNSUPP), // unmap is write-zeroes' only
            (discard, segment(0, 8, 0), 8, IOERR), // half a segment
        ]
    }

    #[test]
    fn the_config_space_has_the_capacity_and_limits() {
        let (rig, _file) = Rig::file(&pattern(SECTORS), &BlockOptions::default());
        let mut capacity = [0u8; 8];
        rig.block.read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), SECTORS);
        let mut word = [0u8; 4];
        rig.block.read_config(36, &mut word);
        assert_eq!(u32::from_le_bytes(word), MAX_DISCARD_SECTORS);
        rig.block.read_config(1000, &mut word);
        assert_eq!(word, [0; 4]);
    }

    type Batches = Arc<Mutex<Vec<ExternalRequest>>>;

    fn external(size: u64) -> (Rig, Batches, Completer) {
        external_with(size, Trims::default())
    }

    fn external_with(size: u64, trims: Trims) -> (Rig, Batches, Completer) {
        let seen: Batches = Arc::default();
        let sink = Arc::clone(&seen);
        let submit = Box::new(move |batch: Vec<ExternalRequest>| {
            sink.lock().unwrap().extend(batch);
            true
        });
        let (ext, completer) = External::new(size, trims, submit).unwrap();
        let rig = Rig::new(Backend::External(ext), &BlockOptions::default());
        (rig, seen, completer)
    }

    #[test]
    fn external_requests_complete_later_and_resets_drop_late_completions() {
        let (mut rig, seen, completer) = external(SECTORS * 512);
        assert!(!has_feature(rig.block.features(), VIRTIO_BLK_F_DISCARD));
        let h = rig.header(VIRTIO_BLK_T_IN, 2);
        assert_eq!(
            rig.request(&[h, (SPLIT - 256, 512, true), STATUS_DESC]),
            vec![]
        );
        let req = seen.lock().unwrap().pop().unwrap();
        assert_eq!((req.kind, req.sector), (ExternalKind::Read, 2));
        assert_eq!(
            req.buffers,
            vec![
                Buffer {
                    addr: SPLIT - 256,
                    len: 256
                },
                Buffer {
                    addr: SPLIT,
                    len: 256
                }
            ]
        );
        completer.complete(req.id, true);
        rig.block.process_backend(0);
        assert_eq!(rig.returned(), vec![(OK, 513)]);

        // Past the end: answered without the server.
        let h = rig.header(VIRTIO_BLK_T_OUT, SECTORS);
        assert_eq!(
            rig.request(&[h, (DATA, 512, false), STATUS_DESC]),
            vec![(IOERR, 1)]
        );
        assert!(seen.lock().unwrap().is_empty());

        // A write in flight when the driver resets: its completion is dropped.
        let h = rig.header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(rig.request(&[h, (DATA, 512, false), STATUS_DESC]), vec![]);
        let req = seen.lock().unwrap().pop().unwrap();
        rig.block.reset();
        completer.complete(req.id, false);
        rig.block.process_backend(0);
        assert_eq!(rig.returned(), vec![]);
    }

    #[test]
    fn an_external_server_gets_only_the_trims_it_takes_and_only_checked_segments() {
        let trims = Trims {
            discard: false,
            write_zeroes: true,
        };
        let (mut rig, seen, _completer) = external_with(SECTORS * 512, trims);
        let features = rig.block.features();
        assert!(has_feature(features, VIRTIO_BLK_F_WRITE_ZEROES));
        assert!(!has_feature(features, VIRTIO_BLK_F_DISCARD));
        let mut word = [0u8; 4];
        rig.block.read_config(36, &mut word);
        assert_eq!(word, [0; 4], "no discard limits without discard");
        let seg = segment(8, 4, 0);
        assert_eq!(rig.trim(VIRTIO_BLK_T_DISCARD, seg, 16), vec![(UNSUPP, 1)]);
        assert_eq!(rig.trim(VIRTIO_BLK_T_WRITE_ZEROES, seg, 16), vec![]);
        let req = seen.lock().unwrap().pop().unwrap();
        assert_eq!(
            (req.kind, req.sector, req.sectors),
            (ExternalKind::WriteZeroes { unmap: false }, 8, 4)
        );
        assert!(req.buffers.is_empty());

        let (mut rig, seen, _completer) = external_with(SECTORS * 512, Trims::BOTH);
        let seg = segment(16, 8, 1);
        assert_eq!(rig.trim(VIRTIO_BLK_T_WRITE_ZEROES, seg, 16), vec![]);
        let req = seen.lock().unwrap().pop().unwrap();
        assert_eq!(req.kind, ExternalKind::WriteZeroes { unmap: true });
        for (kind, seg, len, status) in hostile_segments() {
            assert_eq!(
                rig.trim(kind, seg, len),
                vec![(status, 1)],
                "{kind} {seg:?}"
            );
        }
        assert!(
            seen.lock().unwrap().is_empty(),
            "the server saw none of them"
        );
    }

    #[test]
    fn a_read_only_external_disk_offers_no_trims() {
        let (ext, _completer) = External::new(512, Trims::BOTH, Box::new(|_| true)).unwrap();
        let options = BlockOptions {
            read_only: true,
            serial: String::new(),
        };
        let rig = Rig::new(Backend::External(ext), &options);
        let features = rig.block.features();
        assert!(!has_feature(features, VIRTIO_BLK_F_DISCARD));
        assert!(!has_feature(features, VIRTIO_BLK_F_WRITE_ZEROES));
    }

    #[test]
    fn a_gone_server_fails_its_requests() {
        let (ext, _completer) = External::new(512, Trims::default(), Box::new(|_| false)).unwrap();
        let mut rig = Rig::new(Backend::External(ext), &BlockOptions::default());
        let h = rig.header(VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(rig.request(&[h, STATUS_DESC]), vec![(IOERR, 1)]);
    }

    #[test]
    fn an_external_disk_must_be_whole_sectors() {
        for size in [0, 1000] {
            let e = External::new(size, Trims::default(), Box::new(|_| true)).unwrap_err();
            assert_eq!(e.code(), "INVALID_CONFIG");
        }
    }

    #[test]
    fn bad_images_are_refused_with_the_reason() {
        let missing =
            RawFile::open(std::path::Path::new("/nonexistent/disk.img"), false).unwrap_err();
        assert_eq!(missing.code(), "BAD_DISK");
        assert!(missing.to_string().contains("no such file"), "{missing}");
        let odd = TempPath::with(&[0; 1000]);
        let e = RawFile::open(&odd.0, true).unwrap_err();
        assert!(e.to_string().contains("not a multiple of 512"), "{e}");
    }
}
