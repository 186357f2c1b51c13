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
  /**
   * The guest's uptime at the milestone, per boot: the last kernel log timestamp printed
   * before it (`null` where it was not reached, or the kernel printed no timestamp).
   */
  readonly uptime: readonly (number | null)[];
  /** The median uptime of the boots that reached the milestone with one. */
  readonly medianUptime?: number;
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

/** One boot: seconds to the milestone and the guest's uptime then, or `null`s. */
interface Boot {
  readonly seconds: number | null;
  readonly uptime: number | null;
}

async function bootKvmkit(options: BootBenchOptions, cmdline: string, timeoutMs: number): Promise<Boot> {
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

/**
 * QEMU's arguments for a microvm with KVM, its serial console on stdout, booting `kernel`
 * (with `initrd`) with `cmdline`.
 */
export function qemuMicrovmArgs(
  boot: { kernel: string; initrd?: string | undefined; memoryMib?: number | undefined; vcpus?: number | undefined },
  cmdline: string,
): string[] {
  return [
    ...['-machine', 'microvm', '-accel', 'kvm', '-cpu', qemuCpu()],
    ...['-m', String(boot.memoryMib ?? 512), '-smp', String(boot.vcpus ?? 1)],
    ...['-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio'],
    ...['-kernel', boot.kernel, '-append', cmdline],
    ...(boot.initrd === undefined ? [] : ['-initrd', boot.initrd]),
  ];
}

/** Seconds from spawning QEMU to the milestone on its serial console, or `null`. */
async function bootQemu(qemu: string, options: BootBenchOptions, cmdline: string, timeoutMs: number): Promise<Boot> {
  const args = qemuMicrovmArgs(options, cmdline);
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

/** A kernel log line's timestamp: `[   12.345678] `. */
const LOG_TIMESTAMP = /^\[\s*(\d+\.\d+)\]/gm;

/**
 * Resolves with the seconds since `start` when `output` matches `milestone`, and the last
 * kernel log timestamp printed by then; with `null`s if it does not match in time.
 */
function untilMilestone(
  output: NodeJS.ReadableStream,
  milestone: RegExp,
  timeoutMs: number,
  start: number,
  ended: Promise<unknown>,
): Promise<Boot> {
  return new Promise((resolve) => {
    let text = '';
    let uptime: number | null = null;
    const timer = setTimeout(() => finish(null), timeoutMs);
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const matched = milestone.exec(text);
      const logged = matched === null ? text : text.slice(0, matched.index);
      for (const [, stamp] of logged.matchAll(LOG_TIMESTAMP)) {
        uptime = Number(stamp);
      }
      if (matched !== null) {
        finish((performance.now() - start) / 1000);
      }
      // Keep the tail: a milestone line is never longer than this.
      text = text.slice(-4096);
    };
    function finish(seconds: number | null) {
      clearTimeout(timer);
      output.off('data', onData);
      resolve({ seconds, uptime: seconds === null ? null : uptime });
    }
    output.on('data', onData);
    void ended.then(() => finish(null));
  });
}

function times(vmm: BootTimes['vmm'], boots: readonly Boot[]): BootTimes {
  const seconds = boots.map((b) => b.seconds);
  const uptime = boots.map((b) => b.uptime);
  const reached = seconds.filter((s): s is number => s !== null);
  const stamped = uptime.filter((s): s is number => s !== null);
  return {
    vmm,
    seconds,
    uptime,
    ...(reached.length === 0 ? {} : { median: median(reached) }),
    ...(stamped.length === 0 ? {} : { medianUptime: median(stamped) }),
  };
}

/** Boots `options.kernel` `runs` times with each VMM, alternating, and reports the times. */
export async function benchBoot(options: BootBenchOptions): Promise<BootReport> {
  const runs = options.runs ?? 3;
  const timeoutMs = (options.timeoutSeconds ?? 600) * 1000;
  const cmdline = withHostWorkarounds(options.cmdline);
  const qemu = options.skipQemu ? { unavailable: 'left out (--no-qemu)' } : findQemu();
  const total = runs * ('path' in qemu ? 2 : 1);
  const kvmkit: Boot[] = [];
  const qemuTimes: Boot[] = [];
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
      'path' in qemu
        ? times('qemu', qemuTimes)
        : { vmm: 'qemu', seconds: [], uptime: [], unavailable: qemu.unavailable },
    ],
  };
}

/**
 * The report as a table: each VMM's boots (wall time, and the guest's uptime in
 * parentheses), medians, and kvmkit's ratios to QEMU.
 */
export function formatBootTable(report: BootReport): string {
  const [kvmkit, qemu] = report.results;
  const secs = (s: number | undefined) => (s === undefined ? '—' : `${s.toFixed(2)} s`);
  const cell = (s: number | null, up: number | null | undefined) =>
    s === null ? 'not reached' : `${s.toFixed(2)} s${up == null ? '' : ` (${up.toFixed(2)} s)`}`;
  const lines = [
    `boot of ${report.kernel} to /${report.milestone}/`,
    `command line: ${report.cmdline}`,
    '',
    `${'vmm'.padEnd(8)}${'median'.padStart(12)}${'uptime'.padStart(12)}   boots (guest uptime)`,
  ];
  for (const r of report.results) {
    const boots = r.unavailable ?? r.seconds.map((s, i) => cell(s, r.uptime[i])).join(', ');
    lines.push(`${r.vmm.padEnd(8)}${secs(r.median).padStart(12)}${secs(r.medianUptime).padStart(12)}   ${boots}`);
  }
  if (kvmkit?.median !== undefined && qemu?.median !== undefined) {
    lines.push('', `kvmkit / qemu: ${(kvmkit.median / qemu.median).toFixed(2)}× wall`);
    if (kvmkit.medianUptime !== undefined && qemu.medianUptime !== undefined) {
      lines.push(`kvmkit / qemu: ${(kvmkit.medianUptime / qemu.medianUptime).toFixed(2)}× guest uptime`);
    }
  }
  return `${lines.join('\n')}\n`;
}
