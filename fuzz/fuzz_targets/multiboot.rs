//! A Multiboot kernel as a user hands it over: its header found and its layout worked out,
//! which the loader then copies segment by segment.
#![no_main]

use kvmkit_core::loader::multiboot::{find_header, layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let found = find_header(data);
    if let Ok(layout) = layout(data) {
        assert!(found.is_some());
        for s in &layout.segments {
            // What the loader relies on to copy and zero each segment without panicking.
            assert!(s.file.start <= s.file.end && s.file.end <= data.len());
            assert!(s.mem_size >= s.file.len() as u64);
        }
    }
});
