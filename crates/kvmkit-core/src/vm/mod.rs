//! A machine: one KVM VM with its guest RAM, vCPUs, device buses and vCPU threads.
//!
//! - [`lifecycle`]: its states and every transition (start, pause, resume, stop, close, a
//!   vCPU's end), with one owner;
//! - [`handler`]: what the machine tells its owner ([`ExitHandler`]);
//! - [`options`]: what is chosen at creation;
//! - [`kick`]: getting a vCPU thread out of `KVM_RUN`;
//! - `run`: the vCPU run loops (and [`emulate`], the instructions KVM may leave unfinished).

pub mod handler;
pub mod kick;
pub mod lifecycle;
pub mod options;
pub(crate) mod run;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{BusChange, Route, Space};
use crate::config::MachineConfig;
use crate::devices::{DeviceSpec, HostSide};
use crate::error::{Error, Result};
use crate::exit::{ExitKind, MachineError, Outcome};
use crate::handoff::Handoff;
use crate::irq::IoEvent;
pub use handler::ExitHandler;

use crate::kvm::KvmHost;
use crate::loader::flat::{self, FlatBoot};
use crate::loader::linux::{self, LinuxBoot, LoadedKernel};
use crate::loader::multiboot::{self, LoadedMultiboot, MultibootBoot};
use crate::memory::GuestRam;
use crate::platform::{Inventory, Platform, VirtioMmioInfo};
use crate::resources::Resources;
use crate::sandbox::Sandbox;
use crate::stats::StatsSnapshot;
use crate::sync::LockExt;
use crate::vcpu::Vcpu;
use crate::virtio::mmio::{MmioTransport, NOTIFY_OFFSET, Slot, WINDOW};
use crate::virtio::worker::IoThread;
use crate::virtio::{Interrupt, VirtioDevice};
use crate::x86::{acpi, bios, layout, mptable};
pub use lifecycle::State;
pub use options::{MachineOptions, UnhandledPolicy};
pub use run::emulate;
pub use run::inline::{InlineAnswer, InlineVcpu};
use run::threaded::run_threaded;
use run::{Shared, VcpuContext};

/// A virtual machine.
pub struct Machine {
    shared: Arc<Shared>,
    ram: Arc<GuestRam>,
    vcpus: Vec<Arc<Mutex<Vcpu>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    vcpu_mmap_size: usize,
    /// The built-in devices attached, for the firmware tables.
    inventory: Mutex<Inventory>,
    /// MMIO windows and interrupt lines handed out or taken.
    resources: Mutex<Resources>,
    /// The thread serving virtio queues, started with the first virtio device.
    io: Mutex<Option<IoThread>>,
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
        vm.set_tss_address(layout::TSS_ADDR as usize)
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
            inventory: Mutex::new(Inventory::default()),
            resources: Mutex::new(Resources::new()),
            io: Mutex::new(None),
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
        self.bus(space).insert(base, len, name, route)?;
        if space == Space::Mmio {
            self.resources.lock_or_recover().reserve_mmio(base, len);
        }
        Ok(())
    }

    /// Removes the device whose `space` range starts at `base`; returns whether there was one.
    pub fn remove_device(&self, space: Space, base: u64) -> bool {
        let removed = self.bus(space).remove(base);
        if removed {
            self.inventory.lock_or_recover().remove(space, base);
            if space == Space::Mmio {
                self.resources.lock_or_recover().release_mmio(base);
            }
        }
        removed
    }

    /// A free page-aligned MMIO window of `len` bytes in the 32-bit hole, for a device to be
    /// added there; it stays taken until a device added at it is removed.
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` for a zero length, `BUS_RANGE` when the hole is full.
    pub fn allocate_mmio(&self, len: u64) -> Result<u64> {
        self.resources.lock_or_recover().allocate_mmio(len)
    }

    /// A free interrupt line (GSI 5 to 23) that no built-in device and no irqfd has taken.
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` when every one is taken.
    pub fn allocate_gsi(&self) -> Result<u32> {
        self.resources.lock_or_recover().allocate_gsi()
    }

    fn bus(&self, space: Space) -> BusChange<'_> {
        match space {
            Space::Port => &self.shared.ports,
            Space::Mmio => &self.shared.mmio,
        }
        .change()
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
        let filter = self.shared.options.sandbox.map(Sandbox::vcpu_filter);
        let filter = filter.transpose()?.map(Arc::new);
        let contexts = self.begin(handler)?;
        let mut threads = self.threads.lock_or_recover();
        let mut contexts = contexts.into_iter();
        for ctx in contexts.by_ref() {
            let i = ctx.index;
            let filter = filter.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("kvmkit-vcpu{i}"))
                .spawn(move || {
                    if let Some(filter) = filter {
                        crate::sandbox::confine_vcpu(&filter, &ctx);
                    }
                    run_threaded(ctx);
                });
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
        if self.shared.options.sandbox.is_some() {
            return Err(Error::config(
                "sandbox",
                "filters vCPU threads, and inline vCPUs run on the caller's thread: start the \
                 machine with its own vCPU threads, or without the sandbox",
            ));
        }
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
        // No vCPU notifies a queue any more: the I/O thread can go.
        drop(self.io.lock_or_recover().take());
        self.shared.lifecycle.close();
    }

    /// Ends the answering thread's streak of polls ([`Handoff::end_streak`]), ringing the
    /// access doorbell for an access posted while no ring was due.
    pub fn end_streak(&self) {
        if self.shared.handoff.end_streak()
            && let Some(handler) = self.shared.lifecycle.handler()
        {
            handler.on_access();
        }
    }

    /// Ends the answering thread's streak of posted-write takes
    /// ([`Handoff::end_posted_streak`]), ringing the posted doorbell for writes queued while
    /// no ring was due.
    pub fn end_posted_streak(&self) {
        if self.shared.handoff.end_posted_streak()
            && let Some(handler) = self.shared.lifecycle.handler()
        {
            handler.on_posted();
        }
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
            .map(|s| s.snapshot())
            .ok_or(Error::NoSuchVcpu {
                index,
                count: self.vcpu_count(),
            })
    }

    /// Raises or lowers interrupt line `irq` (needs [`MachineOptions::irqchip`]).
    pub fn set_irq_line(&self, irq: u32, level: bool) -> Result<()> {
        self.need_irqchip("raise an interrupt line")?;
        crate::irq::set_irq_line(&self.vm, irq, level)
    }

    /// Sends an MSI (needs [`MachineOptions::irqchip`]); returns whether it was delivered.
    pub fn signal_msi(&self, address: u64, data: u32) -> Result<bool> {
        self.need_irqchip("send an MSI")?;
        crate::irq::signal_msi(&self.vm, address, data)
    }

    /// An eventfd that raises `gsi` in the guest when written (needs
    /// [`MachineOptions::irqchip`]).
    pub fn register_irqfd(&self, gsi: u32) -> Result<EventFd> {
        self.need_irqchip("create an irqfd")?;
        let fd = crate::irq::register_irqfd(&self.vm, gsi)?;
        self.resources.lock_or_recover().reserve_gsi(gsi);
        Ok(fd)
    }

    /// An interrupt line for a Rust device to raise `gsi` with (needs
    /// [`MachineOptions::irqchip`]).
    pub fn irq_line(&self, gsi: u32) -> Result<crate::irq::IrqLine> {
        self.need_irqchip("give a device an interrupt line")?;
        crate::irq::IrqLine::new(&self.vm, gsi)
    }

    /// Fails with [`Error::NoIrqchip`] unless the machine has the in-kernel irqchip.
    fn need_irqchip(&self, op: &'static str) -> Result<()> {
        if self.shared.options.irqchip {
            Ok(())
        } else {
            Err(Error::NoIrqchip { op })
        }
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

    /// Attaches the built-in device `spec` describes and records it for the firmware
    /// tables; returns what the host keeps of it. A UART reports its output, and room for
    /// input it refused, through [`ExitHandler::on_output`] under its first port.
    ///
    /// # Errors
    ///
    /// `BUS_RANGE` if its range overlaps another device (or, in MMIO, guest RAM);
    /// `KVM_IOCTL_FAILED` if its interrupt line cannot be set up (it needs
    /// [`MachineOptions::irqchip`]).
    pub fn add(&self, spec: DeviceSpec) -> Result<HostSide> {
        let line = spec.irq().map(|gsi| self.irq_line(gsi)).transpose()?;
        let notify = self.output_notifier(u32::try_from(spec.base()).unwrap_or(u32::MAX));
        let (device, host) = spec.build(line, notify.into());
        let route = Route::BuiltIn(device);
        self.add_device(spec.space(), spec.base(), spec.len(), spec.name(), route)?;
        if let Some(gsi) = spec.irq() {
            self.resources.lock_or_recover().reserve_gsi(gsi);
        }
        self.inventory.lock_or_recover().add(spec);
        Ok(host)
    }

    /// A callback that announces news of `device` (a UART's first port, a virtio device's
    /// MMIO base) through [`ExitHandler::on_output`] while the machine runs: output waiting,
    /// or room again for input the device refused.
    pub fn output_notifier(&self, device: u32) -> Box<dyn Fn() + Send + Sync> {
        let shared = Arc::downgrade(&self.shared);
        Box::new(move || {
            let handler = shared.upgrade().and_then(|s| s.lifecycle.handler());
            if let Some(h) = handler {
                h.on_output(device);
            }
        })
    }

    /// Attaches a virtio device on the virtio-mmio transport: a page of MMIO in the 32-bit
    /// hole and an interrupt line are allocated, each queue's `QueueNotify` is wired to an
    /// ioeventfd and the interrupt to an irqfd, and the device is served by the machine's I/O
    /// thread (started with the first device). Firmware tables built afterwards name it
    /// (`LNRO0005`); returns where it is.
    ///
    /// # Errors
    ///
    /// `NO_IRQCHIP` without the in-kernel irqchip; `BUS_RANGE` or `INVALID_CONFIG` when no
    /// MMIO window or interrupt line is left; `KVM_IOCTL_FAILED` if KVM refuses an eventfd;
    /// `THREAD_FAILED` if the I/O thread cannot start.
    pub fn add_virtio(&self, device: Box<dyn VirtioDevice>) -> Result<VirtioMmioInfo> {
        self.need_irqchip("attach a virtio device")?;
        let queues = device.queue_max_sizes().len();
        let backend = device.backend_fds();
        let (base, gsi) = {
            let mut resources = self.resources.lock_or_recover();
            let base = resources.allocate_mmio(WINDOW)?;
            match resources.allocate_gsi() {
                Ok(gsi) => (base, gsi),
                Err(e) => {
                    resources.release_mmio(base);
                    return Err(e);
                }
            }
        };
        let info = VirtioMmioInfo {
            base,
            len: WINDOW,
            gsi,
        };
        let attached = self.attach_virtio(device, info, queues, backend);
        if attached.is_err() {
            self.resources.lock_or_recover().release_mmio(base);
        }
        attached?;
        self.inventory.lock_or_recover().add_virtio(info);
        Ok(info)
    }

    fn attach_virtio(
        &self,
        device: Box<dyn VirtioDevice>,
        info: VirtioMmioInfo,
        queues: usize,
        backend: Vec<std::os::fd::RawFd>,
    ) -> Result<()> {
        let name = device.name();
        let shared = Arc::downgrade(&self.shared);
        let report = Box::new(move |why: &str| {
            let handler = shared.upgrade().and_then(|s| s.lifecycle.handler());
            if let Some(h) = handler {
                h.on_device_error(name, info.base, why);
            }
        });
        let line = crate::irq::register_irqfd(&self.vm, info.gsi)?;
        let interrupt = Arc::new(Interrupt::with_report(line, report));
        let mut evts = Vec::with_capacity(queues);
        for i in 0..queues {
            let event = IoEvent {
                space: Space::Mmio,
                addr: info.base + NOTIFY_OFFSET,
                len: 4,
                datamatch: Some(i as u64),
            };
            evts.push(self.register_ioeventfd(&event)?);
        }
        let clone = |evts: &[EventFd]| {
            evts.iter()
                .map(EventFd::try_clone)
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(Error::EventFd)
        };
        let slot = Arc::new(Mutex::new(Slot {
            device,
            active: false,
        }));
        let transport = MmioTransport::new(
            Arc::clone(&slot),
            Arc::clone(&interrupt),
            self.ram.memory().clone(),
            clone(&evts)?,
        )
        .map_err(|m| Error::config(name, m))?;
        {
            let mut io = self.io.lock_or_recover();
            if io.is_none() {
                *io = Some(IoThread::spawn()?);
            }
            if let Some(io) = io.as_ref() {
                io.serve(slot, interrupt, evts, backend)?;
            }
        }
        let route = Route::BuiltIn(Arc::new(Mutex::new(transport)));
        self.add_device(Space::Mmio, info.base, info.len, name, route)
    }

    /// Loads a Linux kernel (and initrd, command line) and sets vCPU 0 up to enter it, with
    /// the platform described to it from the inventory of built-ins added so far: ACPI
    /// tables (the vCPUs, the IOAPIC, the UARTs, the i8042 and RTC if added, and the sleep
    /// registers through which the kernel powers off, attached here as
    /// [`DeviceSpec::AcpiSleep`]) and an MP table.
    ///
    /// # Errors
    ///
    /// `BAD_IMAGE` for a kernel or initrd that cannot be loaded (nothing is written then),
    /// `INVALID_CONFIG` for a platform the tables cannot describe (too many vCPUs).
    pub fn load_linux(&self, boot: &LinuxBoot<'_>) -> Result<LoadedKernel> {
        let platform = self.platform();
        // Checked before anything is written.
        let tables = acpi::tables(&platform)?;
        let mptable = mptable::table(&platform)?;
        let cmdline = platform.linux_cmdline(boot.cmdline);
        let boot = LinuxBoot {
            cmdline: &cmdline,
            ..*boot
        };
        let loaded = self.with_vcpu(0, |v| linux::load(&self.ram, v, &boot, layout::RSDP_ADDR))?;
        self.install_acpi(tables)?;
        self.ram.write(layout::MPTABLE_ADDR, &mptable)?;
        Ok(loaded)
    }

    /// What the firmware tables describe: the vCPUs and the built-ins added so far.
    fn platform(&self) -> Platform {
        self.inventory.lock_or_recover().platform(self.vcpu_count())
    }

    /// Writes the ACPI tables and attaches the sleep registers they name
    /// ([`DeviceSpec::AcpiSleep`]) unless they are there already.
    fn install_acpi(&self, tables: Vec<(u64, Vec<u8>)>) -> Result<()> {
        for (addr, data) in tables {
            self.ram.write(addr, &data)?;
        }
        if !self
            .inventory
            .lock_or_recover()
            .contains(&DeviceSpec::AcpiSleep)
        {
            self.add(DeviceSpec::AcpiSleep)?;
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
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.close();
    }
}
