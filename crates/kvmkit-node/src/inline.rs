//! Inline runs seen from JS: vCPUs driven by the JS thread itself, each step answering one
//! access and running the guest to the next (see `Handoff.runInline` in `src/handoff.ts`).
//!
//! A step is the hottest crossing kvmkit has, so it takes no arguments: napi-rs gives a
//! call with arguments a borrow-tracking scope (an allocation and a global map lookup for an
//! `External`), which cost more than the rest of the step. Instead, `inlineBegin` makes the
//! run this thread's driven run, and the records travel in a slot of binding-owned memory
//! that JS sees as a `Float64Array` over it (an external `ArrayBuffer`): JS leaves the
//! answer (`SLOT_VALUE`, `SLOT_VALUE_HI`) and the vCPU (`SLOT_VCPU`) there, and the step
//! writes the next access in its place. The step itself is not a `#[napi]` function but
//! one bound to this thread's runs through plain Node-API ([`crate::bound_fn`]), one per
//! thread, so every call site sees the same function and V8's optimizing compiler calls it
//! directly.

use std::cell::{RefCell, UnsafeCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use napi::Env;
use napi::bindgen_prelude::{Buffer, External, Float64ArraySlice, Unknown};
use napi_derive::napi;

use kvmkit_core::sync::LockExt;
use kvmkit_core::vm::{InlineAnswer, InlineVcpu};

use crate::bound_fn::bind;
use crate::error::{Result, core, napi};
use crate::handoff::{slot_answer, write_access};
use crate::innermost::innermost;
use crate::protocol::{SLOT_FIELDS, SLOT_VCPU};

const FIELDS: usize = SLOT_FIELDS as usize;

/// An inline run, as the `External` JS holds.
pub struct InlineRun(Arc<RunState>);

struct RunState {
    /// Its vCPUs, shared with their machine so that close() releases them.
    vcpus: Arc<Mutex<Vec<InlineVcpu>>>,
    slot: SharedSlot,
    /// The slot's `Float64Array` was made (one `ArrayBuffer` per memory).
    slot_given: AtomicBool,
}

impl InlineRun {
    /// The run of `vcpus`.
    pub fn new(vcpus: Arc<Mutex<Vec<InlineVcpu>>>) -> Self {
        InlineRun(Arc::new(RunState {
            vcpus,
            slot: SharedSlot(UnsafeCell::new([0.0; FIELDS])),
            slot_given: AtomicBool::new(false),
        }))
    }
}

/// One slot of binding-owned memory that JS also sees.
struct SharedSlot(UnsafeCell<[f64; FIELDS]>);

// SAFETY: the slot is read and written only on the JS thread that drives its run — by JS
// between calls, by the binding inside the inline calls that thread makes — and the
// `Arc` holding it reaches other threads only to be dropped.
unsafe impl Sync for SharedSlot {}
// SAFETY: as above.
unsafe impl Send for SharedSlot {}

impl SharedSlot {
    /// The fields, for the duration of one call from the JS thread that owns the slot.
    #[allow(clippy::mut_from_ref)] // Exclusive by the single-thread contract above.
    fn fields(&self) -> &mut [f64; FIELDS] {
        // SAFETY: only the owning JS thread calls this, inside one native call, during
        // which no JS runs and no other reference to the fields is alive.
        unsafe { &mut *self.0.get() }
    }
}

/// The inline runs one thread drives, innermost last (a device handler may drive another
/// machine inline).
type Driving = RefCell<Vec<Arc<RunState>>>;

thread_local! {
    /// This thread's runs, shared with its step function.
    static DRIVING: Rc<Driving> = Rc::new(RefCell::new(Vec::new()));
}

/// Calls `f` with the innermost of `runs`.
fn driven<T>(runs: &Driving, f: impl FnOnce(&RunState) -> Result<T>) -> Result<T> {
    let op = "step an inline vCPU";
    let state = "not driving an inline run on this thread (call inlineBegin first)";
    innermost(runs, op, state, |run| f(run))
}

/// Calls `f` with the run this thread drives.
fn driven_here<T>(f: impl FnOnce(&RunState) -> Result<T>) -> Result<T> {
    DRIVING.with(|runs| driven(runs, f))
}

/// Answers the pending access of the vCPU in the slot's `SLOT_VCPU` with `answer` and runs
/// it to its next access, written into the slot; false once its run ended.
fn step(run: &RunState, answer: InlineAnswer<'_>) -> Result<bool> {
    let slot = run.slot.fields();
    let vcpu = slot[SLOT_VCPU as usize] as u32;
    let mut vcpus = run.vcpus.lock_or_recover();
    let count = vcpus.len() as u32;
    let v = vcpus
        .get_mut(vcpu as usize)
        .ok_or_else(|| core(kvmkit_core::Error::NoSuchVcpu { index: vcpu, count }))?;
    Ok(match v.step(Some(answer)) {
        Some(access) => {
            write_access(slot, vcpu, access);
            true
        }
        None => false,
    })
}

/// Makes `run` the inline run this thread drives, until `inlineEnd`, and returns its slot
/// as a `Float64Array` over the binding's memory (`SLOT_*` layout). Once per run.
///
/// # Errors
///
/// `INVALID_STATE` on a second call for the same run, or where the runtime does not allow
/// external `ArrayBuffer`s (the array would be a copy, and the steps would not be seen).
#[napi(catch_unwind)]
pub fn inline_begin<'env>(
    env: &'env Env,
    run: &External<InlineRun>,
) -> Result<Float64ArraySlice<'env>> {
    let state = Arc::clone(&run.0);
    if state.slot_given.swap(true, Ordering::Relaxed) {
        return Err(core(kvmkit_core::Error::InvalidState {
            op: "begin an inline run",
            state: "already begun",
        }));
    }
    let data = state.slot.0.get().cast::<f64>();
    let keep = Arc::clone(&state);
    // SAFETY: `data` points at FIELDS f64s owned by `keep`, which the finalizer holds until
    // V8 releases the array; no other ArrayBuffer is made over them (checked above).
    let array =
        unsafe { Float64ArraySlice::from_external(env, data, FIELDS, keep, |_, keep| drop(keep)) }
            .map_err(napi)?;
    if array.as_ptr() != data.cast_const() {
        return Err(core(kvmkit_core::Error::InvalidState {
            op: "run a vCPU inline",
            state: "in a JavaScript runtime that forbids external ArrayBuffers",
        }));
    }
    DRIVING.with(|runs| runs.borrow_mut().push(state));
    Ok(array)
}

/// Ends driving the innermost inline run on this thread.
#[napi(catch_unwind)]
pub fn inline_end() {
    DRIVING.with(|runs| runs.borrow_mut().pop());
}

/// This thread's step function: it answers the pending access (if any) of the vCPU in the
/// slot's `SLOT_VCPU` with the value in `SLOT_VALUE`/`SLOT_VALUE_HI` and runs it to its next
/// access, written into the slot, in the innermost run `inlineBegin` started on this thread;
/// it returns false once the vCPU's run ended, and throws `INVALID_STATE` outside
/// `inlineBegin`/`inlineEnd` and `NO_SUCH_VCPU` for a bad index. Call it once per thread
/// and keep it: every call site then calls one function, which V8 calls directly.
///
/// # Errors
///
/// A napi status error if Node-API could not create the function.
#[napi(catch_unwind, ts_return_type = "() => boolean")]
pub fn inline_stepper(env: &Env) -> Result<Unknown<'_>> {
    bind(env, "inlineStep", DRIVING.with(Rc::clone), |runs| {
        driven(runs, |run| {
            let answer = slot_answer(run.slot.fields());
            step(run, InlineAnswer::Reply(&answer))
        })
    })
}

/// Answers a string-I/O read with `data` and runs the vCPU to its next access.
///
/// # Errors
///
/// As `inlineStep`.
#[napi(catch_unwind)]
pub fn inline_step_bytes(data: Buffer) -> Result<bool> {
    driven_here(|run| step(run, InlineAnswer::Reply(&data)))
}

/// Fails the pending access: the machine stops with `message`.
///
/// # Errors
///
/// As `inlineStep`.
#[napi(catch_unwind)]
pub fn inline_fail(message: String) -> Result<bool> {
    driven_here(|run| step(run, InlineAnswer::Fail(message)))
}

/// The bytes of the pending string-I/O write of the vCPU in the slot (empty if none).
///
/// # Errors
///
/// As `inlineStep`.
#[napi(catch_unwind)]
pub fn inline_access_data() -> Result<Buffer> {
    driven_here(|run| {
        let vcpu = run.slot.fields()[SLOT_VCPU as usize] as usize;
        let vcpus = run.vcpus.lock_or_recover();
        Ok(vcpus
            .get(vcpu)
            .and_then(InlineVcpu::pending)
            .map(|a| a.data.clone())
            .unwrap_or_default()
            .into())
    })
}
