//! virtio devices on `NativeMachine`: each is built by the core (`kvmkit_core::virtio`) and
//! attached on the virtio-mmio transport with an MMIO window and an interrupt line from the
//! core's allocator.

use kvmkit_core::platform::VirtioMmioInfo;
use kvmkit_core::virtio::rng::Rng;
use napi_derive::napi;

use crate::error::{Result, core};
use crate::machine::NativeMachine;

/// Where a virtio device was attached.
#[napi(object)]
#[derive(Clone)]
pub struct NativeVirtioInfo {
    pub name: String,
    #[napi(ts_type = "'mmio'")]
    pub space: String,
    pub base: f64,
    pub length: f64,
    /// Its interrupt line (GSI).
    pub irq: u32,
}

impl NativeVirtioInfo {
    pub(crate) fn of(name: &str, info: &VirtioMmioInfo) -> Self {
        NativeVirtioInfo {
            name: name.into(),
            space: "mmio".into(),
            base: info.base as f64,
            length: info.len as f64,
            irq: info.gsi,
        }
    }
}

/// The device number under which a virtio device at `base` announces its output (the
/// `device` of an output event: MMIO windows sit below 4 GiB, above every port number).
pub(crate) fn announced_as(base: u64) -> u32 {
    u32::try_from(base).unwrap_or(u32::MAX)
}

#[napi]
impl NativeMachine {
    /// Adds a virtio entropy device (virtio-rng) fed from the host's `getrandom`.
    #[napi(catch_unwind)]
    pub fn add_rng(&self) -> Result<NativeVirtioInfo> {
        let info = self
            .m()?
            .add_virtio(Box::new(Rng::default()))
            .map_err(core)?;
        Ok(NativeVirtioInfo::of("virtio-rng", &info))
    }
}
