//! The CPUID a vCPU sees: the host's supported set, made per-vCPU and presented as a
//! KVM guest's, as QEMU, Firecracker and Cloud Hypervisor present it. The machine's topology
//! is one package of N cores with one thread each; vCPU `i` has APIC ID `i`.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// Leaf 1 EDX: more than one logical processor per package.
const HTT: u32 = 1 << 28;
/// Leaf 1 ECX: the TSC-deadline mode of the local APIC timer.
const TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX: running under a hypervisor (the hypervisor leaves from 0x4000_0000 exist).
const HYPERVISOR: u32 = 1 << 31;
/// KVM's signature leaf: EAX the highest hypervisor leaf, EBX/ECX/EDX "KVMKVMKVM\0\0\0".
const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
/// The hypervisor leaf giving the TSC and local APIC bus frequencies in kHz (EAX, EBX).
const TSC_FREQUENCY_LEAF: u32 = 0x4000_0010;
/// KVM's local APIC timer runs at 1 GHz.
const KVM_APIC_BUS_KHZ: u32 = 1_000_000;
/// The processor brand string (0x8000_0002-4) and the L1 and L2 cache and TLB descriptions
/// (0x8000_0005-6): leaves with nothing per-vCPU in them, which QEMU's `-cpu host` takes
/// from the host's CPUID instruction.
const HOST_LEAVES: std::ops::RangeInclusive<u32> = 0x8000_0002..=0x8000_0006;
/// Leaf 0xB/0x1F ECX[15:8] level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits of the APIC ID that number `count` cores: ceil(log2(count)).
fn core_bits(count: u32) -> u32 {
    count.max(1).next_power_of_two().trailing_zeros()
}

/// Shapes `cpuid` for vCPU `index` of `count`: its APIC ID (leaves 1, 0xB, 0x1F), and the
/// topology of one package of `count` single-thread cores (leaves 1, 4, 0xB, 0x1F,
/// 0x8000_0008), whatever the host's own topology is.
pub fn normalize(cpuid: &mut CpuId, index: u32, count: u32) {
    let count = count.max(1);
    let apic_id = index;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | ((apic_id & 0xff) << 24) | ((count & 0xff) << 16);
                if count > 1 {
                    entry.edx |= HTT;
                } else {
                    entry.edx &= !HTT;
                }
            }
            4 if entry.eax & 0x1f != 0 => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1
                // (each core's caches are its own, the last level is shared by all).
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                let cores = (1 << core_bits(count)) - 1;
                entry.eax =
                    (entry.eax & 0x3fff) | ((sharing & 0xfff) << 14) | ((cores & 0x3f) << 26);
            }
            0xb | 0x1f => {
                let (shift, processors, level) = match entry.index {
                    0 => (0, 1, LEVEL_SMT),
                    1 => (core_bits(count), count, LEVEL_CORE),
                    _ => (0, 0, 0),
                };
                entry.eax = shift;
                entry.ebx = processors;
                entry.ecx = (level << 8) | (entry.index & 0xff);
                entry.edx = apic_id;
            }
            0x8000_0008 => {
                // ECX[15:12]: APIC ID bits for cores; ECX[7:0]: cores - 1.
                entry.ecx = (entry.ecx & !0xf0ff) | (core_bits(count) << 12) | ((count - 1) & 0xff);
            }
            _ => {}
        }
    }
}

/// What the host's KVM offers a guest beyond what `KVM_GET_SUPPORTED_CPUID` lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTimers {
    /// `KVM_CAP_TSC_DEADLINE_TIMER`: the in-kernel local APIC has the TSC-deadline mode.
    pub tsc_deadline: bool,
    /// `KVM_GET_TSC_KHZ`: the guest's TSC frequency, when KVM knows it.
    pub tsc_khz: Option<u32>,
}

/// Presents `cpuid` as a KVM guest's: the hypervisor bit (leaf 1 ECX[31]), which makes a
/// guest read KVM's paravirtual leaves (0x4000_0000 and its features in 0x4000_0001, which
/// `KVM_GET_SUPPORTED_CPUID` fills: kvm-clock, PV EOI, PV unhalt and IPIs where the host
/// has them); the TSC-deadline timer where KVM has it; the TSC frequency in leaf
/// 0x4000_0010 where KVM knows it and the list has room for it (KVM takes at most
/// `KVM_MAX_CPUID_ENTRIES`). Without the hypervisor bit, Linux does not look for KVM, gets no
/// kvm-clock and, with no HPET or PM timer to calibrate against, marks the TSC unstable.
pub fn present_kvm(cpuid: &mut CpuId, host: HostTimers) {
    let mut has_signature = false;
    let mut frequency_leaf = false;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ecx |= HYPERVISOR;
                if host.tsc_deadline {
                    entry.ecx |= TSC_DEADLINE;
                }
            }
            KVM_SIGNATURE_LEAF => has_signature = true,
            TSC_FREQUENCY_LEAF => frequency_leaf = true,
            _ => {}
        }
    }
    let Some(tsc_khz) = host.tsc_khz.filter(|_| has_signature) else {
        return;
    };
    let frequencies = kvm_cpuid_entry2 {
        function: TSC_FREQUENCY_LEAF,
        eax: tsc_khz,
        ebx: KVM_APIC_BUS_KHZ,
        ..Default::default()
    };
    if !frequency_leaf && cpuid.push(frequencies).is_err() {
        return;
    }
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            KVM_SIGNATURE_LEAF => entry.eax = entry.eax.max(TSC_FREQUENCY_LEAF),
            TSC_FREQUENCY_LEAF => *entry = frequencies,
            _ => {}
        }
    }
}

/// Fills the leaves in [`HOST_LEAVES`] that `cpuid` lists with `host`'s answer for them,
/// where that answer is not all zeroes. KVM's supported set can leave the brand string
/// and the TLB sizes out (measured under nested AMD-V: Linux then named the CPU "AMD
/// Hammer" and saw no 2M TLB entries, where QEMU's guest saw the host's).
pub fn take_from_host(cpuid: &mut CpuId, host: impl Fn(u32) -> [u32; 4]) {
    for entry in cpuid.as_mut_slice() {
        if HOST_LEAVES.contains(&entry.function) {
            let answer = host(entry.function);
            if answer != [0; 4] {
                [entry.eax, entry.ebx, entry.ecx, entry.edx] = answer;
            }
        }
    }
}

/// The host CPU's answer to CPUID `leaf` (subleaf 0).
pub fn host_cpuid(leaf: u32) -> [u32; 4] {
    let r = std::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// A host with 2 threads per core, 16 cores: what a guest must not be told.
    fn host() -> CpuId {
        CpuId::from_entries(&[
            entry(1, 0, 0x806f8, 0x0420_0800, 0, HTT),
            entry(4, 0, (1 << 5) | 1 | (1 << 14) | (15 << 26), 0, 0, 0),
            entry(4, 3, (3 << 5) | 3 | (31 << 14) | (15 << 26), 0, 0, 0),
            entry(4, 4, 0, 0, 0, 0),
            entry(0xb, 0, 1, 2, 0x100, 7),
            entry(0xb, 1, 5, 32, 0x201, 7),
            entry(0xb, 2, 0, 0, 2, 7),
        ])
        .unwrap()
    }

    #[test]
    fn gives_each_vcpu_its_apic_id_and_the_machine_its_core_count() {
        let mut cpuid = host();
        normalize(&mut cpuid, 2, 3);
        let e = cpuid.as_slice();
        assert_eq!(
            e[0].ebx, 0x0203_0800,
            "APIC ID 2, 3 logical processors, CLFLUSH kept"
        );
        assert_eq!(e[0].edx & HTT, HTT);
        // L1: own cache, 4 cores' worth of APIC IDs; L3: shared by the 3 cores.
        assert_eq!((e[1].eax >> 14) & 0xfff, 0);
        assert_eq!(e[1].eax >> 26, 3);
        assert_eq!((e[2].eax >> 14) & 0xfff, 2);
        assert_eq!(e[2].eax & 0x3fff, (3 << 5) | 3, "cache type and level kept");
        assert_eq!(e[3].eax, 0, "the end of the cache list stays the end");
        // Leaf 0xB: SMT level of 1 thread, core level of 3 cores over 2 bits, then the end.
        let leaf_b: Vec<_> = e[4..]
            .iter()
            .map(|l| (l.eax, l.ebx, l.ecx, l.edx))
            .collect();
        assert_eq!(leaf_b, [(0, 1, 0x100, 2), (2, 3, 0x201, 2), (0, 0, 2, 2)]);
    }

    #[test]
    fn a_single_vcpu_is_not_a_multi_processor_package() {
        let mut cpuid = host();
        normalize(&mut cpuid, 0, 1);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx, 0x0001_0800);
        assert_eq!(e[0].edx & HTT, 0);
        assert_eq!(e[5].eax, 0, "no APIC ID bits for cores");
    }

    /// What `KVM_GET_SUPPORTED_CPUID` lists for a KVM with kvm-clock and PV EOI.
    fn supported() -> CpuId {
        CpuId::from_entries(&[
            entry(1, 0, 0x806f8, 0x800, 1 << 21, 0),
            entry(
                KVM_SIGNATURE_LEAF,
                0,
                0x4000_0001,
                0x4b4d_564b,
                0x564b_4d56,
                0x4d,
            ),
            entry(0x4000_0001, 0, (1 << 3) | (1 << 6), 0, 0, 0),
        ])
        .unwrap()
    }

    #[test]
    fn sets_the_hypervisor_bit_and_the_tsc_deadline_timer_where_kvm_has_it() {
        let mut cpuid = supported();
        present_kvm(&mut cpuid, HostTimers::default());
        let e = cpuid.as_slice();
        assert_eq!(e[0].ecx, HYPERVISOR | (1 << 21), "x2APIC kept");
        assert_eq!(
            e.len(),
            3,
            "no frequency leaf without a known TSC frequency"
        );
        assert_eq!(e[1].eax, 0x4000_0001);
        assert_eq!(e[2].eax, (1 << 3) | (1 << 6), "KVM's PV features kept");

        let mut cpuid = supported();
        present_kvm(
            &mut cpuid,
            HostTimers {
                tsc_deadline: true,
                tsc_khz: None,
            },
        );
        assert_eq!(cpuid.as_slice()[0].ecx & TSC_DEADLINE, TSC_DEADLINE);
    }

    #[test]
    fn gives_the_tsc_frequency_in_leaf_0x4000_0010_and_raises_the_highest_leaf() {
        let mut cpuid = supported();
        let host = HostTimers {
            tsc_deadline: false,
            tsc_khz: Some(2_994_374),
        };
        present_kvm(&mut cpuid, host);
        let e = cpuid.as_slice();
        assert_eq!(e[1].eax, TSC_FREQUENCY_LEAF);
        assert_eq!(
            (e[3].function, e[3].eax, e[3].ebx),
            (TSC_FREQUENCY_LEAF, 2_994_374, 1_000_000)
        );
        // Presenting twice changes nothing more.
        present_kvm(&mut cpuid, host);
        assert_eq!(cpuid.as_slice().len(), 4);
    }

    #[test]
    fn adds_no_frequency_leaf_where_kvm_has_no_hypervisor_leaves() {
        let mut cpuid = host();
        present_kvm(
            &mut cpuid,
            HostTimers {
                tsc_deadline: false,
                tsc_khz: Some(1_000_000),
            },
        );
        assert!(
            cpuid
                .as_slice()
                .iter()
                .all(|e| e.function != TSC_FREQUENCY_LEAF)
        );
        assert_eq!(cpuid.as_slice()[0].ecx & HYPERVISOR, HYPERVISOR);
    }

    #[test]
    fn takes_the_brand_string_and_cache_leaves_from_the_host() {
        let mut cpuid = CpuId::from_entries(&[
            entry(0x8000_0002, 0, 0, 0, 0, 0),
            entry(0x8000_0006, 0, 0, 0x4200_0000, 0x0200_6140, 0),
            entry(0x8000_0008, 0, 0x3030, 0, 0, 0),
        ])
        .unwrap();
        take_from_host(&mut cpuid, |leaf| match leaf {
            0x8000_0006 => [0; 4],
            _ => [leaf, 1, 2, 3],
        });
        let e = cpuid.as_slice();
        assert_eq!(e[0].eax, 0x8000_0002, "filled");
        assert_eq!(
            e[1].ebx, 0x4200_0000,
            "zeroes from the host keep KVM's answer"
        );
        assert_eq!(e[2].eax, 0x3030, "0x8000_0008 is per machine: not taken");
    }
}
