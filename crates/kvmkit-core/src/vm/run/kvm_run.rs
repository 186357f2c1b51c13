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

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::{KVM_EXIT_IO_IN, kvm_run__bindgen_ty_1__bindgen_ty_4 as KvmIo};

    /// The size of a vCPU's mapping here: three pages, as `KVM_GET_VCPU_MMAP_SIZE` reports
    /// on x86 (kvm_run, then the PIO data page, then the coalesced-MMIO ring).
    const MMAP_SIZE: usize = 3 * 4096;

    /// A zeroed stand-in for the mapping, 8-byte aligned as `kvm_run` needs.
    struct Mapping(Vec<u64>);

    impl Mapping {
        fn new() -> Self {
            Mapping(vec![0; MMAP_SIZE / 8])
        }

        fn run(&mut self) -> &mut kvm_run {
            // SAFETY: the buffer is MMAP_SIZE bytes (more than a kvm_run), 8-byte aligned,
            // and zeroed, which is a valid kvm_run; the borrow of `self` covers it.
            unsafe { &mut *self.0.as_mut_ptr().cast::<kvm_run>() }
        }

        fn bytes(&self) -> &[u8] {
            // SAFETY: the same buffer seen as the bytes it holds.
            unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), MMAP_SIZE) }
        }
    }

    fn io(direction: u32, size: u8, port: u16, count: u32, data_offset: u64) -> KvmIo {
        KvmIo {
            direction: direction as u8,
            size,
            port,
            count,
            data_offset,
        }
    }

    #[test]
    fn an_io_exit_reads_and_writes_its_data_where_kvm_placed_it() {
        let mut mapping = Mapping::new();
        let run = mapping.run();
        run.__bindgen_anon_1.io = io(KVM_EXIT_IO_OUT, 2, 0x3f8, 3, 4096);
        let exit = io_exit(run, MMAP_SIZE).expect("inside the mapping");
        assert_eq!((exit.port, exit.size, exit.write), (0x3f8, 2, true));
        assert_eq!(exit.data.len(), 6);
        exit.data.copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(&mapping.bytes()[4096..4102], &[1, 2, 3, 4, 5, 6]);
        assert!(mapping.bytes()[4102..].iter().all(|&b| b == 0));

        let run = mapping.run();
        run.__bindgen_anon_1.io = io(KVM_EXIT_IO_IN, 4, 0x60, 1, 4096);
        let exit = io_exit(run, MMAP_SIZE).expect("inside the mapping");
        assert!(!exit.write);
        assert_eq!(exit.data, &[1, 2, 3, 4]);
    }

    #[test]
    fn an_io_exit_whose_data_would_leave_the_mapping_is_refused() {
        let mut mapping = Mapping::new();
        let run = mapping.run();
        // Ends exactly at the mapping's end: accepted.
        run.__bindgen_anon_1.io = io(KVM_EXIT_IO_IN, 4, 0x60, 1024, (MMAP_SIZE - 4096) as u64);
        assert_eq!(io_exit(run, MMAP_SIZE).map(|e| e.data.len()), Some(4096));
        // One element past it, an offset past it, one that overflows, and no element size.
        for bad in [
            io(KVM_EXIT_IO_IN, 4, 0x60, 1025, (MMAP_SIZE - 4096) as u64),
            io(KVM_EXIT_IO_OUT, 1, 0x60, 1, MMAP_SIZE as u64),
            io(KVM_EXIT_IO_OUT, 255, 0x60, u32::MAX, u64::MAX - 8),
            io(KVM_EXIT_IO_OUT, 0, 0x60, 1, 4096),
        ] {
            let run = mapping.run();
            run.__bindgen_anon_1.io = bad;
            assert!(io_exit(run, MMAP_SIZE).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn an_internal_error_keeps_at_most_the_data_words_kvm_has_room_for() {
        let mut mapping = Mapping::new();
        let run = mapping.run();
        run.__bindgen_anon_1.internal.suberror = 1;
        run.__bindgen_anon_1.internal.ndata = u32::MAX;
        let mut words = [0; 16];
        words[0] = 0xdead;
        run.__bindgen_anon_1.internal.data = words;
        let (suberror, data) = internal_error(run);
        assert_eq!(suberror, 1);
        assert_eq!(data.len(), 16);
        assert_eq!(data[0], 0xdead);
        run.__bindgen_anon_1.internal.ndata = 2;
        assert_eq!(internal_error(run).1, vec![0xdead, 0]);
    }

    #[test]
    fn decoding_tells_an_interrupted_run_from_a_failed_one_and_keeps_an_mmio_access() {
        for errno in [libc::EINTR, libc::EAGAIN] {
            let raw = decode(Err(kvm_ioctls::Error::new(errno)));
            assert!(matches!(raw, Raw::Rare(Rare::Interrupted)));
            assert!(!raw.completes_on_entry());
        }
        let raw = decode(Err(kvm_ioctls::Error::new(libc::EFAULT)));
        assert!(matches!(raw, Raw::Rare(Rare::RunFailed(e)) if e.errno() == libc::EFAULT));
        let mut data = [0u8; 4];
        let raw = decode(Ok(VcpuExit::MmioRead(0xd000_0000, &mut data)));
        assert!(matches!(
            raw,
            Raw::Mmio {
                addr: 0xd000_0000,
                len: 4,
                write: false
            }
        ));
        assert!(raw.completes_on_entry());
    }
}
