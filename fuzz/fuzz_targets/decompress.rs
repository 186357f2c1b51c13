//! A bzImage payload in any format kvmkit decompresses: corrupt or truncated data is an
//! error, and output never exceeds the limit or the size the payload claims.
#![no_main]

use kvmkit_core::loader::decompress::{decompress, split_size};
use libfuzzer_sys::fuzz_target;

/// Small enough that a bomb costs little here; `decompress` enforces it the same way.
const LIMIT: u64 = 16 << 20;

fuzz_target!(|payload: &[u8]| {
    if let Ok((_, out)) = decompress(payload, LIMIT) {
        let (_, claimed) = split_size(payload).expect("a decompressed payload has its size");
        assert_eq!(out.len() as u64, claimed);
        assert!(out.len() as u64 <= LIMIT);
    }
});
