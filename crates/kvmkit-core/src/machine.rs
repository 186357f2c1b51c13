//! A machine: one KVM VM with its guest RAM, vCPUs, device buses and vCPU threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::VmFd;

use crate::bus::{Bus, BusDevice, Route};
use crate::config::MachineConfig;
use crate::devices::debug_console::ConsoleOutput;
use crate::error::{Error, Result};
use crate::exit::{DeviceAccess, Outcome};
use crate::kick;
use crate::kvm::KvmHost;
use crate::mailbox::{Mailbox, ReplyError};
use crate::memory::GuestRam;
use crate::runner;
use crate::stats::{StatsSnapshot, VcpuStats};
use crate::vcpu::Vcpu;

/// Where the identity-map page and TSS live for real-mode emulation on Intel hosts: just
/// below the BIOS area at the top of the 32-bit space, as QEMU and Firecracker place them.
const TSS_ADDR: usize = 0xfffb_d000;

/// Receives what the vCPU threads cannot settle in Rust.
///
/// The methods are called on vCPU threads and must not block: they hand the event over to
/// whoever answers it (the Node binding queues it to the JS thread).
pub trait ExitHandler: Send + Sync {
    /// A user device must answer `access`; answer with [`Machine::reply`] or
    /// [`Machine::fail`] for vCPU `vcpu`. The vCPU waits until then.
    fn on_access(&self, vcpu: u32, access: &DeviceAccess);
    /// Every running vCPU has stopped at a pause point.
    fn on_paused(&self);
    /// The run ended; no further calls follow.
    fn on_end(&self, outcome: &Outcome);
}

/// What to do with an access to a port or address no device claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhandledPolicy {
    /// Stop the machine with an `UNHANDLED_EXIT` error naming the exit, address and RIP.
    Error,
    /// Reads return all-ones and writes are dropped, as on a bus with nothing on it.
    Ignore,
}

/// Run-time behaviour of a machine.
#[derive(Debug, Clone, Copy)]
pub struct MachineOptions {
    /// How long a vCPU spins waiting for a user device's answer before it sleeps.
    pub handoff_spin: Duration,
    /// What to do with unclaimed port and MMIO accesses.
    pub unhandled: UnhandledPolicy,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            handoff_spin: Duration::from_micros(200),
            unhandled: UnhandledPolicy::Error,
        }
    }
}

/// The lifecycle state of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Configured, not started: registers and memory may be set up.
    Created,
    /// vCPU threads are running.
    Running,
    /// A pause was asked for (every vCPU stops at its next pause point).
    Paused,
    /// The run ended; the outcome is known.
    Ended,
    /// Resources are released.
    Closed,
}

impl State {
    /// The state's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Ended => "ended",
            State::Closed => "closed",
        }
    }
}

/// State shared between the machine's owner and its vCPU threads.
pub(crate) struct Shared {
    pub(crate) ports: RwLock<Bus>,
    pub(crate) mmio: RwLock<Bus>,
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) stats: Vec<VcpuStats>,
    pub(crate) stop: AtomicBool,
    pub(crate) pause: AtomicBool,
    pub(crate) control: Mutex<Control>,
    pub(crate) changed: Condvar,
    pub(crate) options: MachineOptions,
}

pub(crate) struct Control {
    pub(crate) state: State,
    pub(crate) live: u32,
    pub(crate) parked: u32,
    pub(crate) outcome: Option<Outcome>,
    pub(crate) handler: Option<Arc<dyn ExitHandler>>,
}

impl Shared {
    pub(crate) fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the first terminal outcome and asks every vCPU to stop.
    pub(crate) fn end_with(&self, outcome: Outcome) {
        let mut c = self.control();
        c.outcome.get_or_insert(outcome);
        drop(c);
        self.stop.store(true, Ordering::Release);
        self.changed.notify_all();
    }
}

/// A virtual machine.
pub struct Machine {
    shared: Arc<Shared>,
    ram: Arc<GuestRam>,
    vcpus: Vec<Arc<Mutex<Vcpu>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    vcpu_mmap_size: usize,
    // Dropped last: the VM fd outlives the vCPUs and memory slots that refer to it.
    vm: VmFd,
    host: KvmHost,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("vcpus", &self.vcpus.len())
            .field("state", &self.state())
            .finish()
    }
}

impl Machine {
    /// Creates a VM on `host` with the memory and vCPUs of `config`.
    pub fn new(host: KvmHost, config: &MachineConfig, options: MachineOptions) -> Result<Self> {
        let info = host.info()?;
        let regions = config.validate(&info)?;
        let vm = host
            .kvm()
            .create_vm()
            .map_err(Error::kvm("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDR)
            .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
        let ram = GuestRam::new(&regions)?;
        ram.register(&vm)?;
        let vcpus = (0..config.vcpus)
            .map(|i| Vcpu::new(host.kvm(), &vm, i).map(|v| Arc::new(Mutex::new(v))))
            .collect::<Result<Vec<_>>>()?;
        let n = vcpus.len();
        Ok(Machine {
            shared: Arc::new(Shared {
                ports: RwLock::new(Bus::ports()),
                mmio: RwLock::new(Bus::mmio()),
                mailboxes: (0..n).map(|_| Mailbox::default()).collect(),
                stats: (0..n).map(|_| VcpuStats::default()).collect(),
                stop: AtomicBool::new(false),
                pause: AtomicBool::new(false),
                control: Mutex::new(Control {
                    state: State::Created,
                    live: 0,
                    parked: 0,
                    outcome: None,
                    handler: None,
                }),
                changed: Condvar::new(),
                options,
            }),
            ram: Arc::new(ram),
            vcpus,
            threads: Mutex::new(Vec::new()),
            vcpu_mmap_size: info.vcpu_mmap_size,
            vm,
            host,
        })
    }

    /// Guest RAM.
    pub fn ram(&self) -> &Arc<GuestRam> {
        &self.ram
    }

    /// The KVM VM, for platform setup such as an in-kernel irqchip.
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// The host's KVM.
    pub fn host(&self) -> &KvmHost {
        &self.host
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpus.len() as u32
    }

    /// The current lifecycle state.
    pub fn state(&self) -> State {
        self.shared.control().state
    }

    /// The outcome, once the run has ended.
    pub fn outcome(&self) -> Option<Outcome> {
        self.shared.control().outcome.clone()
    }

    /// Runs `f` on vCPU `index` while it is not inside `KVM_RUN`: before start, while paused,
    /// while it waits for a device answer, or after the run.
    pub fn with_vcpu<T>(&self, index: u32, f: impl FnOnce(&Vcpu) -> Result<T>) -> Result<T> {
        let vcpu = self.vcpus.get(index as usize).ok_or(Error::NoSuchVcpu {
            index,
            count: self.vcpu_count(),
        })?;
        let guard = vcpu.try_lock().map_err(|_| Error::InvalidState {
            op: "access vCPU state",
            state: "running that vCPU (pause the machine or use an exit handler)",
        })?;
        f(&guard)
    }

    /// Registers a Rust device on `len` ports from `base`.
    pub fn add_port_device(
        &self,
        base: u16,
        len: u16,
        name: &str,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<()> {
        self.bus(&self.shared.ports)
            .insert(base.into(), len.into(), name, Route::BuiltIn(device))
    }

    /// Registers a Rust device on the MMIO range `base..base+len`.
    pub fn add_mmio_device(
        &self,
        base: u64,
        len: u64,
        name: &str,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<()> {
        self.check_mmio(base, len)?;
        self.bus(&self.shared.mmio)
            .insert(base, len, name, Route::BuiltIn(device))
    }

    /// Routes `len` ports from `base` to user device `id`.
    pub fn add_user_port_range(&self, base: u64, len: u64, name: &str, id: u32) -> Result<()> {
        self.bus(&self.shared.ports)
            .insert(base, len, name, Route::User { device: id })
    }

    /// Routes the MMIO range `base..base+len` to user device `id`.
    pub fn add_user_mmio_range(&self, base: u64, len: u64, name: &str, id: u32) -> Result<()> {
        self.check_mmio(base, len)?;
        self.bus(&self.shared.mmio)
            .insert(base, len, name, Route::User { device: id })
    }

    /// Removes the port device whose range starts at `base`.
    pub fn remove_port_range(&self, base: u64) -> bool {
        self.bus(&self.shared.ports).remove(base)
    }

    /// Removes the MMIO device whose range starts at `base`.
    pub fn remove_mmio_range(&self, base: u64) -> bool {
        self.bus(&self.shared.mmio).remove(base)
    }

    fn bus<'a>(&self, bus: &'a RwLock<Bus>) -> std::sync::RwLockWriteGuard<'a, Bus> {
        bus.write().unwrap_or_else(|e| e.into_inner())
    }

    /// MMIO exits only happen outside guest RAM: a device over RAM would never be reached.
    fn check_mmio(&self, base: u64, len: u64) -> Result<()> {
        let end = base.saturating_add(len);
        match self
            .ram
            .regions()
            .into_iter()
            .find(|r| base < r.guest_addr + r.size && r.guest_addr < end)
        {
            Some(r) => Err(Error::BusRange {
                space: "mmio",
                start: base,
                end,
                message: format!(
                    "it overlaps guest RAM at {:#x}..{:#x}, where accesses never exit",
                    r.guest_addr,
                    r.guest_addr + r.size
                ),
            }),
            None => Ok(()),
        }
    }

    /// Starts one thread per vCPU. `handler` answers user-device accesses and learns the end.
    pub fn start(&self, handler: Arc<dyn ExitHandler>) -> Result<()> {
        kick::install()?;
        let mut c = self.shared.control();
        if c.state != State::Created {
            return Err(Error::InvalidState {
                op: "start",
                state: c.state.name(),
            });
        }
        c.handler = Some(handler);
        c.state = State::Running;
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            let ctx = runner::VcpuThread {
                index: i as u32,
                vcpu: Arc::clone(vcpu),
                shared: Arc::clone(&self.shared),
                ram: Arc::clone(&self.ram),
                vcpu_mmap_size: self.vcpu_mmap_size,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("kvmkit-vcpu{i}"))
                .spawn(move || runner::run(ctx));
            match spawned {
                Ok(t) => {
                    c.live += 1;
                    threads.push(t);
                }
                Err(e) => {
                    drop(c);
                    self.shared.end_with(Outcome::Stopped);
                    self.kick_all(&threads);
                    return Err(Error::Thread(e));
                }
            }
        }
        Ok(())
    }

    /// Asks every vCPU to pause; [`ExitHandler::on_paused`] follows once all have.
    pub fn pause(&self) -> Result<()> {
        let mut c = self.shared.control();
        if c.state != State::Running {
            return Err(Error::InvalidState {
                op: "pause",
                state: c.state.name(),
            });
        }
        c.state = State::Paused;
        self.shared.pause.store(true, Ordering::Release);
        drop(c);
        self.kick_all(&self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(())
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) -> Result<()> {
        let mut c = self.shared.control();
        if c.state != State::Paused {
            return Err(Error::InvalidState {
                op: "resume",
                state: c.state.name(),
            });
        }
        c.state = State::Running;
        self.shared.pause.store(false, Ordering::Release);
        drop(c);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Stops the run: every vCPU leaves its loop and the outcome becomes
    /// [`Outcome::Stopped`] unless the guest ended first. Does not wait.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        for mb in &self.shared.mailboxes {
            mb.wake();
        }
        self.kick_all(&self.threads.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Stops the run and waits for every vCPU thread to finish. Idempotent.
    pub fn close(&self) {
        self.stop();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        let mut c = self.shared.control();
        c.state = State::Closed;
        c.handler = None;
    }

    fn kick_all(&self, threads: &[JoinHandle<()>]) {
        for t in threads {
            kick::kick(t);
        }
    }

    /// Answers the access vCPU `vcpu` is waiting on (the bytes read; empty for writes).
    pub fn reply(&self, vcpu: u32, bytes: &[u8]) -> Result<()> {
        self.mailbox(vcpu)?
            .reply(bytes)
            .map_err(|e| reply_error(vcpu, e))
    }

    /// Fails the access vCPU `vcpu` is waiting on: the machine stops with `message`.
    pub fn fail(&self, vcpu: u32, message: String) -> Result<()> {
        self.mailbox(vcpu)?
            .fail(message)
            .map_err(|e| reply_error(vcpu, e))
    }

    fn mailbox(&self, vcpu: u32) -> Result<&Mailbox> {
        self.shared
            .mailboxes
            .get(vcpu as usize)
            .ok_or(Error::NoSuchVcpu {
                index: vcpu,
                count: self.vcpu_count(),
            })
    }

    /// The counters of vCPU `index`.
    pub fn stats(&self, index: u32) -> Result<StatsSnapshot> {
        self.shared
            .stats
            .get(index as usize)
            .map(VcpuStats::snapshot)
            .ok_or(Error::NoSuchVcpu {
                index,
                count: self.vcpu_count(),
            })
    }

    /// Adds the built-in debug console at `port` and returns its output buffer.
    pub fn add_debug_console(&self, port: u16) -> Result<Arc<Mutex<ConsoleOutput>>> {
        let console = crate::devices::DebugConsole::default();
        let output = console.output();
        self.add_port_device(port, 1, "debug-console", Arc::new(Mutex::new(console)))?;
        Ok(output)
    }
}

fn reply_error(vcpu: u32, e: ReplyError) -> Error {
    match e {
        ReplyError::NotWaiting => Error::NotWaiting { vcpu },
        ReplyError::TooLong(len) => Error::ReplyTooLong { len },
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.close();
    }
}
