//! Firecracker's Unix-socket face of a vsock device: the host connects to the socket at
//! `<uds>` and writes `CONNECT <port>\n` to reach a guest port (answered `OK <host port>\n`
//! once the guest accepts); a guest connecting to host port `P` reaches the socket at
//! `<uds>_P`.

use std::io::{ErrorKind, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The longest `CONNECT` line taken (`CONNECT 4294967295\n` is 19 bytes).
const MAX_LINE: usize = 32;
/// The longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_PATH: usize = 107;

/// The listening socket at `<uds>`; its file is removed when it is dropped.
#[derive(Debug)]
pub struct UdsListener {
    path: PathBuf,
    listener: UnixListener,
}

fn bad_path(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::config("vsock.uds", format!("{}: {why}", path.display()))
}

impl UdsListener {
    /// Binds the socket at `path` (non-blocking).
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` (field `vsock.uds`) if the path, or `<path>_<port>` for the largest
    /// port, is too long for a Unix socket, if something exists at `path` already, or if it
    /// cannot be bound (a missing directory, no permission).
    pub fn bind(path: &Path) -> Result<Self> {
        let longest = path.as_os_str().len() + "_4294967295".len();
        if longest > MAX_PATH {
            return Err(bad_path(
                path,
                format!(
                    "too long for a Unix socket: with `_<port>` it takes up to {longest} bytes, \
                     the limit is {MAX_PATH}; use a shorter path"
                ),
            ));
        }
        if path.symlink_metadata().is_ok() {
            return Err(bad_path(
                path,
                "exists already: remove it (a socket left by an earlier run) or choose another path",
            ));
        }
        let listener =
            UnixListener::bind(path).map_err(|e| bad_path(path, format!("cannot bind: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| bad_path(path, format!("cannot make it non-blocking: {e}")))?;
        Ok(UdsListener {
            path: path.to_owned(),
            listener,
        })
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Accepts a waiting host connection (non-blocking), if there is one.
    pub fn accept(&self) -> Option<UnixStream> {
        let (stream, _) = self.listener.accept().ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    }

    /// Connects to the socket serving guest connections to host port `port` (`<uds>_<port>`),
    /// non-blocking once connected.
    pub fn connect_port(&self, port: u32) -> Option<UnixStream> {
        let mut path = self.path.clone().into_os_string();
        path.push(format!("_{port}"));
        let stream = UnixStream::connect(path).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    }
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A host connection on `<uds>` that has not finished its `CONNECT` line.
#[derive(Debug)]
pub struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// Where a handshake stands after reading.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More to come.
    Pending,
    /// The host asked for guest port `port`.
    Connect(u32),
    /// The line is malformed or the host went away: drop the connection.
    Failed,
}

impl Handshake {
    /// A handshake on `stream` (non-blocking).
    pub fn new(stream: UnixStream) -> Self {
        Handshake {
            stream,
            line: Vec::new(),
        }
    }

    /// The host connection.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Gives up the host connection once its line is read.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// Reads what the host sent, a byte at a time so nothing past the line is taken.
    pub fn read(&mut self) -> Progress {
        let mut byte = [0u8; 1];
        loop {
            match (&self.stream).read(&mut byte) {
                Ok(0) => return Progress::Failed,
                Ok(_) if byte[0] == b'\n' => return parse_connect(&self.line),
                Ok(_) if self.line.len() < MAX_LINE => self.line.push(byte[0]),
                Ok(_) => return Progress::Failed,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Progress::Failed,
            }
        }
    }
}

/// Parses `CONNECT <port>` (without its newline).
pub fn parse_connect(line: &[u8]) -> Progress {
    let port = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.trim_end_matches('\r').strip_prefix("CONNECT "))
        .and_then(|p| p.trim().parse::<u32>().ok());
    port.map_or(Progress::Failed, Progress::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 52"), Progress::Connect(52));
        assert_eq!(
            parse_connect(b"CONNECT 4294967295\r"),
            Progress::Connect(u32::MAX)
        );
        assert_eq!(parse_connect(b"CONNECT 4294967296"), Progress::Failed);
        assert_eq!(parse_connect(b"CONNECT"), Progress::Failed);
        assert_eq!(parse_connect(b"connect 1"), Progress::Failed);
        assert_eq!(parse_connect(&[0xff, 0xfe]), Progress::Failed);
    }

    #[test]
    fn refuses_paths_it_cannot_serve() {
        let dir = std::env::temp_dir().join(format!("kvmkit-uds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.sock");
        let listener = UdsListener::bind(&path).unwrap();
        let again = UdsListener::bind(&path).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
        drop(listener);
        assert!(!path.exists(), "the socket file is removed on drop");
        let long = dir.join("x".repeat(120));
        assert!(
            UdsListener::bind(&long)
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
        let missing = dir.join("no/such/dir/v.sock");
        assert_eq!(
            UdsListener::bind(&missing).unwrap_err().code(),
            "INVALID_CONFIG"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
