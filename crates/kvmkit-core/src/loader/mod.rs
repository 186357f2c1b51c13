//! Loading guest kernels into guest RAM and setting up the vCPU to enter them.

use crate::memory::GuestRam;

pub mod bzimage;
pub mod decompress;
pub mod flat;
pub mod linux;
pub mod multiboot;

/// Reads a little-endian `u16` at `at`, if the data reaches that far.
pub(crate) fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

/// Reads a little-endian `u32` at `at`, if the data reaches that far.
pub(crate) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a little-endian `u64` at `at`, if the data reaches that far.
pub(crate) fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let lo = u32_at(data, at)?;
    let hi = u32_at(data, at + 4)?;
    Some(u64::from(lo) | (u64::from(hi) << 32))
}

/// Why a file could not be read, in words: the path is wrong, not readable, or a directory.
pub(crate) fn read_failure(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file: check the path".into(),
        std::io::ErrorKind::PermissionDenied => {
            "not readable by this user: check its permissions".into()
        }
        std::io::ErrorKind::IsADirectory => "a directory, not a file".into(),
        _ => format!("cannot be read: {error}"),
    }
}

/// What a file starts with, in words: its first bytes as text when they are text.
pub(crate) fn describe_start(data: &[u8]) -> String {
    let start = &data[..data.len().min(16)];
    if start.is_empty() {
        "it is empty".into()
    } else if start
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        format!("it is text, starting {:?}", String::from_utf8_lossy(start))
    } else {
        let hex: Vec<String> = start.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("it starts with the bytes {}", hex.join(" "))
    }
}

/// Checks that `start..end` lies in guest RAM; if not, says how much RAM the kernel needs.
pub(crate) fn check_fits(ram: &GuestRam, start: u64, end: u64) -> Result<(), String> {
    const MIB: u64 = 1 << 20;
    if end > start && ram.contains(start, end - start) {
        return Ok(());
    }
    let total: u64 = ram.regions().iter().map(|r| r.size).sum();
    let needed = end.div_ceil(MIB);
    Err(format!(
        "does not fit in guest RAM: it needs {start:#x}..{end:#x}, more than {needed} MiB of \
         RAM, and the machine has {} MiB; give it at least {} MiB (room to run as well)",
        total / MIB,
        (needed + 64).next_multiple_of(64)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_a_file_starts_with_in_words() {
        assert_eq!(
            describe_start(b"hello world\n"),
            "it is text, starting \"hello world\\n\""
        );
        assert_eq!(
            describe_start(&[0x4d, 0x5a, 0x90, 0x00, 0x03]),
            "it starts with the bytes 4d 5a 90 00"
        );
        assert_eq!(describe_start(b""), "it is empty");
    }

    #[test]
    fn says_why_a_file_cannot_be_read() {
        let missing = std::fs::read("/nonexistent/kernel").unwrap_err();
        assert_eq!(read_failure(&missing), "no such file: check the path");
        let directory = std::fs::read("/").unwrap_err();
        assert_eq!(read_failure(&directory), "a directory, not a file");
    }
}
