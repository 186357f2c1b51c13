//! The `NativeMemory` class behind the façade's `GuestMemory`: guest RAM's regions, copies
//! in and out, and zero-copy views.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};

use kvmkit_core::vm::Machine;
use napi::Env;
use napi::bindgen_prelude::{Buffer, Uint8ArraySlice};
use napi_derive::napi;

use crate::convert::u64_from_js;
use crate::error::{Result, core, invalid_arg, napi};
use crate::machine::upgrade;

/// One guest RAM region.
#[napi(object)]
pub struct NativeRegion {
    pub guest_addr: f64,
    pub size: f64,
}

/// A machine's guest RAM. Its calls fail with `INVALID_STATE` once the machine is closed;
/// views made before stay valid.
#[napi]
pub struct NativeMemory {
    machine: Weak<Machine>,
}

impl NativeMemory {
    pub(crate) fn new(machine: &Arc<Machine>) -> Self {
        NativeMemory {
            machine: Arc::downgrade(machine),
        }
    }

    fn machine(&self) -> Result<Arc<Machine>> {
        upgrade(&self.machine)
    }
}

#[napi]
impl NativeMemory {
    /// Whether the machine is closed (no view can be made any more).
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.machine.strong_count() == 0
    }

    /// The fd of the memfd or file backing guest RAM, if any (regions lie in it one after
    /// another, in address order); valid until close.
    #[napi(getter, catch_unwind)]
    pub fn fd(&self) -> Option<i32> {
        let m = self.machine().ok()?;
        m.ram().backing_file().map(|f| f.as_raw_fd())
    }

    /// The guest RAM regions as (guest address, size) pairs, in address order.
    #[napi(catch_unwind)]
    pub fn regions(&self) -> Result<Vec<NativeRegion>> {
        Ok(self
            .machine()?
            .ram()
            .regions()
            .iter()
            .map(|r| NativeRegion {
                guest_addr: r.guest_addr as f64,
                size: r.size as f64,
            })
            .collect())
    }

    /// A zero-copy view of region `index`. Its finalizer keeps the mapping alive, so the view
    /// stays valid after close (it then no longer reaches any guest). Create one per region:
    /// V8 refuses two buffers over the same memory.
    #[napi(catch_unwind)]
    pub fn view<'env>(&self, env: &'env Env, index: u32) -> Result<Uint8ArraySlice<'env>> {
        let ram = Arc::clone(self.machine()?.ram());
        let (_, ptr, len) = ram
            .host_region(index as usize)
            .ok_or_else(|| invalid_arg("region", format!("there is no memory region {index}")))?;
        // SAFETY: `ptr..ptr+len` is a live mapping owned by `ram`; the finalizer receives the
        // `Arc<GuestRam>` and drops it only when V8 frees the view, so the mapping outlives
        // every JS access through it.
        unsafe { Uint8ArraySlice::from_external(env, ptr, len, ram, |_, ram| drop(ram)) }
            .map_err(napi)
    }

    /// Copies `data` into guest RAM at `addr`.
    #[napi(catch_unwind)]
    pub fn write(&self, addr: f64, data: Buffer) -> Result<()> {
        let addr = u64_from_js("addr", addr)?;
        self.machine()?.ram().write(addr, &data).map_err(core)
    }

    /// Reads `len` bytes of guest RAM at `addr`.
    #[napi(catch_unwind)]
    pub fn read(&self, addr: f64, len: u32) -> Result<Buffer> {
        let addr = u64_from_js("addr", addr)?;
        let mut buf = vec![0u8; len as usize];
        self.machine()?.ram().read(addr, &mut buf).map_err(core)?;
        Ok(buf.into())
    }
}
