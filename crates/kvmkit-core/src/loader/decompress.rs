//! Decompressing a bzImage's payload on the host, in whichever format the kernel was built
//! with: gzip, xz (with its BCJ filter), lzma, lz4 (legacy frames) or zstd. The kernel's
//! build appends the uncompressed size as a little-endian u32; it bounds the output.

use std::io::Read;

/// A payload's compression, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `CONFIG_KERNEL_GZIP`.
    Gzip,
    /// `CONFIG_KERNEL_BZIP2` (recognised, not decompressed on the host).
    Bzip2,
    /// `CONFIG_KERNEL_LZMA`: the `.lzma` ("alone") format.
    Lzma,
    /// `CONFIG_KERNEL_XZ`.
    Xz,
    /// `CONFIG_KERNEL_LZO` (recognised, not decompressed on the host).
    Lzo,
    /// `CONFIG_KERNEL_LZ4`: legacy lz4 frames.
    Lz4,
    /// `CONFIG_KERNEL_ZSTD`.
    Zstd,
}

impl Compression {
    /// Its name, as the kernel's configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Xz => "xz",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Recognises `payload`'s format by its magic bytes.
    pub fn detect(payload: &[u8]) -> Option<Self> {
        const MAGICS: [(&[u8], Compression); 7] = [
            (&[0x1f, 0x8b], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
            (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
            (&LZ4_LEGACY_MAGIC.to_le_bytes(), Compression::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0x5d, 0, 0], Compression::Lzma),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| payload.starts_with(magic))
            .map(|&(_, c)| c)
    }

    /// Whether kvmkit can decompress it.
    pub fn supported(self) -> bool {
        !matches!(self, Compression::Bzip2 | Compression::Lzo)
    }
}

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// Each legacy lz4 block decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Why a payload could not be decompressed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecompressError {
    /// The magic bytes match no known format.
    #[error("the payload's format is not recognised (it starts with {0:02x?})")]
    Unknown(Vec<u8>),
    /// A format kvmkit recognises but does not decompress.
    #[error(
        "the payload is {0}-compressed, which kvmkit does not decompress (it does gzip, xz, lzma, lz4 and zstd)"
    )]
    Unsupported(&'static str),
    /// The compressed data is corrupt or truncated.
    #[error("the {format} payload is corrupt or truncated: {message}")]
    Corrupt {
        /// The format.
        format: &'static str,
        /// What the decompressor said.
        message: String,
    },
    /// The output is not the size the kernel's build recorded.
    #[error("the {format} payload decompressed to {got} bytes, but the image says {expected}")]
    WrongSize {
        /// The format.
        format: &'static str,
        /// The size the image records.
        expected: u64,
        /// The size decompressed (capped one past `expected`).
        got: u64,
    },
}

/// Splits a bzImage payload into its compressed data and the uncompressed size the kernel's
/// build appended as a little-endian u32; `None` if it is shorter than that field.
pub fn split_size(payload: &[u8]) -> Option<(&[u8], u64)> {
    let (data, size) = payload.split_at_checked(payload.len().checked_sub(4)?)?;
    Some((data, u64::from(u32::from_le_bytes(size.try_into().ok()?))))
}

/// Decompresses `payload` (as stored in a bzImage: the data, then the uncompressed size as
/// a little-endian u32), refusing output larger than `limit` bytes.
pub fn decompress(payload: &[u8], limit: u64) -> Result<(Compression, Vec<u8>), DecompressError> {
    let compression = Compression::detect(payload)
        .ok_or_else(|| DecompressError::Unknown(payload.iter().take(6).copied().collect()))?;
    if !compression.supported() {
        return Err(DecompressError::Unsupported(compression.name()));
    }
    let format = compression.name();
    let corrupt = |message: String| DecompressError::Corrupt { format, message };
    let (data, expected) =
        split_size(payload).ok_or_else(|| corrupt("shorter than its size field".into()))?;
    if expected > limit {
        return Err(corrupt(format!(
            "it claims {expected} bytes, more than the {limit} allowed"
        )));
    }
    // Read at most one byte past the expected size, so a bomb stops there.
    let cap = expected + 1;
    let mut out = Vec::with_capacity(expected as usize);
    let result = match compression {
        Compression::Gzip => flate2::read::GzDecoder::new(data)
            .take(cap)
            .read_to_end(&mut out)
            .map(drop),
        Compression::Xz => lzma_rust2::XzReader::new(data, false)
            .take(cap)
            .read_to_end(&mut out)
            .map(drop),
        Compression::Lzma => lzma_rust2::LzmaReader::new_mem_limit(data, u32::MAX, None)
            .and_then(|r| r.take(cap).read_to_end(&mut out))
            .map(drop),
        Compression::Zstd => ruzstd::decoding::StreamingDecoder::new(data)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r.take(cap).read_to_end(&mut out))
            .map(drop),
        Compression::Lz4 => lz4_legacy(data, cap as usize, &mut out),
        Compression::Bzip2 | Compression::Lzo => unreachable!("refused above"),
    };
    result.map_err(|e| corrupt(e.to_string()))?;
    if out.len() as u64 != expected {
        return Err(DecompressError::WrongSize {
            format,
            expected,
            got: out.len() as u64,
        });
    }
    Ok((compression, out))
}

/// Legacy lz4 frames: the magic, then blocks, each a little-endian u32 length and an lz4
/// block of at most 8 MiB; a new magic may start another frame.
fn lz4_legacy(mut data: &[u8], cap: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while data.len() >= 4 {
        let word = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        data = &data[4..];
        if word == LZ4_LEGACY_MAGIC {
            continue;
        }
        let len = word as usize;
        if len > data.len() {
            return Err(invalid(format!(
                "a block of {len} bytes with {} left",
                data.len()
            )));
        }
        let n = lz4_flex::block::decompress_into(&data[..len], &mut block)
            .map_err(|e| invalid(e.to_string()))?;
        out.extend_from_slice(&block[..n]);
        if out.len() >= cap {
            out.truncate(cap);
            return Ok(());
        }
        data = &data[len..];
    }
    if data.is_empty() {
        Ok(())
    } else {
        Err(invalid(format!("{} stray bytes at the end", data.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Round trips, corruption and truncation of each format: tests/loaders.rs.

    #[test]
    fn unknown_and_unsupported_formats_are_named() {
        assert_eq!(
            decompress(b"BZh91AY&SY....", 1 << 30),
            Err(DecompressError::Unsupported("bzip2"))
        );
        assert_eq!(
            decompress(&[0x89, b'L', b'Z', b'O', 0, 0], 1 << 30),
            Err(DecompressError::Unsupported("lzo"))
        );
        assert!(matches!(
            decompress(b"\x7fELF....", 1 << 30),
            Err(DecompressError::Unknown(_))
        ));
    }

    #[test]
    fn a_payload_without_room_for_its_size_is_corrupt() {
        assert!(matches!(
            decompress(&[0x1f, 0x8b, 8], 1 << 30),
            Err(DecompressError::Corrupt { format: "gzip", .. })
        ));
    }

    #[test]
    fn a_claimed_size_over_the_limit_is_refused_before_decompressing() {
        let payload = [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0x10];
        assert!(matches!(
            decompress(&payload, 0x0fff_ffff),
            Err(DecompressError::Corrupt { format: "zstd", message }) if message.contains("more than")
        ));
    }
}
