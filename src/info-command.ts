/**
 * `kvmkit info`: what this host's KVM is and what that means for guests.
 * @module
 */
import { cpus, totalmem } from 'node:os';
import { findQemu } from './bench/anchors.js';
import { hardwareVirtualization, kvmModules } from './hardware.js';
import { type KvmInfo, kvmAvailability } from './kvm.js';
import { formatSize } from './size.js';

/** What `kvmkit info --json` prints. */
export interface HostReport {
  /** KVM's limits, or why it is not usable. */
  readonly kvm: KvmInfo | { readonly error: string; readonly code: string };
  /** `hardware` (VT-x/AMD-V) or `software-assisted` (such as kvm_pvm). */
  readonly virtualization: 'hardware' | 'software-assisted';
  /** The KVM modules loaded. */
  readonly modules: readonly string[];
  /** Logical CPUs and bytes of RAM. */
  readonly host: { readonly cpus: number; readonly memory: number };
  /** `qemu-system-x86_64`'s path, or null (kvmkit bench compares against it). */
  readonly qemu: string | null;
}

/** Looks at this host. */
export function hostReport(path?: string): HostReport {
  const availability = kvmAvailability(path);
  const qemu = findQemu();
  return {
    kvm: availability.ok ? availability.info : { error: availability.error.message, code: availability.error.code },
    virtualization: hardwareVirtualization() ? 'hardware' : 'software-assisted',
    modules: kvmModules(),
    host: { cpus: cpus().length, memory: totalmem() },
    qemu: 'path' in qemu ? qemu.path : null,
  };
}

const LABEL_WIDTH = 14;
const INDENT = ' '.repeat(LABEL_WIDTH + 2);

/** One labelled line of the report. */
function row(label: string, text: string): string {
  return `  ${`${label}:`.padEnd(LABEL_WIDTH)}${text}`;
}

/** The report for a person. */
export function formatHostReport(r: HostReport): string {
  const modules = r.modules.length > 0 ? r.modules.join(', ') : 'none loaded';
  const kind =
    r.virtualization === 'hardware'
      ? `hardware virtualization (modules: ${modules}): guests run at close to native speed; a Linux boot takes about a second`
      : `software-assisted, no VT-x/AMD-V (modules: ${modules}): guest kernel code is emulated, so a\n` +
        `${INDENT}Linux boot takes minutes; kvmkit finishes instructions this emulator gives up on (int3,\n` +
        `${INDENT}fwait, ldmxcsr, stmxcsr, …) and createLinuxMachine hides the CPU features it cannot run`;
  const lines = [
    'error' in r.kvm
      ? `kvmkit info: KVM is not usable here [${r.kvm.code}]\n  ${r.kvm.error}`
      : `kvmkit info: ${r.kvm.path} is usable (KVM API ${r.kvm.apiVersion})`,
    row('KVM', kind),
  ];
  if (!('error' in r.kvm)) {
    const { capabilities, missing } = r.kvm;
    const total = capabilities.length + missing.length;
    lines.push(
      row(
        'limits',
        `${r.kvm.maxVcpus} vCPUs per VM (${r.kvm.recommendedVcpus} recommended), ${r.kvm.maxMemslots} memory regions`,
      ),
      row(
        'capabilities',
        missing.length === 0
          ? `all ${total} that kvmkit uses`
          : `${capabilities.length} of the ${total} kvmkit uses; missing ${missing.map((m) => `${m.name} (no ${m.needs})`).join(', ')}`,
      ),
    );
  }
  lines.push(
    row('host', `${r.host.cpus} CPUs, ${formatSize(r.host.memory)} of RAM (more guest RAM needs overcommit: true)`),
    row(
      'QEMU',
      r.qemu ?? 'not found (kvmkit bench and bench boot run without it; Debian: apt-get install qemu-system-x86)',
    ),
  );
  return `${lines.join('\n')}\n`;
}
