//! The `NativeMachine` class: a kvmkit-core `Machine` seen from JS.

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Buffer, Function};
use napi_derive::napi;

use kvmkit_core::config::{MachineConfig, MemoryRegionConfig};
use kvmkit_core::devices::debug_console::ConsoleOutput;
use kvmkit_core::devices::{DebugExit, NullDevice};
use kvmkit_core::exit::ExitKind;
use kvmkit_core::kvm::{KVM_PATH, KvmHost};
use kvmkit_core::machine::{Machine, MachineOptions, UnhandledPolicy};
use kvmkit_core::x86::mode::CpuMode;

use crate::convert::{Registers, u64_from_js};
use crate::error::{Result, core, invalid_arg, napi};
use crate::event::{JsEvents, NativeEvent};

/// One guest RAM region.
#[napi(object)]
pub struct NativeRegion {
    pub guest_addr: f64,
    pub size: f64,
}

/// A validated machine configuration (sizes already parsed by the façade).
#[napi(object)]
pub struct NativeConfig {
    pub memory: Vec<NativeRegion>,
    pub vcpus: u32,
    /// `error` or `ignore`.
    pub unhandled: String,
    pub handoff_spin_micros: u32,
    pub kvm_path: Option<String>,
}

/// Exit counters and latency histogram of one vCPU.
#[napi(object)]
pub struct NativeStats {
    /// Counts by exit kind name.
    pub exits: Vec<ExitCount>,
    /// Exits whose handling took `[2^(i-1), 2^i)` ns, by bucket index `i`.
    pub latency_buckets: Vec<f64>,
}

/// The count of one exit kind.
#[napi(object)]
pub struct ExitCount {
    pub kind: String,
    pub count: f64,
}

/// The native half of a `Machine`. `close()` drops the core machine, releasing its fds,
/// mappings and threads at once rather than when JS garbage-collects this object.
#[napi]
pub struct NativeMachine {
    machine: Mutex<Option<Arc<Machine>>>,
    console: Mutex<Option<Arc<Mutex<ConsoleOutput>>>>,
}

fn mode(name: &str) -> Result<CpuMode> {
    match name {
        "real" => Ok(CpuMode::Real),
        "protected" => Ok(CpuMode::Protected),
        "long" => Ok(CpuMode::Long),
        other => Err(invalid_arg(
            "mode",
            format!("{other:?} is not one of \"real\", \"protected\", \"long\""),
        )),
    }
}

impl NativeMachine {
    /// The core machine, or an `INVALID_STATE` error once closed.
    fn m(&self) -> Result<Arc<Machine>> {
        self.machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                core(kvmkit_core::Error::InvalidState {
                    op: "use the machine",
                    state: "closed",
                })
            })
    }
}

#[napi]
impl NativeMachine {
    /// Opens KVM and creates the VM, its RAM and vCPUs.
    #[napi(constructor, catch_unwind)]
    pub fn new(config: NativeConfig) -> Result<Self> {
        let memory = config
            .memory
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(MemoryRegionConfig {
                    guest_addr: u64_from_js(&format!("memory[{i}].guestAddr"), r.guest_addr)?,
                    size: u64_from_js(&format!("memory[{i}].size"), r.size)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let unhandled = match config.unhandled.as_str() {
            "error" => UnhandledPolicy::Error,
            "ignore" => UnhandledPolicy::Ignore,
            other => {
                return Err(invalid_arg(
                    "unhandled",
                    format!("{other:?} is not \"error\" or \"ignore\""),
                ));
            }
        };
        let host =
            KvmHost::open_path(config.kvm_path.as_deref().unwrap_or(KVM_PATH)).map_err(core)?;
        let options = MachineOptions {
            handoff_spin: std::time::Duration::from_micros(config.handoff_spin_micros.into()),
            unhandled,
        };
        let machine = Machine::new(
            host,
            &MachineConfig {
                memory,
                vcpus: config.vcpus,
            },
            options,
        )
        .map_err(core)?;
        Ok(NativeMachine {
            machine: Mutex::new(Some(Arc::new(machine))),
            console: Mutex::new(None),
        })
    }

    /// Copies `data` into guest RAM at `addr`.
    #[napi(catch_unwind)]
    pub fn write_memory(&self, addr: f64, data: Buffer) -> Result<()> {
        let addr = u64_from_js("addr", addr)?;
        self.m()?.ram().write(addr, &data).map_err(core)
    }

    /// Reads `len` bytes of guest RAM at `addr`.
    #[napi(catch_unwind)]
    pub fn read_memory(&self, addr: f64, len: u32) -> Result<Buffer> {
        let addr = u64_from_js("addr", addr)?;
        let mut buf = vec![0u8; len as usize];
        self.m()?.ram().read(addr, &mut buf).map_err(core)?;
        Ok(buf.into())
    }

    /// Puts vCPU `index` into `mode` ("real", "protected" or "long") at `entry`.
    #[napi(catch_unwind)]
    pub fn setup_vcpu(&self, index: u32, mode_name: String, entry: f64, stack: f64) -> Result<()> {
        let mode = mode(&mode_name)?;
        let entry = u64_from_js("entry", entry)?;
        let stack = u64_from_js("stack", stack)?;
        let m = self.m()?;
        m.with_vcpu(index, |v| v.setup(m.ram(), mode, entry, stack))
            .map_err(core)
    }

    /// The general registers of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn get_registers(&self, index: u32) -> Result<Registers> {
        self.m()?
            .with_vcpu(index, |v| v.get_regs())
            .map(Registers::from)
            .map_err(core)
    }

    /// Sets the general registers of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn set_registers(&self, index: u32, registers: Registers) -> Result<()> {
        let regs = registers.to_kvm()?;
        self.m()?
            .with_vcpu(index, |v| v.set_regs(&regs))
            .map_err(core)
    }

    /// Routes a port range (`space` "port") or MMIO range (`space` "mmio") to JS device `id`.
    #[napi(catch_unwind)]
    pub fn add_device(
        &self,
        space: String,
        base: f64,
        len: f64,
        name: String,
        id: u32,
    ) -> Result<()> {
        let base = u64_from_js("base", base)?;
        let len = u64_from_js("length", len)?;
        match space.as_str() {
            "port" => self.m()?.add_user_port_range(base, len, &name, id),
            "mmio" => self.m()?.add_user_mmio_range(base, len, &name, id),
            other => {
                return Err(invalid_arg(
                    "space",
                    format!("{other:?} is not \"port\" or \"mmio\""),
                ));
            }
        }
        .map_err(core)
    }

    /// Removes the device whose range starts at `base`; returns whether there was one.
    #[napi(catch_unwind)]
    pub fn remove_device(&self, space: String, base: f64) -> Result<bool> {
        let base = u64_from_js("base", base)?;
        Ok(match space.as_str() {
            "port" => self.m()?.remove_port_range(base),
            _ => self.m()?.remove_mmio_range(base),
        })
    }

    /// Adds a built-in device: `debug-console`, `debug-exit` or `null` (`fill` is its read value).
    #[napi(catch_unwind)]
    pub fn add_builtin(&self, kind: String, port: u32, len: u32, fill: u32) -> Result<()> {
        let port = u16::try_from(port).map_err(|_| invalid_arg("port", "must be 0 to 0xffff"))?;
        let len = u16::try_from(len).map_err(|_| invalid_arg("length", "must be 1 to 0xffff"))?;
        let fill = u8::try_from(fill).map_err(|_| invalid_arg("fill", "must be 0 to 0xff"))?;
        let m = self.m()?;
        match kind.as_str() {
            "debug-console" => {
                let output = m.add_debug_console(port).map_err(core)?;
                *self.console.lock().unwrap_or_else(|e| e.into_inner()) = Some(output);
                Ok(())
            }
            "debug-exit" => m
                .add_port_device(port, 1, "debug-exit", Arc::new(Mutex::new(DebugExit)))
                .map_err(core),
            "null" => m
                .add_port_device(
                    port,
                    len,
                    "null",
                    Arc::new(Mutex::new(NullDevice::new(fill))),
                )
                .map_err(core),
            other => Err(invalid_arg(
                "kind",
                format!("{other:?} is not a built-in device"),
            )),
        }
    }

    /// Takes what the guest wrote to the built-in debug console so far (also after close).
    #[napi(catch_unwind)]
    pub fn take_console_output(&self) -> Buffer {
        self.console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).take())
            .unwrap_or_default()
            .into()
    }

    /// Starts the vCPU threads; `on_event` receives accesses, pauses and the end.
    #[napi(catch_unwind)]
    pub fn start(&self, on_event: Function<NativeEvent, ()>) -> Result<()> {
        let callback = on_event
            .build_threadsafe_function()
            .callee_handled::<false>()
            .build()
            .map_err(napi)?;
        self.m()?
            .start(Arc::new(JsEvents::new(callback)))
            .map_err(core)
    }

    /// Answers the access vCPU `vcpu` waits on with a value of up to 8 bytes.
    #[napi(catch_unwind)]
    pub fn reply(&self, vcpu: u32, value: u32, value_hi: u32) -> Result<()> {
        let v = (u64::from(value_hi) << 32) | u64::from(value);
        self.m()?.reply(vcpu, &v.to_le_bytes()).map_err(core)
    }

    /// Answers a string-I/O read on vCPU `vcpu` with `data`.
    #[napi(catch_unwind)]
    pub fn reply_bytes(&self, vcpu: u32, data: Buffer) -> Result<()> {
        self.m()?.reply(vcpu, &data).map_err(core)
    }

    /// Fails the access vCPU `vcpu` waits on: the machine stops with `message`.
    #[napi(catch_unwind)]
    pub fn fail(&self, vcpu: u32, message: String) -> Result<()> {
        self.m()?.fail(vcpu, message).map_err(core)
    }

    /// Asks every vCPU to pause; a paused event follows.
    #[napi(catch_unwind)]
    pub fn pause(&self) -> Result<()> {
        self.m()?.pause().map_err(core)
    }

    /// Resumes a paused machine.
    #[napi(catch_unwind)]
    pub fn resume(&self) -> Result<()> {
        self.m()?.resume().map_err(core)
    }

    /// Stops the run; the end event follows.
    #[napi(catch_unwind)]
    pub fn stop(&self) {
        if let Ok(m) = self.m() {
            m.stop();
        }
    }

    /// Stops the run, joins the vCPU threads and releases the VM. Idempotent.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        let machine = self
            .machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(m) = machine {
            m.close();
        }
    }

    /// `created`, `running`, `paused`, `ended` or `closed`.
    #[napi(getter, catch_unwind)]
    pub fn state(&self) -> String {
        self.m().map_or("closed", |m| m.state().name()).into()
    }

    /// The number of vCPUs.
    #[napi(getter, catch_unwind)]
    pub fn vcpu_count(&self) -> u32 {
        self.m().map_or(0, |m| m.vcpu_count())
    }

    /// Exit counters and latency histogram of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn stats(&self, index: u32) -> Result<NativeStats> {
        let s = self.m()?.stats(index).map_err(core)?;
        Ok(NativeStats {
            exits: ExitKind::ALL
                .iter()
                .map(|k| ExitCount {
                    kind: k.name().into(),
                    count: s.exits[*k as usize] as f64,
                })
                .collect(),
            latency_buckets: s.latency.iter().map(|&c| c as f64).collect(),
        })
    }
}
