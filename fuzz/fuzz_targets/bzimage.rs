//! A bzImage as a user hands it over: its header checked, its payload decompressed on the
//! host and the `vmlinux` inside loaded, or its protected-mode kernel loaded as the boot
//! protocol says.
#![no_main]

use std::io::Cursor;

use kvmkit_core::loader::bzimage::{Header, is_bzimage, load_protected_mode, vmlinux};
use kvmkit_core::x86::layout::HIGHMEM_START;
use kvmkit_fuzz::RAM;
use libfuzzer_sys::fuzz_target;
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::Elf;
use vm_memory::GuestAddress;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = Header::parse(data) else {
        return;
    };
    assert!(is_bzimage(data));
    let _ = header.compression(data);
    let _ = header.uncompressed_size(data);
    if let Ok((kernel, _)) = vmlinux(&header, data, None) {
        let _ = Elf::load(
            RAM.memory(),
            None,
            &mut Cursor::new(&kernel),
            Some(GuestAddress(HIGHMEM_START)),
        );
    }
    let _ = load_protected_mode(&RAM, data, &header);
});
