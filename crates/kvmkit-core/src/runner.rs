//! The loop each vCPU thread runs: `KVM_RUN`, dispatch the exit, repeat.
//!
//! Built-in devices are answered here without leaving the thread. Accesses to user devices
//! are posted to the vCPU's mailbox and announced through [`ExitHandler::on_access`]; the loop
//! waits for the answer, writes it into `kvm_run` and re-enters the guest. Nothing on this
//! path allocates: the access record and reply buffer are reused for every exit.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kvm_bindings::{
    KVM_EXIT_IO_OUT, KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, kvm_run,
};
use kvm_ioctls::VcpuExit;

use crate::bus::{Bus, DeviceAction, Route};
use crate::exit::{DeviceAccess, ExitKind, MachineError, Outcome, SystemEvent};
use crate::fallback;
use crate::kick;
use crate::machine::{ExitHandler, Shared, State, UnhandledPolicy};
use crate::mailbox::{Answer, MAX_REPLY};
use crate::memory::GuestRam;
use crate::posted::PostedWrite;
use crate::vcpu::Vcpu;

/// What a vCPU loop needs.
pub(crate) struct VcpuThread {
    pub(crate) index: u32,
    pub(crate) vcpu: Arc<Mutex<Vcpu>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ram: Arc<GuestRam>,
    pub(crate) vcpu_mmap_size: usize,
}

/// An exit, decoded without holding on to the `kvm_run` borrow.
enum Raw {
    Io,
    Mmio {
        addr: u64,
        len: usize,
        write: bool,
        data: [u8; 8],
    },
    Hlt,
    Shutdown,
    SystemEvent(u32),
    InternalError,
    FailEntry(u64, u32),
    Interrupted,
    Unclaimed(ExitKind, u32),
    RunFailed(kvm_ioctls::Error),
}

/// What the loop does next.
enum Step {
    Continue,
    AskUser,
    Post,
    Halt,
    End(Outcome),
    Fail {
        code: &'static str,
        exit: ExitKind,
        message: String,
    },
}

/// Runs vCPU `ctx.index` on a thread of its own until the machine stops or the vCPU halts,
/// handing user-device accesses over through its mailbox.
pub(crate) fn run_threaded(ctx: VcpuThread) {
    let Some(mut looper) = Looper::new(ctx, false) else {
        return;
    };
    let shared = Arc::clone(&looper.ctx.shared);
    let index = looper.ctx.index;
    let mailbox = &shared.mailboxes[index as usize];
    let spin = shared.options.handoff_spin;
    // A panic here must not leave the machine waiting for this vCPU forever.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while looper.run_until_user() {
            mailbox.post(&mut looper.access);
            // A JS thread polling for accesses takes this one itself; otherwise tell it.
            if !shared.js_polling.load(Ordering::SeqCst) {
                looper.handler.on_access(index, &looper.access);
            }
            let len = looper.reply_len();
            let answer = mailbox.wait(&mut looper.reply[..len], spin, || {
                shared.stop.load(Ordering::Acquire)
            });
            if !looper.complete(answer) {
                break;
            }
        }
    }));
    if result.is_err() {
        looper.panicked();
    }
    looper.finish();
}

/// A vCPU driven by its caller's thread: each [`InlineVcpu::step`] runs the guest until the
/// next access to a user device and returns it, so the caller answers it directly, with no
/// hand-off to another thread.
pub struct InlineVcpu {
    looper: Option<Looper>,
    pending: bool,
}

/// The answer to the access an [`InlineVcpu`] returned.
#[derive(Debug)]
pub enum InlineAnswer<'a> {
    /// The bytes read (ignored for writes).
    Reply(&'a [u8]),
    /// The handler failed: the machine stops with this message.
    Fail(String),
}

impl std::fmt::Debug for InlineVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineVcpu")
            .field("index", &self.index())
            .field("pending", &self.pending)
            .finish()
    }
}

impl InlineVcpu {
    pub(crate) fn new(ctx: VcpuThread) -> Self {
        InlineVcpu {
            looper: Looper::new(ctx, true),
            pending: false,
        }
    }

    /// The vCPU's index, until its run has ended.
    pub fn index(&self) -> Option<u32> {
        self.looper.as_ref().map(|l| l.ctx.index)
    }

    /// The access the last [`InlineVcpu::step`] returned, until it is answered.
    pub fn pending(&self) -> Option<&DeviceAccess> {
        self.looper
            .as_ref()
            .filter(|_| self.pending)
            .map(|l| &l.access)
    }

    /// Answers the pending access (if any) with `answer` and runs the guest until the next
    /// user-device access, which it returns; `None` once this vCPU's run has ended.
    pub fn step(&mut self, answer: Option<InlineAnswer<'_>>) -> Option<&DeviceAccess> {
        let looper = self.looper.as_mut()?;
        let go_on = {
            let running = looper.enter();
            let answered = match (std::mem::take(&mut self.pending), answer) {
                (false, _) => true,
                (true, Some(InlineAnswer::Fail(message))) => {
                    looper.complete(Answer::Failed(message))
                }
                (true, reply) => {
                    let len = looper.reply_len();
                    let bytes = match reply {
                        Some(InlineAnswer::Reply(bytes)) => bytes,
                        _ => &[],
                    };
                    let n = len.min(bytes.len());
                    looper.reply[..n].copy_from_slice(&bytes[..n]);
                    looper.reply[n..len].fill(0);
                    looper.complete(Answer::Replied)
                }
            };
            let go_on = answered
                && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    looper.run_until_user()
                }))
                .unwrap_or_else(|_| {
                    looper.panicked();
                    false
                });
            drop(running);
            go_on
        };
        if go_on {
            self.pending = true;
            return self.looper.as_ref().map(|l| &l.access);
        }
        if let Some(l) = self.looper.take() {
            l.finish();
        }
        None
    }
}

impl Drop for InlineVcpu {
    fn drop(&mut self) {
        if let Some(l) = self.looper.take() {
            l.ctx.shared.stop.store(true, Ordering::Release);
            l.finish();
        }
    }
}

/// Accounts for a vCPU thread leaving; the last one out settles the outcome.
fn finish(ctx: &VcpuThread, handler: Option<&dyn ExitHandler>) {
    let shared = &ctx.shared;
    let mut c = shared.control();
    c.live -= 1;
    if c.live > 0 {
        let all_parked = c.state == State::Paused && c.parked == c.live;
        drop(c);
        if let (true, Some(h)) = (all_parked, handler) {
            h.on_paused();
        }
        return;
    }
    let stopped = shared.stop.load(Ordering::Acquire);
    let outcome = c
        .outcome
        .get_or_insert(if stopped {
            Outcome::Stopped
        } else {
            Outcome::Halted
        })
        .clone();
    if c.state != State::Closed {
        c.state = State::Ended;
    }
    drop(c);
    shared.changed.notify_all();
    if let Some(h) = handler {
        h.on_end(&outcome);
    }
}

/// Locks `m`, recovering it if a thread panicked while holding it.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// While alive, the vCPU's loop runs on the current thread, and kicks reach it.
struct Running {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.shared.threads)[self.index] = None;
        kick::publish(None);
    }
}

/// The per-vCPU loop state, reused for every exit.
struct Looper {
    ctx: VcpuThread,
    handler: Arc<dyn ExitHandler>,
    inline: bool,
    access: DeviceAccess,
    reply: Box<[u8; MAX_REPLY]>,
    immediate_exit: *mut u8,
    exited_at: Option<Instant>,
}

// SAFETY: `immediate_exit` points into the vCPU's kvm_run mapping, which `ctx.vcpu` keeps
// alive; it is published only to the thread currently running the loop (see `enter`).
unsafe impl Send for Looper {}

impl Looper {
    /// `None` if the machine was not started with a handler (the vCPU is then accounted as
    /// finished).
    fn new(ctx: VcpuThread, inline: bool) -> Option<Self> {
        let Some(handler) = ctx.shared.control().handler.clone() else {
            finish(&ctx, None);
            return None;
        };
        let immediate_exit =
            std::ptr::addr_of_mut!(lock(&ctx.vcpu).fd_mut().get_kvm_run().immediate_exit);
        Some(Looper {
            ctx,
            handler,
            inline,
            access: DeviceAccess::with_capacity(MAX_REPLY),
            reply: Box::new([0; MAX_REPLY]),
            immediate_exit,
            exited_at: None,
        })
    }

    /// Registers the current thread as the one running this vCPU, so kicks reach it.
    fn enter(&self) -> Running {
        kick::publish(Some(self.immediate_exit));
        lock(&self.ctx.shared.threads)[self.ctx.index as usize] = Some(kick::current_thread());
        Running {
            shared: Arc::clone(&self.ctx.shared),
            index: self.ctx.index as usize,
        }
    }

    fn reply_len(&self) -> usize {
        if self.access.is_read() {
            (self.access.size * self.access.count) as usize
        } else {
            0
        }
    }

    fn panicked(&mut self) {
        self.ctx.shared.end_with(Outcome::Error(MachineError {
            code: "INTERNAL_PANIC",
            message: format!("vCPU {}: kvmkit's run loop panicked", self.ctx.index),
            vcpu: self.ctx.index,
            exit: ExitKind::Other,
            registers: None,
            instruction: Vec::new(),
        }));
    }

    fn finish(self) {
        finish(&self.ctx, Some(self.handler.as_ref()));
    }

    /// Runs the guest until an access needs a user answer (true: it is in `self.access`)
    /// or the loop ends (false).
    fn run_until_user(&mut self) -> bool {
        let shared = Arc::clone(&self.ctx.shared);
        let vcpu_lock = Arc::clone(&self.ctx.vcpu);
        let stats = &shared.stats[self.ctx.index as usize];
        let running = (!self.inline).then(|| self.enter());
        let result = loop {
            if shared.stop.load(Ordering::Acquire) {
                break false;
            }
            if shared.pause.load(Ordering::Acquire) {
                self.park();
                self.exited_at = None;
                continue;
            }
            let mut vcpu = lock(&vcpu_lock);
            if let Some(t) = self.exited_at {
                stats.record_latency(t.elapsed());
            }
            let raw = decode(vcpu.fd_mut().run());
            self.exited_at = Some(Instant::now());
            match self.dispatch(&shared, &mut vcpu, raw, stats) {
                Step::Continue => {}
                Step::AskUser => break true,
                Step::Post => {
                    drop(vcpu);
                    if !self.post() {
                        break false;
                    }
                }
                Step::Halt => break false,
                Step::End(outcome) => {
                    shared.end_with(outcome);
                    break false;
                }
                Step::Fail {
                    code,
                    exit,
                    message,
                } => {
                    let error = self.error(&vcpu, code, exit, message);
                    shared.end_with(Outcome::Error(error));
                    break false;
                }
            }
        };
        drop(running);
        result
    }

    /// Completes the access returned by `run_until_user` with `answer`. Returns false when
    /// the loop must end.
    fn complete(&mut self, answer: Answer) -> bool {
        match answer {
            Answer::Replied => {
                let len = self.reply_len();
                if len > 0 {
                    let mut vcpu = lock(&self.ctx.vcpu);
                    let run = vcpu.fd_mut().get_kvm_run();
                    let target = if self.access.kind == ExitKind::IoIn {
                        io_exit(run, self.ctx.vcpu_mmap_size).map(|(_, _, _, data)| data)
                    } else {
                        Some(mmio_data(run))
                    };
                    if let Some(target) = target {
                        let n = len.min(target.len());
                        target[..n].copy_from_slice(&self.reply[..n]);
                    }
                }
                true
            }
            Answer::Failed(message) => {
                let vcpu = lock(&self.ctx.vcpu);
                let error = self.error(&vcpu, "HANDLER_FAILED", self.access.kind, message);
                self.ctx.shared.end_with(Outcome::Error(error));
                false
            }
            Answer::Cancelled => false,
        }
    }

    /// Queues the write in `self.access` for a posted device; false if the machine stopped
    /// while the queue was full.
    fn post(&mut self) -> bool {
        let shared = &self.ctx.shared;
        let a = &self.access;
        let size = a.size as usize;
        for element in a.data.chunks_exact(size.max(1)) {
            let mut value = [0u8; 8];
            let n = element.len().min(8);
            value[..n].copy_from_slice(&element[..n]);
            let write = PostedWrite {
                vcpu: self.ctx.index,
                device: a.device,
                kind: a.kind,
                offset: a.offset,
                addr: a.addr,
                size: a.size,
                value: u64::from_le_bytes(value),
            };
            match shared
                .posted
                .push(write, || shared.stop.load(Ordering::Acquire))
            {
                Some(true) => self.handler.on_posted(),
                Some(false) => {}
                None => return false,
            }
        }
        true
    }

    /// Waits at a pause point until resumed or stopped.
    fn park(&self) {
        let shared = &self.ctx.shared;
        let mut c = shared.control();
        c.parked += 1;
        if c.parked == c.live {
            drop(c);
            self.handler.on_paused();
            c = shared.control();
        }
        while shared.pause.load(Ordering::Acquire) && !shared.stop.load(Ordering::Acquire) {
            c = shared.changed.wait(c).unwrap_or_else(|e| e.into_inner());
        }
        c.parked -= 1;
    }

    fn dispatch(
        &mut self,
        shared: &Shared,
        vcpu: &mut Vcpu,
        raw: Raw,
        stats: &crate::stats::VcpuStats,
    ) -> Step {
        let mmap_size = self.ctx.vcpu_mmap_size;
        match raw {
            Raw::Io => {
                let run = vcpu.fd_mut().get_kvm_run();
                let Some((port, size, write, data)) = io_exit(run, mmap_size) else {
                    stats.count(ExitKind::Other);
                    return Step::Fail {
                        code: "KVM_RUN_FAILED",
                        exit: ExitKind::Other,
                        message: "KVM reported port-I/O data outside the kvm_run area".into(),
                    };
                };
                let kind = if write {
                    ExitKind::IoOut
                } else {
                    ExitKind::IoIn
                };
                stats.count(kind);
                let bus = shared.ports.read().unwrap_or_else(|e| e.into_inner());
                self.route(&bus, kind, u64::from(port), size, data)
            }
            Raw::Mmio {
                addr,
                len,
                write,
                mut data,
            } => {
                let kind = if write {
                    ExitKind::MmioWrite
                } else {
                    ExitKind::MmioRead
                };
                stats.count(kind);
                let step = {
                    let bus = shared.mmio.read().unwrap_or_else(|e| e.into_inner());
                    self.route(&bus, kind, addr, len, &mut data[..len])
                };
                if !write && matches!(step, Step::Continue) {
                    mmio_data(vcpu.fd_mut().get_kvm_run())[..len].copy_from_slice(&data[..len]);
                }
                step
            }
            Raw::Hlt => {
                stats.count(ExitKind::Hlt);
                Step::Halt
            }
            Raw::Shutdown => {
                stats.count(ExitKind::Shutdown);
                Step::End(Outcome::TripleFault {
                    vcpu: self.ctx.index,
                })
            }
            Raw::SystemEvent(t) => {
                stats.count(ExitKind::SystemEvent);
                let event = match t {
                    KVM_SYSTEM_EVENT_SHUTDOWN => SystemEvent::Shutdown,
                    KVM_SYSTEM_EVENT_RESET => SystemEvent::Reset,
                    KVM_SYSTEM_EVENT_CRASH => SystemEvent::Crash,
                    other => SystemEvent::Other(other),
                };
                Step::End(Outcome::SystemEvent {
                    event,
                    vcpu: self.ctx.index,
                })
            }
            Raw::InternalError => {
                stats.count(ExitKind::InternalError);
                if shared.options.emulation_fallbacks
                    && fallback::finish_unemulated(&self.ctx.ram, vcpu)
                {
                    return Step::Continue;
                }
                let run = vcpu.fd_mut().get_kvm_run();
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active member of the union.
                let internal = unsafe { run.__bindgen_anon_1.internal };
                let n = (internal.ndata as usize).min(internal.data.len());
                let data: Vec<String> = internal.data[..n]
                    .iter()
                    .map(|d| format!("{d:#x}"))
                    .collect();
                let (code, what) = if internal.suberror == KVM_INTERNAL_ERROR_EMULATION {
                    (
                        "EMULATION_FAILURE",
                        "the host's KVM could not emulate the guest's instruction",
                    )
                } else {
                    ("INTERNAL_ERROR", "KVM reported an internal error")
                };
                Step::Fail {
                    code,
                    exit: ExitKind::InternalError,
                    message: format!(
                        "{what} (suberror {}, data [{}])",
                        internal.suberror,
                        data.join(", ")
                    ),
                }
            }
            Raw::FailEntry(reason, cpu) => {
                stats.count(ExitKind::FailEntry);
                Step::Fail {
                    code: "FAIL_ENTRY",
                    exit: ExitKind::FailEntry,
                    message: format!(
                        "the host could not enter the guest (hardware reason {reason:#x}, host \
                         CPU {cpu})"
                    ),
                }
            }
            Raw::Interrupted => {
                stats.count(ExitKind::Interrupted);
                vcpu.fd_mut().set_kvm_immediate_exit(0);
                Step::Continue
            }
            Raw::Unclaimed(kind, reason) => {
                stats.count(kind);
                Step::Fail {
                    code: "UNHANDLED_EXIT",
                    exit: kind,
                    message: format!(
                        "no handler for the {} exit (KVM exit reason {reason})",
                        kind.name()
                    ),
                }
            }
            Raw::RunFailed(e) => Step::Fail {
                code: "KVM_RUN_FAILED",
                exit: ExitKind::Other,
                message: format!("KVM_RUN failed: {e}"),
            },
        }
    }

    /// Sends an access to the device that owns it.
    fn route(
        &mut self,
        bus: &Bus,
        kind: ExitKind,
        addr: u64,
        size: usize,
        data: &mut [u8],
    ) -> Step {
        let write = matches!(kind, ExitKind::IoOut | ExitKind::MmioWrite);
        let count = data.len() / size.max(1);
        match bus.resolve(addr, size as u64) {
            Some(target) => match target.route {
                Route::BuiltIn(device) => {
                    let mut device = lock(device.as_ref());
                    for element in data.chunks_exact_mut(size) {
                        if write {
                            match device.write(target.offset, element) {
                                Some(DeviceAction::Exit { device, status }) => {
                                    return Step::End(Outcome::DeviceRequest {
                                        device: device.into(),
                                        status,
                                    });
                                }
                                Some(DeviceAction::Reset { .. }) => {
                                    return Step::End(Outcome::SystemEvent {
                                        event: SystemEvent::Reset,
                                        vcpu: self.ctx.index,
                                    });
                                }
                                Some(DeviceAction::PowerOff { .. }) => {
                                    return Step::End(Outcome::SystemEvent {
                                        event: SystemEvent::Shutdown,
                                        vcpu: self.ctx.index,
                                    });
                                }
                                None => {}
                            }
                        } else {
                            device.read(target.offset, element);
                        }
                    }
                    Step::Continue
                }
                Route::User { device, posted } => {
                    let a = &mut self.access;
                    a.kind = kind;
                    a.device = *device;
                    a.offset = target.offset;
                    a.addr = addr;
                    a.size = size as u32;
                    a.count = count as u32;
                    a.data.clear();
                    if write {
                        a.data.extend_from_slice(data);
                    }
                    if write && *posted && !self.inline {
                        Step::Post
                    } else {
                        Step::AskUser
                    }
                }
            },
            None => match self.ctx.shared.options.unhandled {
                UnhandledPolicy::Ignore => {
                    if !write {
                        data.fill(0xff);
                    }
                    Step::Continue
                }
                UnhandledPolicy::Error => {
                    let space = if matches!(kind, ExitKind::IoIn | ExitKind::IoOut) {
                        "port"
                    } else {
                        "address"
                    };
                    let what = if write {
                        let mut v = [0u8; 8];
                        let n = size.min(8).min(data.len());
                        v[..n].copy_from_slice(&data[..n]);
                        format!("write of {:#x}", u64::from_le_bytes(v))
                    } else {
                        "read".to_string()
                    };
                    let repeat = if count > 1 {
                        format!(", repeated {count} times")
                    } else {
                        String::new()
                    };
                    Step::Fail {
                        code: "UNHANDLED_EXIT",
                        exit: kind,
                        message: format!(
                            "unhandled {} at {space} {addr:#x}: {size}-byte {what}{repeat}, and \
                             no device is registered there",
                            kind.name()
                        ),
                    }
                }
            },
        }
    }

    fn error(
        &self,
        vcpu: &Vcpu,
        code: &'static str,
        exit: ExitKind,
        message: String,
    ) -> MachineError {
        let registers = vcpu.snapshot();
        let instruction = registers
            .as_ref()
            .map(|r| vcpu.instruction_bytes(&self.ctx.ram, r))
            .unwrap_or_default();
        let mut message = format!("vCPU {}: {message}", self.ctx.index);
        if let Some(r) = &registers {
            message.push_str(&format!(" (RIP {:#x}", r.rip));
            if !instruction.is_empty() {
                let bytes: Vec<String> = instruction.iter().map(|b| format!("{b:02x}")).collect();
                message.push_str(&format!(", instruction bytes {}", bytes.join(" ")));
            }
            message.push(')');
        }
        MachineError {
            code,
            message,
            vcpu: self.ctx.index,
            exit,
            registers,
            instruction,
        }
    }
}

fn decode(result: Result<VcpuExit<'_>, kvm_ioctls::Error>) -> Raw {
    match result {
        Ok(VcpuExit::IoIn(..) | VcpuExit::IoOut(..)) => Raw::Io,
        Ok(VcpuExit::MmioRead(addr, data)) => Raw::Mmio {
            addr,
            len: data.len().min(8),
            write: false,
            data: [0; 8],
        },
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            let mut copy = [0u8; 8];
            let len = data.len().min(8);
            copy[..len].copy_from_slice(&data[..len]);
            Raw::Mmio {
                addr,
                len,
                write: true,
                data: copy,
            }
        }
        Ok(VcpuExit::Hlt) => Raw::Hlt,
        Ok(VcpuExit::Shutdown) => Raw::Shutdown,
        Ok(VcpuExit::SystemEvent(t, _)) => Raw::SystemEvent(t),
        Ok(VcpuExit::InternalError) => Raw::InternalError,
        Ok(VcpuExit::FailEntry(reason, cpu)) => Raw::FailEntry(reason, cpu),
        Ok(VcpuExit::Intr) => Raw::Interrupted,
        Ok(VcpuExit::Debug(_)) => Raw::Unclaimed(ExitKind::Debug, kvm_bindings::KVM_EXIT_DEBUG),
        Ok(VcpuExit::IrqWindowOpen) => Raw::Unclaimed(
            ExitKind::IrqWindowOpen,
            kvm_bindings::KVM_EXIT_IRQ_WINDOW_OPEN,
        ),
        Ok(VcpuExit::Unknown) => Raw::Unclaimed(ExitKind::Unknown, kvm_bindings::KVM_EXIT_UNKNOWN),
        Ok(VcpuExit::Unsupported(reason)) => Raw::Unclaimed(ExitKind::Other, reason),
        Ok(_) => Raw::Unclaimed(ExitKind::Other, u32::MAX),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Raw::Interrupted,
        Err(e) => Raw::RunFailed(e),
    }
}

/// The port, element size, direction and data of a `KVM_EXIT_IO` exit.
fn io_exit(run: &mut kvm_run, mmap_size: usize) -> Option<(u16, usize, bool, &mut [u8])> {
    // SAFETY: only called after KVM_RUN returned KVM_EXIT_IO, so `io` is the active member.
    let io = unsafe { run.__bindgen_anon_1.io };
    let size = usize::from(io.size);
    let len = size * io.count as usize;
    let offset = usize::try_from(io.data_offset).ok()?;
    if size == 0 || offset.checked_add(len)? > mmap_size {
        return None;
    }
    let base = std::ptr::from_mut(run).cast::<u8>();
    // SAFETY: the kvm_run mapping is `mmap_size` bytes long and the range was checked to lie
    // inside it; the kernel does not touch it while the vCPU is outside KVM_RUN, and the
    // returned slice borrows `run` mutably, so nothing else aliases it.
    let data = unsafe { std::slice::from_raw_parts_mut(base.add(offset), len) };
    Some((
        io.port,
        size,
        u32::from(io.direction) == KVM_EXIT_IO_OUT,
        data,
    ))
}

/// The data bytes of a `KVM_EXIT_MMIO` exit.
fn mmio_data(run: &mut kvm_run) -> &mut [u8] {
    // SAFETY: only called after KVM_RUN returned KVM_EXIT_MMIO, so `mmio` is the active member.
    let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
    let len = (mmio.len as usize).min(mmio.data.len());
    &mut mmio.data[..len]
}
