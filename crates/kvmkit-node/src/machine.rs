//! The `NativeMachine` class: a kvmkit-core `Machine` seen from JS.

use std::sync::{Arc, Mutex};

use napi::Env;
use napi::bindgen_prelude::{BigInt, Buffer, External, Function, Uint8ArraySlice};
use napi_derive::napi;
use std::os::fd::AsRawFd;
use std::sync::Weak;
use std::sync::atomic::{AtomicU32, Ordering};

use kvmkit_core::bus::{Route, Space};
use kvmkit_core::config::{MachineConfig, MemoryRegionConfig};
use kvmkit_core::devices::debug_console::ConsoleOutput;
use kvmkit_core::devices::debug_exit::DEBUG_EXIT_PORTS;
use kvmkit_core::devices::i8042::I8042_PORTS;
use kvmkit_core::devices::rtc::RTC_PORTS;
use kvmkit_core::devices::{DebugExit, I8042, NullDevice, Rtc};
use kvmkit_core::exit::ExitKind;
use kvmkit_core::irq::IoEvent;
use kvmkit_core::loader::flat::FlatBoot;
use kvmkit_core::loader::linux::{BzImageMode, LinuxBoot};
use kvmkit_core::loader::multiboot::{Module, MultibootBoot};
use kvmkit_core::machine::{InlineVcpu, Machine, MachineOptions, SerialHandle, UnhandledPolicy};
use kvmkit_core::memory::{Backing, MemoryOptions};
use kvmkit_core::stats::bucket_bounds;
use kvmkit_core::vmm_sys_util::eventfd::EventFd;
use kvmkit_core::x86::mode::CpuMode;
use std::path::Path;

use crate::convert::{
    CpuidEntry, Fpu, MsrEntry, Registers, SpecialRegisters, VcpuEvents, cpuid_from_js, cpuid_to_js,
    u64_from_bigint, u64_from_js,
};
use crate::error::{Result, core, invalid_arg, napi};
use crate::handoff::{InlineRun, JsEvents, MachineHandle, NativeEvent, NativeOutcome, to_js};
use kvmkit_core::kvm_bindings::{kvm_lapic_state, kvm_mp_state};

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
    /// In-kernel PIC, IOAPIC, LAPICs and PIT.
    pub irqchip: bool,
    /// `anonymous`, `memfd` or `file`.
    pub backing: String,
    /// The file, for `file` backing.
    pub backing_path: Option<String>,
    /// Transparent huge pages.
    pub huge_pages: bool,
    pub kvm_path: Option<String>,
}

/// How to load a Linux kernel.
#[napi(object)]
pub struct NativeLinuxOptions {
    /// Enter a bzImage through its own decompressor instead of decompressing it on the host.
    pub standard_bzimage: bool,
    /// Where decompressed bzImage payloads are cached.
    pub cache_dir: Option<String>,
}

/// Where a Linux kernel was loaded and how it is entered.
#[napi(object)]
pub struct NativeLoadedKernel {
    /// `pvh`, `linux64` or `bzimage`.
    pub protocol: String,
    pub entry: f64,
    pub kernel_end: f64,
    pub initrd_addr: Option<f64>,
    pub initrd_size: Option<f64>,
    /// The bzImage payload's compression, when the host decompressed it.
    pub compression: Option<String>,
    /// Whether that decompressed kernel came from the cache.
    pub from_cache: Option<bool>,
}

/// A Multiboot module: a file and its string.
#[napi(object)]
pub struct NativeModule {
    pub path: String,
    pub cmdline: String,
}

/// Where a Multiboot kernel was loaded.
#[napi(object)]
pub struct NativeLoadedMultiboot {
    pub entry: f64,
    pub kernel_end: f64,
    /// Each module's start and end, in order.
    pub modules: Vec<Vec<f64>>,
}

/// Exit counters and latency histogram of one vCPU.
#[napi(object)]
pub struct NativeStats {
    /// Counts by exit kind name.
    pub exits: Vec<ExitCount>,
    /// Exits whose handling time was measured.
    pub measured: f64,
    /// Median handling time (ns).
    pub p50_ns: f64,
    /// 99th percentile (ns).
    pub p99_ns: f64,
    /// 99.9th percentile (ns).
    pub p999_ns: f64,
    /// The non-empty histogram buckets.
    pub buckets: Vec<LatencyBucket>,
}

/// Exits whose handling took from `lowNs` up to (not including) `highNs`.
#[napi(object)]
pub struct LatencyBucket {
    pub low_ns: f64,
    pub high_ns: f64,
    pub count: f64,
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
    inline: Arc<Mutex<Vec<InlineVcpu>>>,
    serials: Mutex<Vec<(u32, SerialHandle)>>,
    id: u32,
}

/// Machines by id, so any thread (a worker driving an inline vCPU, say) can stop one.
static REGISTRY: Mutex<Vec<(u32, Weak<Machine>)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Stops machine `id` from any thread; returns whether it was found.
#[napi(catch_unwind)]
pub fn stop_machine(id: u32) -> bool {
    let machine = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(i, _)| *i == id)
        .and_then(|(_, m)| m.upgrade());
    machine.map(|m| m.stop()).is_some()
}

fn space_of(name: &str) -> Result<Space> {
    match name {
        "port" => Ok(Space::Port),
        "mmio" => Ok(Space::Mmio),
        other => Err(invalid_arg(
            "space",
            format!("{other:?} is not \"port\" or \"mmio\""),
        )),
    }
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

    /// Serial port `id`.
    fn serial(&self, id: u32) -> Result<SerialHandle> {
        self.serials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, h)| h.clone())
            .ok_or_else(|| invalid_arg("serial", format!("there is no serial port {id}")))
    }

    /// Runs `f` on vCPU `index` while it is not running guest code.
    fn vcpu<T>(
        &self,
        index: u32,
        f: impl FnOnce(&kvmkit_core::vcpu::Vcpu) -> kvmkit_core::Result<T>,
    ) -> Result<T> {
        self.m()?.with_vcpu(index, f).map_err(core)
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
        let host = crate::open_host(config.kvm_path.as_deref())?;
        let backing = match (config.backing.as_str(), config.backing_path) {
            ("anonymous", _) => Backing::Anonymous,
            ("memfd", _) => Backing::Memfd,
            ("file", Some(path)) => Backing::File(path.into()),
            ("file", None) => return Err(invalid_arg("backing", "file backing needs a path")),
            (other, _) => {
                return Err(invalid_arg(
                    "backing",
                    format!("{other:?} is not \"anonymous\", \"memfd\" or \"file\""),
                ));
            }
        };
        let options = MachineOptions {
            handoff_spin: std::time::Duration::from_micros(config.handoff_spin_micros.into()),
            unhandled,
            irqchip: config.irqchip,
            memory: MemoryOptions {
                backing,
                huge_pages: config.huge_pages,
            },
            emulation_fallbacks: true,
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
        let machine = Arc::new(machine);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        registry.retain(|(_, m)| m.strong_count() > 0);
        registry.push((id, Arc::downgrade(&machine)));
        Ok(NativeMachine {
            machine: Mutex::new(Some(machine)),
            console: Mutex::new(None),
            inline: Arc::new(Mutex::new(Vec::new())),
            serials: Mutex::new(Vec::new()),
            id,
        })
    }

    /// The fd of the memfd or file backing guest RAM, if any (regions lie in it one after
    /// another, in address order); valid until close.
    #[napi(getter, catch_unwind)]
    pub fn memory_fd(&self) -> Option<i32> {
        let m = self.m().ok()?;
        m.ram().backing_file().map(|f| f.as_raw_fd())
    }

    /// The guest RAM regions as (guest address, size) pairs, in address order.
    #[napi(catch_unwind)]
    pub fn memory_regions(&self) -> Result<Vec<NativeRegion>> {
        Ok(self
            .m()?
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
    pub fn memory_view<'env>(&self, env: &'env Env, index: u32) -> Result<Uint8ArraySlice<'env>> {
        let ram = Arc::clone(self.m()?.ram());
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

    /// Turns single-stepping of vCPU `index` on or off.
    #[napi(catch_unwind)]
    pub fn set_single_step(&self, index: u32, enabled: bool) -> Result<()> {
        self.vcpu(index, |v| v.set_single_step(enabled))
    }

    /// The special registers of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn get_special_registers(&self, index: u32) -> Result<SpecialRegisters> {
        self.vcpu(index, |v| v.get_sregs()).map(Into::into)
    }

    /// Sets the special registers of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn set_special_registers(&self, index: u32, sregs: SpecialRegisters) -> Result<()> {
        let m = self.m()?;
        m.with_vcpu(index, |v| {
            let current = v.get_sregs()?;
            let next = sregs
                .to_kvm(&current)
                .map_err(|e| kvmkit_core::Error::config("specialRegisters", e.reason.clone()))?;
            v.set_sregs(&next)
        })
        .map_err(core)
    }

    /// The FPU and SSE state of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn get_fpu(&self, index: u32) -> Result<Fpu> {
        self.vcpu(index, |v| v.get_fpu()).map(Into::into)
    }

    /// Sets the FPU and SSE state of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn set_fpu(&self, index: u32, fpu: Fpu) -> Result<()> {
        let fpu = fpu.to_kvm()?;
        self.vcpu(index, |v| v.set_fpu(&fpu))
    }

    /// Reads MSRs of vCPU `index`; stops at the first one KVM cannot read.
    #[napi(catch_unwind)]
    pub fn get_msrs(&self, index: u32, indices: Vec<u32>) -> Result<Vec<MsrEntry>> {
        let values = self.vcpu(index, |v| v.get_msrs(&indices))?;
        Ok(values
            .into_iter()
            .map(|(index, value)| MsrEntry {
                index,
                value: BigInt::from(value),
            })
            .collect())
    }

    /// Writes MSRs of vCPU `index`; returns how many KVM accepted.
    #[napi(catch_unwind)]
    pub fn set_msrs(&self, index: u32, msrs: Vec<MsrEntry>) -> Result<u32> {
        let values = msrs
            .iter()
            .map(|e| Ok((e.index, u64_from_bigint("msrs.value", &e.value)?)))
            .collect::<Result<Vec<_>>>()?;
        self.vcpu(index, |v| v.set_msrs(&values)).map(|n| n as u32)
    }

    /// The CPUID vCPU `index` presents.
    #[napi(catch_unwind)]
    pub fn get_cpuid(&self, index: u32) -> Result<Vec<CpuidEntry>> {
        self.vcpu(index, |v| v.get_cpuid()).map(|c| cpuid_to_js(&c))
    }

    /// Sets the CPUID vCPU `index` presents (before it first runs).
    #[napi(catch_unwind)]
    pub fn set_cpuid(&self, index: u32, entries: Vec<CpuidEntry>) -> Result<()> {
        let cpuid = cpuid_from_js(&entries)?;
        self.vcpu(index, |v| v.set_cpuid(&cpuid))
    }

    /// The local APIC register page (1024 bytes) of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn get_lapic(&self, index: u32) -> Result<Buffer> {
        let lapic = self.vcpu(index, |v| v.get_lapic())?;
        Ok(lapic
            .regs
            .iter()
            .map(|&b| b as u8)
            .collect::<Vec<u8>>()
            .into())
    }

    /// Sets the local APIC register page (1024 bytes) of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn set_lapic(&self, index: u32, regs: Buffer) -> Result<()> {
        let mut lapic = kvm_lapic_state::default();
        if regs.len() != lapic.regs.len() {
            return Err(invalid_arg(
                "lapic",
                format!("must be {} bytes, got {}", lapic.regs.len(), regs.len()),
            ));
        }
        for (dst, &src) in lapic.regs.iter_mut().zip(regs.iter()) {
            *dst = src as _;
        }
        self.vcpu(index, |v| v.set_lapic(&lapic))
    }

    /// The multiprocessing state of vCPU `index` (`KVM_MP_STATE_*`).
    #[napi(catch_unwind)]
    pub fn get_mp_state(&self, index: u32) -> Result<u32> {
        self.vcpu(index, |v| v.get_mp_state()).map(|s| s.mp_state)
    }

    /// Sets the multiprocessing state of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn set_mp_state(&self, index: u32, state: u32) -> Result<()> {
        self.vcpu(index, |v| v.set_mp_state(kvm_mp_state { mp_state: state }))
    }

    /// Pending and injected events of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn get_events(&self, index: u32) -> Result<VcpuEvents> {
        self.vcpu(index, |v| v.get_events()).map(Into::into)
    }

    /// Sets pending and injected events of vCPU `index`.
    #[napi(catch_unwind)]
    pub fn set_events(&self, index: u32, events: VcpuEvents) -> Result<()> {
        let m = self.m()?;
        m.with_vcpu(index, |v| {
            let next = events
                .to_kvm(v.get_events()?)
                .map_err(|e| kvmkit_core::Error::config("events", e.reason.clone()))?;
            v.set_events(&next)
        })
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
    pub fn remove_device(&self, space: String, base: f64) -> Result<bool> {
        let space = space_of(&space)?;
        let base = u64_from_js("base", base)?;
        Ok(self.m()?.remove_device(space, base))
    }

    /// Adds a built-in device: `debug-console`, `debug-exit`, `i8042` or `rtc` (on ports
    /// from `base`), or `null` (on `len` ports or MMIO bytes from `base`, reading `fill`).
    #[napi(catch_unwind)]
    pub fn add_builtin(
        &self,
        kind: String,
        space: String,
        base: f64,
        len: f64,
        fill: u32,
    ) -> Result<()> {
        let space = space_of(&space)?;
        let base = u64_from_js("base", base)?;
        let len = u64_from_js("length", len)?;
        let fill = u8::try_from(fill).map_err(|_| invalid_arg("fill", "must be 0 to 0xff"))?;
        let port = || {
            u16::try_from(base)
                .ok()
                .filter(|_| space == Space::Port)
                .ok_or_else(|| invalid_arg("port", "must be a port from 0 to 0xffff"))
        };
        let m = self.m()?;
        match kind.as_str() {
            "debug-console" => {
                let output = m.add_debug_console(port()?).map_err(core)?;
                *self.console.lock().unwrap_or_else(|e| e.into_inner()) = Some(output);
                Ok(())
            }
            "debug-exit" => {
                let route = Route::BuiltIn(Arc::new(Mutex::new(DebugExit)));
                let len = DEBUG_EXIT_PORTS.into();
                m.add_device(Space::Port, port()?.into(), len, "debug-exit", route)
                    .map_err(core)
            }
            "null" => {
                let route = Route::BuiltIn(Arc::new(Mutex::new(NullDevice::new(fill))));
                m.add_device(space, base, len, "null", route).map_err(core)
            }
            "i8042" => {
                let route = Route::BuiltIn(Arc::new(Mutex::new(I8042::default())));
                m.add_device(
                    Space::Port,
                    port()?.into(),
                    I8042_PORTS.into(),
                    "i8042",
                    route,
                )
                .map_err(core)
            }
            "rtc" => {
                let route = Route::BuiltIn(Arc::new(Mutex::new(Rtc::default())));
                m.add_device(Space::Port, port()?.into(), RTC_PORTS.into(), "rtc", route)
                    .map_err(core)
            }
            other => Err(invalid_arg(
                "kind",
                format!("{other:?} is not a built-in device"),
            )),
        }
    }

    /// Loads a Linux kernel (ELF vmlinux or bzImage), optional initrd and command line, and
    /// sets vCPU 0 up to enter it.
    #[napi(catch_unwind)]
    pub fn load_linux(
        &self,
        kernel: String,
        initrd: Option<String>,
        cmdline: String,
        options: NativeLinuxOptions,
    ) -> Result<NativeLoadedKernel> {
        let boot = LinuxBoot {
            kernel: Path::new(&kernel),
            initrd: initrd.as_deref().map(Path::new),
            cmdline: &cmdline,
            bzimage: if options.standard_bzimage {
                BzImageMode::Standard
            } else {
                BzImageMode::Decompress
            },
            cache: options.cache_dir.as_deref().map(Path::new),
        };
        let loaded = self.m()?.load_linux(&boot).map_err(core)?;
        Ok(NativeLoadedKernel {
            protocol: loaded.protocol.name().into(),
            entry: loaded.entry as f64,
            kernel_end: loaded.kernel_end as f64,
            initrd_addr: loaded.initrd.map(|(a, _)| a as f64),
            initrd_size: loaded.initrd.map(|(_, s)| s as f64),
            compression: loaded.decompressed.map(|d| d.compression.name().into()),
            from_cache: loaded.decompressed.map(|d| d.from_cache),
        })
    }

    /// Loads a Multiboot (v1) kernel with its command line and modules, and sets vCPU 0 up
    /// to enter it.
    #[napi(catch_unwind)]
    pub fn load_multiboot(
        &self,
        kernel: String,
        cmdline: String,
        modules: Vec<NativeModule>,
    ) -> Result<NativeLoadedMultiboot> {
        let modules: Vec<Module<'_>> = modules
            .iter()
            .map(|m| Module {
                path: Path::new(&m.path),
                cmdline: &m.cmdline,
            })
            .collect();
        let boot = MultibootBoot {
            kernel: Path::new(&kernel),
            cmdline: &cmdline,
            modules: &modules,
        };
        let loaded = self.m()?.load_multiboot(&boot).map_err(core)?;
        Ok(NativeLoadedMultiboot {
            entry: loaded.entry as f64,
            kernel_end: loaded.kernel_end as f64,
            modules: loaded
                .modules
                .iter()
                .map(|&(start, end)| vec![start as f64, end as f64])
                .collect(),
        })
    }

    /// Loads flat binary `path` at `address` and sets vCPU 0 up to enter it at `entry` in
    /// `mode_name`; returns where it ends.
    #[napi(catch_unwind)]
    pub fn load_flat(
        &self,
        path: String,
        address: f64,
        entry: f64,
        mode_name: String,
        stack: f64,
    ) -> Result<f64> {
        let boot = FlatBoot {
            path: Path::new(&path),
            address: u64_from_js("address", address)?,
            entry: Some(u64_from_js("entry", entry)?),
            mode: mode(&mode_name)?,
            stack: u64_from_js("stack", stack)?,
        };
        let end = self.m()?.load_flat(&boot).map_err(core)?;
        Ok(end as f64)
    }

    /// Adds a 16550A UART on 8 ports from `port`, raising `irq` if given; its output is
    /// reported under `id`.
    #[napi(catch_unwind)]
    pub fn add_serial(&self, port: u32, irq: Option<u32>, id: u32) -> Result<()> {
        let port = u16::try_from(port).map_err(|_| invalid_arg("port", "must be 0 to 0xffff"))?;
        let handle = self.m()?.add_serial(port, irq, id).map_err(core)?;
        self.serials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, handle));
        Ok(())
    }

    /// Queues `data` for serial port `id`'s guest side; returns how many bytes fit.
    #[napi(catch_unwind)]
    pub fn serial_input(&self, id: u32, data: Buffer) -> Result<u32> {
        self.serial(id)?
            .input(&data)
            .map(|n| n as u32)
            .map_err(core)
    }

    /// Takes serial port `id`'s output so far (also after close).
    #[napi(catch_unwind)]
    pub fn take_serial_output(&self, id: u32) -> Result<Buffer> {
        Ok(self.serial(id)?.take_output().into())
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

    /// Starts the vCPU threads; `on_event` receives doorbells, pauses and the end.
    #[napi(catch_unwind)]
    pub fn start(&self, on_event: Function<NativeEvent, ()>) -> Result<()> {
        self.m()?.start(JsEvents::new(on_event)?).map_err(core)
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
        // Stop first: an inline vCPU running on another thread holds the inline lock until
        // the kick brings it back. Inline vCPUs not driven to their end are accounted
        // finished when dropped.
        if let Ok(m) = self.m() {
            m.stop();
        }
        self.inline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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
            measured: s.measured() as f64,
            p50_ns: s.percentile(0.5).unwrap_or(0) as f64,
            p99_ns: s.percentile(0.99).unwrap_or(0) as f64,
            p999_ns: s.percentile(0.999).unwrap_or(0) as f64,
            buckets: s
                .latency
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, &count)| {
                    let (low, high) = bucket_bounds(i);
                    LatencyBucket {
                        low_ns: low as f64,
                        high_ns: high as f64,
                        count: count as f64,
                    }
                })
                .collect(),
        })
    }

    /// The handle every hand-off call takes (`pollAccess`, `replyAndPoll`, `takePosted`…).
    #[napi(catch_unwind)]
    pub fn handle(&self) -> Result<External<MachineHandle>> {
        Ok(External::new(MachineHandle::new(&self.m()?)))
    }

    /// This machine's id, for `stopMachine` from another thread.
    #[napi(getter)]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// How the run ended, once it has.
    #[napi(getter, catch_unwind)]
    pub fn outcome(&self) -> Option<NativeOutcome> {
        self.m().ok()?.outcome().as_ref().map(to_js)
    }

    /// Starts the machine with its vCPUs driven by `inlineStep` calls instead of threads;
    /// returns the handle those calls take.
    #[napi(catch_unwind)]
    pub fn start_inline(&self, on_event: Function<NativeEvent, ()>) -> Result<External<InlineRun>> {
        let vcpus = self
            .m()?
            .start_inline(JsEvents::new(on_event)?)
            .map_err(core)?;
        *self.inline.lock().unwrap_or_else(|e| e.into_inner()) = vcpus;
        Ok(External::new(InlineRun(Arc::clone(&self.inline))))
    }

    /// Raises (`level` true) or lowers interrupt line `irq`.
    #[napi(catch_unwind)]
    pub fn set_irq_line(&self, irq: u32, level: bool) -> Result<()> {
        self.m()?.set_irq_line(irq, level).map_err(core)
    }

    /// Sends an MSI; returns whether it was delivered.
    #[napi(catch_unwind)]
    pub fn signal_msi(&self, address: f64, data: u32) -> Result<bool> {
        let address = u64_from_js("address", address)?;
        self.m()?.signal_msi(address, data).map_err(core)
    }

    /// An eventfd that raises `gsi` when triggered.
    #[napi(catch_unwind)]
    pub fn create_irqfd(&self, gsi: u32) -> Result<NativeEventFd> {
        let m = self.m()?;
        let fd = m.register_irqfd(gsi).map_err(core)?;
        Ok(NativeEventFd::new(&m, fd, EventFdKind::Irq { gsi }))
    }

    /// An eventfd KVM signals when the guest writes `addr` (`space` "port" or "mmio").
    #[napi(catch_unwind)]
    pub fn create_ioeventfd(
        &self,
        space: String,
        addr: f64,
        len: u32,
        datamatch: Option<BigInt>,
    ) -> Result<NativeEventFd> {
        let event = IoEvent {
            space: space_of(&space)?,
            addr: u64_from_js("address", addr)?,
            len,
            datamatch: datamatch
                .map(|d| u64_from_bigint("datamatch", &d))
                .transpose()?,
        };
        let m = self.m()?;
        let fd = m.register_ioeventfd(&event).map_err(core)?;
        Ok(NativeEventFd::new(&m, fd, EventFdKind::Io(event)))
    }
}

enum EventFdKind {
    Irq { gsi: u32 },
    Io(IoEvent),
}

/// An irqfd or ioeventfd of a machine.
#[napi]
pub struct NativeEventFd {
    fd: Mutex<Option<EventFd>>,
    machine: Weak<Machine>,
    kind: EventFdKind,
}

impl NativeEventFd {
    fn new(machine: &Arc<Machine>, fd: EventFd, kind: EventFdKind) -> Self {
        NativeEventFd {
            fd: Mutex::new(Some(fd)),
            machine: Arc::downgrade(machine),
            kind,
        }
    }
}

#[napi]
impl NativeEventFd {
    /// Signals the eventfd (for an irqfd: raises its interrupt).
    #[napi(catch_unwind)]
    pub fn trigger(&self) -> Result<()> {
        match self.fd.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(fd) => fd
                .write(1)
                .map_err(|e| core(kvmkit_core::Error::EventFd(e))),
            None => Err(closed()),
        }
    }

    /// How many times it was signalled since the last call.
    #[napi(catch_unwind)]
    pub fn take(&self) -> Result<f64> {
        match self.fd.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(fd) => Ok(kvmkit_core::irq::take_count(fd) as f64),
            None => Err(closed()),
        }
    }

    /// Detaches it from the machine and closes it. Idempotent.
    #[napi(catch_unwind)]
    pub fn close(&self) -> Result<()> {
        let Some(fd) = self.fd.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        // A closed machine took its registrations with it.
        let Some(m) = self.machine.upgrade() else {
            return Ok(());
        };
        match self.kind {
            EventFdKind::Irq { gsi } => m.unregister_irqfd(&fd, gsi),
            EventFdKind::Io(event) => m.unregister_ioeventfd(&fd, &event),
        }
        .map_err(core)
    }
}

fn closed() -> crate::error::JsError {
    core(kvmkit_core::Error::InvalidState {
        op: "use the eventfd",
        state: "closed",
    })
}
