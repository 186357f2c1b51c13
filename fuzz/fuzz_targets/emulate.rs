//! The decoder of the instructions kvmkit finishes for a software-assisted KVM, on the
//! bytes at a hostile guest's RIP and any register values: it never claims an instruction
//! longer than the bytes it was given, so RIP never moves past what was decoded.
#![no_main]

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvmkit_core::vm::emulate::decode;
use libfuzzer_sys::fuzz_target;

const EFER_LMA: u64 = 1 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Up to 15 bytes at RIP, then register values, so operand addresses wrap every way.
    let (bytes, values) = rest.split_at(rest.len().min(15));
    let word = |i: usize| {
        let mut w = [0u8; 8];
        for (j, b) in w.iter_mut().enumerate() {
            *b = values.get(i * 8 + j).copied().unwrap_or(0);
        }
        u64::from_le_bytes(w)
    };
    let regs = kvm_regs {
        rax: word(0),
        rbx: word(1),
        rcx: word(2),
        rsp: word(3),
        r12: word(4),
        rip: word(5),
        ..Default::default()
    };
    let mut sregs = kvm_sregs::default();
    if mode & 1 != 0 {
        sregs.efer = EFER_LMA;
        sregs.cs.l = 1;
        sregs.fs.base = word(6);
        sregs.gs.base = word(7);
    }
    if let Some(instruction) = decode(bytes, &regs, &sregs) {
        assert!(instruction.length() >= 1);
        assert!(
            instruction.length() <= bytes.len() as u64,
            "{instruction:?} from {bytes:02x?}"
        );
    }
});
