//! virtio-net's queues under any rings and buffers a driver can leave in guest memory, with
//! frames from the host between notifications: nothing panics, nothing past the device's
//! bounds is taken or queued, and every transmitted frame handed to the host is a valid one.
#![no_main]

use std::sync::Arc;

use kvmkit_core::virtio::net::{
    Backend, MAX_FRAME, MIN_FRAME, Net, NetConfig, QUEUE_FRAMES, RX_QUEUE, TX_QUEUE,
};
use kvmkit_core::virtio::{Activation, Interrupt, Memory, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Guest RAM: the rings in the first 8 KiB, buffers anywhere (or past its end).
const RAM: usize = 0x4000;
/// Each queue's size (the rings of queue `i` are at `i * 0x1000`: descriptors at +0,
/// available ring at +0x100, used ring at +0x200, as the test guests lay them out).
const SIZE: u16 = 16;

fn queue(base: u64) -> Queue {
    let mut q = Queue::new(SIZE).expect("a power of two");
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some(base as u32 + 0x100), Some(0));
    q.set_used_ring_address(Some(base as u32 + 0x200), Some(0));
    q.set_ready(true);
    q
}

fuzz_target!(|data: &[u8]| {
    let (image, host) = data.split_at(data.len().min(RAM));
    let mem = Memory::from_ranges(&[(GuestAddress(0), RAM)]).expect("guest RAM");
    mem.write_slice(image, GuestAddress(0)).expect("inside RAM");
    let config = NetConfig {
        mac: [2, 0, 0, 0, 0, 1],
        mtu: None,
    };
    let (mut net, handle) = Net::new(config, Backend::Host).expect("eventfds");
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")));
    net.activate(Activation {
        mem: mem.clone(),
        queues: vec![queue(0), queue(0x1000)],
        interrupt,
        kicks: Vec::new(),
    })
    .expect("both queues ready");
    // The rest of the input: frames from the host, each a length byte and its bytes.
    let mut rest = host;
    let mut taken = Vec::new();
    for round in 0.. {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let len = usize::from(len).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let _ = handle.send(frame);
        net.process_backend(0);
        net.process_queue(if round % 2 == 0 { TX_QUEUE } else { RX_QUEUE });
        taken.extend(handle.take_frames());
    }
    net.process_queue(TX_QUEUE);
    net.process_queue(RX_QUEUE);
    taken.extend(handle.take_frames());
    assert!(
        taken
            .iter()
            .all(|f| (MIN_FRAME..=MAX_FRAME).contains(&f.len()))
    );
    let counters = handle.counters();
    assert_eq!(counters.tx_frames, taken.len() as u64);
    assert!(handle.take_frames().len() <= QUEUE_FRAMES);
});
