//! What a synchronous disk backend does, and the positional vectored I/O (`preadv(2)`,
//! `pwritev(2)`) every file-backed one is built on.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::VolatileSlice;

/// A disk served on the I/O thread: each call completes before it returns.
///
/// Offsets and lengths are in bytes and already checked against [`DiskBackend::size`].
pub trait DiskBackend: Send {
    /// The disk's size in bytes (a multiple of 512).
    fn size(&self) -> u64;

    /// Fills `bufs`, in order, from the disk at `offset`.
    ///
    /// # Errors
    ///
    /// The OS error of the read; a read that ends early is `UnexpectedEof`.
    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()>;

    /// Writes `bufs`, in order, to the disk at `offset`.
    ///
    /// # Errors
    ///
    /// The OS error of the write.
    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()>;

    /// Makes completed writes durable.
    ///
    /// # Errors
    ///
    /// The OS error of the sync.
    fn flush(&mut self) -> io::Result<()>;

    /// Tells the disk `len` bytes at `offset` are no longer needed (their content becomes
    /// unspecified).
    ///
    /// # Errors
    ///
    /// The OS error of the operation.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes `len` bytes at `offset` read as zeroes, freeing their space if `unmap` allows.
    ///
    /// # Errors
    ///
    /// The OS error of the operation.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
}

impl std::fmt::Debug for dyn DiskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBackend")
            .field("size", &self.size())
            .finish()
    }
}

/// The `iovec`s of `bufs`.
fn iovecs(bufs: &[VolatileSlice<'_>]) -> Vec<libc::iovec> {
    bufs.iter()
        .filter(|b| !b.is_empty())
        .map(|b| libc::iovec {
            iov_base: b.ptr_guard_mut().as_ptr().cast(),
            iov_len: b.len(),
        })
        .collect()
}

/// Drops the first `n` bytes of `iov`.
fn advance(iov: &mut Vec<libc::iovec>, mut n: usize) {
    let whole = iov.iter().take_while(|v| {
        let drop = v.iov_len <= n;
        if drop {
            n -= v.iov_len;
        }
        drop
    });
    let count = whole.count();
    iov.drain(..count);
    if let Some(first) = iov.first_mut() {
        // SAFETY: `n < first.iov_len`, so the pointer stays inside the same buffer.
        first.iov_base = unsafe { first.iov_base.cast::<u8>().add(n) }.cast();
        first.iov_len -= n;
    }
}

/// Reads into or writes from `bufs` at `offset` of `file`, until all is moved.
fn transfer(file: &File, offset: u64, bufs: &[VolatileSlice<'_>], write: bool) -> io::Result<()> {
    let mut iov = iovecs(bufs);
    let mut offset = offset;
    while !iov.is_empty() {
        let count = iov.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: every iovec describes a live buffer of guest RAM (the slices borrow the
        // guest memory mapping for the call), writable where the kernel writes into it.
        let n = unsafe {
            if write {
                libc::pwritev(file.as_raw_fd(), iov.as_ptr(), count, at)
            } else {
                libc::preadv(file.as_raw_fd(), iov.as_ptr(), count, at)
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(if write {
                io::ErrorKind::WriteZero.into()
            } else {
                io::ErrorKind::UnexpectedEof.into()
            });
        }
        let n = n as usize;
        advance(&mut iov, n);
        offset += n as u64;
    }
    Ok(())
}

/// `preadv(2)` into `bufs` from `offset` of `file`, until they are full.
///
/// # Errors
///
/// The OS error; `UnexpectedEof` if the file ends first.
pub fn read_vectored_at(file: &File, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
    transfer(file, offset, bufs, false)
}

/// `pwritev(2)` of `bufs` at `offset` of `file`, until all is written.
///
/// # Errors
///
/// The OS error.
pub fn write_vectored_at(file: &File, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
    transfer(file, offset, bufs, true)
}

/// Writes `len` zero bytes at `offset` of `file`.
///
/// # Errors
///
/// The OS error.
pub fn write_zeroes_at(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 64 * 1024;
    let zeroes = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK) as usize;
        file.write_all_at(&zeroes[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// `fallocate(2)` with `mode` over `len` bytes at `offset` of `file`.
///
/// # Errors
///
/// The OS error (`EOPNOTSUPP` where the file system lacks the mode).
pub fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    let offset = libc::off_t::try_from(offset).map_err(|_| invalid())?;
    let len = libc::off_t::try_from(len).map_err(|_| invalid())?;
    loop {
        // SAFETY: plain syscall on an fd we own; no memory is passed.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `e` says the file system does not support the operation.
pub fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}
