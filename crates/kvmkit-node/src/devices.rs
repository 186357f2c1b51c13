//! Devices: `NativeMachine`'s routing of ranges to TypeScript devices, the built-ins of the
//! core's registry (`kvmkit_core::devices::DeviceSpec`), and MMIO windows and interrupt
//! lines from the core's allocator.

use kvmkit_core::bus::Route;
use kvmkit_core::devices::{DeviceSpec, debug_console, debug_exit, serial};
use napi_derive::napi;

use crate::convert::{space_of, u64_from_js};
use crate::error::{Result, core, invalid_arg};
use crate::machine::NativeMachine;
use crate::serial::{NativeConsole, NativeSerial};

/// The first port of COM1.
#[napi]
pub const COM1_PORT: u32 = serial::COM1_PORT as u32;
/// COM1's interrupt line.
#[napi]
pub const COM1_IRQ: u32 = serial::COM1_IRQ;
/// The conventional debug-console port.
#[napi]
pub const DEBUG_CONSOLE_PORT: u32 = debug_console::DEBUG_CONSOLE_PORT as u32;
/// The conventional debug-exit port.
#[napi]
pub const DEBUG_EXIT_PORT: u32 = debug_exit::DEBUG_EXIT_PORT as u32;

/// A built-in device without a host side, by kind; the core's registry decides where
/// the fixed ones sit.
#[napi(object)]
pub struct NativeBuiltin {
    #[napi(ts_type = "'debug-exit' | 'i8042' | 'rtc' | 'null'")]
    pub kind: String,
    /// The first port (debug-exit) or address (null).
    pub base: Option<f64>,
    /// Ports or bytes (null).
    pub length: Option<f64>,
    #[napi(ts_type = "'port' | 'mmio'")]
    pub space: Option<String>,
    /// What reads return (null).
    pub fill: Option<u32>,
}

/// Where a built-in device was put.
#[napi(object)]
pub struct NativeDeviceInfo {
    pub name: String,
    #[napi(ts_type = "'port' | 'mmio'")]
    pub space: String,
    pub base: f64,
    pub length: f64,
}

impl NativeDeviceInfo {
    pub(crate) fn of(spec: &DeviceSpec) -> Self {
        NativeDeviceInfo {
            name: spec.name().into(),
            space: spec.space().name().into(),
            base: spec.base() as f64,
            length: spec.len() as f64,
        }
    }
}

fn port(base: Option<f64>, default: u16) -> Result<u16> {
    match base {
        None => Ok(default),
        Some(b) => u64_from_js("port", b)?
            .try_into()
            .map_err(|_| invalid_arg("port", "must be a port from 0 to 0xffff")),
    }
}

fn spec_of(builtin: &NativeBuiltin) -> Result<DeviceSpec> {
    match builtin.kind.as_str() {
        "debug-exit" => Ok(DeviceSpec::DebugExit {
            port: port(builtin.base, debug_exit::DEBUG_EXIT_PORT)?,
        }),
        "i8042" => Ok(DeviceSpec::I8042),
        "rtc" => Ok(DeviceSpec::Rtc),
        "null" => Ok(DeviceSpec::Null {
            space: space_of(builtin.space.as_deref().unwrap_or("port"))?,
            base: u64_from_js("base", builtin.base.unwrap_or(f64::NAN))?,
            len: u64_from_js("length", builtin.length.unwrap_or(f64::NAN))?,
            fill: u8::try_from(builtin.fill.unwrap_or(0xff))
                .map_err(|_| invalid_arg("fill", "must be 0 to 0xff"))?,
        }),
        other => Err(invalid_arg(
            "kind",
            format!("{other:?} is not \"debug-exit\", \"i8042\", \"rtc\" or \"null\""),
        )),
    }
}

#[napi]
impl NativeMachine {
    /// Routes a port range (`space` "port") or MMIO range (`space` "mmio") to JS device `id`.
    #[napi(catch_unwind)]
    pub fn add_device(
        &self,
        #[napi(ts_arg_type = "'port' | 'mmio'")] space: String,
        base: f64,
        len: f64,
        name: String,
        id: u32,
        posted: bool,
    ) -> Result<()> {
        let space = space_of(&space)?;
        let base = u64_from_js("base", base)?;
        let len = u64_from_js("length", len)?;
        let route = Route::User { device: id, posted };
        self.m()?
            .add_device(space, base, len, &name, route)
            .map_err(core)
    }

    /// Removes the device whose range starts at `base`; returns whether there was one.
    #[napi(catch_unwind)]
    pub fn remove_device(
        &self,
        #[napi(ts_arg_type = "'port' | 'mmio'")] space: String,
        base: f64,
    ) -> Result<bool> {
        let space = space_of(&space)?;
        let base = u64_from_js("base", base)?;
        Ok(self.m()?.remove_device(space, base))
    }

    /// Adds a built-in device; returns where it sits.
    #[napi(catch_unwind)]
    pub fn add_builtin(&self, builtin: NativeBuiltin) -> Result<NativeDeviceInfo> {
        let spec = spec_of(&builtin)?;
        self.m()?.add(spec).map_err(core)?;
        Ok(NativeDeviceInfo::of(&spec))
    }

    /// Adds a 16550A UART on 8 ports from `port` (default COM1's), raising `irq` if given;
    /// its output is announced under its port.
    #[napi(catch_unwind)]
    pub fn add_serial(&self, port_base: Option<f64>, irq: Option<u32>) -> Result<NativeSerial> {
        let spec = DeviceSpec::Serial {
            port: port(port_base, serial::COM1_PORT)?,
            irq,
        };
        let host = self.m()?.add(spec).map_err(core)?;
        let handle = host
            .into_serial()
            .ok_or_else(|| invalid_arg("kind", "the registry built no UART"))?;
        Ok(NativeSerial::new(handle, NativeDeviceInfo::of(&spec)))
    }

    /// Adds a debug console on `port` (default 0xe9); each one collects its own output.
    #[napi(catch_unwind)]
    pub fn add_debug_console(&self, port_base: Option<f64>) -> Result<NativeConsole> {
        let spec = DeviceSpec::DebugConsole {
            port: port(port_base, debug_console::DEBUG_CONSOLE_PORT)?,
        };
        let host = self.m()?.add(spec).map_err(core)?;
        let output = host
            .into_console()
            .ok_or_else(|| invalid_arg("kind", "the registry built no console"))?;
        Ok(NativeConsole::new(output, NativeDeviceInfo::of(&spec)))
    }

    /// A free page-aligned MMIO window of `length` bytes in the 32-bit hole.
    #[napi(catch_unwind)]
    pub fn allocate_mmio(&self, length: f64) -> Result<f64> {
        let len = u64_from_js("length", length)?;
        Ok(self.m()?.allocate_mmio(len).map_err(core)? as f64)
    }

    /// A free interrupt line that no built-in device raises.
    #[napi(catch_unwind)]
    pub fn allocate_irq(&self) -> Result<u32> {
        self.m()?.allocate_gsi().map_err(core)
    }
}
