/**
 * Whether this host's KVM runs guests on hardware virtualization.
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';

/** The CPU flags the kernel reports. */
export function cpuFlags(): string[] {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  return /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.trim().split(/\s+/) ?? [];
}

/** True where the CPU offers VT-x or AMD-V, false for software-assisted KVM (such as kvm_pvm). */
export function hardwareVirtualization(): boolean {
  const flags = cpuFlags();
  return flags.includes('vmx') || flags.includes('svm');
}

/** The KVM kernel modules loaded: `kvm` and its vendor or software-assisted backend. */
export function kvmModules(): string[] {
  return ['kvm', 'kvm_intel', 'kvm_amd', 'kvm_pvm'].filter((m) => existsSync(`/sys/module/${m}`));
}
