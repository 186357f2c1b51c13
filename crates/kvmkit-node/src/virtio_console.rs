//! `NativeMachine::add_virtio_console` and the `NativeVirtioConsole` class behind the
//! façade's `VirtioConsole`: hvc0's output announced under the device's MMIO base, host
//! input queued for the guest.

use kvmkit_core::virtio::console::{VirtioConsole, VirtioConsoleHandle};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::error::{Result, core};
use crate::machine::NativeMachine;
use crate::virtio::{NativeVirtioInfo, announced_as};

/// A virtio console's host side.
#[napi]
pub struct NativeVirtioConsole {
    handle: VirtioConsoleHandle,
    info: NativeVirtioInfo,
}

#[napi]
impl NativeVirtioConsole {
    /// Where it was attached (its output is announced under `base`).
    #[napi(getter)]
    pub fn info(&self) -> NativeVirtioInfo {
        self.info.clone()
    }

    /// Queues `data` for the guest; returns how many bytes fit.
    #[napi(catch_unwind)]
    pub fn input(&self, data: Buffer) -> u32 {
        u32::try_from(self.handle.input(&data)).unwrap_or(u32::MAX)
    }

    /// Takes the output so far.
    #[napi(catch_unwind)]
    pub fn take_output(&self) -> Buffer {
        self.handle.take_output().into()
    }

    /// Bytes of output dropped because nobody took them in time.
    #[napi(getter)]
    pub fn dropped(&self) -> f64 {
        self.handle.dropped() as f64
    }
}

#[napi]
impl NativeMachine {
    /// Adds a virtio console (one port, hvc0 in a Linux guest).
    #[napi(catch_unwind)]
    pub fn add_virtio_console(&self) -> Result<NativeVirtioConsole> {
        let (device, handle) = VirtioConsole::new().map_err(core)?;
        let m = self.m()?;
        let info = m.add_virtio(Box::new(device)).map_err(core)?;
        handle.set_notify(m.output_notifier(announced_as(info.base)));
        Ok(NativeVirtioConsole {
            handle,
            info: NativeVirtioInfo::of("virtio-console", &info),
        })
    }
}
