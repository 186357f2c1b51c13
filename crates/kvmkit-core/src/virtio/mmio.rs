//! The virtio-mmio transport, version 2 (virtio 1.x): the register file a driver finds at
//! the device's MMIO window, answered on the vCPU thread.
//!
//! It keeps the status state machine (features are accepted only if they were offered and
//! include `VIRTIO_F_VERSION_1`; queues are set up only between `FEATURES_OK` and
//! `DRIVER_OK`), hands the queues to the device on `DRIVER_OK` once virtio-queue finds each
//! ready ring inside guest RAM, and takes them back on a reset. `QueueNotify` normally never
//! arrives here: KVM signals the queue's ioeventfd instead; a write that does arrive is
//! forwarded to the same eventfd.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio as reg;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{BusDevice, DeviceAction};
use crate::sync::LockExt;
use crate::virtio::{Activation, Interrupt, Memory, TRANSPORT_FEATURES, VirtioDevice, has_feature};

/// "virt", the first register.
pub const MAGIC: u32 = 0x7472_6976;
/// The transport version this is (virtio 1.x; 1 is the legacy layout).
pub const VERSION: u32 = 2;
/// The vendor ID devices report ("KVMK").
pub const VENDOR: u32 = 0x4b4d_564b;
/// The size of a device's MMIO window.
pub const WINDOW: u64 = 0x1000;
/// Where the configuration space starts in the window.
pub const CONFIG_OFFSET: u64 = reg::VIRTIO_MMIO_CONFIG as u64;
/// The offset of `QueueNotify`, where KVM's ioeventfds listen (datamatch: the queue index).
pub const NOTIFY_OFFSET: u64 = reg::VIRTIO_MMIO_QUEUE_NOTIFY as u64;

/// A device and whether the driver has activated it: what the transport (vCPU threads) and
/// the I/O thread share, under one lock.
pub struct Slot {
    /// The device model.
    pub device: Box<dyn VirtioDevice>,
    /// Whether it holds its queues (between `DRIVER_OK` and a reset).
    pub active: bool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("device", &self.device.name())
            .field("active", &self.active)
            .finish()
    }
}

/// The register file of one virtio-mmio device.
#[derive(Debug)]
pub struct MmioTransport {
    slot: Arc<Mutex<Slot>>,
    interrupt: Arc<Interrupt>,
    mem: Memory,
    queue_evts: Vec<EventFd>,
    queues: Vec<Queue>,
    device_type: u32,
    offered: u64,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    config_generation: u32,
}

impl MmioTransport {
    /// The transport of the device in `slot`, with its queues' notify eventfds (one per
    /// queue, in order).
    ///
    /// # Errors
    ///
    /// A message if the device declares a queue size virtio-queue refuses (0, not a power
    /// of two, above 32768) or a different number of eventfds than queues.
    pub fn new(
        slot: Arc<Mutex<Slot>>,
        interrupt: Arc<Interrupt>,
        mem: Memory,
        queue_evts: Vec<EventFd>,
    ) -> Result<Self, String> {
        let guard = slot.lock_or_recover();
        let sizes = guard.device.queue_max_sizes().to_vec();
        let device_type = guard.device.device_type();
        let offered = guard.device.features() | TRANSPORT_FEATURES;
        drop(guard);
        if sizes.len() != queue_evts.len() {
            return Err(format!(
                "{} queues but {} notify eventfds",
                sizes.len(),
                queue_evts.len()
            ));
        }
        let queues = fresh_queues(&sizes)?;
        Ok(MmioTransport {
            slot,
            interrupt,
            mem,
            queue_evts,
            queues,
            device_type,
            offered,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
        })
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The device status as the driver reads it.
    pub fn status(&self) -> u32 {
        let broken = if self.interrupt.needs_reset() {
            VIRTIO_CONFIG_S_NEEDS_RESET
        } else {
            0
        };
        self.status | broken
    }

    fn has_status(&self, set: u32, clear: u32) -> bool {
        self.status & set == set && self.status & clear == 0
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u32) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            reg::VIRTIO_MMIO_VERSION => VERSION,
            reg::VIRTIO_MMIO_DEVICE_ID => self.device_type,
            reg::VIRTIO_MMIO_VENDOR_ID => VENDOR,
            reg::VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            reg::VIRTIO_MMIO_QUEUE_NUM_MAX => queue.map_or(0, |q| q.max_size().into()),
            reg::VIRTIO_MMIO_QUEUE_READY => queue.map_or(0, |q| q.ready().into()),
            reg::VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            reg::VIRTIO_MMIO_STATUS => self.status(),
            reg::VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            // Shared memory regions: none (a length of all ones means "no such region").
            reg::VIRTIO_MMIO_SHM_LEN_LOW | reg::VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        let queue_setup = self.has_status(
            VIRTIO_CONFIG_S_FEATURES_OK,
            VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED,
        );
        match offset {
            reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES
                if self.has_status(VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK) =>
            {
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                self.driver_features &= !(0xffff_ffff_u64 << shift);
                self.driver_features |= u64::from(value) << shift;
            }
            reg::VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            reg::VIRTIO_MMIO_QUEUE_NUM if queue_setup => self.set_queue_size(value),
            reg::VIRTIO_MMIO_QUEUE_READY if queue_setup => {
                if let Some(q) = self.queue() {
                    q.set_ready(value == 1);
                }
            }
            reg::VIRTIO_MMIO_QUEUE_DESC_LOW if queue_setup => {
                self.set_address(|q, v| q.set_desc_table_address(Some(v), None), value)
            }
            reg::VIRTIO_MMIO_QUEUE_DESC_HIGH if queue_setup => {
                self.set_address(|q, v| q.set_desc_table_address(None, Some(v)), value)
            }
            reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW if queue_setup => {
                self.set_address(|q, v| q.set_avail_ring_address(Some(v), None), value)
            }
            reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH if queue_setup => {
                self.set_address(|q, v| q.set_avail_ring_address(None, Some(v)), value)
            }
            reg::VIRTIO_MMIO_QUEUE_USED_LOW if queue_setup => {
                self.set_address(|q, v| q.set_used_ring_address(Some(v), None), value)
            }
            reg::VIRTIO_MMIO_QUEUE_USED_HIGH if queue_setup => {
                self.set_address(|q, v| q.set_used_ring_address(None, Some(v)), value)
            }
            reg::VIRTIO_MMIO_QUEUE_NOTIFY => {
                if let Some(evt) = self.queue_evts.get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            reg::VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            reg::VIRTIO_MMIO_STATUS => self.set_status(value),
            // Anything else (a queue register outside setup, a read-only register, legacy
            // registers) is ignored, as the specification asks of a device.
            _ => {}
        }
    }

    fn set_address(&mut self, set: impl FnOnce(&mut Queue, u32), value: u32) {
        if let Some(q) = self.queue() {
            // The queue may not change once ready.
            if !q.ready() {
                set(q, value);
            }
        }
    }

    fn set_queue_size(&mut self, value: u32) {
        let sel = self.queue_sel;
        let Some(q) = self.queue() else { return };
        if q.ready() {
            return;
        }
        let size = u16::try_from(value).unwrap_or(0);
        if q.try_set_size(size).is_err() {
            let max = q.max_size();
            self.interrupt.fail(format!(
                "queue {sel}: size {value} is not a power of two from 1 to {max}"
            ));
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // Bits are only ever added (FAILED may come at any time).
        if value & old != old {
            return;
        }
        let added = value & !old;
        let needs = |bit: u32, before: u32| added & bit == 0 || value & before == before;
        if !(needs(VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE)
            && needs(VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER)
            && needs(VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK))
        {
            return;
        }
        let mut value = value;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable() {
            // The driver reads the status back and sees its features were refused.
            value &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        self.status = value;
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 && value & VIRTIO_CONFIG_S_FAILED == 0 {
            self.activate();
        }
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.offered == 0
            && has_feature(self.driver_features, VIRTIO_F_VERSION_1)
    }

    fn activate(&mut self) {
        let event_idx = has_feature(self.driver_features, VIRTIO_RING_F_EVENT_IDX);
        for (i, q) in self.queues.iter_mut().enumerate() {
            q.set_event_idx(event_idx);
            if q.ready() && !q.is_valid(&self.mem) {
                self.interrupt.fail(format!(
                    "queue {i}: its rings (size {}, at {:#x}, {:#x}, {:#x}) are misaligned or \
                     not inside guest RAM",
                    q.size(),
                    q.desc_table(),
                    q.avail_ring(),
                    q.used_ring()
                ));
            }
        }
        if self.interrupt.needs_reset() {
            return;
        }
        let queues = match self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(q) => q,
            Err(e) => return self.interrupt.fail(format!("queues: {e}")),
        };
        let mut slot = self.slot.lock_or_recover();
        slot.device.ack_features(self.driver_features);
        let kicks = if slot.device.offloaded_queues().is_empty() {
            Ok(Vec::new())
        } else {
            self.queue_evts.iter().map(EventFd::try_clone).collect()
        };
        let kicks = match kicks {
            Ok(k) => k,
            Err(e) => {
                drop(slot);
                return self.interrupt.fail(format!("queue notify eventfds: {e}"));
            }
        };
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            interrupt: Arc::clone(&self.interrupt),
            kicks,
        };
        match slot.device.activate(activation) {
            Ok(()) => slot.active = true,
            Err(why) => return self.interrupt.fail(why),
        }
        drop(slot);
        // Notifications may have come before the device held its queues.
        for evt in &self.queue_evts {
            let _ = evt.write(1);
        }
    }

    fn reset(&mut self) {
        let mut slot = self.slot.lock_or_recover();
        if slot.active {
            slot.device.reset();
            slot.active = false;
        }
        drop(slot);
        self.interrupt.reset();
        let sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size()).collect();
        // The sizes were accepted when the transport was made.
        if let Ok(queues) = fresh_queues(&sizes) {
            self.queues = queues;
        }
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
    }
}

fn fresh_queues(sizes: &[u16]) -> Result<Vec<Queue>, String> {
    sizes
        .iter()
        .map(|&s| Queue::new(s).map_err(|e| format!("queue size {s}: {e}")))
        .collect()
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_OFFSET {
            let slot = self.slot.lock_or_recover();
            slot.device.read_config(offset - CONFIG_OFFSET, data);
        } else if data.len() == 4 && offset.is_multiple_of(4) {
            let value = self.read_register(offset as u32);
            data.copy_from_slice(&value.to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
        if offset >= CONFIG_OFFSET {
            let mut slot = self.slot.lock_or_recover();
            slot.device.write_config(offset - CONFIG_OFFSET, data);
            self.config_generation = self.config_generation.wrapping_add(1);
        } else if let (Ok(bytes), 0) = (<[u8; 4]>::try_from(data), offset % 4) {
            self.write_register(offset as u32, u32::from_le_bytes(bytes));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::rng::Rng;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const RING: u64 = 0x1000;
    const BUF: u64 = 0x4000;

    struct Fixture {
        transport: MmioTransport,
        slot: Arc<Mutex<Slot>>,
        mem: Memory,
        irq: EventFd,
    }

    fn fixture() -> Fixture {
        let mem = Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        let slot = Arc::new(Mutex::new(Slot {
            device: Box::new(Rng::default()),
            active: false,
        }));
        let evts = vec![EventFd::new(EFD_NONBLOCK).unwrap()];
        let transport =
            MmioTransport::new(Arc::clone(&slot), interrupt, mem.clone(), evts).unwrap();
        Fixture {
            transport,
            slot,
            mem,
            irq,
        }
    }

    fn write(t: &mut MmioTransport, offset: u32, value: u32) {
        t.write(offset.into(), &value.to_le_bytes());
    }

    fn read(t: &mut MmioTransport, offset: u32) -> u32 {
        let mut data = [0; 4];
        t.read(offset.into(), &mut data);
        u32::from_le_bytes(data)
    }

    /// Acknowledges, accepts `features` and asks for FEATURES_OK; returns the status.
    fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
        write(t, reg::VIRTIO_MMIO_STATUS, 0);
        write(t, reg::VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        write(t, reg::VIRTIO_MMIO_STATUS, 3);
        for sel in 0..2 {
            write(t, reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            write(
                t,
                reg::VIRTIO_MMIO_DRIVER_FEATURES,
                (features >> (32 * sel)) as u32,
            );
        }
        write(t, reg::VIRTIO_MMIO_STATUS, 3 | VIRTIO_CONFIG_S_FEATURES_OK);
        read(t, reg::VIRTIO_MMIO_STATUS)
    }

    fn set_up_queue(t: &mut MmioTransport, size: u32, at: u64) {
        write(t, reg::VIRTIO_MMIO_QUEUE_SEL, 0);
        write(t, reg::VIRTIO_MMIO_QUEUE_NUM, size);
        write(t, reg::VIRTIO_MMIO_QUEUE_DESC_LOW, at as u32);
        write(t, reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW, (at + 0x100) as u32);
        write(t, reg::VIRTIO_MMIO_QUEUE_USED_LOW, (at + 0x200) as u32);
        write(t, reg::VIRTIO_MMIO_QUEUE_READY, 1);
    }

    #[test]
    fn identifies_itself_as_a_version_2_device() {
        let mut f = fixture();
        let t = &mut f.transport;
        assert_eq!(read(t, reg::VIRTIO_MMIO_MAGIC_VALUE), MAGIC);
        assert_eq!(read(t, reg::VIRTIO_MMIO_VERSION), 2);
        assert_eq!(read(t, reg::VIRTIO_MMIO_DEVICE_ID), 4);
        write(t, reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(t, reg::VIRTIO_MMIO_DEVICE_FEATURES), 1, "VERSION_1");
        assert_eq!(read(t, reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
        write(t, reg::VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!(read(t, reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no queue 1");
        let mut narrow = [0xff; 2];
        t.read(0, &mut narrow);
        assert_eq!(narrow, [0, 0], "registers are read 4 bytes at a time");
    }

    #[test]
    fn refuses_features_never_offered_or_without_version_1() {
        let mut f = fixture();
        let ok = VIRTIO_CONFIG_S_FEATURES_OK;
        assert_eq!(negotiate(&mut f.transport, 1 << 32 | 1) & ok, 0);
        assert_eq!(negotiate(&mut f.transport, 0) & ok, 0);
        assert_eq!(negotiate(&mut f.transport, 1 << 32) & ok, ok);
    }

    #[test]
    fn hands_the_queues_over_on_driver_ok_and_takes_them_back_on_reset() {
        let mut f = fixture();
        let t = &mut f.transport;
        negotiate(t, 1 << 32);
        set_up_queue(t, 8, RING);
        // One 16-byte writable buffer, made available.
        f.mem.write_obj(BUF, GuestAddress(RING)).unwrap();
        f.mem.write_obj(16u32, GuestAddress(RING + 8)).unwrap();
        f.mem.write_obj(2u16, GuestAddress(RING + 12)).unwrap();
        f.mem.write_obj(1u16, GuestAddress(RING + 0x102)).unwrap();
        write(t, reg::VIRTIO_MMIO_STATUS, 0xf);
        assert!(f.slot.lock().unwrap().active);
        f.slot.lock().unwrap().device.process_queue(0);
        let used_idx: u16 = f.mem.read_obj(GuestAddress(RING + 0x202)).unwrap();
        let used_len: u32 = f.mem.read_obj(GuestAddress(RING + 0x208)).unwrap();
        assert_eq!((used_idx, used_len), (1, 16));
        assert_eq!(f.irq.read().unwrap(), 1);
        assert_eq!(read(t, reg::VIRTIO_MMIO_INTERRUPT_STATUS), 1);
        write(t, reg::VIRTIO_MMIO_INTERRUPT_ACK, 1);
        assert_eq!(read(t, reg::VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        // Queue registers are frozen once the driver is running.
        write(t, reg::VIRTIO_MMIO_QUEUE_READY, 0);
        assert_eq!(read(t, reg::VIRTIO_MMIO_QUEUE_READY), 1);
        write(t, reg::VIRTIO_MMIO_STATUS, 0);
        assert!(!f.slot.lock().unwrap().active);
        assert_eq!(read(t, reg::VIRTIO_MMIO_STATUS), 0);
        assert_eq!(read(t, reg::VIRTIO_MMIO_QUEUE_READY), 0);
    }

    #[test]
    fn a_queue_the_driver_left_out_is_never_served() {
        let mut f = fixture();
        let t = &mut f.transport;
        negotiate(t, 1 << 32);
        set_up_queue(t, 8, RING);
        write(t, reg::VIRTIO_MMIO_QUEUE_READY, 0);
        // Not ready, yet its avail index says a chain waits: the fuzzer's hang.
        f.mem.write_obj(1u16, GuestAddress(RING + 0x102)).unwrap();
        write(t, reg::VIRTIO_MMIO_STATUS, 0xf);
        assert!(f.slot.lock().unwrap().active);
        f.slot.lock().unwrap().device.process_queue(0);
        let used_idx: u16 = f.mem.read_obj(GuestAddress(RING + 0x202)).unwrap();
        assert_eq!(used_idx, 0);
    }

    #[test]
    fn a_bad_queue_size_or_rings_outside_ram_need_a_reset() {
        let mut f = fixture();
        let t = &mut f.transport;
        negotiate(t, 1 << 32);
        write(t, reg::VIRTIO_MMIO_QUEUE_NUM, 3);
        assert_ne!(
            read(t, reg::VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
            0
        );
        write(t, reg::VIRTIO_MMIO_STATUS, 0);
        assert_eq!(read(t, reg::VIRTIO_MMIO_STATUS), 0);
        negotiate(t, 1 << 32);
        set_up_queue(t, 8, 0x8000_0000);
        write(t, reg::VIRTIO_MMIO_STATUS, 0xf);
        assert_ne!(
            read(t, reg::VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
            0
        );
        assert!(!f.slot.lock().unwrap().active, "never activated");
    }

    #[test]
    fn status_bits_only_come_in_order() {
        let mut f = fixture();
        let t = &mut f.transport;
        write(t, reg::VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_DRIVER_OK);
        assert_eq!(read(t, reg::VIRTIO_MMIO_STATUS), 0, "DRIVER_OK first");
        write(t, reg::VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        write(t, reg::VIRTIO_MMIO_STATUS, 1 | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(
            read(t, reg::VIRTIO_MMIO_STATUS),
            1,
            "FEATURES_OK before DRIVER"
        );
    }
}
