//! A machine: one KVM VM with its guest RAM, vCPUs, device buses and vCPU threads.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{Bus, Route, Space};
use crate::config::MachineConfig;
use crate::devices::acpi_sleep::ACPI_SLEEP_PORTS;
use crate::devices::debug_console::ConsoleOutput;
use crate::devices::i8042::I8042_PORT;
use crate::devices::serial::SERIAL_PORTS;
use crate::devices::{AcpiSleep, SerialDevice};
use crate::error::{Error, Result};
use crate::exit::{ExitKind, MachineError, Outcome};
pub use crate::handler::ExitHandler;
use crate::handoff::Handoff;
use crate::irq::IoEvent;
use crate::kick;
use crate::kvm::KvmHost;
pub use crate::lifecycle::State;
use crate::loader::flat::{self, FlatBoot};
use crate::loader::linux::{self, LinuxBoot, LoadedKernel};
use crate::loader::multiboot::{self, LoadedMultiboot, MultibootBoot};
use crate::memory::GuestRam;
pub use crate::options::{MachineOptions, UnhandledPolicy};
pub use crate::run::inline::{InlineAnswer, InlineVcpu};
use crate::run::threaded::run_threaded;
use crate::run::{Shared, VcpuContext};
use crate::stats::{StatsSnapshot, VcpuStats};
use crate::sync::{LockExt, RwLockExt};
use crate::vcpu::Vcpu;
use crate::x86::acpi::{self, Platform, SerialPortInfo};
use crate::x86::mptable;

/// Where the identity-map page and TSS live for real-mode emulation on Intel hosts: just
/// below the BIOS area at the top of the 32-bit space, as QEMU and Firecracker place them.
const TSS_ADDR: usize = 0xfffb_d000;

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
        Ok(Machine {
            shared: Arc::new(Shared::new(vcpus.len(), options)),
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
        self.shared.lifecycle.state()
    }

    /// The outcome, once the run has ended.
    pub fn outcome(&self) -> Option<Outcome> {
        self.shared.lifecycle.outcome()
    }

    /// The hand-off through which user devices take and answer the guest's accesses.
    pub fn handoff(&self) -> &Arc<Handoff> {
        &self.shared.handoff
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
        .write_or_recover()
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
    fn begin(&self, handler: Arc<dyn ExitHandler>) -> Result<Vec<VcpuContext>> {
        kick::install()?;
        self.shared.lifecycle.begin(handler, self.vcpu_count())?;
        Ok(self
            .vcpus
            .iter()
            .enumerate()
            .map(|(i, vcpu)| VcpuContext {
                index: i as u32,
                vcpu: Arc::clone(vcpu),
                shared: Arc::clone(&self.shared),
                ram: Arc::clone(&self.ram),
                vcpu_mmap_size: self.vcpu_mmap_size,
            })
            .collect())
    }

    /// Starts one thread per vCPU. `handler` hears of user-device accesses, posted writes,
    /// serial output, pauses and the end.
    ///
    /// # Errors
    ///
    /// `INVALID_STATE` unless the machine was never started; `THREAD_FAILED` if the kick
    /// signal or a vCPU thread cannot be set up (the run then ends as stopped).
    pub fn start(&self, handler: Arc<dyn ExitHandler>) -> Result<()> {
        let contexts = self.begin(handler)?;
        let mut threads = self.threads.lock_or_recover();
        let mut contexts = contexts.into_iter();
        for ctx in contexts.by_ref() {
            let i = ctx.index;
            let spawned = std::thread::Builder::new()
                .name(format!("kvmkit-vcpu{i}"))
                .spawn(move || run_threaded(ctx));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    drop(threads);
                    self.shared.end_with(Outcome::Stopped);
                    // The vCPU whose thread failed and those not yet spawned never run.
                    self.shared.lifecycle.leave();
                    for _ in contexts {
                        self.shared.lifecycle.leave();
                    }
                    return Err(Error::Thread(e));
                }
            }
        }
        Ok(())
    }

    /// Starts the machine with every vCPU driven by the caller: each returned
    /// [`InlineVcpu`] runs its guest on whatever thread calls its `step`, and returns the
    /// accesses to user devices for that thread to answer directly.
    ///
    /// # Errors
    ///
    /// As [`Machine::start`].
    pub fn start_inline(&self, handler: Arc<dyn ExitHandler>) -> Result<Vec<InlineVcpu>> {
        Ok(self
            .begin(handler)?
            .into_iter()
            .map(InlineVcpu::new)
            .collect())
    }

    /// Asks every vCPU to pause; [`ExitHandler::on_paused`] follows once all have. A vCPU
    /// pauses after the access it was in completes, so its registers are the guest's.
    ///
    /// # Errors
    ///
    /// `INVALID_STATE` unless the machine is running.
    pub fn pause(&self) -> Result<()> {
        self.shared
            .lifecycle
            .transition("pause", State::Running, State::Paused)?;
        self.shared.kicks.kick_others();
        Ok(())
    }

    /// Lets paused vCPUs run again.
    ///
    /// # Errors
    ///
    /// `INVALID_STATE` unless the machine is paused.
    pub fn resume(&self) -> Result<()> {
        self.shared
            .lifecycle
            .transition("resume", State::Paused, State::Running)
    }

    /// Stops the run: every vCPU leaves its loop and the outcome becomes
    /// [`Outcome::Stopped`] unless the guest ended first. Does not wait.
    pub fn stop(&self) {
        self.shared.stop_all();
    }

    /// Stops the run and waits for every vCPU thread to finish. Idempotent.
    pub fn close(&self) {
        self.stop();
        let threads = std::mem::take(&mut *self.threads.lock_or_recover());
        for t in threads {
            let _ = t.join();
        }
        self.shared.lifecycle.close();
    }

    /// Stops the machine with a `HANDLER_FAILED` error for a `kind` write to `addr` that
    /// vCPU `vcpu` posted (no vCPU waits on it).
    pub fn fail_posted(&self, vcpu: u32, kind: ExitKind, addr: u64, message: String) {
        self.shared.end_with(Outcome::Error(MachineError {
            code: "HANDLER_FAILED",
            message: format!("vCPU {vcpu}: posted write to {addr:#x}: {message}"),
            vcpu,
            exit: kind,
            registers: None,
            instruction: Vec::new(),
        }));
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
            let handler = shared.upgrade().and_then(|s| s.lifecycle.handler());
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
        self.serial_ports
            .lock_or_recover()
            .push(SerialPortInfo { port, irq });
        Ok(SerialHandle { device, output })
    }

    /// Loads a Linux kernel (and initrd, command line) and sets vCPU 0 up to enter it, with
    /// the platform described to it: ACPI tables (the vCPUs, the IOAPIC, the UARTs added so
    /// far, the i8042 if there is one, and the sleep registers through which the kernel
    /// powers off, served by [`AcpiSleep`]) and an MP table.
    pub fn load_linux(&self, boot: &LinuxBoot<'_>) -> Result<LoadedKernel> {
        let platform = Platform {
            vcpus: self.vcpu_count(),
            serial: self.serial_ports.lock_or_recover().clone(),
            i8042: self
                .shared
                .ports
                .read_or_recover()
                .starts_named("i8042")
                .contains(&I8042_PORT.into()),
        };
        // Checked before anything is written.
        let tables = acpi::tables(&platform)?;
        let mptable = mptable::table(platform.vcpus)?;
        let loaded = self.with_vcpu(0, |v| linux::load(&self.ram, v, boot, acpi::RSDP_ADDR))?;
        for (addr, data) in tables {
            self.ram.write(addr, &data)?;
        }
        self.ram.write(mptable::MPTABLE_ADDR, &mptable)?;
        let sleep = Route::BuiltIn(Arc::new(Mutex::new(AcpiSleep)));
        let port = acpi::SLEEP_CONTROL_PORT.into();
        if !self.bus(Space::Port).starts_named("acpi").contains(&port) {
            self.add_device(Space::Port, port, ACPI_SLEEP_PORTS.into(), "acpi", sleep)?;
        }
        Ok(loaded)
    }

    /// Loads a Multiboot (v1) kernel with its command line and modules, and sets vCPU 0 up
    /// to enter it.
    pub fn load_multiboot(&self, boot: &MultibootBoot<'_>) -> Result<LoadedMultiboot> {
        self.with_vcpu(0, |v| multiboot::load(&self.ram, v, boot))
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
        self.device.lock_or_recover().enqueue(input)
    }

    /// Takes what the guest transmitted so far.
    pub fn take_output(&self) -> Vec<u8> {
        self.output.lock_or_recover().take()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.close();
    }
}
