//! A TAP interface opened by name: `/dev/net/tun` with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR`), non-blocking, with the 12-byte `virtio_net_hdr_v1` in front of each frame.
//!
//! The interface must exist (`ip tuntap add dev NAME mode tap [user USER]`): attaching to a
//! persistent TAP its owner may use needs no privilege, creating one needs `CAP_NET_ADMIN`,
//! and a TAP kvmkit created itself would vanish with the machine, unconfigured.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::HEADER_LEN;

/// Why a TAP cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot name an interface.
    #[error("{name:?} is not a network interface name: use 1 to 15 characters, no '/' or blanks")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// No interface has the name.
    #[error(
        "no network interface {name}: create the TAP first, e.g. `ip tuntap add dev {name} mode tap user $USER` (as root)"
    )]
    NotFound {
        /// The name.
        name: String,
    },
    /// The interface exists but is not a TAP.
    #[error(
        "network interface {name} is not a TAP (a TUN, a bridge or a NIC?): give a TAP made with `ip tuntap add dev {name} mode tap`"
    )]
    NotTap {
        /// The name.
        name: String,
    },
    /// The caller may not attach to it.
    #[error(
        "no permission to attach to TAP {name}: it belongs to another user, or attaching needs CAP_NET_ADMIN; recreate it with `ip tuntap add dev {name} mode tap user $USER`"
    )]
    PermissionDenied {
        /// The name.
        name: String,
    },
    /// Another process (or device) holds it.
    #[error("TAP {name} is in use by another process or device")]
    Busy {
        /// The name.
        name: String,
    },
    /// Anything else (no `/dev/net/tun`, an ioctl refused).
    #[error("TAP {name}: {op}: {source}")]
    Io {
        /// The name.
        name: String,
        /// What failed.
        op: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

impl TapError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            TapError::BadName { .. } => "INVALID_CONFIG",
            TapError::NotFound { .. } | TapError::NotTap { .. } => "TAP_NOT_FOUND",
            TapError::PermissionDenied { .. } => "TAP_PERMISSION_DENIED",
            TapError::Busy { .. } | TapError::Io { .. } => "TAP_FAILED",
        }
    }
}

/// An open TAP.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the TAP interface `name`.
    ///
    /// # Errors
    ///
    /// A [`TapError`] naming what is wrong: no such interface, not a TAP, no permission, busy.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let bad = || TapError::BadName { name: name.into() };
        if name.is_empty()
            || name.len() >= libc::IFNAMSIZ
            || name == "."
            || name == ".."
            || name
                .bytes()
                .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
        {
            return Err(bad());
        }
        let c_name = CString::new(name).map_err(|_| bad())?;
        // SAFETY: `c_name` is a NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            return Err(TapError::NotFound { name: name.into() });
        }
        let io = |op| {
            let name = name.to_string();
            move |source| TapError::Io { name, op, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(io("open /dev/net/tun"))?;

        // SAFETY: `ifreq` is plain data for which all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
        // SAFETY: TUNSETIFF reads and writes an `ifreq`, which `req` is, on a tun fd we own.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            let e = std::io::Error::last_os_error();
            let name = name.to_string();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => TapError::PermissionDenied { name },
                Some(libc::EINVAL) => TapError::NotTap { name },
                Some(libc::EBUSY) => TapError::Busy { name },
                _ => TapError::Io {
                    name,
                    op: "TUNSETIFF",
                    source: e,
                },
            });
        }
        let size = HEADER_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int, which `size` is, on a tun fd we own.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) } < 0 {
            return Err(io("TUNSETVNETHDRSZ")(std::io::Error::last_os_error()));
        }
        Ok(Tap {
            file,
            name: name.into(),
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The open `/dev/net/tun` file, for a backend that moves frames itself (vhost-net).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads one frame into `frame` (its virtio-net header is discarded: kvmkit offers no
    /// offloads, so it is all zeroes); `None` when none is waiting.
    pub fn read_frame(&self, frame: &mut [u8]) -> Option<usize> {
        let mut header = [0u8; HEADER_LEN];
        let mut bufs = [IoSliceMut::new(&mut header), IoSliceMut::new(frame)];
        match (&self.file).read_vectored(&mut bufs) {
            Ok(n) if n > HEADER_LEN => Some(n - HEADER_LEN),
            Ok(_) | Err(_) => None,
        }
    }

    /// Writes `frame` with an all-zero header; returns whether the TAP took it (a full
    /// transmit queue drops it, as a NIC would).
    pub fn write_frame(&self, frame: &[u8]) -> bool {
        let header = [0u8; HEADER_LEN];
        let bufs = [IoSlice::new(&header), IoSlice::new(frame)];
        matches!((&self.file).write_vectored(&bufs), Ok(n) if n == HEADER_LEN + frame.len())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_interfaces_are_refused_before_any_system_call() {
        for name in ["", "a/b", "sixteen-chars-xx", "..", "a b"] {
            let err = Tap::open(name).unwrap_err();
            assert!(matches!(err, TapError::BadName { .. }), "{name:?}: {err}");
        }
    }

    #[test]
    fn a_missing_interface_is_named_with_how_to_create_it() {
        let err = Tap::open("kvmkit-none0").unwrap_err();
        assert_eq!(err.code(), "TAP_NOT_FOUND");
        assert!(err.to_string().contains("ip tuntap add dev kvmkit-none0"));
    }

    #[test]
    fn an_interface_that_is_not_a_tap_is_refused() {
        if !std::path::Path::new("/dev/net/tun").exists() {
            return; // no TUN/TAP driver: nothing can be attached
        }
        let err = Tap::open("lo").unwrap_err();
        assert!(matches!(err, TapError::NotTap { .. }), "{err}");
    }
}
