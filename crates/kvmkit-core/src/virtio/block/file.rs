//! A raw disk image in a file (or a block device), read with `preadv(2)` and written with
//! `pwritev(2)`; discard punches holes and write-zeroes zeroes ranges with `fallocate(2)`.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

use vm_memory::VolatileSlice;

use crate::error::{Error, Result};
use crate::virtio::block::backend::{
    DiskBackend, fallocate, read_vectored_at, unsupported, write_vectored_at, write_zeroes_at,
};
use crate::virtio::block::request::SECTOR_SIZE;

/// Opens `path` for the device, read-write unless `read_only`, and measures it.
///
/// # Errors
///
/// `BAD_DISK` naming the file if it cannot be opened, is empty, or is not a whole number of
/// 512-byte sectors.
pub fn open_image(path: &Path, read_only: bool) -> Result<(File, u64)> {
    let bad = |message: String| Error::Disk {
        path: path.display().to_string(),
        message,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|e| {
            bad(match e.kind() {
                io::ErrorKind::NotFound => {
                    "no such file: give the path of an existing disk image".into()
                }
                io::ErrorKind::PermissionDenied if !read_only => {
                    format!("{e}: make it writable, or attach it read-only")
                }
                _ => format!("cannot open it: {e}"),
            })
        })?;
    // The end, rather than the metadata's length, so block devices have a size too.
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| bad(format!("cannot measure it: {e}")))?;
    if size == 0 {
        return Err(bad(
            "it is empty: a disk needs at least one 512-byte sector".into(),
        ));
    }
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(bad(format!(
            "its size, {size} bytes, is not a multiple of 512: extend it (truncate -s) to whole sectors"
        )));
    }
    Ok((file, size))
}

/// A raw image.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
}

impl RawFile {
    /// Opens the image at `path`, read-write unless `read_only`.
    ///
    /// # Errors
    ///
    /// `BAD_DISK` as [`open_image`] reports it.
    pub fn open(path: &Path, read_only: bool) -> Result<Self> {
        let (file, size) = open_image(path, read_only)?;
        Ok(RawFile { file, size })
    }
}

impl DiskBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        read_vectored_at(&self.file, offset, bufs)
    }

    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        write_vectored_at(&self.file, offset, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        match fallocate(&self.file, punch, offset, len) {
            // Discard is a hint: a file system that cannot punch holes keeps the data.
            Err(e) if unsupported(&e) => Ok(()),
            other => other,
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let modes = if unmap {
            [libc::FALLOC_FL_PUNCH_HOLE, libc::FALLOC_FL_ZERO_RANGE]
        } else {
            [libc::FALLOC_FL_ZERO_RANGE, libc::FALLOC_FL_PUNCH_HOLE]
        };
        for mode in modes {
            match fallocate(&self.file, mode | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
                Err(e) if unsupported(&e) => continue,
                other => return other,
            }
        }
        write_zeroes_at(&self.file, offset, len)
    }
}
