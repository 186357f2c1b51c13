//! A machine: one KVM VM with its guest RAM, vCPUs, device buses and vCPU threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{Bus, Route, Space};
use crate::config::MachineConfig;
use crate::devices::acpi_sleep::ACPI_SLEEP_PORTS;
use crate::devices::debug_console::ConsoleOutput;
use crate::devices::i8042::I8042_PORT;
use crate::devices::rtc::RTC_PORT;
use crate::devices::serial::SERIAL_PORTS;
use crate::devices::{AcpiSleep, SerialDevice};
use crate::error::{Error, Result};
use crate::exit::{DeviceAccess, Outcome};
use crate::irq::IoEvent;
use crate::kick;
use crate::kvm::KvmHost;
use crate::loader::flat::{self, FlatBoot};
use crate::loader::linux::{self, LinuxBoot, LoadedKernel};
use crate::loader::multiboot::{self, LoadedMultiboot, MultibootBoot};
use crate::mailbox::{Mailbox, ReplyError};
use crate::memory::{GuestRam, MemoryOptions};
use crate::posted::{PostedQueue, PostedWrite};
use crate::runner::{self, lock};
pub use crate::runner::{InlineAnswer, InlineVcpu};
use crate::stats::{StatsSnapshot, VcpuStats};
use crate::vcpu::Vcpu;
use crate::x86::acpi::{self, Platform, SerialPortInfo};
use crate::x86::{bios, mptable};

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
    /// Posted writes are waiting: take them with [`Machine::take_posted`]. Called when the
    /// queue goes from empty to non-empty, not for every write.
    fn on_posted(&self);
    /// A serial port's output buffer stopped being empty: take it with
    /// [`SerialHandle::take_output`]. Called when the buffer goes from empty to non-empty.
    fn on_output(&self, device: u32);
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
#[derive(Debug, Clone)]
pub struct MachineOptions {
    /// How long a vCPU spins waiting for a user device's answer before it sleeps.
    pub handoff_spin: Duration,
    /// What to do with unclaimed port and MMIO accesses.
    pub unhandled: UnhandledPolicy,
    /// Create the in-kernel interrupt controllers (PIC, IOAPIC, LAPICs) and PIT. With them,
    /// `hlt` waits for an interrupt inside KVM instead of exiting.
    pub irqchip: bool,
    /// How guest RAM is backed and mapped.
    pub memory: MemoryOptions,
    /// Finish in kvmkit the instructions a software-assisted KVM's emulator gives up on,
    /// where kvmkit can (`int3`, by injecting #BP past it; `fwait`; `ldmxcsr`/`stmxcsr`).
    /// Harmless on hardware virtualization, where those instructions never exit.
    pub emulation_fallbacks: bool,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            handoff_spin: Duration::from_micros(200),
            unhandled: UnhandledPolicy::Error,
            irqchip: false,
            memory: MemoryOptions::default(),
            emulation_fallbacks: true,
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
    pub(crate) posted: PostedQueue,
    /// The thread running each vCPU's loop right now, for kicks.
    pub(crate) threads: Mutex<Vec<Option<libc::pthread_t>>>,
    pub(crate) stop: AtomicBool,
    pub(crate) pause: AtomicBool,
    /// A thread is in [`Machine::poll_access`]: vCPUs leave their accesses to it.
    pub(crate) js_polling: AtomicBool,
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
        self.stop_all();
    }

    /// Asks every vCPU to leave its loop: the flag, the condition variable and mailboxes
    /// for those waiting, a kick for those inside `KVM_RUN` (such as an application
    /// processor still waiting for its SIPI when the first vCPU powers off).
    pub(crate) fn stop_all(&self) {
        self.stop.store(true, Ordering::Release);
        self.changed.notify_all();
        for mb in &self.mailboxes {
            mb.wake();
        }
        self.kick_all();
    }

    /// Interrupts every vCPU that is inside `KVM_RUN`, but the calling one.
    pub(crate) fn kick_all(&self) {
        // Threads leave the registry (under this lock) before they exit, so each one kicked
        // here is alive; a vCPU thread calling this is outside KVM_RUN.
        let me = kick::current_thread();
        let threads = lock(&self.threads);
        for &t in threads.iter().flatten() {
            // SAFETY: pthread_equal only compares two thread handles.
            if unsafe { libc::pthread_equal(t, me) } == 0 {
                kick::kick(t);
            }
        }
    }
}

/// A virtual machine.
pub struct Machine {
    shared: Arc<Shared>,
    ram: Arc<GuestRam>,
    vcpus: Vec<Arc<Mutex<Vcpu>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    vcpu_mmap_size: usize,
    /// The UARTs added with [`Machine::add_serial`], for the ACPI tables.
    serial_ports: Mutex<Vec<SerialPortInfo>>,
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
        let ram = GuestRam::with_options(&regions, &options.memory)?;
        ram.register(&vm)?;
        if options.irqchip {
            crate::irq::create_irqchip(&vm)?;
        }
        let vcpus = (0..config.vcpus)
            .map(|i| Vcpu::new(&host, &vm, i, config.vcpus).map(|v| Arc::new(Mutex::new(v))))
            .collect::<Result<Vec<_>>>()?;
        let n = vcpus.len();
        Ok(Machine {
            shared: Arc::new(Shared {
                ports: RwLock::new(Bus::ports()),
                mmio: RwLock::new(Bus::mmio()),
                mailboxes: (0..n).map(|_| Mailbox::default()).collect(),
                stats: (0..n).map(|_| VcpuStats::default()).collect(),
                posted: PostedQueue::default(),
                threads: Mutex::new(vec![None; n]),
                stop: AtomicBool::new(false),
                pause: AtomicBool::new(false),
                js_polling: AtomicBool::new(false),
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
            serial_ports: Mutex::new(Vec::new()),
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

    /// Routes `space` addresses `base..base+len` to `route` under `name`. MMIO ranges must
    /// lie outside guest RAM; ranges may not overlap.
    pub fn add_device(
        &self,
        space: Space,
        base: u64,
        len: u64,
        name: &str,
        route: Route,
    ) -> Result<()> {
        if space == Space::Mmio {
            self.check_mmio(base, len)?;
        }
        self.bus(space).insert(base, len, name, route)
    }

    /// Removes the device whose `space` range starts at `base`; returns whether there was one.
    pub fn remove_device(&self, space: Space, base: u64) -> bool {
        self.bus(space).remove(base)
    }

    fn bus(&self, space: Space) -> std::sync::RwLockWriteGuard<'_, Bus> {
        match space {
            Space::Port => &self.shared.ports,
            Space::Mmio => &self.shared.mmio,
        }
        .write()
        .unwrap_or_else(|e| e.into_inner())
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

    /// Moves a created machine to running with `handler`; returns the loop contexts.
    fn begin(&self, handler: Arc<dyn ExitHandler>) -> Result<Vec<runner::VcpuThread>> {
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
        c.live = self.vcpu_count();
        Ok(self
            .vcpus
            .iter()
            .enumerate()
            .map(|(i, vcpu)| runner::VcpuThread {
                index: i as u32,
                vcpu: Arc::clone(vcpu),
                shared: Arc::clone(&self.shared),
                ram: Arc::clone(&self.ram),
                vcpu_mmap_size: self.vcpu_mmap_size,
            })
            .collect())
    }

    /// Starts one thread per vCPU. `handler` answers user-device accesses and learns the end.
    pub fn start(&self, handler: Arc<dyn ExitHandler>) -> Result<()> {
        let contexts = self.begin(handler)?;
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for ctx in contexts {
            let i = ctx.index;
            let spawned = std::thread::Builder::new()
                .name(format!("kvmkit-vcpu{i}"))
                .spawn(move || runner::run_threaded(ctx));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The contexts not yet moved into a thread were dropped: account for them.
                    let mut c = self.shared.control();
                    c.live = c
                        .live
                        .saturating_sub(self.vcpu_count() - threads.len() as u32);
                    drop(c);
                    drop(threads);
                    self.shared.end_with(Outcome::Stopped);
                    self.stop();
                    return Err(Error::Thread(e));
                }
            }
        }
        Ok(())
    }

    /// Starts the machine with every vCPU driven by the caller: each returned
    /// [`InlineVcpu`] runs its guest on whatever thread calls its `step`, and returns the
    /// accesses to user devices for that thread to answer directly.
    pub fn start_inline(&self, handler: Arc<dyn ExitHandler>) -> Result<Vec<InlineVcpu>> {
        Ok(self
            .begin(handler)?
            .into_iter()
            .map(InlineVcpu::new)
            .collect())
    }

    /// Moves from state `from` to `to` for `op`, or fails naming the current state.
    fn transition(&self, op: &'static str, from: State, to: State) -> Result<()> {
        let mut c = self.shared.control();
        if c.state != from {
            return Err(Error::InvalidState {
                op,
                state: c.state.name(),
            });
        }
        c.state = to;
        self.shared
            .pause
            .store(to == State::Paused, Ordering::Release);
        Ok(())
    }

    /// Asks every vCPU to pause; [`ExitHandler::on_paused`] follows once all have.
    pub fn pause(&self) -> Result<()> {
        self.transition("pause", State::Running, State::Paused)?;
        self.shared.kick_all();
        Ok(())
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) -> Result<()> {
        self.transition("resume", State::Paused, State::Running)?;
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Stops the run: every vCPU leaves its loop and the outcome becomes
    /// [`Outcome::Stopped`] unless the guest ended first. Does not wait.
    pub fn stop(&self) {
        self.shared.stop_all();
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

    /// Moves every queued posted write into `out`, oldest first.
    pub fn take_posted(&self, out: &mut Vec<PostedWrite>) {
        self.shared.posted.drain_into(out);
    }

    /// Stops the machine with a `HANDLER_FAILED` error for a write that no vCPU waits on
    /// (a posted write).
    pub fn fail_posted(&self, write: &PostedWrite, message: String) {
        self.shared
            .end_with(Outcome::Error(crate::exit::MachineError {
                code: "HANDLER_FAILED",
                message: format!(
                    "vCPU {}: posted write to {:#x}: {message}",
                    write.vcpu, write.addr
                ),
                vcpu: write.vcpu,
                exit: write.kind,
                registers: None,
                instruction: Vec::new(),
            }));
        self.stop();
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

    /// Claims the access vCPU `vcpu` posted with number `seq` (see [`DeviceAccess::seq`]);
    /// false if [`Machine::poll_access`] took it already or it is gone.
    pub fn claim(&self, vcpu: u32, seq: u64) -> Result<bool> {
        Ok(self.mailbox(vcpu)?.claim(Some(seq)))
    }

    /// Waits up to `spin`, spinning, for any vCPU to post an access to a user device; claims
    /// it and passes it to `take` with the vCPU's index. Returns false if none came.
    ///
    /// While a thread polls, vCPUs skip [`ExitHandler::on_access`]: the thread answering
    /// exits stays awake while they stream in, instead of being woken for each one.
    pub fn poll_access(&self, spin: Duration, take: impl FnOnce(u32, &DeviceAccess)) -> bool {
        let shared = &self.shared;
        let claim_any = || shared.mailboxes.iter().position(|m| m.claim(None));
        shared.js_polling.store(true, Ordering::SeqCst);
        let start = std::time::Instant::now();
        let mut spins = 0u32;
        let mut found = None;
        while !shared.stop.load(Ordering::Relaxed) {
            found = claim_any();
            spins = spins.wrapping_add(1);
            if found.is_some() || (spins.is_multiple_of(64) && start.elapsed() >= spin) {
                break;
            }
            std::hint::spin_loop();
        }
        shared.js_polling.store(false, Ordering::SeqCst);
        // A vCPU that saw the flag just before it dropped left its access here: take it.
        match found.or_else(claim_any) {
            Some(i) => {
                shared.mailboxes[i].read(|a| take(i as u32, a));
                true
            }
            None => false,
        }
    }

    /// The bytes of the write vCPU `vcpu` posted and waits on (for string I/O).
    pub fn posted_access_data(&self, vcpu: u32) -> Result<Vec<u8>> {
        Ok(self.mailbox(vcpu)?.read(|a| a.data.clone()))
    }

    /// Whether posted writes are waiting to be taken.
    pub fn has_posted(&self) -> bool {
        !self.shared.posted.is_empty()
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

    /// Raises or lowers interrupt line `irq` (needs [`MachineOptions::irqchip`]).
    pub fn set_irq_line(&self, irq: u32, level: bool) -> Result<()> {
        crate::irq::set_irq_line(&self.vm, irq, level)
    }

    /// Sends an MSI (needs [`MachineOptions::irqchip`]); returns whether it was delivered.
    pub fn signal_msi(&self, address: u64, data: u32) -> Result<bool> {
        crate::irq::signal_msi(&self.vm, address, data)
    }

    /// An eventfd that raises `gsi` in the guest when written (needs
    /// [`MachineOptions::irqchip`]).
    pub fn register_irqfd(&self, gsi: u32) -> Result<EventFd> {
        crate::irq::register_irqfd(&self.vm, gsi)
    }

    /// An interrupt line for a Rust device to raise `gsi` with (needs
    /// [`MachineOptions::irqchip`]).
    pub fn irq_line(&self, gsi: u32) -> Result<crate::irq::IrqLine> {
        crate::irq::IrqLine::new(&self.vm, gsi)
    }

    /// Detaches an irqfd from `gsi`.
    pub fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        crate::irq::unregister_irqfd(&self.vm, fd, gsi)
    }

    /// An eventfd KVM signals, without exiting, on the guest writes `event` describes.
    pub fn register_ioeventfd(&self, event: &IoEvent) -> Result<EventFd> {
        crate::irq::register_ioeventfd(&self.vm, event)
    }

    /// Detaches an ioeventfd registered for `event`.
    pub fn unregister_ioeventfd(&self, fd: &EventFd, event: &IoEvent) -> Result<()> {
        crate::irq::unregister_ioeventfd(&self.vm, fd, event)
    }

    /// Adds a 16550A UART (the Rust [`SerialDevice`]) on 8 ports from `port`, raising `irq`
    /// if given (needs [`MachineOptions::irqchip`]). [`ExitHandler::on_output`] reports its
    /// output under `id`.
    pub fn add_serial(&self, port: u16, irq: Option<u32>, id: u32) -> Result<SerialHandle> {
        let line = irq.map(|gsi| self.irq_line(gsi)).transpose()?;
        let output = Arc::new(Mutex::new(ConsoleOutput::default()));
        let shared = Arc::downgrade(&self.shared);
        let notify = Box::new(move || {
            let handler = shared.upgrade().and_then(|s| s.control().handler.clone());
            if let Some(h) = handler {
                h.on_output(id);
            }
        });
        let device = Arc::new(Mutex::new(SerialDevice::new(
            line,
            Arc::clone(&output),
            notify,
        )));
        let route = Route::BuiltIn(Arc::clone(&device) as Arc<Mutex<dyn crate::bus::BusDevice>>);
        self.add_device(
            Space::Port,
            port.into(),
            SERIAL_PORTS.into(),
            "serial",
            route,
        )?;
        lock(&self.serial_ports).push(SerialPortInfo { port, irq });
        Ok(SerialHandle { device, output })
    }

    /// Loads a Linux kernel (and initrd, command line) and sets vCPU 0 up to enter it, with
    /// the platform described to it: ACPI tables (the vCPUs, the IOAPIC, the UARTs added so
    /// far, the i8042 and the CMOS clock if there are, and the sleep registers through which the kernel
    /// powers off, served by [`AcpiSleep`]) and an MP table.
    pub fn load_linux(&self, boot: &LinuxBoot<'_>) -> Result<LoadedKernel> {
        let platform = self.platform();
        // Checked before anything is written.
        let tables = acpi::tables(&platform)?;
        let mptable = mptable::table(platform.vcpus)?;
        let loaded = self.with_vcpu(0, |v| linux::load(&self.ram, v, boot, acpi::RSDP_ADDR))?;
        self.install_acpi(tables)?;
        self.ram.write(mptable::MPTABLE_ADDR, &mptable)?;
        Ok(loaded)
    }

    /// What the ACPI tables describe: the vCPUs, the UARTs added so far, the i8042 and the
    /// CMOS clock if there are.
    fn platform(&self) -> Platform {
        let ports = self.shared.ports.read().unwrap_or_else(|e| e.into_inner());
        Platform {
            vcpus: self.vcpu_count(),
            serial: lock(&self.serial_ports).clone(),
            i8042: ports.starts_named("i8042").contains(&I8042_PORT.into()),
            rtc: ports.starts_named("rtc").contains(&RTC_PORT.into()),
        }
    }

    /// Writes the ACPI tables and adds the sleep registers they name, served by
    /// [`AcpiSleep`].
    fn install_acpi(&self, tables: Vec<(u64, Vec<u8>)>) -> Result<()> {
        for (addr, data) in tables {
            self.ram.write(addr, &data)?;
        }
        let sleep = Route::BuiltIn(Arc::new(Mutex::new(AcpiSleep)));
        let port = acpi::SLEEP_CONTROL_PORT.into();
        if !self.bus(Space::Port).starts_named("acpi").contains(&port) {
            self.add_device(Space::Port, port, ACPI_SLEEP_PORTS.into(), "acpi", sleep)?;
        }
        Ok(())
    }

    /// Loads a Multiboot (v1) kernel with its command line and modules, and sets vCPU 0 up
    /// to enter it, in the machine a PC BIOS leaves, as under QEMU's `-kernel`: a real-mode
    /// interrupt table, the PICs programmed with the BIOS's vectors (with the in-kernel
    /// irqchip), and ACPI tables (see [`bios`]).
    pub fn load_multiboot(&self, boot: &MultibootBoot<'_>) -> Result<LoadedMultiboot> {
        let tables = acpi::tables(&self.platform())?;
        let loaded = self.with_vcpu(0, |v| multiboot::load(&self.ram, v, boot))?;
        bios::write_ivt(&self.ram)?;
        if self.shared.options.irqchip {
            bios::program_pics(&self.vm)?;
        }
        self.install_acpi(tables)?;
        Ok(loaded)
    }

    /// Loads a flat binary and sets vCPU 0 up to enter it; returns where it ends.
    pub fn load_flat(&self, boot: &FlatBoot<'_>) -> Result<u64> {
        self.with_vcpu(0, |v| flat::load(&self.ram, v, boot))
    }

    /// Adds the built-in debug console at `port` and returns its output buffer.
    pub fn add_debug_console(&self, port: u16) -> Result<Arc<Mutex<ConsoleOutput>>> {
        let console = crate::devices::DebugConsole::default();
        let output = console.output();
        let route = Route::BuiltIn(Arc::new(Mutex::new(console)));
        self.add_device(Space::Port, port.into(), 1, "debug-console", route)?;
        Ok(output)
    }
}

/// The host's side of a serial port.
#[derive(Debug, Clone)]
pub struct SerialHandle {
    device: Arc<Mutex<SerialDevice>>,
    output: Arc<Mutex<ConsoleOutput>>,
}

impl SerialHandle {
    /// Queues `input` for the guest; returns how many bytes fit in the receive FIFO (the
    /// rest must be offered again once the guest has read some).
    pub fn input(&self, input: &[u8]) -> Result<usize> {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue(input)
    }

    /// Takes what the guest transmitted so far.
    pub fn take_output(&self) -> Vec<u8> {
        self.output.lock().unwrap_or_else(|e| e.into_inner()).take()
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
