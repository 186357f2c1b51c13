//! The exit hot paths: free functions (much cheaper to call than class methods) that hand
//! JS its next access in a `Float64Array` the caller reuses, so an exit costs one napi call
//! and no allocation. Inline runs step a vCPU on the calling thread; threaded runs let the
//! event loop poll for accesses while they stream in, instead of being woken for each.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kvmkit_core::exit::DeviceAccess;
use kvmkit_core::machine::{InlineAnswer, InlineVcpu, Machine};
use napi::bindgen_prelude::{Buffer, External, Float64ArraySlice};
use napi_derive::napi;

use crate::error::{Result, core, invalid_arg};

/// The vCPUs of an inline run, shared with their machine so that close() releases them.
pub struct InlineRun(pub Arc<Mutex<Vec<InlineVcpu>>>);

/// A machine for the hot-path calls; weak, so it does not outlive close().
pub struct MachineHandle(pub Weak<Machine>);

impl MachineHandle {
    fn get(&self) -> Result<Arc<Machine>> {
        self.0.upgrade().ok_or_else(|| {
            core(kvmkit_core::Error::InvalidState {
                op: "use the machine",
                state: "closed",
            })
        })
    }
}

/// How many numbers one access takes in the caller's `Float64Array`:
/// vcpu, exit, device, offset, addr, size, count, value, valueHi.
pub const ACCESS_FIELDS: usize = 9;

fn write_access(out: &mut [f64], vcpu: u32, a: &DeviceAccess) {
    let mut v = [0u8; 8];
    if a.count == 1 {
        let n = a.data.len().min(8);
        v[..n].copy_from_slice(&a.data[..n]);
    }
    let value = u64::from_le_bytes(v);
    let fields = [
        f64::from(vcpu),
        f64::from(a.kind as u32),
        f64::from(a.device),
        a.offset as f64,
        a.addr as f64,
        f64::from(a.size),
        f64::from(a.count),
        f64::from(value as u32),
        f64::from((value >> 32) as u32),
    ];
    out[..ACCESS_FIELDS].copy_from_slice(&fields);
}

fn step(
    run: &External<InlineRun>,
    vcpu: u32,
    answer: InlineAnswer<'_>,
    mut out: Float64ArraySlice<'_>,
) -> Result<bool> {
    // SAFETY: the slice is a view of a JS Float64Array that the JS thread, which is running
    // this call, does not touch until it returns.
    let out = unsafe { out.as_mut() };
    if out.len() < ACCESS_FIELDS {
        return Err(invalid_arg(
            "out",
            format!("needs {ACCESS_FIELDS} elements"),
        ));
    }
    let mut vcpus = run.0.lock().unwrap_or_else(|e| e.into_inner());
    let count = vcpus.len() as u32;
    let v = vcpus
        .get_mut(vcpu as usize)
        .ok_or_else(|| core(kvmkit_core::Error::NoSuchVcpu { index: vcpu, count }))?;
    Ok(match v.step(Some(answer)) {
        Some(access) => {
            write_access(out, vcpu, access);
            true
        }
        None => false,
    })
}

/// Answers vCPU `vcpu`'s pending access (if any) with a value of up to 8 bytes and runs it
/// to its next access, written into `out`; false once its run ended.
#[napi(catch_unwind)]
pub fn inline_step(
    run: &External<InlineRun>,
    vcpu: u32,
    value: u32,
    value_hi: u32,
    out: Float64ArraySlice,
) -> Result<bool> {
    let v = (u64::from(value_hi) << 32) | u64::from(value);
    step(run, vcpu, InlineAnswer::Reply(&v.to_le_bytes()), out)
}

/// Answers a string-I/O read with `data` and runs the vCPU to its next access.
#[napi(catch_unwind)]
pub fn inline_step_bytes(
    run: &External<InlineRun>,
    vcpu: u32,
    data: Buffer,
    out: Float64ArraySlice,
) -> Result<bool> {
    step(run, vcpu, InlineAnswer::Reply(&data), out)
}

/// Fails vCPU `vcpu`'s pending access: the machine stops with `message`.
#[napi(catch_unwind)]
pub fn inline_fail(
    run: &External<InlineRun>,
    vcpu: u32,
    message: String,
    out: Float64ArraySlice,
) -> Result<bool> {
    step(run, vcpu, InlineAnswer::Fail(message), out)
}

/// The bytes of vCPU `vcpu`'s pending string-I/O write (empty if it has none).
#[napi(catch_unwind)]
pub fn inline_access_data(run: &External<InlineRun>, vcpu: u32) -> Buffer {
    let vcpus = run.0.lock().unwrap_or_else(|e| e.into_inner());
    vcpus
        .get(vcpu as usize)
        .and_then(InlineVcpu::pending)
        .map(|a| a.data.clone())
        .unwrap_or_default()
        .into()
}

/// Spins up to `spin_micros` for a vCPU's access to a user device; writes it into `out`.
/// Returns 0 if none came, 1 for an access, 2 for an access with posted writes waiting to
/// be taken first.
#[napi(catch_unwind)]
pub fn poll_access(
    handle: &External<MachineHandle>,
    spin_micros: u32,
    mut out: Float64ArraySlice,
) -> Result<u32> {
    // SAFETY: as in `step`: the JS thread does not touch the array during this call.
    let out = unsafe { out.as_mut() };
    if out.len() < ACCESS_FIELDS {
        return Err(invalid_arg(
            "out",
            format!("needs {ACCESS_FIELDS} elements"),
        ));
    }
    let m = handle.get()?;
    let got = m.poll_access(Duration::from_micros(spin_micros.into()), |vcpu, a| {
        write_access(out, vcpu, a)
    });
    Ok(match (got, got && m.has_posted()) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => 2,
    })
}

/// Claims the access vCPU `vcpu` announced with number `seq`; false if a poll took it.
#[napi(catch_unwind)]
pub fn claim_access(handle: &External<MachineHandle>, vcpu: u32, seq: f64) -> Result<bool> {
    handle.get()?.claim(vcpu, seq as u64).map_err(core)
}

/// Answers the access vCPU `vcpu` waits on with a value of up to 8 bytes.
#[napi(catch_unwind)]
pub fn reply_access(
    handle: &External<MachineHandle>,
    vcpu: u32,
    value: u32,
    value_hi: u32,
) -> Result<()> {
    let v = (u64::from(value_hi) << 32) | u64::from(value);
    handle.get()?.reply(vcpu, &v.to_le_bytes()).map_err(core)
}

/// The bytes of the string-I/O write vCPU `vcpu` waits on (from a poll).
#[napi(catch_unwind)]
pub fn polled_access_data(handle: &External<MachineHandle>, vcpu: u32) -> Result<Buffer> {
    let m = handle.get()?;
    m.posted_access_data(vcpu).map(Into::into).map_err(core)
}
