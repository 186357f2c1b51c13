/**
 * What machine the benchmark ran on.
 * @module
 */
import { existsSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { cpuFlags } from '../hardware.js';

/** The benchmark's host. */
export interface HostInfo {
  /** CPU model. */
  readonly cpu: string;
  /** Logical CPUs. */
  readonly cores: number;
  /** Kernel release. */
  readonly kernel: string;
  /** `hardware` (VT-x/AMD-V) or `software-assisted` KVM, and how that was told. */
  readonly kvm: string;
  /** Node version. */
  readonly node: string;
}

/** Describes this machine. */
export function hostInfo(): HostInfo {
  const flags = cpuFlags();
  const hardware = flags.includes('vmx') || flags.includes('svm');
  const modules = ['kvm_intel', 'kvm_amd', 'kvm_pvm'].filter((m) => existsSync(`/sys/module/${m}`));
  const kvm = hardware
    ? `hardware (${flags.includes('vmx') ? 'VT-x' : 'AMD-V'}; modules ${modules.join(', ') || 'kvm'})`
    : `software-assisted (no vmx/svm CPU flag; modules ${modules.join(', ') || 'none found'})`;
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    kernel: release(),
    kvm,
    node: process.version,
  };
}
