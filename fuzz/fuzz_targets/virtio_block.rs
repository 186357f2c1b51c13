//! virtio-blk requests from a hostile driver: the input is guest RAM (two adjacent 64 KiB
//! regions, so buffers may straddle them) holding a 16-entry queue's descriptor table at 0,
//! available ring at 0x100 and used ring at 0x200, with headers, segments and buffers
//! anywhere, even over the rings. The device serves every chain the driver made available on
//! an in-memory disk: nothing panics, nothing spins (libFuzzer's timeout catches a loop that
//! never ends).
#![no_main]

use std::io;
use std::sync::Arc;

use kvmkit_core::virtio::block::{Backend, Block, BlockOptions, DiskBackend};
use kvmkit_core::virtio::{Activation, Interrupt, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const REGION: usize = 0x1_0000;
const QUEUE_SIZE: u16 = 16;
const DISK_SECTORS: usize = 64;

/// A disk in a vector.
struct MemDisk(Vec<u8>);

impl DiskBackend for MemDisk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        let mut at = offset as usize;
        for b in bufs {
            b.copy_from(&self.0[at..at + b.len()]);
            at += b.len();
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        let mut at = offset as usize;
        for b in bufs {
            b.copy_to(&mut self.0[at..at + b.len()]);
            at += b.len();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.0[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, ram)) = data.split_first() else {
        return;
    };
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), REGION),
        (GuestAddress(REGION as u64), REGION),
    ])
    .unwrap();
    mem.write_slice(&ram[..ram.len().min(2 * REGION)], GuestAddress(0))
        .unwrap();
    let mut queue = Queue::new(QUEUE_SIZE).unwrap();
    queue.set_size(QUEUE_SIZE);
    queue.set_desc_table_address(Some(0), Some(0));
    queue.set_avail_ring_address(Some(0x100), Some(0));
    queue.set_used_ring_address(Some(0x200), Some(0));
    queue.set_event_idx(options & 1 != 0);
    queue.set_ready(true);

    let block_options = BlockOptions {
        read_only: options & 2 != 0,
        serial: "fuzz".into(),
    };
    let disk = MemDisk(vec![0x5a; DISK_SECTORS * 512]);
    let mut block = Block::new(Backend::Sync(Box::new(disk)), &block_options);
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    block
        .activate(Activation {
            mem,
            queues: vec![queue],
            interrupt,
            kicks: Vec::new(),
        })
        .unwrap();
    block.process_queue(0);
    // A second notification finds the ring drained, or the device stopped.
    block.process_queue(0);
});
