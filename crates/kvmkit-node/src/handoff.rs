//! The hand-off seen from JS: the core's [`kvmkit_core::handoff::Handoff`], in the slot
//! layout of [`crate::protocol`] (inline vCPUs, the other consumer of that layout, are in
//! [`crate::inline`]).
//!
//! Events reach JS through a threadsafe function: doorbells without payload (an access or
//! posted writes wait), a pause, the end. Everything else is a call from JS: a streak of
//! accesses is served between `serveBegin` (the machine's `External` handle and the slot)
//! and `serveEnd` with calls that take no arguments — the hot one (`serveReplier`'s
//! function, a plain Node-API one: [`crate::bound_fn`]) answers one access and writes the
//! next into the slot, so a streak of exits costs one cheap call per exit; the cold ones
//! (string-I/O bytes, failures, posted writes) take the handle.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use napi::Env;
use napi::bindgen_prelude::{
    BigInt, Buffer, External, Float64Array, Float64ArraySlice, Function, Unknown,
};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use kvmkit_core::exit::{DeviceAccess, ExitKind, Outcome, SystemEvent};
use kvmkit_core::handoff::posted::PostedWrite;
use kvmkit_core::sync::LockExt;
use kvmkit_core::vm::{ExitHandler, Machine};

use crate::bound_fn::bind;
use crate::convert::u64_from_js;
use crate::error::{JsError, Result, core, invalid_arg, napi};
use crate::innermost::innermost;
use crate::protocol::{
    EVENT_ACCESS, EVENT_DEVICE_ERROR, EVENT_END, EVENT_OUTPUT, EVENT_PAUSED, EVENT_POSTED,
    EXIT_MMIO_WRITE, POLL_ACCESS, POLL_ACCESS_AFTER_POSTED, POLL_NONE, RECORD_ACCESS,
    RECORD_POSTED_WRITE, SLOT_ADDR, SLOT_COUNT, SLOT_DEVICE, SLOT_EXIT, SLOT_FIELDS, SLOT_KIND,
    SLOT_OFFSET, SLOT_SIZE, SLOT_VALUE, SLOT_VALUE_HI, SLOT_VCPU,
};

const FIELDS: usize = SLOT_FIELDS as usize;

/// A machine's hand-off, for the calls below; weak, so it does not outlive close().
pub struct MachineHandle {
    machine: Weak<Machine>,
    /// Reused for every batch of posted writes.
    posted: Mutex<Vec<PostedWrite>>,
}

impl MachineHandle {
    /// A handle on `machine`.
    pub fn new(machine: &Arc<Machine>) -> Self {
        MachineHandle {
            machine: Arc::downgrade(machine),
            posted: Mutex::new(Vec::new()),
        }
    }

    fn get(&self) -> Result<Arc<Machine>> {
        self.machine.upgrade().ok_or_else(closed)
    }
}

/// The error of a call on a closed machine.
fn closed() -> JsError {
    core(kvmkit_core::Error::InvalidState {
        op: "use the machine",
        state: "closed",
    })
}

/// One slot of `out`, checked to be long enough.
fn slot<'a>(out: &'a mut Float64ArraySlice<'_>) -> Result<&'a mut [f64]> {
    // SAFETY: the slice is a view of a JS Float64Array that the JS thread, which is running
    // this call, does not touch until it returns.
    let out = unsafe { out.as_mut() };
    if out.len() < FIELDS {
        return Err(invalid_arg("slot", format!("needs {FIELDS} elements")));
    }
    Ok(&mut out[..FIELDS])
}

/// Writes one record: its kind, then the access's fields in `SLOT_*` order.
#[allow(clippy::too_many_arguments)] // One argument per slot field.
fn write_record(
    out: &mut [f64],
    kind: u32,
    vcpu: u32,
    exit: ExitKind,
    device: u32,
    offset: u64,
    addr: u64,
    size: u32,
    count: u32,
    value: u64,
) {
    let fields = [
        (SLOT_KIND, f64::from(kind)),
        (SLOT_VCPU, f64::from(vcpu)),
        (SLOT_EXIT, f64::from(exit as u32)),
        (SLOT_DEVICE, f64::from(device)),
        (SLOT_OFFSET, offset as f64),
        (SLOT_ADDR, addr as f64),
        (SLOT_SIZE, f64::from(size)),
        (SLOT_COUNT, f64::from(count)),
        (SLOT_VALUE, f64::from(value as u32)),
        (SLOT_VALUE_HI, f64::from((value >> 32) as u32)),
    ];
    for (field, value) in fields {
        out[field as usize] = value;
    }
}

pub(crate) fn write_access(out: &mut [f64], vcpu: u32, a: &DeviceAccess) {
    // String I/O's bytes are fetched with `accessData`; a single write's value travels here.
    let value = if a.count == 1 { a.value() } else { 0 };
    write_record(
        out,
        RECORD_ACCESS,
        vcpu,
        a.kind,
        a.device,
        a.offset,
        a.addr,
        a.size,
        a.count,
        value,
    );
}

/// The value answer of up to 8 bytes JS left in `slot`: its low and high halves are in
/// `SLOT_VALUE` and `SLOT_VALUE_HI`.
pub(crate) fn slot_answer(slot: &[f64]) -> [u8; 8] {
    let value = slot[SLOT_VALUE as usize] as u32;
    let value_hi = slot[SLOT_VALUE_HI as usize] as u32;
    ((u64::from(value_hi) << 32) | u64::from(value)).to_le_bytes()
}

/// Polls the hand-off for up to `spin`, writing an access into `out`; a `POLL_*` result.
fn poll(m: &Machine, spin: Duration, out: &mut [f64]) -> u32 {
    let h = m.handoff();
    let got = h.poll_streak(spin, |vcpu, a| write_access(out, vcpu, a));
    match (got, got && h.has_posted()) {
        (false, _) => POLL_NONE,
        (true, false) => POLL_ACCESS,
        (true, true) => POLL_ACCESS_AFTER_POSTED,
    }
}

/// A streak being served on this thread: the machine, and where its records travel.
struct Serving {
    machine: Weak<Machine>,
    /// The first of the `SLOT_FIELDS` numbers of the caller's slot.
    slot: NonNull<f64>,
    /// How long `serveReply` waits for the next access.
    spin: Duration,
}

/// The streaks one thread serves, innermost last (`serveBegin` to `serveEnd`).
type Streaks = RefCell<Vec<Serving>>;

thread_local! {
    /// This thread's streaks, shared with its reply function.
    static SERVING: Rc<Streaks> = Rc::new(RefCell::new(Vec::new()));
}

/// Calls `f` with the machine of the innermost of `streaks`, its slot and its spin.
fn serving_in<T>(
    streaks: &Streaks,
    f: impl FnOnce(&Machine, &mut [f64], Duration) -> Result<T>,
) -> Result<T> {
    let op = "serve an access";
    let state = "not serving a machine on this thread (call serveBegin first)";
    innermost(streaks, op, state, |streak| {
        let m = streak.machine.upgrade().ok_or_else(closed)?;
        // SAFETY: `serveBegin` checked that the slot has FIELDS numbers; the JS array over
        // them stays alive (the caller holds it, see `serve_begin`) and unmoved (an
        // ArrayBuffer's backing store does not move once napi has seen it) until `serveEnd`,
        // and no JS runs during this call, which is the only user of the pointer now.
        let slot = unsafe { std::slice::from_raw_parts_mut(streak.slot.as_ptr(), FIELDS) };
        f(&m, slot, streak.spin)
    })
}

/// Calls `f` with the machine of the streak this thread serves, its slot and its spin.
fn serving<T>(f: impl FnOnce(&Machine, &mut [f64], Duration) -> Result<T>) -> Result<T> {
    SERVING.with(|streaks| serving_in(streaks, f))
}

/// Starts serving `handle`'s machine on this thread, until `serveEnd`: the calls between
/// (`servePoll`, `serveReply`) take no arguments — the hottest crossing of the async path,
/// and napi-rs's conversion of an `External` and a typed array cost more than the rest of
/// it (a global lock and map lookup for the first). Accesses and answers travel in `slot`,
/// which the caller keeps alive, and neither transfers nor detaches, until `serveEnd`;
/// `serveReply` waits up to `spinMicros` for the next access.
///
/// # Errors
///
/// `INVALID_CONFIG` naming `slot` if it is shorter than `SLOT_FIELDS`.
#[napi(catch_unwind)]
pub fn serve_begin(
    handle: &External<MachineHandle>,
    mut slot: Float64ArraySlice,
    spin_micros: u32,
) -> Result<()> {
    let slot = NonNull::from(self::slot(&mut slot)?).cast::<f64>();
    SERVING.with(|s| {
        s.borrow_mut().push(Serving {
            machine: Weak::clone(&handle.machine),
            slot,
            spin: Duration::from_micros(spin_micros.into()),
        });
    });
    Ok(())
}

/// Ends serving the innermost machine `serveBegin` started on this thread: its vCPUs ring
/// for their accesses again (see `Handoff::poll_streak`).
#[napi(catch_unwind)]
pub fn serve_end() {
    let streak = SERVING.with(|s| s.borrow_mut().pop());
    if let Some(m) = streak.and_then(|s| s.machine.upgrade()) {
        m.end_streak();
    }
}

/// Waits up to `spinMicros` for a vCPU's access to a user device of the served machine and
/// writes it into the slot; a `POLL_*` value.
///
/// # Errors
///
/// `INVALID_STATE` outside `serveBegin`/`serveEnd` or once the machine closed.
#[napi(catch_unwind)]
pub fn serve_poll(spin_micros: u32) -> Result<u32> {
    serving(|m, slot, _| Ok(poll(m, Duration::from_micros(spin_micros.into()), slot)))
}

/// This thread's reply function: it answers the access of the slot's `SLOT_VCPU` with the
/// value in `SLOT_VALUE` and `SLOT_VALUE_HI`, then polls for the next one as `servePoll`
/// does, for the spin given to `serveBegin` (one call per exit for a streak), and returns a
/// `POLL_*` value. It throws `INVALID_STATE` outside `serveBegin`/`serveEnd` or once the
/// machine closed, and the reply's errors (`NOT_WAITING` when the vCPU waits on nothing).
/// A plain Node-API function, not a `#[napi]` one ([`crate::bound_fn`]): call this once per
/// thread and keep it.
///
/// # Errors
///
/// A napi status error if Node-API could not create the function.
#[napi(catch_unwind, ts_return_type = "() => number")]
pub fn serve_replier(env: &Env) -> Result<Unknown<'_>> {
    bind(env, "serveReply", SERVING.with(Rc::clone), |streaks| {
        serving_in(streaks, |m, slot, spin| {
            let vcpu = slot[SLOT_VCPU as usize] as u32;
            m.handoff().reply(vcpu, &slot_answer(slot)).map_err(core)?;
            Ok(poll(m, spin, slot))
        })
    })
}

/// Answers a string-I/O read vCPU `vcpu` waits on with `data`.
#[napi(catch_unwind)]
pub fn reply_bytes(handle: &External<MachineHandle>, vcpu: u32, data: Buffer) -> Result<()> {
    handle.get()?.handoff().reply(vcpu, &data).map_err(core)
}

/// Fails the access vCPU `vcpu` waits on: the machine stops with `message`.
#[napi(catch_unwind)]
pub fn fail_access(handle: &External<MachineHandle>, vcpu: u32, message: String) -> Result<()> {
    handle.get()?.handoff().fail(vcpu, message).map_err(core)
}

/// The bytes of the string-I/O write vCPU `vcpu` waits on.
#[napi(catch_unwind)]
pub fn access_data(handle: &External<MachineHandle>, vcpu: u32) -> Result<Buffer> {
    let m = handle.get()?;
    m.handoff()
        .read(vcpu, |a| a.data.clone().into())
        .map_err(core)
}

/// Takes every queued posted write, oldest first: one `RECORD_POSTED_WRITE` slot each;
/// if none is queued, waits up to `spinMicros` for one (as one take of a streak, which
/// `endPostedStreak` ends: see `Handoff::take_posted_streak`).
#[napi(catch_unwind)]
pub fn take_posted(handle: &External<MachineHandle>, spin_micros: u32) -> Result<Float64Array> {
    let m = handle.get()?;
    let mut posted = handle.posted.lock_or_recover();
    posted.clear();
    m.handoff()
        .take_posted_streak(Duration::from_micros(spin_micros.into()), &mut posted);
    let mut out = vec![0.0; posted.len() * FIELDS];
    for (w, slot) in posted.iter().zip(out.chunks_exact_mut(FIELDS)) {
        write_record(
            slot,
            RECORD_POSTED_WRITE,
            w.vcpu,
            w.kind,
            w.device,
            w.offset,
            w.addr,
            w.size,
            1,
            w.value,
        );
    }
    Ok(Float64Array::new(out))
}

/// Ends a streak of `takePosted` calls: vCPUs ring for their posted writes again, and a
/// ring is due now if some were queued meanwhile.
#[napi(catch_unwind)]
pub fn end_posted_streak(handle: &External<MachineHandle>) -> Result<()> {
    handle.get()?.end_posted_streak();
    Ok(())
}

/// Stops the machine because the handler of a posted write to `addr` failed.
#[napi(catch_unwind)]
pub fn fail_posted(
    handle: &External<MachineHandle>,
    vcpu: u32,
    exit: u32,
    addr: f64,
    message: String,
) -> Result<()> {
    let kind = if exit == EXIT_MMIO_WRITE {
        ExitKind::MmioWrite
    } else {
        ExitKind::IoOut
    };
    let addr = u64_from_js("addr", addr)?;
    handle.get()?.fail_posted(vcpu, kind, addr, message);
    Ok(())
}

/// One event from the vCPU threads.
#[napi(object)]
pub struct NativeEvent {
    /// `EVENT_*`.
    pub r#type: u32,
    /// The serial port of an `EVENT_OUTPUT`; the window of an `EVENT_DEVICE_ERROR`.
    pub device: u32,
    /// How the run ended, for `EVENT_END`.
    pub outcome: Option<NativeOutcome>,
    /// The device's name and why it failed, for `EVENT_DEVICE_ERROR`.
    pub failure: Option<NativeDeviceFailure>,
}

/// A device's failure.
#[napi(object)]
pub struct NativeDeviceFailure {
    pub name: String,
    pub message: String,
}

/// How a run ended.
#[napi(object)]
pub struct NativeOutcome {
    /// `halted`, `triple-fault`, `shutdown`, `reset`, `crash`, `system-event`,
    /// `device-request`, `stopped` or `error`.
    pub reason: String,
    pub vcpu: Option<u32>,
    pub device: Option<String>,
    pub status: Option<u32>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub exit: Option<String>,
    pub rip: Option<BigInt>,
    pub instruction: Option<Buffer>,
}

type Callback = ThreadsafeFunction<NativeEvent, (), NativeEvent, napi::Status, false>;

/// Forwards core events to a JS callback. Dropping the callback after the end lets Node exit.
pub struct JsEvents(Mutex<Option<Callback>>);

impl JsEvents {
    /// Forwards to `on_event` on the JS thread.
    pub fn new(on_event: Function<NativeEvent, ()>) -> Result<Arc<Self>> {
        let callback = on_event
            .build_threadsafe_function()
            .callee_handled::<false>()
            .build()
            .map_err(napi)?;
        Ok(Arc::new(JsEvents(Mutex::new(Some(callback)))))
    }

    fn send(&self, r#type: u32, device: u32, outcome: Option<NativeOutcome>) {
        self.send_event(NativeEvent {
            r#type,
            device,
            outcome,
            failure: None,
        });
    }

    fn send_event(&self, event: NativeEvent) {
        if let Some(cb) = self.0.lock_or_recover().as_ref() {
            cb.call(event, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

impl ExitHandler for JsEvents {
    fn on_access(&self) {
        self.send(EVENT_ACCESS, 0, None);
    }

    fn on_posted(&self) {
        self.send(EVENT_POSTED, 0, None);
    }

    fn on_output(&self, device: u32) {
        self.send(EVENT_OUTPUT, device, None);
    }

    fn on_device_error(&self, device: &str, base: u64, message: &str) {
        self.send_event(NativeEvent {
            r#type: EVENT_DEVICE_ERROR,
            device: u32::try_from(base).unwrap_or(u32::MAX),
            outcome: None,
            failure: Some(NativeDeviceFailure {
                name: device.into(),
                message: message.into(),
            }),
        });
    }

    fn on_paused(&self) {
        self.send(EVENT_PAUSED, 0, None);
    }

    fn on_end(&self, outcome: &Outcome) {
        self.send(EVENT_END, 0, Some(to_js(outcome)));
        // Release the callback: queued calls still run, then Node may exit.
        self.0.lock_or_recover().take();
    }
}

/// Converts a core outcome.
pub fn to_js(outcome: &Outcome) -> NativeOutcome {
    let mut o = NativeOutcome {
        reason: String::new(),
        vcpu: None,
        device: None,
        status: None,
        code: None,
        message: None,
        exit: None,
        rip: None,
        instruction: None,
    };
    o.reason = match outcome {
        Outcome::Halted => "halted",
        Outcome::Stopped => "stopped",
        Outcome::TripleFault { vcpu } => {
            o.vcpu = Some(*vcpu);
            "triple-fault"
        }
        Outcome::SystemEvent { event, vcpu } => {
            o.vcpu = Some(*vcpu);
            match event {
                SystemEvent::Shutdown => "shutdown",
                SystemEvent::Reset => "reset",
                SystemEvent::Crash => "crash",
                SystemEvent::Other(t) => {
                    o.status = Some(*t);
                    "system-event"
                }
            }
        }
        Outcome::DeviceRequest { device, status } => {
            o.device = Some(device.clone());
            o.status = Some(*status);
            "device-request"
        }
        Outcome::Error(err) => {
            o.vcpu = Some(err.vcpu);
            o.code = Some(err.code.into());
            o.message = Some(err.message.clone());
            o.exit = Some(err.exit.name().into());
            o.rip = err.registers.map(|r| BigInt::from(r.rip));
            o.instruction = Some(err.instruction.clone().into());
            "error"
        }
    }
    .into();
    o
}
