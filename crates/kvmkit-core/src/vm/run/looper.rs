//! The loop each vCPU runs: `KVM_RUN`, dispatch the exit, repeat.
//!
//! Built-in devices are answered here without leaving the thread. An access to a user device
//! leaves the loop with the access in [`Looper::access`], for the threaded or inline driver to
//! have answered; [`complete`] then keeps the answer for the loop to write into `kvm_run`
//! when it re-enters. Nothing on this path allocates: the access record is reused for every
//! exit.
//!
//! The loop reads one shared word per exit, the machine's [`Epoch`], and looks at the stop
//! and pause flags only when it moved; what else it reads per exit (its counters, the last
//! route) it reaches through its own fields, without going through the machine's shared
//! state: after `KVM_RUN`, each further cache line costs a miss.
//!
//! Pause points are at the top of the loop. KVM finishes an I/O or MMIO exit (a read's data
//! into the guest's registers, RIP past the instruction) only when the vCPU next enters
//! `KVM_RUN`, so a vCPU paused right after such an exit first enters it once more with
//! `immediate_exit` set, which completes the access and returns before any guest code runs:
//! registers read while paused are the guest's real state. (Read from inside a device
//! handler, while the vCPU waits for the answer, they are the state before the access
//! completes.)

use std::sync::Arc;

use kvm_bindings::{
    KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};

use super::emulate;
use super::kvm_run::{Rare, Raw, decode, internal_error, io_exit, mmio_data};
use super::route::route;
use super::{Shared, Step, VcpuContext};
use crate::bus::LastRoute;
use crate::epoch::Epoch;
use crate::exit::{
    DeviceAccess, ExitKind, MachineError, Outcome, SystemEvent, append_bytes, put_value, value_of,
};
use crate::handoff::mailbox::{Answer, MAX_REPLY};
use crate::handoff::posted::PostedWrite;
use crate::stats::{VcpuStats, monotonic_ns};
use crate::sync::LockExt;
use crate::vcpu::Vcpu;
use crate::vm::handler::ExitHandler;
use crate::vm::kick::Running;
use crate::vm::options::UnhandledPolicy;

/// The per-vCPU loop state, reused for every exit.
pub(super) struct Looper {
    pub(super) ctx: VcpuContext,
    pub(super) handler: Arc<dyn ExitHandler>,
    /// Driven by its caller's thread: posted writes are answered like other accesses.
    inline: bool,
    immediate_exit: *mut u8,
    /// When `KVM_RUN` last returned ([`monotonic_ns`]).
    exited_at: Option<u64>,
    /// The last exit was an access KVM completes on the next entry.
    completes_on_entry: bool,
    /// The machine's epoch, and its value when the loop last found nothing to react to.
    epoch: Arc<Epoch>,
    seen: u64,
    /// What dispatching an exit reads and writes, apart from the context.
    pub(super) exits: Dispatcher,
}

/// The loop's per-exit state: kept apart from [`VcpuContext`] so the loop borrows both at
/// once instead of cloning the context's `Arc`s on every call.
pub(super) struct Dispatcher {
    /// This vCPU's counters.
    stats: Arc<VcpuStats>,
    /// The access a user device must answer, after [`Looper::run_until_user`] returned true.
    pub(super) access: DeviceAccess,
    /// Its answer, if a read, until the loop next holds the vCPU.
    pub(super) reply: ReadReply,
    /// The route of the last port and MMIO access, for the next ones to the same device.
    last_port: LastRoute,
    last_mmio: LastRoute,
    /// The machine's policy for accesses no device claims (kept here, beside the rest of
    /// what every exit reads, rather than read from the shared options each time).
    unhandled: UnhandledPolicy,
}

/// A user device's answer to a read, kept until the loop next takes the vCPU's lock to
/// enter `KVM_RUN`, which writes it into `kvm_run` then: one lock per answered exit, not
/// one to answer and one to re-enter.
pub(super) struct ReadReply {
    bytes: Vec<u8>,
    due: bool,
}

impl ReadReply {
    fn new() -> Self {
        ReadReply {
            bytes: Vec::with_capacity(MAX_REPLY),
            due: false,
        }
    }

    /// Keeps `bytes` as the answer to the read `access`, if it is one.
    fn keep(&mut self, access: &DeviceAccess, bytes: &[u8]) {
        if access.is_read() {
            self.bytes.clear();
            append_bytes(&mut self.bytes, &bytes[..bytes.len().min(MAX_REPLY)]);
            self.due = true;
        }
    }

    /// Writes the kept answer to `access` into `vcpu`'s `kvm_run`, zero-filling what it
    /// leaves short.
    fn deliver(&mut self, ctx: &VcpuContext, vcpu: &mut Vcpu, access: &DeviceAccess) {
        if !std::mem::take(&mut self.due) {
            return;
        }
        let run = vcpu.fd_mut().get_kvm_run();
        let target = if access.kind == ExitKind::IoIn {
            io_exit(run, ctx.vcpu_mmap_size).map(|io| io.data)
        } else {
            Some(&mut mmio_data(run)[..])
        };
        if let Some(target) = target {
            let n = self.bytes.len().min(target.len());
            // A single read's value is zero-extended, so a width's store fills it whole.
            if !put_value(target, value_of(&self.bytes[..n])) {
                target[..n].copy_from_slice(&self.bytes[..n]);
                target[n..].fill(0);
            }
        }
    }
}

// SAFETY: `immediate_exit` points into the vCPU's kvm_run mapping, which `ctx.vcpu` keeps
// alive; it is published only to the thread currently running the loop (see `register`).
unsafe impl Send for Looper {}

/// Registers the current thread as the one running `looper`'s vCPU, so kicks reach it,
/// until the returned guard is dropped (on this thread, before `looper`).
pub(super) fn register<'a>(shared: &'a Shared, looper: &Looper) -> Running<'a> {
    // SAFETY: `immediate_exit` points into the kvm_run mapping of `looper.ctx.vcpu`, which
    // lives as long as the looper; callers drop the guard on this thread before the looper.
    unsafe {
        shared
            .kicks
            .enter(looper.ctx.index as usize, looper.immediate_exit)
    }
}

impl Looper {
    /// `None` if the machine was not started with a handler (the vCPU is then accounted as
    /// gone).
    pub(super) fn new(ctx: VcpuContext, inline: bool) -> Option<Self> {
        let Some(handler) = ctx.shared.lifecycle.handler() else {
            ctx.shared.lifecycle.leave();
            return None;
        };
        let immediate_exit = std::ptr::addr_of_mut!(
            ctx.vcpu
                .lock_or_recover()
                .fd_mut()
                .get_kvm_run()
                .immediate_exit
        );
        Some(Looper {
            handler,
            inline,
            immediate_exit,
            exited_at: None,
            completes_on_entry: false,
            epoch: Arc::clone(&ctx.shared.epoch),
            seen: Epoch::UNSEEN,
            exits: Dispatcher {
                stats: Arc::clone(&ctx.shared.stats[ctx.index as usize]),
                access: DeviceAccess::with_capacity(MAX_REPLY),
                reply: ReadReply::new(),
                last_port: LastRoute::default(),
                last_mmio: LastRoute::default(),
                unhandled: ctx.shared.options.unhandled,
            },
            ctx,
        })
    }

    /// Ends the run with an `INTERNAL_PANIC` error after the loop panicked.
    pub(super) fn panicked(&self) {
        self.ctx.shared.end_with(Outcome::Error(MachineError {
            code: "INTERNAL_PANIC",
            message: format!("vCPU {}: kvmkit's run loop panicked", self.ctx.index),
            vcpu: self.ctx.index,
            exit: ExitKind::Other,
            registers: None,
            instruction: Vec::new(),
        }));
    }

    /// Accounts for this vCPU leaving the run.
    pub(super) fn finish(self) {
        self.ctx.shared.lifecycle.leave();
    }

    /// Runs the guest until an access needs a user answer (true: it is in
    /// `self.exits.access`) or the loop ends (false).
    pub(super) fn run_until_user(&mut self) -> bool {
        let Looper {
            ctx,
            handler,
            inline,
            immediate_exit,
            exited_at,
            completes_on_entry,
            epoch,
            seen,
            exits,
        } = self;
        let shared = &*ctx.shared;
        // An inline vCPU's thread is its caller's between steps: registered for this call
        // only. A threaded vCPU's thread registers once for its whole run (`register`).
        // SAFETY: `immediate_exit` points into the kvm_run mapping of `ctx.vcpu`, which
        // outlives this call, and the guard is dropped on this thread when it returns.
        let _running =
            inline.then(|| unsafe { shared.kicks.enter(ctx.index as usize, *immediate_exit) });
        // Held from one exit to the next while built-in devices answer them: nobody else
        // may use the vCPU in between, and relocking would cost every such exit.
        let mut held = None;
        loop {
            let now = epoch.current();
            let mut pausing = false;
            if now != *seen {
                if shared.lifecycle.stopping() {
                    return false;
                }
                pausing = shared.lifecycle.pausing();
                // While pausing, the epoch stays unseen, so the flags are looked at again
                // after the park.
                if !pausing {
                    *seen = now;
                }
            }
            if pausing && !*completes_on_entry {
                drop(held.take());
                shared.lifecycle.park();
                *exited_at = None;
                continue;
            }
            // An answer can be due only on the first lock of a call (the lock is not held
            // between calls), so it is delivered there, not checked on every exit.
            let vcpu = held.get_or_insert_with(|| {
                let mut vcpu = ctx.vcpu.lock_or_recover();
                exits.reply.deliver(ctx, &mut vcpu, &exits.access);
                vcpu
            });
            if pausing {
                // Complete the last access before parking (see the module's doc).
                vcpu.fd_mut().set_kvm_immediate_exit(1);
            }
            if let Some(t) = *exited_at {
                exits.stats.record_latency(monotonic_ns().saturating_sub(t));
            }
            let raw = decode(vcpu.fd_mut().run());
            *exited_at = Some(monotonic_ns());
            *completes_on_entry = raw.completes_on_entry();
            match exits.dispatch(ctx, now, vcpu, raw) {
                Step::Continue => {}
                Step::User { posted, .. } => {
                    if !(posted && !*inline && !exits.access.is_read()) {
                        return true;
                    }
                    drop(held.take());
                    if !post(ctx, handler.as_ref(), &exits.access) {
                        return false;
                    }
                }
                Step::Halt => return false,
                Step::End(outcome) => {
                    shared.end_with(*outcome);
                    return false;
                }
                Step::Fail {
                    code,
                    exit,
                    message,
                } => {
                    let error = machine_error(ctx, vcpu, code, exit, message);
                    shared.end_with(Outcome::Error(error));
                    return false;
                }
            }
        }
    }
}

/// Queues the write in `a` for a posted device; false if the machine stopped while the
/// queue was full.
fn post(ctx: &VcpuContext, handler: &dyn ExitHandler, a: &DeviceAccess) -> bool {
    let size = (a.size as usize).max(1);
    a.data.chunks_exact(size).all(|element| {
        let write = PostedWrite {
            vcpu: ctx.index,
            device: a.device,
            kind: a.kind,
            offset: a.offset,
            addr: a.addr,
            size: a.size,
            value: crate::exit::value_of(element),
        };
        ctx.shared.handoff.post_write(write, handler)
    })
}

impl Dispatcher {
    /// Answers `raw` from a built-in device, or says what the loop must do with it; `epoch`
    /// is the machine's epoch as the loop read it at the top of this round.
    fn dispatch(&mut self, ctx: &VcpuContext, epoch: u64, vcpu: &mut Vcpu, raw: Raw) -> Step {
        let shared = &*ctx.shared;
        let stats = &*self.stats;
        let policy = self.unhandled;
        let index = ctx.index;
        match raw {
            Raw::Io => {
                let run = vcpu.fd_mut().get_kvm_run();
                let Some(io) = io_exit(run, ctx.vcpu_mmap_size) else {
                    stats.count(ExitKind::Other);
                    return Step::Fail {
                        code: "KVM_RUN_FAILED",
                        exit: ExitKind::Other,
                        message: "KVM reported port-I/O data outside the kvm_run area".into(),
                    };
                };
                let kind = if io.write {
                    ExitKind::IoOut
                } else {
                    ExitKind::IoIn
                };
                stats.count(kind);
                let addr = u64::from(io.port);
                let target = self
                    .last_port
                    .resolve(&shared.ports, epoch, addr, io.size as u64);
                let step = route(target, policy, index, kind, addr, io.size, io.data);
                fill(&mut self.access, &step, kind, addr, io.size, io.data);
                step
            }
            Raw::Mmio { addr, len, write } => {
                let kind = if write {
                    ExitKind::MmioWrite
                } else {
                    ExitKind::MmioRead
                };
                stats.count(kind);
                let bytes = mmio_data(vcpu.fd_mut().get_kvm_run());
                if !write {
                    // What a device leaves unwritten reads as zero, not as the last exit's.
                    *bytes = [0; 8];
                }
                let data = &mut bytes[..len];
                let target = self
                    .last_mmio
                    .resolve(&shared.mmio, epoch, addr, len as u64);
                let step = route(target, policy, index, kind, addr, len, data);
                fill(&mut self.access, &step, kind, addr, len, data);
                step
            }
            Raw::Rare(rare) => self.rare(ctx, vcpu, rare),
        }
    }

    /// The exits other than port and MMIO accesses: kept out of the loop's code and stack
    /// frame (see [`route`]'s note on what each line costs after `KVM_RUN`).
    #[cold]
    #[inline(never)]
    fn rare(&mut self, ctx: &VcpuContext, vcpu: &mut Vcpu, rare: Rare) -> Step {
        let shared = &*ctx.shared;
        let stats = &*self.stats;
        let index = ctx.index;
        match rare {
            Rare::Hlt => {
                stats.count(ExitKind::Hlt);
                Step::Halt
            }
            Rare::Shutdown => {
                stats.count(ExitKind::Shutdown);
                Step::End(Box::new(Outcome::TripleFault { vcpu: index }))
            }
            Rare::SystemEvent(t) => {
                stats.count(ExitKind::SystemEvent);
                let event = match t {
                    KVM_SYSTEM_EVENT_SHUTDOWN => SystemEvent::Shutdown,
                    KVM_SYSTEM_EVENT_RESET => SystemEvent::Reset,
                    KVM_SYSTEM_EVENT_CRASH => SystemEvent::Crash,
                    other => SystemEvent::Other(other),
                };
                Step::End(Box::new(Outcome::SystemEvent { event, vcpu: index }))
            }
            Rare::InternalError => {
                stats.count(ExitKind::InternalError);
                if shared.options.emulation_fallbacks && emulate::finish_unemulated(&ctx.ram, vcpu)
                {
                    return Step::Continue;
                }
                let (suberror, data) = internal_error(vcpu.fd_mut().get_kvm_run());
                let data: Vec<String> = data.iter().map(|d| format!("{d:#x}")).collect();
                let (code, what) = if suberror == KVM_INTERNAL_ERROR_EMULATION {
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
                    message: format!("{what} (suberror {suberror}, data [{}])", data.join(", ")),
                }
            }
            Rare::FailEntry(reason, cpu) => {
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
            Rare::Interrupted => {
                stats.count(ExitKind::Interrupted);
                vcpu.fd_mut().set_kvm_immediate_exit(0);
                Step::Continue
            }
            Rare::Unclaimed(kind, reason) => {
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
            Rare::RunFailed(e) => Step::Fail {
                code: "KVM_RUN_FAILED",
                exit: ExitKind::Other,
                message: format!("KVM_RUN failed: {e}"),
            },
        }
    }
}

/// Fills `access` for a user device's `step`; other steps leave it alone. (Inlined: a
/// built-in's exit would otherwise call it only to return.)
#[inline(always)]
fn fill(
    access: &mut DeviceAccess,
    step: &Step,
    kind: ExitKind,
    addr: u64,
    size: usize,
    data: &[u8],
) {
    let Step::User { device, offset, .. } = *step else {
        return;
    };
    access.kind = kind;
    access.device = device;
    access.offset = offset;
    access.addr = addr;
    access.size = size as u32;
    access.count = (data.len() / size.max(1)) as u32;
    access.data.clear();
    if !access.is_read() {
        append_bytes(&mut access.data, data);
    }
}

/// Completes `access` on `ctx`'s vCPU with `answer`: a read's bytes are kept in `reply`
/// for the loop to write into `kvm_run` as it re-enters, a failure ends the run. Returns
/// false when the loop must end.
pub(super) fn complete(
    ctx: &VcpuContext,
    access: &DeviceAccess,
    reply: &mut ReadReply,
    answer: Answer<'_>,
) -> bool {
    match answer {
        Answer::Replied(bytes) => {
            reply.keep(access, bytes);
            true
        }
        Answer::Failed(message) => {
            let vcpu = ctx.vcpu.lock_or_recover();
            let error = machine_error(ctx, &vcpu, "HANDLER_FAILED", access.kind, message);
            ctx.shared.end_with(Outcome::Error(error));
            false
        }
        Answer::Cancelled => false,
    }
}

/// The error that ends the run on `ctx`'s vCPU, with its registers and instruction bytes.
#[cold]
#[inline(never)]
fn machine_error(
    ctx: &VcpuContext,
    vcpu: &Vcpu,
    code: &'static str,
    exit: ExitKind,
    message: String,
) -> MachineError {
    let registers = vcpu.snapshot();
    let instruction = registers
        .as_ref()
        .map(|r| vcpu.instruction_bytes(&ctx.ram, r))
        .unwrap_or_default();
    let mut message = format!("vCPU {}: {message}", ctx.index);
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
        vcpu: ctx.index,
        exit,
        registers,
        instruction,
    }
}
