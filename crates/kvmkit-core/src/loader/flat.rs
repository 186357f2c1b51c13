//! Raw flat binaries: the file's bytes copied to a guest address, entered there (or at a
//! given entry point) in the CPU mode the code was written for.

use std::path::Path;

use crate::error::{Error, Result};
use crate::memory::GuestRam;
use crate::vcpu::Vcpu;
use crate::x86::mode::CpuMode;

/// What to load.
#[derive(Debug, Clone, Copy)]
pub struct FlatBoot<'a> {
    /// The binary.
    pub path: &'a Path,
    /// Where its first byte goes.
    pub address: u64,
    /// Where it is entered (by default, `address`).
    pub entry: Option<u64>,
    /// The mode the vCPU starts in.
    pub mode: CpuMode,
    /// The initial stack pointer (0 for none).
    pub stack: u64,
}

/// Loads `boot` into `ram` and sets vCPU `vcpu` up to enter it; returns where it ends.
pub fn load(ram: &GuestRam, vcpu: &Vcpu, boot: &FlatBoot<'_>) -> Result<u64> {
    let error = |message: String| Error::Image {
        file: boot.path.display().to_string(),
        what: "binary",
        message,
    };
    let data = std::fs::read(boot.path).map_err(|e| error(e.to_string()))?;
    if data.is_empty() {
        return Err(error("the file is empty".into()));
    }
    let len = data.len() as u64;
    if !ram.contains(boot.address, len) {
        return Err(error(format!(
            "{len} bytes at {:#x} do not fit in guest RAM",
            boot.address
        )));
    }
    let entry = boot.entry.unwrap_or(boot.address);
    if !ram.contains(entry, 1) {
        return Err(Error::config(
            "entry",
            format!("{entry:#x} is not in guest RAM"),
        ));
    }
    ram.write(boot.address, &data)?;
    vcpu.setup(ram, boot.mode, entry, boot.stack)?;
    Ok(boot.address + len)
}
