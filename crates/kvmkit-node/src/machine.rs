//! The `NativeMachine` class: a kvmkit-core `Machine` seen from JS.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use napi::Either;
use napi::bindgen_prelude::{External, Function};
use napi_derive::napi;

use kvmkit_core::config::{MachineConfig, MemoryRegionConfig};
use kvmkit_core::memory::{Backing, MemoryOptions};
use kvmkit_core::sandbox::{Sandbox, Violation};
use kvmkit_core::vm::{InlineVcpu, Machine, MachineOptions, UnhandledPolicy};
use kvmkit_core::x86::layout;

use crate::convert::u64_from_js;
use crate::error::{Result, core, invalid_arg};
use crate::handoff::{JsEvents, MachineHandle, NativeEvent, NativeOutcome, to_js};
use crate::inline::InlineRun;
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
    /// Confine vCPU threads with a seccomp filter; what a refused call does.
    #[napi(ts_type = "'fail' | 'kill-process'")]
    pub sandbox: Option<String>,
}

/// The native half of a `Machine`. `close()` drops the core machine, releasing its fds,
/// mappings and threads at once rather than when JS garbage-collects this object.
#[napi]
pub struct NativeMachine {
    machine: Mutex<Option<Arc<Machine>>>,
    inline: Arc<Mutex<Vec<InlineVcpu>>>,
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
            sandbox: config
                .sandbox
                .as_deref()
                .map(|violation| match violation {
                    "fail" => Ok(Sandbox {
                        violation: Violation::Fail,
                    }),
                    "kill-process" => Ok(Sandbox {
                        violation: Violation::KillProcess,
                    }),
                    other => Err(invalid_arg(
                        "sandbox",
                        format!("{other:?} is not \"fail\" or \"kill-process\""),
                    )),
                })
                .transpose()?,
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

    /// The handle every hand-off call takes (`serveBegin`, `takePosted`…).
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
        Ok(External::new(InlineRun::new(Arc::clone(&self.inline))))
    }
}
