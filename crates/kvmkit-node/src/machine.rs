//! The `NativeMachine` class: a kvmkit-core `Machine` seen from JS.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use napi::Either;
use napi::bindgen_prelude::{Buffer, External, Function};
use napi_derive::napi;

use kvmkit_core::config::{MachineConfig, MemoryRegionConfig};
use kvmkit_core::exit::ExitKind;
use kvmkit_core::machine::{InlineVcpu, Machine, MachineOptions, UnhandledPolicy};
use kvmkit_core::memory::{Backing, MemoryOptions};
use kvmkit_core::posted::PostedWrite;
use kvmkit_core::x86::layout;

use crate::convert::u64_from_js;
use crate::error::{Result, core, invalid_arg, napi};
use crate::event::{JsEvents, NativeEvent, NativeOutcome, to_js};
use crate::hot::{InlineRun, MachineHandle};
use crate::memory::{NativeMemory, NativeRegion};
use crate::vcpu::NativeVcpu;

/// A validated machine configuration (sizes already parsed by the façade).
#[napi(object)]
pub struct NativeConfig {
    /// A size (RAM from 0, continued above 4 GiB past the 32-bit hole) or regions.
    pub memory: Either<f64, Vec<NativeRegion>>,
    pub vcpus: u32,
    #[napi(ts_type = "'error' | 'ignore'")]
    pub unhandled: String,
    pub handoff_spin_micros: u32,
    /// In-kernel PIC, IOAPIC, LAPICs and PIT.
    pub irqchip: bool,
    #[napi(ts_type = "'anonymous' | 'memfd' | 'file'")]
    pub backing: String,
    /// The file, for `file` backing.
    pub backing_path: Option<String>,
    /// Transparent huge pages.
    pub huge_pages: bool,
    pub kvm_path: Option<String>,
}

/// A write queued for a posted device.
#[napi(object)]
pub struct NativePostedWrite {
    pub vcpu: u32,
    pub device: u32,
    pub exit: u32,
    pub offset: f64,
    pub addr: f64,
    pub size: u32,
    pub value: u32,
    pub value_hi: u32,
}

/// The native half of a `Machine`. `close()` drops the core machine, releasing its fds,
/// mappings and threads at once rather than when JS garbage-collects this object.
#[napi]
pub struct NativeMachine {
    machine: Mutex<Option<Arc<Machine>>>,
    inline: Arc<Mutex<Vec<InlineVcpu>>>,
    posted: Mutex<Vec<PostedWrite>>,
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

/// The handler that forwards a machine's events to `on_event` on the JS thread.
fn js_events(on_event: Function<NativeEvent, ()>) -> Result<Arc<JsEvents>> {
    let callback = on_event
        .build_threadsafe_function()
        .callee_handled::<false>()
        .build()
        .map_err(napi)?;
    Ok(Arc::new(JsEvents::new(callback)))
}

/// The machine behind `weak`, or an `INVALID_STATE` error once it is closed.
pub(crate) fn upgrade(weak: &Weak<Machine>) -> Result<Arc<Machine>> {
    weak.upgrade().ok_or_else(closed)
}

fn closed() -> crate::error::JsError {
    core(kvmkit_core::Error::InvalidState {
        op: "use the machine",
        state: "closed",
    })
}

impl NativeMachine {
    /// The core machine, or an `INVALID_STATE` error once closed.
    pub(crate) fn m(&self) -> Result<Arc<Machine>> {
        self.machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(closed)
    }
}

#[napi]
impl NativeMachine {
    /// Opens KVM and creates the VM, its RAM and vCPUs.
    #[napi(constructor, catch_unwind)]
    pub fn new(config: NativeConfig) -> Result<Self> {
        let memory = match &config.memory {
            Either::A(size) => layout::ram_regions(u64_from_js("memory", *size)?),
            Either::B(regions) => regions
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    Ok(MemoryRegionConfig {
                        guest_addr: u64_from_js(&format!("memory[{i}].guestAddr"), r.guest_addr)?,
                        size: u64_from_js(&format!("memory[{i}].size"), r.size)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        };
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
            sandbox: None,
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
            inline: Arc::new(Mutex::new(Vec::new())),
            posted: Mutex::new(Vec::new()),
            id,
        })
    }

    /// vCPU `index`.
    #[napi(catch_unwind)]
    pub fn vcpu(&self, index: u32) -> Result<NativeVcpu> {
        let m = self.m()?;
        if index >= m.vcpu_count() {
            return Err(core(kvmkit_core::Error::NoSuchVcpu {
                index,
                count: m.vcpu_count(),
            }));
        }
        Ok(NativeVcpu::new(&m, index))
    }

    /// Guest RAM.
    #[napi(catch_unwind)]
    pub fn memory(&self) -> Result<NativeMemory> {
        Ok(NativeMemory::new(&self.m()?))
    }

    /// Starts the vCPU threads; `on_event` receives accesses, pauses and the end.
    #[napi(catch_unwind)]
    pub fn start(&self, on_event: Function<NativeEvent, ()>) -> Result<()> {
        self.m()?.start(js_events(on_event)?).map_err(core)
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

    /// A handle for the hot-path calls (`pollAccess`, `replyAccess`, `claimAccess`).
    #[napi(catch_unwind)]
    pub fn handle(&self) -> Result<External<MachineHandle>> {
        Ok(External::new(MachineHandle(Arc::downgrade(&self.m()?))))
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

    /// Takes every queued posted write, oldest first.
    #[napi(catch_unwind)]
    pub fn take_posted(&self) -> Result<Vec<NativePostedWrite>> {
        let m = self.m()?;
        let mut posted = self.posted.lock().unwrap_or_else(|e| e.into_inner());
        posted.clear();
        m.take_posted(&mut posted);
        Ok(posted
            .iter()
            .map(|w| NativePostedWrite {
                vcpu: w.vcpu,
                device: w.device,
                exit: w.kind as u32,
                offset: w.offset as f64,
                addr: w.addr as f64,
                size: w.size,
                value: w.value as u32,
                value_hi: (w.value >> 32) as u32,
            })
            .collect())
    }

    /// Stops the machine because the handler of a posted write to `addr` failed.
    #[napi(catch_unwind)]
    pub fn fail_posted(&self, vcpu: u32, exit: u32, addr: f64, message: String) -> Result<()> {
        let write = PostedWrite {
            vcpu,
            device: 0,
            kind: if exit == ExitKind::MmioWrite as u32 {
                ExitKind::MmioWrite
            } else {
                ExitKind::IoOut
            },
            offset: 0,
            addr: u64_from_js("addr", addr)?,
            size: 0,
            value: 0,
        };
        self.m()?.fail_posted(&write, message);
        Ok(())
    }

    /// Starts the machine with its vCPUs driven by `inlineStep` calls instead of threads;
    /// returns the handle those calls take.
    #[napi(catch_unwind)]
    pub fn start_inline(&self, on_event: Function<NativeEvent, ()>) -> Result<External<InlineRun>> {
        let vcpus = self.m()?.start_inline(js_events(on_event)?).map_err(core)?;
        *self.inline.lock().unwrap_or_else(|e| e.into_inner()) = vcpus;
        Ok(External::new(InlineRun(Arc::clone(&self.inline))))
    }
}
