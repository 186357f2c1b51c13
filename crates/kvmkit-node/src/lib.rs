//! Node.js bindings for kvmkit-core, built with napi-rs.
//!
//! This crate converts types and errors; all VMM logic lives in kvmkit-core. It mirrors the
//! TypeScript façade in `src/`, one napi class per façade class: `NativeMachine`
//! (machine.rs, with its devices, loaders and interrupts in devices.rs, loaders.rs and
//! irq.rs), `NativeVcpu` (vcpu.rs), `NativeMemory` (memory.rs), `NativeSerial` and
//! `NativeConsole` (serial.rs), `NativeEventFd` (irq.rs), the virtio devices (virtio.rs, with
//! `NativeVirtioConsole` in virtio_console.rs and `NativeNet` in virtio_net.rs); every
//! hand-off call and event is in handoff.rs, inline runs in inline.rs, and the constants TypeScript shares with it
//! (slot layout, record, exit and event kinds) in protocol.rs. The façade is the public API;
//! these exports are its private back end.

// The documented API is the TypeScript façade; the fields of these private JS objects are
// described there.
#![allow(missing_docs)]

mod bound_fn;
mod convert;
mod devices;
mod error;
mod handoff;
mod inline;
mod innermost;
mod irq;
mod loaders;
mod machine;
mod memory;
pub mod protocol;
mod serial;
mod vcpu;
mod virtio;
mod virtio_block;
mod virtio_console;
mod virtio_net;
mod vsock;

pub use convert::Registers;
pub use devices::{COM1_IRQ, COM1_PORT, DEBUG_CONSOLE_PORT, DEBUG_EXIT_PORT};
pub use handoff::{
    MachineHandle, NativeEvent, access_data, end_posted_streak, fail_access, fail_posted,
    reply_bytes, serve_begin, serve_end, serve_poll, serve_replier, take_posted,
};
pub use inline::{
    InlineRun, inline_access_data, inline_begin, inline_end, inline_fail, inline_step_bytes,
    inline_stepper,
};
pub use irq::NativeEventFd;
pub use machine::{NativeMachine, stop_machine};
pub use memory::NativeMemory;
pub use serial::{NativeConsole, NativeSerial};
pub use vcpu::NativeVcpu;
pub use virtio::NativeVirtioInfo;
pub use virtio_block::{NativeBlockRequest, NativeDisk, NativeDiskFile};
pub use virtio_console::NativeVirtioConsole;
pub use virtio_net::{NativeNet, NativeNetCounters};
pub use vsock::{NativeVsock, NativeVsockConnected};

use napi_derive::napi;

use crate::error::{Result, core};

/// Opens the KVM device at `path` (default `/dev/kvm`) and checks it.
pub(crate) fn open_host(path: Option<&str>) -> Result<kvmkit_core::kvm::KvmHost> {
    kvmkit_core::kvm::KvmHost::open_path(path.unwrap_or(kvmkit_core::kvm::KVM_PATH)).map_err(core)
}

/// What the host's KVM reports about itself.
#[napi(object)]
pub struct KvmInfo {
    pub path: String,
    pub api_version: i32,
    pub recommended_vcpus: u32,
    pub max_vcpus: u32,
    pub max_memslots: u32,
    pub vcpu_mmap_size: u32,
    pub capabilities: Vec<String>,
    /// Optional capabilities the host lacks: `[name, what needs it]`.
    pub missing: Vec<Vec<String>>,
}

/// The CPUID features the host's KVM can present to guests.
#[napi(catch_unwind)]
pub fn supported_cpuid(path: Option<String>) -> Result<Vec<convert::CpuidEntry>> {
    open_host(path.as_deref())?
        .supported_cpuid()
        .map(|c| convert::cpuid_to_js(&c))
        .map_err(core)
}

/// Opens the KVM device (default `/dev/kvm`), checks it, and reports its limits.
#[napi(catch_unwind)]
pub fn kvm_info(path: Option<String>) -> Result<KvmInfo> {
    let host = open_host(path.as_deref())?;
    let info = host.info().map_err(core)?;
    Ok(KvmInfo {
        path: info.path,
        api_version: info.api_version,
        recommended_vcpus: info.recommended_vcpus,
        max_vcpus: info.max_vcpus,
        max_memslots: info.max_memslots,
        vcpu_mmap_size: u32::try_from(info.vcpu_mmap_size).unwrap_or(u32::MAX),
        capabilities: info.capabilities.iter().map(|c| c.to_string()).collect(),
        missing: info
            .missing
            .iter()
            .map(|(name, what)| vec![name.to_string(), what.to_string()])
            .collect(),
    })
}
