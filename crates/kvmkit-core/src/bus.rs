//! Address-range routing of port-I/O and MMIO accesses to devices.
//!
//! A [`Bus`] maps ranges to [`Route`]s. The vCPU loops share each bus through a
//! [`SharedBus`], which advances the machine's [`Epoch`] with every insertion or removal,
//! so a loop keeps the route it resolved last ([`LastRoute`]) and answers a streak of
//! accesses to one device without taking the bus's lock (QEMU's dispatch keeps its most
//! recently used section the same way).

use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};

use crate::epoch::Epoch;
use crate::error::{Error, Result};
use crate::sync::{LockExt, RwLockExt};

/// A device implemented in Rust that answers accesses on the vCPU thread itself, with
/// state the vCPUs take turns at: it is called through a [`Mutex`] (see the
/// [`BusDeviceSync`] implementation of `Mutex<D>`).
pub trait BusDevice: Send {
    /// Fills `data` for a read of `data.len()` bytes at `offset` into the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Accepts a write of `data` at `offset`. Returning a [`DeviceAction`] ends the run.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceAction>;
}

/// A built-in device as the vCPU loops call it: through a shared reference, so a device
/// without mutable state (or with its own atomics) answers without a lock. A locked one
/// is a `Mutex<D>` of a [`BusDevice`] `D`, locked once per exit. (Cloud Hypervisor's
/// `BusDeviceSync` splits devices the same way.)
pub trait BusDeviceSync: Send + Sync {
    /// Fills `data` for a read of `data.len()` bytes at `offset` into the device's range.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Accepts a write of `data` at `offset`. Returning a [`DeviceAction`] ends the run.
    fn write(&self, offset: u64, data: &[u8]) -> Option<DeviceAction>;

    /// Performs one exit's access at `offset`: `data.len() / size` elements of `size`
    /// bytes (a string instruction's repeats), read into `data` or written from it; stops
    /// at the first write that asks for a [`DeviceAction`].
    fn access(
        &self,
        offset: u64,
        size: usize,
        write: bool,
        data: &mut [u8],
    ) -> Option<DeviceAction> {
        let read_one = |d: &mut &Self, at, element: &mut [u8]| d.read(at, element);
        let write_one = |d: &mut &Self, at, element: &[u8]| d.write(at, element);
        elements(&mut &*self, offset, size, write, data, read_one, write_one)
    }
}

impl<D: BusDevice> BusDeviceSync for Mutex<D> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.lock_or_recover().read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
        self.lock_or_recover().write(offset, data)
    }

    fn access(
        &self,
        offset: u64,
        size: usize,
        write: bool,
        data: &mut [u8],
    ) -> Option<DeviceAction> {
        let mut device = self.lock_or_recover();
        elements(&mut *device, offset, size, write, data, D::read, D::write)
    }
}

/// Reads every `size`-byte element of `data` from `device` at `offset`, or writes each,
/// until a write returns an action.
#[inline(always)]
fn elements<T: ?Sized>(
    device: &mut T,
    offset: u64,
    size: usize,
    write: bool,
    data: &mut [u8],
    read_one: impl Fn(&mut T, u64, &mut [u8]),
    write_one: impl Fn(&mut T, u64, &[u8]) -> Option<DeviceAction>,
) -> Option<DeviceAction> {
    data.chunks_exact_mut(size.max(1)).find_map(|element| {
        if write {
            write_one(device, offset, element)
        } else {
            read_one(device, offset, element);
            None
        }
    })
}

/// Something a built-in device asks the machine to do after a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAction {
    /// End the run with [`crate::exit::Outcome::DeviceRequest`].
    Exit {
        /// The device's name.
        device: &'static str,
        /// The status the guest wrote.
        status: u32,
    },
    /// End the run as a guest reset request (the outcome is a reset system event).
    Reset {
        /// The device's name.
        device: &'static str,
    },
    /// End the run as a guest power-off (the outcome is a shutdown system event).
    PowerOff {
        /// The device's name.
        device: &'static str,
    },
}

/// An address space devices live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// I/O ports, 0 to 0xffff.
    Port,
    /// Guest-physical addresses outside RAM.
    Mmio,
}

impl Space {
    /// `port` or `mmio`.
    pub fn name(self) -> &'static str {
        match self {
            Space::Port => "port",
            Space::Mmio => "mmio",
        }
    }
}

/// Where accesses to a range go.
#[derive(Clone)]
pub enum Route {
    /// A Rust device, called on the vCPU thread.
    BuiltIn(Arc<dyn BusDeviceSync>),
    /// A user (TypeScript) device, identified by the id it was registered with.
    User {
        /// The registration id.
        device: u32,
        /// Writes are queued and the vCPU resumes at once (see [`crate::handoff::posted`]).
        posted: bool,
    },
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::BuiltIn(_) => f.write_str("BuiltIn"),
            Route::User { device, posted } => write!(f, "User({device}, posted: {posted})"),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    start: u64,
    end: u64,
    name: String,
    route: Route,
}

/// The address space of one kind (ports or MMIO): non-overlapping ranges, sorted.
#[derive(Debug)]
pub struct Bus {
    space: &'static str,
    limit: u64,
    entries: Vec<Entry>,
}

/// A resolved access: the route and the offset into its range.
#[derive(Debug)]
pub struct Target<'a> {
    /// Where the access goes.
    pub route: &'a Route,
    /// Offset from the start of the range.
    pub offset: u64,
    /// The end of the range (exclusive).
    pub end: u64,
}

impl Bus {
    /// The port-I/O space: 0 to 0xffff.
    pub fn ports() -> Self {
        Bus {
            space: "port",
            limit: 0x1_0000,
            entries: Vec::new(),
        }
    }

    /// The MMIO space: the whole 64-bit guest-physical range.
    pub fn mmio() -> Self {
        Bus {
            space: "mmio",
            limit: u64::MAX,
            entries: Vec::new(),
        }
    }

    /// Registers `route` for `start..start+len` under `name`.
    /// Fails on an empty range, one past the space's end, or one overlapping another device.
    pub fn insert(&mut self, start: u64, len: u64, name: &str, route: Route) -> Result<()> {
        let refuse = |end: u64, message: String| Error::BusRange {
            space: self.space,
            start,
            end,
            message,
        };
        if len == 0 {
            return Err(refuse(start, "the range is empty".into()));
        }
        let end = match start.checked_add(len) {
            Some(end) if end <= self.limit => end,
            _ => {
                return Err(refuse(
                    start.saturating_add(len),
                    format!(
                        "the range ends beyond the {} space (limit {:#x})",
                        self.space, self.limit
                    ),
                ));
            }
        };
        let at = self.entries.partition_point(|e| e.start < start);
        let clash = [at.checked_sub(1), Some(at)]
            .into_iter()
            .flatten()
            .filter_map(|i| self.entries.get(i))
            .find(|e| e.start < end && start < e.end);
        if let Some(other) = clash {
            return Err(refuse(
                end,
                format!(
                    "it overlaps {} at {:#x}..{:#x}",
                    other.name, other.start, other.end
                ),
            ));
        }
        self.entries.insert(
            at,
            Entry {
                start,
                end,
                name: name.into(),
                route,
            },
        );
        Ok(())
    }

    /// Removes the range starting at `start`; returns whether one was there.
    pub fn remove(&mut self, start: u64) -> bool {
        match self.entries.binary_search_by_key(&start, |e| e.start) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Finds the device for an access of `len` bytes at `addr`. An access that starts in a
    /// range but runs past its end is not routed.
    pub fn resolve(&self, addr: u64, len: u64) -> Option<Target<'_>> {
        let i = self
            .entries
            .partition_point(|e| e.start <= addr)
            .checked_sub(1)?;
        let e = &self.entries[i];
        (addr.checked_add(len)? <= e.end).then_some(Target {
            route: &e.route,
            offset: addr - e.start,
            end: e.end,
        })
    }
}

/// A bus the vCPU loops share with their machine.
#[derive(Debug)]
pub struct SharedBus {
    bus: RwLock<Bus>,
    /// Advanced, under the write lock, by every change.
    epoch: Arc<Epoch>,
}

impl SharedBus {
    /// Shares `bus`, announcing its changes through `epoch`.
    pub fn new(bus: Bus, epoch: Arc<Epoch>) -> Self {
        SharedBus {
            bus: RwLock::new(bus),
            epoch,
        }
    }

    /// The epoch the bus announces its changes through, as it is now.
    pub fn epoch(&self) -> u64 {
        self.epoch.current()
    }

    /// The bus, to change: loops resolve afresh after the guard is dropped.
    pub fn change(&self) -> BusChange<'_> {
        BusChange {
            guard: self.bus.write_or_recover(),
            epoch: &self.epoch,
        }
    }
}

/// Write access to a [`SharedBus`]; the change is published when it is dropped.
pub struct BusChange<'a> {
    guard: RwLockWriteGuard<'a, Bus>,
    epoch: &'a Epoch,
}

impl std::ops::Deref for BusChange<'_> {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.guard
    }
}

impl std::ops::DerefMut for BusChange<'_> {
    fn deref_mut(&mut self) -> &mut Bus {
        &mut self.guard
    }
}

impl Drop for BusChange<'_> {
    fn drop(&mut self) {
        // Still under the write lock: a loop that reads the new epoch and then takes the
        // read lock sees the changed bus.
        self.epoch.advance();
    }
}

/// The route a vCPU loop resolved last on a [`SharedBus`], kept until the bus changes.
#[derive(Debug)]
pub struct LastRoute {
    /// The epoch the route was resolved in.
    epoch: u64,
    start: u64,
    end: u64,
    route: Option<Route>,
}

impl Default for LastRoute {
    fn default() -> Self {
        LastRoute {
            epoch: Epoch::UNSEEN,
            start: 0,
            end: 0,
            route: None,
        }
    }
}

impl LastRoute {
    /// Resolves an access of `len` bytes at `addr` on `bus` (see [`Bus::resolve`]), from the
    /// last route when the access falls in its range and `epoch`, the bus's epoch as the
    /// caller read it last (see [`SharedBus::epoch`]), has not moved since it was resolved.
    /// (A caller that passes an epoch older than the bus it resolves against only makes the
    /// next access resolve afresh.)
    #[inline]
    pub fn resolve(
        &mut self,
        bus: &SharedBus,
        epoch: u64,
        addr: u64,
        len: u64,
    ) -> Option<Target<'_>> {
        let inside = addr >= self.start && addr.checked_add(len).is_some_and(|e| e <= self.end);
        if !(epoch == self.epoch && inside && self.route.is_some()) {
            self.refresh(bus, epoch, addr, len)?;
        }
        let route = self.route.as_ref()?;
        Some(Target {
            route,
            offset: addr - self.start,
            end: self.end,
        })
    }

    /// Resolves afresh under the bus's read lock (out of line: the vCPU loop inlines the
    /// cached case); `None` if no device has the access.
    #[cold]
    #[inline(never)]
    fn refresh(&mut self, bus: &SharedBus, epoch: u64, addr: u64, len: u64) -> Option<()> {
        let bus_now = bus.bus.read_or_recover();
        let target = bus_now.resolve(addr, len)?;
        self.epoch = epoch;
        self.start = addr - target.offset;
        self.end = target.end;
        self.route = Some(target.route.clone());
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(device: u32) -> Route {
        Route::User {
            device,
            posted: false,
        }
    }

    /// The user device a target names, and the offset into it.
    fn user_target(t: Target<'_>) -> (u32, u64) {
        match t.route {
            Route::User { device, .. } => (*device, t.offset),
            Route::BuiltIn(_) => unreachable!(),
        }
    }

    fn device_at(bus: &Bus, addr: u64, len: u64) -> Option<(u32, u64)> {
        bus.resolve(addr, len).map(user_target)
    }

    #[test]
    fn routes_accesses_inside_ranges_only() {
        let mut bus = Bus::ports();
        bus.insert(0x3f8, 8, "com1", user(1)).unwrap();
        bus.insert(0x400, 1, "dbg", user(2)).unwrap();
        assert_eq!(device_at(&bus, 0x3f8, 1), Some((1, 0)));
        assert_eq!(device_at(&bus, 0x3fc, 4), Some((1, 4)));
        assert_eq!(device_at(&bus, 0x3fe, 4), None);
        assert_eq!(device_at(&bus, 0x3f7, 1), None);
        assert_eq!(device_at(&bus, 0x400, 1), Some((2, 0)));
        assert!(bus.remove(0x3f8));
        assert_eq!(device_at(&bus, 0x3f8, 1), None);
    }

    #[test]
    fn refuses_overlaps_empty_and_out_of_space_ranges() {
        let mut bus = Bus::ports();
        bus.insert(0x60, 5, "a", user(1)).unwrap();
        let err = bus.insert(0x64, 1, "b", user(2)).unwrap_err();
        assert!(
            err.to_string().contains("overlaps a at 0x60..0x65"),
            "{err}"
        );
        assert!(bus.insert(0x5f, 2, "c", user(3)).is_err());
        assert!(bus.insert(0x10, 0, "d", user(4)).is_err());
        assert!(bus.insert(0xffff, 2, "e", user(5)).is_err());
        bus.insert(0xffff, 1, "f", user(6)).unwrap();
        let mut mmio = Bus::mmio();
        assert!(mmio.insert(u64::MAX - 1, 4, "g", user(7)).is_err());
    }

    fn last(cache: &mut LastRoute, bus: &SharedBus, addr: u64, len: u64) -> Option<(u32, u64)> {
        cache.resolve(bus, bus.epoch(), addr, len).map(user_target)
    }

    #[test]
    fn the_last_route_serves_its_range_until_the_bus_changes() {
        let mut ports = Bus::ports();
        ports.insert(0x3f8, 8, "com1", user(1)).unwrap();
        let bus = SharedBus::new(ports, Arc::default());
        let mut cache = LastRoute::default();
        assert_eq!(last(&mut cache, &bus, 0x3f9, 1), Some((1, 1)));
        assert_eq!(last(&mut cache, &bus, 0x3fc, 4), Some((1, 4)));
        // Past the range's end, and outside it: not the cached route.
        assert_eq!(last(&mut cache, &bus, 0x3fe, 4), None);
        assert_eq!(last(&mut cache, &bus, 0x60, 1), None);
        assert_eq!(last(&mut cache, &bus, 0x3f8, 1), Some((1, 0)));
        // A removal and a new device in the same range: the cache follows the bus.
        assert!(bus.change().remove(0x3f8));
        assert_eq!(last(&mut cache, &bus, 0x3f8, 1), None);
        bus.change().insert(0x3f8, 2, "other", user(9)).unwrap();
        assert_eq!(last(&mut cache, &bus, 0x3f9, 1), Some((9, 1)));
        assert_eq!(last(&mut cache, &bus, 0x3fa, 1), None);
    }
}
