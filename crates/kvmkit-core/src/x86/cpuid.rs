//! The CPUID a vCPU sees: the host's supported set, made per-vCPU.

use kvm_bindings::CpuId;

/// Sets the initial APIC ID (leaf 1 EBX\[31:24\] and leaf 0xB EDX) of vCPU `index`.
pub fn set_apic_id(cpuid: &mut CpuId, index: u32) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => entry.ebx = (entry.ebx & 0x00ff_ffff) | ((index & 0xff) << 24),
            0xb | 0x1f => entry.edx = index,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn writes_the_apic_id_into_leaf_1_and_0xb() {
        let mut cpuid = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0x0102_0304,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                edx: 7,
                ..Default::default()
            },
        ])
        .unwrap();
        set_apic_id(&mut cpuid, 3);
        assert_eq!(cpuid.as_slice()[0].ebx, 0x0302_0304);
        assert_eq!(cpuid.as_slice()[1].edx, 3);
    }
}
