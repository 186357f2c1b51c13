//! The `NativeSerial` class behind the façade's `SerialPort`, and `NativeConsole` behind its
//! `DebugConsole`: one object per device added, each reading its own device's output (also
//! after the machine is closed).

use std::sync::{Arc, Mutex};

use kvmkit_core::devices::output::ConsoleOutput;
use kvmkit_core::devices::serial::SerialHandle;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::devices::NativeDeviceInfo;
use crate::error::{Result, core};

/// A 16550A UART's host side.
#[napi]
pub struct NativeSerial {
    handle: SerialHandle,
    info: NativeDeviceInfo,
}

impl NativeSerial {
    pub(crate) fn new(handle: SerialHandle, info: NativeDeviceInfo) -> Self {
        NativeSerial { handle, info }
    }
}

#[napi]
impl NativeSerial {
    /// Its first port, under which its output is announced.
    #[napi(getter)]
    pub fn port(&self) -> f64 {
        self.info.base
    }

    /// Queues `data` for the guest side; returns how many bytes fit.
    #[napi(catch_unwind)]
    pub fn input(&self, data: Buffer) -> Result<u32> {
        self.handle
            .input(&data)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(core)
    }

    /// Takes the output so far.
    #[napi(catch_unwind)]
    pub fn take_output(&self) -> Buffer {
        self.handle.take_output().into()
    }
}

/// A debug console's host side.
#[napi]
pub struct NativeConsole {
    output: Arc<Mutex<ConsoleOutput>>,
    info: NativeDeviceInfo,
}

impl NativeConsole {
    pub(crate) fn new(output: Arc<Mutex<ConsoleOutput>>, info: NativeDeviceInfo) -> Self {
        NativeConsole { output, info }
    }
}

#[napi]
impl NativeConsole {
    /// Its port.
    #[napi(getter)]
    pub fn port(&self) -> f64 {
        self.info.base
    }

    /// Takes what the guest wrote so far.
    #[napi(catch_unwind)]
    pub fn take(&self) -> Buffer {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .into()
    }
}
