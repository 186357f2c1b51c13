//! Events from vCPU threads, delivered to JS through a threadsafe function.

use napi::bindgen_prelude::{BigInt, Buffer};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use std::sync::Mutex;

use kvmkit_core::exit::{DeviceAccess, Outcome, SystemEvent};
use kvmkit_core::machine::ExitHandler;

/// `NativeEvent.type` of a device access waiting for an answer.
pub const EVENT_ACCESS: u32 = 0;
/// `NativeEvent.type` when every vCPU has paused.
pub const EVENT_PAUSED: u32 = 1;
/// `NativeEvent.type` when the run ended.
pub const EVENT_END: u32 = 2;
/// `NativeEvent.type` when posted writes are waiting (take them with `takePosted`).
pub const EVENT_POSTED: u32 = 3;
/// `NativeEvent.type` when serial port `device` has output (take it with `takeSerialOutput`).
pub const EVENT_OUTPUT: u32 = 4;

/// One event, flattened so the common case (a single access of up to 8 bytes) needs no buffer.
#[napi(object)]
pub struct NativeEvent {
    /// `EVENT_ACCESS`, `EVENT_PAUSED` or `EVENT_END`.
    pub r#type: u32,
    pub vcpu: u32,
    /// The `ExitKind` index of an access.
    pub exit: u32,
    pub device: u32,
    pub offset: f64,
    pub addr: f64,
    pub size: u32,
    pub count: u32,
    /// The access's number on its vCPU, for `claimAccess`.
    pub seq: f64,
    /// Low 32 bits of a single write's value.
    pub value: u32,
    /// High 32 bits of a single 8-byte write's value.
    pub value_hi: u32,
    /// The bytes of a string-I/O write (count > 1).
    pub data: Option<Buffer>,
    pub outcome: Option<NativeOutcome>,
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
    pub fn new(callback: Callback) -> Self {
        JsEvents(Mutex::new(Some(callback)))
    }

    fn send(&self, event: NativeEvent) {
        if let Some(cb) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            cb.call(event, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

fn event(r#type: u32) -> NativeEvent {
    NativeEvent {
        r#type,
        vcpu: 0,
        exit: 0,
        device: 0,
        offset: 0.0,
        addr: 0.0,
        size: 0,
        count: 0,
        seq: 0.0,
        value: 0,
        value_hi: 0,
        data: None,
        outcome: None,
    }
}

/// The event for an access waiting for an answer.
pub fn access_event(vcpu: u32, a: &DeviceAccess) -> NativeEvent {
    let mut e = event(EVENT_ACCESS);
    e.vcpu = vcpu;
    e.exit = a.kind as u32;
    e.device = a.device;
    e.offset = a.offset as f64;
    e.addr = a.addr as f64;
    e.size = a.size;
    e.count = a.count;
    e.seq = a.seq as f64;
    if a.count > 1 {
        e.data = Some(a.data.clone().into());
    } else if !a.data.is_empty() {
        let mut v = [0u8; 8];
        let n = a.data.len().min(8);
        v[..n].copy_from_slice(&a.data[..n]);
        let v = u64::from_le_bytes(v);
        e.value = v as u32;
        e.value_hi = (v >> 32) as u32;
    }
    e
}

impl ExitHandler for JsEvents {
    fn on_access(&self, vcpu: u32, a: &DeviceAccess) {
        self.send(access_event(vcpu, a));
    }

    fn on_posted(&self) {
        self.send(event(EVENT_POSTED));
    }

    fn on_output(&self, device: u32) {
        let mut e = event(EVENT_OUTPUT);
        e.device = device;
        self.send(e);
    }

    fn on_paused(&self) {
        self.send(event(EVENT_PAUSED));
    }

    fn on_end(&self, outcome: &Outcome) {
        let mut e = event(EVENT_END);
        e.outcome = Some(to_js(outcome));
        self.send(e);
        // Release the callback: queued calls still run, then Node may exit.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
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
