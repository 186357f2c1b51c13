//! Interrupts: the in-kernel interrupt controllers and PIT, IRQ lines, MSIs, and the
//! eventfds that let devices interrupt the guest (irqfd) and the guest notify devices
//! (ioeventfd) without a trip through userspace.

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_msi, kvm_pit_config};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::bus::Space;
use crate::error::{Error, Result};

/// Creates the PIC, IOAPIC and local APICs, and the PIT. Must run before any vCPU exists.
pub fn create_irqchip(vm: &VmFd) -> Result<()> {
    vm.create_irq_chip()
        .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(Error::kvm("KVM_CREATE_PIT2"))
}

/// Raises (`level` true) or lowers interrupt line `irq` (a GSI: 0–15 reach the PIC and
/// IOAPIC, 16–23 the IOAPIC).
pub fn set_irq_line(vm: &VmFd, irq: u32, level: bool) -> Result<()> {
    vm.set_irq_line(irq, level)
        .map_err(Error::kvm("KVM_IRQ_LINE"))
}

/// Sends a message-signalled interrupt: `address` in the APIC window, `data` carries the
/// vector and delivery mode. Returns whether it was delivered.
pub fn signal_msi(vm: &VmFd, address: u64, data: u32) -> Result<bool> {
    let msi = kvm_msi {
        address_lo: address as u32,
        address_hi: (address >> 32) as u32,
        data,
        ..Default::default()
    };
    vm.signal_msi(msi)
        .map(|delivered| delivered > 0)
        .map_err(Error::kvm("KVM_SIGNAL_MSI"))
}

/// An eventfd that raises `gsi` in the guest whenever it is written.
pub fn register_irqfd(vm: &VmFd, gsi: u32) -> Result<EventFd> {
    let fd = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.register_irqfd(&fd, gsi)
        .map_err(Error::kvm("KVM_IRQFD"))?;
    Ok(fd)
}

/// An interrupt line a Rust device owns: raising it injects an edge-triggered interrupt on
/// its GSI through an irqfd, from any thread, without an ioctl per interrupt.
#[derive(Debug)]
pub struct IrqLine {
    fd: EventFd,
    gsi: u32,
}

impl IrqLine {
    /// Connects a new line to `gsi` of `vm` (which needs the in-kernel irqchip).
    pub fn new(vm: &VmFd, gsi: u32) -> Result<Self> {
        Ok(IrqLine {
            fd: register_irqfd(vm, gsi)?,
            gsi,
        })
    }

    /// Injects one interrupt.
    pub fn trigger(&self) -> Result<()> {
        self.fd.write(1).map_err(Error::EventFd)
    }

    /// The GSI it raises.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

/// Detaches an irqfd registered with [`register_irqfd`].
pub fn unregister_irqfd(vm: &VmFd, fd: &EventFd, gsi: u32) -> Result<()> {
    vm.unregister_irqfd(fd, gsi)
        .map_err(Error::kvm("KVM_IRQFD"))
}

/// The guest writes an ioeventfd counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoEvent {
    /// Ports or MMIO.
    pub space: Space,
    /// The port or guest-physical address.
    pub addr: u64,
    /// Access width in bytes (1, 2, 4, 8); 0 for any width, which excludes `datamatch`.
    pub len: u32,
    /// Only writes of this value count.
    pub datamatch: Option<u64>,
}

/// An eventfd that KVM signals, without exiting, whenever the guest makes a write `event`
/// describes.
pub fn register_ioeventfd(vm: &VmFd, event: &IoEvent) -> Result<EventFd> {
    let fd = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    ioevent(vm, &fd, event, true)?;
    Ok(fd)
}

/// Detaches an ioeventfd registered with [`register_ioeventfd`] for the same `event`.
pub fn unregister_ioeventfd(vm: &VmFd, fd: &EventFd, event: &IoEvent) -> Result<()> {
    ioevent(vm, fd, event, false)
}

fn ioevent(vm: &VmFd, fd: &EventFd, event: &IoEvent, register: bool) -> Result<()> {
    let address = match event.space {
        Space::Port => IoEventAddress::Pio(event.addr),
        Space::Mmio => IoEventAddress::Mmio(event.addr),
    };
    macro_rules! call {
        ($m:expr) => {
            if register {
                vm.register_ioevent(fd, &address, $m)
            } else {
                vm.unregister_ioevent(fd, &address, $m)
            }
        };
    }
    let result = match (event.datamatch, event.len) {
        (None, _) => call!(NoDatamatch),
        (Some(v), 1) => call!(v as u8),
        (Some(v), 2) => call!(v as u16),
        (Some(v), 4) => call!(v as u32),
        (Some(v), 8) => call!(v),
        (Some(_), other) => {
            return Err(Error::config(
                "length",
                format!("{other} is not 1, 2, 4 or 8: datamatch needs the access width"),
            ));
        }
    };
    result.map_err(Error::kvm("KVM_IOEVENTFD"))
}

/// Reads and resets an eventfd's counter: how many times it was signalled since the last
/// read (0 if never).
pub fn take_count(fd: &EventFd) -> u64 {
    fd.read().unwrap_or(0)
}
