//! Every read of the `kvm_run` union: the exit, decoded without holding on to its borrow,
//! and the data areas of I/O and MMIO exits.

use kvm_bindings::{KVM_EXIT_IO_OUT, kvm_run};
use kvm_ioctls::VcpuExit;

use crate::exit::ExitKind;

/// An exit, decoded without holding on to the `kvm_run` borrow: a port or MMIO access, the
/// exits the loop answers on its hot path, or one of the rest.
pub(super) enum Raw {
    Io,
    /// Its data stays in `kvm_run` ([`mmio_data`]), where a read's answer goes too.
    Mmio {
        addr: u64,
        len: usize,
        write: bool,
    },
    Rare(Rare),
}

/// The exits other than port and MMIO accesses.
pub(super) enum Rare {
    Hlt,
    Shutdown,
    SystemEvent(u32),
    InternalError,
    FailEntry(u64, u32),
    Interrupted,
    Unclaimed(ExitKind, u32),
    RunFailed(kvm_ioctls::Error),
}

impl Raw {
    /// Whether the exit is an I/O or MMIO access, which KVM completes (writing a read's
    /// data into the guest's registers, moving RIP past the instruction) only when the vCPU
    /// next enters `KVM_RUN`.
    pub(super) fn completes_on_entry(&self) -> bool {
        matches!(self, Raw::Io | Raw::Mmio { .. })
    }
}

/// Decodes the result of `KVM_RUN`.
pub(super) fn decode(result: Result<VcpuExit<'_>, kvm_ioctls::Error>) -> Raw {
    match result {
        Ok(VcpuExit::IoIn(..) | VcpuExit::IoOut(..)) => Raw::Io,
        Ok(VcpuExit::MmioRead(addr, data)) => Raw::Mmio {
            addr,
            len: data.len(),
            write: false,
        },
        Ok(VcpuExit::MmioWrite(addr, data)) => Raw::Mmio {
            addr,
            len: data.len(),
            write: true,
        },
        Ok(VcpuExit::Hlt) => Raw::Rare(Rare::Hlt),
        Ok(VcpuExit::Shutdown) => Raw::Rare(Rare::Shutdown),
        Ok(VcpuExit::SystemEvent(t, _)) => Raw::Rare(Rare::SystemEvent(t)),
        Ok(VcpuExit::InternalError) => Raw::Rare(Rare::InternalError),
        Ok(VcpuExit::FailEntry(reason, cpu)) => Raw::Rare(Rare::FailEntry(reason, cpu)),
        Ok(VcpuExit::Intr) => Raw::Rare(Rare::Interrupted),
        Ok(VcpuExit::Debug(_)) => Raw::Rare(Rare::Unclaimed(
            ExitKind::Debug,
            kvm_bindings::KVM_EXIT_DEBUG,
        )),
        Ok(VcpuExit::IrqWindowOpen) => Raw::Rare(Rare::Unclaimed(
            ExitKind::IrqWindowOpen,
            kvm_bindings::KVM_EXIT_IRQ_WINDOW_OPEN,
        )),
        Ok(VcpuExit::Unknown) => Raw::Rare(Rare::Unclaimed(
            ExitKind::Unknown,
            kvm_bindings::KVM_EXIT_UNKNOWN,
        )),
        Ok(VcpuExit::Unsupported(reason)) => Raw::Rare(Rare::Unclaimed(ExitKind::Other, reason)),
        Ok(_) => Raw::Rare(Rare::Unclaimed(ExitKind::Other, u32::MAX)),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            Raw::Rare(Rare::Interrupted)
        }
        Err(e) => Raw::Rare(Rare::RunFailed(e)),
    }
}

/// A port-I/O exit: where it goes, and its data in the `kvm_run` area.
pub(super) struct IoExit<'a> {
    pub(super) port: u16,
    pub(super) size: usize,
    pub(super) write: bool,
    pub(super) data: &'a mut [u8],
}

/// The port, element size, direction and data of a `KVM_EXIT_IO` exit; `None` if KVM
/// placed the data outside the `mmap_size` bytes of the mapping.
pub(super) fn io_exit(run: &mut kvm_run, mmap_size: usize) -> Option<IoExit<'_>> {
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
    Some(IoExit {
        port: io.port,
        size,
        write: u32::from(io.direction) == KVM_EXIT_IO_OUT,
        data,
    })
}

/// The data area of a `KVM_EXIT_MMIO` exit, all eight bytes of it: the access is the
/// first `len` (what [`decode`] reports; KVM reads back only those for a read). Whole, so
/// the loop reads and answers it in place, without a copy of variable length (a call).
pub(super) fn mmio_data(run: &mut kvm_run) -> &mut [u8; 8] {
    // SAFETY: only called after KVM_RUN returned KVM_EXIT_MMIO, so `mmio` is the active member.
    unsafe { &mut run.__bindgen_anon_1.mmio.data }
}

/// The suberror and data words of a `KVM_EXIT_INTERNAL_ERROR` exit.
pub(super) fn internal_error(run: &kvm_run) -> (u32, Vec<u64>) {
    // SAFETY: only called after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, so `internal` is
    // the active member of the union.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    (internal.suberror, internal.data[..n].to_vec())
}
