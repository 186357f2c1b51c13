//! A copy-on-write disk: a read-only base image shared by many VMs, and a sparse overlay
//! file of the same size holding the clusters this VM wrote. A bitmap says which 4 KiB
//! clusters live in the overlay; a write to part of a cluster first copies the cluster up
//! from the base. The base is never written.
//!
//! The overlay is an unnamed temporary file by default (gone when the disk is dropped), or a
//! file the caller names: an existing one is reopened and its bitmap rebuilt from the file's
//! allocated ranges (`SEEK_DATA`/`SEEK_HOLE`), since the overlay writes whole clusters only.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vm_memory::VolatileSlice;

use crate::error::{Error, Result};
use crate::virtio::block::backend::{
    DiskBackend, read_vectored_at, write_vectored_at, write_zeroes_at,
};
use crate::virtio::block::file::open_image;

/// The overlay's unit of allocation.
pub const CLUSTER: u64 = 4096;
const CLUSTER_SHIFT: u32 = 12;

/// Where the overlay lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayFile {
    /// An unnamed file in the temporary directory, gone with the disk.
    Temporary,
    /// This file, created if missing (empty or absent: a fresh overlay).
    Path(PathBuf),
}

/// A copy-on-write disk.
#[derive(Debug)]
pub struct Overlay {
    base: File,
    overlay: File,
    size: u64,
    /// One bit per cluster: set when the cluster lives in the overlay.
    allocated: Vec<u64>,
}

impl Overlay {
    /// The base image at `base`, opened read-only, with its overlay.
    ///
    /// # Errors
    ///
    /// `BAD_DISK` if the base cannot be used (see [`open_image`]), the overlay cannot be
    /// created, or an existing overlay's size differs from the base's.
    pub fn open(base: &Path, overlay: &OverlayFile) -> Result<Self> {
        let (base_file, size) = open_image(base, true)?;
        let (overlay_path, overlay_file) = match overlay {
            OverlayFile::Temporary => {
                let dir = std::env::temp_dir();
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_TMPFILE)
                    .mode(0o600)
                    .open(&dir);
                (dir, file)
            }
            OverlayFile::Path(p) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(p);
                (p.clone(), file)
            }
        };
        let bad = |message: String| Error::Disk {
            path: overlay_path.display().to_string(),
            message,
        };
        let overlay_file =
            overlay_file.map_err(|e| bad(format!("cannot create the overlay: {e}")))?;
        let len = overlay_file
            .metadata()
            .map_err(|e| bad(format!("cannot measure the overlay: {e}")))?
            .len();
        if len == 0 {
            overlay_file
                .set_len(size)
                .map_err(|e| bad(format!("cannot size the overlay: {e}")))?;
        } else if len != size {
            return Err(bad(format!(
                "the overlay is {len} bytes but its base {} is {size}: it belongs to another \
                 base; give a new overlay path",
                base.display()
            )));
        }
        let clusters = size.div_ceil(CLUSTER);
        let mut disk = Overlay {
            base: base_file,
            overlay: overlay_file,
            size,
            allocated: vec![0; clusters.div_ceil(64) as usize],
        };
        if len != 0 {
            disk.load_bitmap()
                .map_err(|e| bad(format!("cannot read the overlay's allocated ranges: {e}")))?;
        }
        Ok(disk)
    }

    /// Marks every cluster the overlay file holds data for.
    fn load_bitmap(&mut self) -> io::Result<()> {
        let seek = |whence, from: u64| -> io::Result<Option<u64>> {
            let from = libc::off_t::try_from(from)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: plain syscall on an fd we own; no memory is passed.
            let at = unsafe { libc::lseek(self.overlay.as_raw_fd(), from, whence) };
            if at < 0 {
                let e = io::Error::last_os_error();
                return if e.raw_os_error() == Some(libc::ENXIO) {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
            Ok(Some(at as u64))
        };
        let mut at = 0;
        let mut ranges = Vec::new();
        while at < self.size {
            let Some(start) = seek(libc::SEEK_DATA, at)? else {
                break;
            };
            let end = seek(libc::SEEK_HOLE, start)?
                .unwrap_or(self.size)
                .min(self.size);
            ranges.push((start, end));
            at = end;
        }
        for (start, end) in ranges {
            for cluster in start >> CLUSTER_SHIFT..end.div_ceil(CLUSTER) {
                self.set(cluster);
            }
        }
        Ok(())
    }

    fn is_set(&self, cluster: u64) -> bool {
        self.allocated[(cluster / 64) as usize] & (1 << (cluster % 64)) != 0
    }

    fn set(&mut self, cluster: u64) {
        self.allocated[(cluster / 64) as usize] |= 1 << (cluster % 64);
    }

    /// The byte range of `cluster`, clipped to the disk.
    fn cluster_range(&self, cluster: u64) -> (u64, u64) {
        let start = cluster << CLUSTER_SHIFT;
        (start, (start + CLUSTER).min(self.size))
    }

    /// Copies `cluster` from the base into the overlay.
    fn copy_up(&mut self, cluster: u64) -> io::Result<()> {
        let (start, end) = self.cluster_range(cluster);
        let mut buf = [0u8; CLUSTER as usize];
        let buf = &mut buf[..(end - start) as usize];
        self.base.read_exact_at(buf, start)?;
        self.overlay.write_all_at(buf, start)?;
        self.set(cluster);
        Ok(())
    }

    /// Makes the overlay hold every cluster `offset..offset + len` touches: clusters only
    /// partly covered are copied up; whole ones are returned to be marked once written.
    fn prepare_write(&mut self, offset: u64, len: u64) -> io::Result<Vec<u64>> {
        let end = offset + len;
        let mut whole = Vec::new();
        for cluster in offset >> CLUSTER_SHIFT..end.div_ceil(CLUSTER) {
            if self.is_set(cluster) {
                continue;
            }
            let (start, stop) = self.cluster_range(cluster);
            if start >= offset && stop <= end {
                whole.push(cluster);
            } else {
                self.copy_up(cluster)?;
            }
        }
        Ok(whole)
    }
}

/// The part of `bufs` from byte `from` for `len` bytes.
fn sub_slices<'a>(
    bufs: &[VolatileSlice<'a>],
    from: u64,
    len: u64,
) -> io::Result<Vec<VolatileSlice<'a>>> {
    let mut out = Vec::new();
    let (mut skip, mut left) = (from as usize, len as usize);
    for b in bufs {
        if left == 0 {
            break;
        }
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        let take = (b.len() - skip).min(left);
        out.push(b.subslice(skip, take).map_err(io::Error::other)?);
        left -= take;
        skip = 0;
    }
    Ok(out)
}

impl DiskBackend for Overlay {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        let end = offset + bufs.iter().map(|b| b.len() as u64).sum::<u64>();
        let mut at = offset;
        // Runs of clusters that live in the same file.
        while at < end {
            let in_overlay = self.is_set(at >> CLUSTER_SHIFT);
            let mut run_end = ((at >> CLUSTER_SHIFT) + 1) << CLUSTER_SHIFT;
            while run_end < end && self.is_set(run_end >> CLUSTER_SHIFT) == in_overlay {
                run_end += CLUSTER;
            }
            let run_end = run_end.min(end);
            let part = sub_slices(bufs, at - offset, run_end - at)?;
            let file = if in_overlay {
                &self.overlay
            } else {
                &self.base
            };
            read_vectored_at(file, at, &part)?;
            at = run_end;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        let len = bufs.iter().map(|b| b.len() as u64).sum();
        let whole = self.prepare_write(offset, len)?;
        write_vectored_at(&self.overlay, offset, bufs)?;
        for cluster in whole {
            self.set(cluster);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.overlay.sync_data()
    }

    fn discard(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        // A hint: punching the overlay would bring the base's data back, which a later
        // reopen could not tell from the guest's; keeping the data is always allowed.
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        // Real zeroes, not a hole: a hole would read as the base after a reopen.
        let whole = self.prepare_write(offset, len)?;
        write_zeroes_at(&self.overlay, offset, len)?;
        for cluster in whole {
            self.set(cluster);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::block::device::tests::{TempPath, pattern};

    fn read(disk: &mut Overlay, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        disk.read_at(offset, &[VolatileSlice::from(&mut buf[..])])
            .unwrap();
        buf
    }

    fn write(disk: &mut Overlay, offset: u64, mut data: Vec<u8>) {
        disk.write_at(offset, &[VolatileSlice::from(&mut data[..])])
            .unwrap();
    }

    #[test]
    fn writes_land_in_the_overlay_and_the_base_is_untouched() {
        let base = TempPath::with(&pattern(64));
        let mut disk = Overlay::open(&base.0, &OverlayFile::Temporary).unwrap();
        // Part of cluster 0 (sector 1), and the whole of cluster 2 (sectors 16..24).
        write(&mut disk, 512, vec![0xaa; 512]);
        write(&mut disk, 2 * CLUSTER, vec![0xbb; CLUSTER as usize]);
        let got = read(&mut disk, 0, 3 * CLUSTER as usize);
        assert_eq!(&got[..512], &[0; 512][..]);
        assert_eq!(&got[512..1024], &[0xaa; 512][..]);
        assert_eq!(got[1024], 2, "the rest of cluster 0 was copied up");
        assert_eq!(
            got[CLUSTER as usize], 8,
            "cluster 1 still comes from the base"
        );
        assert!(got[2 * CLUSTER as usize..].iter().all(|&b| b == 0xbb));
        disk.write_zeroes(CLUSTER + 512, 512, true).unwrap();
        let got = read(&mut disk, CLUSTER, CLUSTER as usize);
        assert_eq!((got[0], got[512], got[1023], got[1024]), (8, 0, 0, 10));
        assert_eq!(std::fs::read(&base.0).unwrap(), pattern(64));
    }

    #[test]
    fn a_named_overlay_is_found_again() {
        let base = TempPath::with(&pattern(64));
        let overlay = TempPath::with(&[]);
        let file = OverlayFile::Path(overlay.0.clone());
        let mut disk = Overlay::open(&base.0, &file).unwrap();
        write(&mut disk, 3 * CLUSTER + 512, vec![0xcc; 512]);
        drop(disk);
        let mut disk = Overlay::open(&base.0, &file).unwrap();
        let got = read(&mut disk, 3 * CLUSTER, 2 * CLUSTER as usize);
        assert_eq!((got[0], got[512], got[1024]), (24, 0xcc, 26));
        assert_eq!(
            got[CLUSTER as usize], 32,
            "cluster 4 still comes from the base"
        );
        let other = TempPath::with(&pattern(8));
        let e = Overlay::open(&other.0, &file).unwrap_err();
        assert!(e.to_string().contains("belongs to another base"), "{e}");
    }
}
