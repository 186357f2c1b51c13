//! The virtio-mmio transport and the queue under a hostile driver: any sequence of register
//! reads and writes (status, features, queue setup, notify, reset) with rings and
//! descriptors made of the input, served by virtio-rng as the I/O thread would serve it.
//! Nothing panics, and every guest access goes through vm-memory's bounds checks.
#![no_main]

use std::sync::{Arc, Mutex};

use kvmkit_core::bus::BusDevice;
use kvmkit_core::virtio::mmio::{MmioTransport, Slot};
use kvmkit_core::virtio::rng::Rng;
use kvmkit_core::virtio::{Interrupt, Memory};
use kvmkit_core::vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

/// Guest RAM: 64 KiB, the first KiB of it from the input (rings and descriptors).
const RAM: usize = 0x1_0000;
const IMAGE: usize = 0x400;

fuzz_target!(|data: &[u8]| {
    let (image, ops) = data.split_at(data.len().min(IMAGE));
    let mem = Memory::from_ranges(&[(GuestAddress(0), RAM)]).expect("64 KiB");
    mem.write_slice(image, GuestAddress(0)).expect("inside RAM");
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")));
    let slot = Arc::new(Mutex::new(Slot {
        device: Box::new(Rng::default()),
        active: false,
    }));
    let evt = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let mut transport =
        MmioTransport::new(Arc::clone(&slot), interrupt, mem.clone(), vec![evt]).expect("rng");
    // Each op: a kind, a register (a 4-byte slot of the window), a 32-bit value.
    for op in ops.chunks_exact(6) {
        let offset = u64::from(op[1]) * 4;
        let value = u32::from_le_bytes([op[2], op[3], op[4], op[5]]);
        match op[0] % 4 {
            0 => {
                let _ = transport.write(offset, &value.to_le_bytes());
            }
            1 => transport.read(offset, &mut [0; 4]),
            2 => {
                // The I/O thread's turn: serve the queue if the driver made it live.
                let mut slot = slot.lock().expect("not poisoned");
                if slot.active {
                    slot.device.process_queue(0);
                }
            }
            _ => {
                // The driver edits its rings between notifications.
                let at = u64::from(op[1]) * 16 % IMAGE as u64;
                let _ = mem.write_obj(value, GuestAddress(at));
            }
        }
    }
});
