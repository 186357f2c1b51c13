/**
 * `kvmkit bench virtio`: virtio-blk throughput and latency seen from a Linux guest, kvmkit
 * against QEMU's virtio-mmio devices on the same disk file, in the same session, alternating.
 * The guest is kvmkit's test initramfs: with `kvmkit.bench=virtio` on its command line it
 * times `dd` on `/dev/vda` (sequential 1 MiB reads and writes, then 4 KiB reads one at a
 * time, all `O_DIRECT`) and prints one `kvmkit-bench` line per test.
 * @module
 */
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLinuxMachine, DEFAULT_CMDLINE, withHostWorkarounds } from '../linux.js';
import { findQemu } from './anchors.js';
import { qemuMicrovmArgs } from './boot.js';
import { median } from './run.js';

/** What to boot, and how much to move. */
export interface VirtioBenchOptions {
  /** The kernel: an ELF vmlinux or a bzImage. */
  readonly kernel: string;
  /** kvmkit's test initramfs (`npm run fixtures`), which runs the guest side. */
  readonly initrd: string;
  /** Guest RAM in MiB (default 512). */
  readonly memoryMib?: number;
  /** The disk's size in MiB, read and written whole each run (default 128). */
  readonly diskMib?: number;
  /** 4 KiB reads in the latency test (default 4096). */
  readonly latencyReads?: number;
  /** Runs of each VMM, alternating (default 3). */
  readonly runs?: number;
  /** The longest a run may take (default 600 s). */
  readonly timeoutSeconds?: number;
  /** Leave QEMU out. */
  readonly skipQemu?: boolean;
  /** Called as each run ends. */
  readonly progress?: (done: number, total: number, label: string) => void;
}

/** The tests, as the guest names them. */
export const VIRTIO_TESTS = ['seq-read', 'seq-write', 'read-4k-qd1'] as const;
/** A test's name. */
export type VirtioTest = (typeof VIRTIO_TESTS)[number];

/** One run's seconds per test (`null` where the guest did not report it). */
export type VirtioRunTimes = Record<VirtioTest, number | null>;

/** One VMM's runs. */
export interface VirtioTimes {
  /** `kvmkit` or `qemu`. */
  readonly vmm: 'kvmkit' | 'qemu';
  /** Each run's seconds per test. */
  readonly runs: readonly VirtioRunTimes[];
  /** The median seconds per test, over the runs that reported it. */
  readonly median: Partial<Record<VirtioTest, number>>;
  /** Why there are no figures, when there are none. */
  readonly unavailable?: string;
}

/** The benchmark's result. */
export interface VirtioReport {
  /** The disk's size in MiB. */
  readonly diskMib: number;
  /** 4 KiB reads in the latency test. */
  readonly latencyReads: number;
  /** kvmkit's runs, then QEMU's. */
  readonly results: readonly VirtioTimes[];
}

/** `kvmkit-bench seq-read real 0m 1.23s`: a test's wall time as busybox's `time` says it. */
const RESULT = /^kvmkit-bench (\S+) real\s+(\d+)m\s*([\d.]+)s/gm;
const DONE = 'kvmkit-bench done';

/** The seconds per test in a guest's console output. */
export function parseVirtioResults(text: string): VirtioRunTimes {
  const times: VirtioRunTimes = { 'seq-read': null, 'seq-write': null, 'read-4k-qd1': null };
  for (const [, name, minutes, seconds] of text.matchAll(RESULT)) {
    if ((VIRTIO_TESTS as readonly string[]).includes(name ?? '')) {
      times[name as VirtioTest] = Number(minutes) * 60 + Number(seconds);
    }
  }
  return times;
}

/** Collects `output` until it prints `marker`, the VMM ends or `timeoutMs` passes. */
function consoleUntil(
  output: NodeJS.ReadableStream,
  marker: string,
  timeoutMs: number,
  ended: Promise<unknown>,
): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const timer = setTimeout(finish, timeoutMs);
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.includes(marker)) {
        finish();
      }
    };
    function finish() {
      clearTimeout(timer);
      output.off('data', onData);
      resolve(text);
    }
    output.on('data', onData);
    void ended.then(finish);
  });
}

async function runKvmkit(options: VirtioBenchOptions, disk: string, cmdline: string, timeoutMs: number) {
  const { vm, console } = createLinuxMachine({
    kernel: options.kernel,
    initrd: options.initrd,
    cmdline,
    memory: `${options.memoryMib ?? 512}M`,
    disks: [{ path: disk }],
  });
  try {
    return parseVirtioResults(await consoleUntil(console.output, DONE, timeoutMs, vm.run()));
  } finally {
    vm.stop();
    await vm.close();
  }
}

async function runQemu(qemu: string, options: VirtioBenchOptions, disk: string, cmdline: string, timeoutMs: number) {
  const args = [
    ...qemuMicrovmArgs(options, cmdline),
    // virtio 1.x over virtio-mmio (version 2), as kvmkit's; the page cache as kvmkit's file backend.
    ...['-global', 'virtio-mmio.force-legacy=false'],
    ...['-drive', `id=vda,if=none,format=raw,cache=writeback,file=${disk}`],
    ...['-device', 'virtio-blk-device,drive=vda'],
  ];
  const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<unknown>((resolve) => child.once('close', resolve));
  try {
    return parseVirtioResults(await consoleUntil(child.stdout, DONE, timeoutMs, exited));
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

function summary(vmm: VirtioTimes['vmm'], runs: readonly VirtioRunTimes[]): VirtioTimes {
  const med: Partial<Record<VirtioTest, number>> = {};
  for (const test of VIRTIO_TESTS) {
    const seen = runs.map((r) => r[test]).filter((s): s is number => s !== null);
    if (seen.length > 0) {
      med[test] = median(seen);
    }
  }
  return { vmm, runs, median: med };
}

/**
 * Runs the guest's disk tests `runs` times on each VMM, alternating, on one disk file of
 * `diskMib` MiB (filled, so neither VMM reads holes), and reports the times.
 */
export async function benchVirtio(options: VirtioBenchOptions): Promise<VirtioReport> {
  const runs = options.runs ?? 3;
  const diskMib = options.diskMib ?? 128;
  const latencyReads = options.latencyReads ?? 4096;
  const timeoutMs = (options.timeoutSeconds ?? 600) * 1000;
  const cmdline = withHostWorkarounds(
    `${DEFAULT_CMDLINE} quiet kvmkit.bench=virtio kvmkit.bench.mib=${diskMib} kvmkit.bench.reads=${latencyReads}`,
  );
  const qemu = options.skipQemu ? { unavailable: 'left out (--no-qemu)' } : findQemu();
  const disk = join(tmpdir(), `kvmkit-bench-${process.pid}.img`);
  writeFileSync(disk, Buffer.alloc(diskMib << 20, 0x5a));
  const total = runs * ('path' in qemu ? 2 : 1);
  const kvmkit: VirtioRunTimes[] = [];
  const qemuRuns: VirtioRunTimes[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      kvmkit.push(await runKvmkit(options, disk, cmdline, timeoutMs));
      options.progress?.(kvmkit.length + qemuRuns.length, total, `kvmkit run ${i + 1}`);
      if ('path' in qemu) {
        qemuRuns.push(await runQemu(qemu.path, options, disk, cmdline, timeoutMs));
        options.progress?.(kvmkit.length + qemuRuns.length, total, `qemu run ${i + 1}`);
      }
    }
  } finally {
    rmSync(disk, { force: true });
  }
  return {
    diskMib,
    latencyReads,
    results: [
      summary('kvmkit', kvmkit),
      'path' in qemu ? summary('qemu', qemuRuns) : { vmm: 'qemu', runs: [], median: {}, unavailable: qemu.unavailable },
    ],
  };
}

/**
 * The report as a table: sequential throughput in MB/s and 4 KiB latency in µs (medians),
 * and kvmkit's ratios to QEMU (above 1 is kvmkit better).
 */
export function formatVirtioTable(report: VirtioReport): string {
  const bytes = report.diskMib * 2 ** 20;
  const figure = (test: VirtioTest, s: number | undefined): string => {
    if (s === undefined) {
      return '—';
    }
    return test === 'read-4k-qd1'
      ? `${((s / report.latencyReads) * 1e6).toFixed(1)} µs`
      : `${(bytes / s / 1e6).toFixed(1)} MB/s`;
  };
  const head = `${'vmm'.padEnd(8)}${VIRTIO_TESTS.map((t) => t.padStart(16)).join('')}   runs`;
  const lines = [`virtio-blk, ${report.diskMib} MiB disk, O_DIRECT in the guest`, '', head];
  for (const r of report.results) {
    const cells = VIRTIO_TESTS.map((t) => figure(t, r.median[t]).padStart(16)).join('');
    lines.push(`${r.vmm.padEnd(8)}${cells}   ${r.unavailable ?? r.runs.length}`);
  }
  const [kvmkit, qemu] = report.results;
  if (kvmkit !== undefined && qemu !== undefined && qemu.unavailable === undefined) {
    const ratios = VIRTIO_TESTS.map((t) => {
      const [k, q] = [kvmkit.median[t], qemu.median[t]];
      return k === undefined || q === undefined ? `${t} —` : `${t} ${(q / k).toFixed(2)}×`;
    });
    lines.push('', `kvmkit speed / qemu speed: ${ratios.join(', ')}`);
  }
  return `${lines.join('\n')}\n`;
}
