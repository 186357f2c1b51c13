//! A flat Global Descriptor Table and the KVM segment registers that match it.

use kvm_bindings::kvm_segment;

/// Selector of the 64-bit code segment.
pub const CODE64_SELECTOR: u16 = 0x08;
/// Selector of the flat data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the 32-bit flat code segment.
pub const CODE32_SELECTOR: u16 = 0x18;

/// Builds a GDT entry from access flags (byte 5 and the flags nibble), base and limit.
pub const fn entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// The table: null, 64-bit code, flat data, 32-bit code.
pub const TABLE: [u64; 4] = [
    0,
    entry(0xa09b, 0, 0xfffff),
    entry(0xc093, 0, 0xfffff),
    entry(0xc09b, 0, 0xfffff),
];

/// The KVM segment register for the descriptor at `selector` of [`TABLE`].
pub fn segment(selector: u16) -> kvm_segment {
    let e = TABLE[usize::from(selector >> 3)];
    let base = ((e >> 16) & 0x00ff_ffff) | ((e >> 32) & 0xff00_0000);
    let limit = ((e & 0xffff) | ((e >> 32) & 0xf_0000)) as u32;
    let g = ((e >> 55) & 1) as u8;
    kvm_segment {
        base,
        // With 4 KiB granularity the limit counts pages; KVM wants bytes.
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: ((e >> 40) & 0xf) as u8,
        present: ((e >> 47) & 1) as u8,
        dpl: ((e >> 45) & 3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_the_well_known_encodings() {
        assert_eq!(TABLE[1], 0x00af_9b00_0000_ffff);
        assert_eq!(TABLE[2], 0x00cf_9300_0000_ffff);
        assert_eq!(TABLE[3], 0x00cf_9b00_0000_ffff);
    }

    #[test]
    fn segments_decode_the_descriptors() {
        let cs = segment(CODE64_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.type_, cs.present, cs.s), (1, 0, 0xb, 1, 1));
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(DATA_SELECTOR);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 0x3));
        let cs32 = segment(CODE32_SELECTOR);
        assert_eq!((cs32.l, cs32.db), (0, 1));
    }
}
