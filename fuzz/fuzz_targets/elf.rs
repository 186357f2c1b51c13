//! An ELF `vmlinux` as a user hands it over, loaded into guest RAM as kvmkit loads it.
#![no_main]

use std::io::Cursor;

use kvmkit_core::x86::layout::HIGHMEM_START;
use kvmkit_fuzz::RAM;
use libfuzzer_sys::fuzz_target;
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::Elf;
use vm_memory::GuestAddress;

fuzz_target!(|data: &[u8]| {
    if let Ok(loaded) = Elf::load(
        RAM.memory(),
        None,
        &mut Cursor::new(data),
        Some(GuestAddress(HIGHMEM_START)),
    ) {
        assert!(loaded.kernel_load.0 >= HIGHMEM_START);
    }
});
