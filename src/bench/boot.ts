/**
 * `kvmkit bench boot`: how long a Linux kernel takes to reach a milestone on its console —
 * a line it prints — through kvmkit and through QEMU (`-M microvm`) with the same kernel,
 * initrd and command line, interleaved in the same run.
 * @module
 */
import { spawn } from 'node:child_process';
import { hardwareVirtualization } from '../hardware.js';
import { createLinuxMachine, withHostWorkarounds } from '../linux.js';
import { findQemu, qemuCpuModel } from './anchors.js';
import { median } from './run.js';

/** What to boot, and until when. */
export interface BootBenchOptions {
  /** The kernel: an ELF vmlinux or a bzImage (kvmkit decompresses it on the host). */
  readonly kernel: string;
  /** An initrd. */
  readonly initrd?: string;
  /** The command line, the same for both (the host's workarounds are added). */
  readonly cmdline: string;
  /** The console line that ends a boot. */
  readonly milestone: RegExp;
  /** Boots of each (default 3). */
  readonly runs?: number;
  /** Guest RAM in MiB (default 512). */
  readonly memoryMib?: number;
  /** vCPUs (default 1). */
  readonly vcpus?: number;
  /** The longest a boot may take before it counts as not reaching the milestone (default 600 s). */
  readonly timeoutSeconds?: number;
  /** Leave QEMU out. */
  readonly skipQemu?: boolean;
  /** Called as each boot ends. */
  readonly progress?: (done: number, total: number, label: string) => void;
}

/** One VMM's boots. */
export interface BootTimes {
  /** `kvmkit` or `qemu`. */
  readonly vmm: 'kvmkit' | 'qemu';
  /** Seconds from start to the milestone, per boot; `null` where it was not reached in time. */
  readonly seconds: readonly (number | null)[];
  /** The median of the boots that reached it, if any did. */
  readonly median?: number;
  /** Why there are no figures, when there are none (QEMU not installed, say). */
  readonly unavailable?: string;
}

/** The benchmark's result. */
export interface BootReport {
  /** The kernel booted. */
  readonly kernel: string;
  /** The milestone, as a regular expression's source. */
  readonly milestone: string;
  /** The command line both were given. */
  readonly cmdline: string;
  /** kvmkit's boots, then QEMU's. */
  readonly results: readonly BootTimes[];
}

/** QEMU's CPU model here: what `SOFTWARE_KVM_CPUID_MASKS` hides from kvmkit's guests. */
function qemuCpu(): string {
  return qemuCpuModel(hardwareVirtualization() ? [] : ['cx16', 'xsave', 'avx', 'f16c', 'avx2']);
}

/** Seconds from creating the machine (loading included) to the milestone, or `null`. */
async function bootKvmkit(options: BootBenchOptions, cmdline: string, timeoutMs: number): Promise<number | null> {
  const start = performance.now();
  const { vm, console } = createLinuxMachine({
    kernel: options.kernel,
    cmdline,
    memory: `${options.memoryMib ?? 512}M`,
    vcpus: options.vcpus ?? 1,
    ...(options.initrd === undefined ? {} : { initrd: options.initrd }),
  });
  try {
    return await untilMilestone(console.output, options.milestone, timeoutMs, start, vm.run());
  } finally {
    vm.stop();
    await vm.close();
  }
}

/** Seconds from spawning QEMU to the milestone on its serial console, or `null`. */
async function bootQemu(
  qemu: string,
  options: BootBenchOptions,
  cmdline: string,
  timeoutMs: number,
): Promise<number | null> {
  const args = [
    ...['-machine', 'microvm', '-accel', 'kvm', '-cpu', qemuCpu()],
    ...['-m', String(options.memoryMib ?? 512), '-smp', String(options.vcpus ?? 1)],
    ...['-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio'],
    ...['-kernel', options.kernel, '-append', cmdline],
    ...(options.initrd === undefined ? [] : ['-initrd', options.initrd]),
  ];
  const start = performance.now();
  const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<unknown>((resolve) => child.once('close', resolve));
  try {
    return await untilMilestone(child.stdout, options.milestone, timeoutMs, start, exited);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Resolves with the seconds since `start` when `output` matches `milestone`, else `null`. */
function untilMilestone(
  output: NodeJS.ReadableStream,
  milestone: RegExp,
  timeoutMs: number,
  start: number,
  ended: Promise<unknown>,
): Promise<number | null> {
  return new Promise((resolve) => {
    let text = '';
    const timer = setTimeout(() => finish(null), timeoutMs);
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (milestone.test(text)) {
        finish((performance.now() - start) / 1000);
      }
      // Keep the tail: a milestone line is never longer than this.
      text = text.slice(-4096);
    };
    function finish(seconds: number | null) {
      clearTimeout(timer);
      output.off('data', onData);
      resolve(seconds);
    }
    output.on('data', onData);
    void ended.then(() => finish(null));
  });
}

function times(vmm: BootTimes['vmm'], seconds: (number | null)[]): BootTimes {
  const reached = seconds.filter((s): s is number => s !== null);
  return { vmm, seconds, ...(reached.length === 0 ? {} : { median: median(reached) }) };
}

/** Boots `options.kernel` `runs` times with each VMM, alternating, and reports the times. */
export async function benchBoot(options: BootBenchOptions): Promise<BootReport> {
  const runs = options.runs ?? 3;
  const timeoutMs = (options.timeoutSeconds ?? 600) * 1000;
  const cmdline = withHostWorkarounds(options.cmdline);
  const qemu = options.skipQemu ? { unavailable: 'left out (--no-qemu)' } : findQemu();
  const total = runs * ('path' in qemu ? 2 : 1);
  const kvmkit: (number | null)[] = [];
  const qemuTimes: (number | null)[] = [];
  for (let i = 0; i < runs; i++) {
    kvmkit.push(await bootKvmkit(options, cmdline, timeoutMs));
    options.progress?.(kvmkit.length + qemuTimes.length, total, `kvmkit boot ${i + 1}`);
    if ('path' in qemu) {
      qemuTimes.push(await bootQemu(qemu.path, options, cmdline, timeoutMs));
      options.progress?.(kvmkit.length + qemuTimes.length, total, `qemu boot ${i + 1}`);
    }
  }
  return {
    kernel: options.kernel,
    milestone: options.milestone.source,
    cmdline,
    results: [
      times('kvmkit', kvmkit),
      'path' in qemu ? times('qemu', qemuTimes) : { vmm: 'qemu', seconds: [], unavailable: qemu.unavailable },
    ],
  };
}

/** The report as a table: each VMM's boots, median, and kvmkit's ratio to QEMU. */
export function formatBootTable(report: BootReport): string {
  const [kvmkit, qemu] = report.results;
  const cell = (s: number | null) => (s === null ? 'not reached' : `${s.toFixed(2)} s`);
  const lines = [
    `boot of ${report.kernel} to /${report.milestone}/`,
    `command line: ${report.cmdline}`,
    '',
    `${'vmm'.padEnd(8)}${'median'.padStart(12)}   boots`,
  ];
  for (const r of report.results) {
    const median = r.median === undefined ? '—' : `${r.median.toFixed(2)} s`;
    const boots = r.unavailable ?? r.seconds.map(cell).join(', ');
    lines.push(`${r.vmm.padEnd(8)}${median.padStart(12)}   ${boots}`);
  }
  if (kvmkit?.median !== undefined && qemu?.median !== undefined) {
    lines.push('', `kvmkit / qemu: ${(kvmkit.median / qemu.median).toFixed(2)}×`);
  }
  return `${lines.join('\n')}\n`;
}
