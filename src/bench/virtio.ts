/**
 * `kvmkit bench virtio`: virtio-blk and virtio-vsock throughput and latency seen from a Linux
 * guest, kvmkit against QEMU's virtio-mmio devices (the same disk file; QEMU's vsock is
 * vhost-vsock), in the same session, alternating. The guest is kvmkit's test initramfs: with
 * `kvmkit.bench=virtio` on its command line it times `dd` on `/dev/vda` (sequential 1 MiB
 * reads and writes, then 4 KiB reads one at a time, all `O_DIRECT`) and prints one
 * `kvmkit-bench` line per test; with `kvmkit.bench.vsock=PORT` it then serves the vsock tests
 * (`vsock-bench serve`, test/hw/vsock-bench.c), which the same program times from the host
 * (`vsock-bench run`): through kvmkit's Firecracker-style Unix socket, or through `AF_VSOCK`
 * for QEMU's vhost-vsock.
 * @module
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
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
  /** MiB moved each way over vsock (default 64). */
  readonly vsockMib?: number;
  /** Round trips of 64 bytes over vsock (default 2000). */
  readonly vsockRounds?: number;
  /**
   * The vsock benchmark's program, built static by `npm run fixtures` (default: `vsock-bench`
   * beside the initramfs). Without it, the vsock tests are left out.
   */
  readonly vsockTool?: string;
  /** Runs of each VMM, alternating (default 3). */
  readonly runs?: number;
  /** The longest a run may take (default 600 s). */
  readonly timeoutSeconds?: number;
  /** Leave QEMU out. */
  readonly skipQemu?: boolean;
  /** Called as each run ends. */
  readonly progress?: (done: number, total: number, label: string) => void;
}

/** The disk tests, as the guest names them. */
export const BLOCK_TESTS = ['seq-read', 'seq-write', 'read-4k-qd1'] as const;
/** The vsock tests, as `vsock-bench` names them: guest to host, host to guest, round trips. */
export const VSOCK_TESTS = ['vsock-g2h', 'vsock-h2g', 'vsock-rtt'] as const;
/** Every test. */
export const VIRTIO_TESTS = [...BLOCK_TESTS, ...VSOCK_TESTS] as const;
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
  /** Why there are no vsock figures, when there are none but disk figures. */
  readonly vsockUnavailable?: string;
}

/** The benchmark's result. */
export interface VirtioReport {
  /** The disk's size in MiB. */
  readonly diskMib: number;
  /** 4 KiB reads in the latency test. */
  readonly latencyReads: number;
  /** MiB moved each way over vsock. */
  readonly vsockMib: number;
  /** Round trips over vsock. */
  readonly vsockRounds: number;
  /** kvmkit's runs, then QEMU's. */
  readonly results: readonly VirtioTimes[];
}

/** `kvmkit-bench seq-read real 0m 1.23s`: a test's wall time as busybox's `time` says it. */
const RESULT = /^kvmkit-bench (\S+) real\s+(\d+)m\s*([\d.]+)s/gm;
/** `kvmkit-bench vsock-g2h seconds 1.234567`: a vsock test's time as `vsock-bench run` says it. */
const VSOCK_RESULT = /^kvmkit-bench (vsock-\S+) seconds ([\d.]+)$/gm;
const VSOCK_READY = 'kvmkit-bench vsock-ready';
const DONE = 'kvmkit-bench done';
/** The guest's vsock port for the benchmark. */
const VSOCK_PORT = 5201;

/** The seconds per test in a guest's console output and `vsock-bench run`'s. */
export function parseVirtioResults(text: string): VirtioRunTimes {
  const times = Object.fromEntries(VIRTIO_TESTS.map((t) => [t, null])) as VirtioRunTimes;
  const known = (name: string | undefined): name is VirtioTest =>
    (VIRTIO_TESTS as readonly string[]).includes(name ?? '');
  for (const [, name, minutes, seconds] of text.matchAll(RESULT)) {
    if (known(name)) {
      times[name] = Number(minutes) * 60 + Number(seconds);
    }
  }
  for (const [, name, seconds] of text.matchAll(VSOCK_RESULT)) {
    if (known(name)) {
      times[name] = Number(seconds);
    }
  }
  return times;
}

/** A VMM's console, kept whole, with a wait for what it prints. */
interface ConsoleWatch {
  /** Resolves with everything printed so far once it includes `marker`, the VMM ends or `timeoutMs` passes. */
  until(marker: string, timeoutMs: number): Promise<string>;
}

function watchConsole(output: NodeJS.ReadableStream, ended: Promise<unknown>): ConsoleWatch {
  let text = '';
  let over = false;
  const waiting = new Set<() => void>();
  output.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    for (const check of waiting) check();
  });
  void ended.then(() => {
    over = true;
    for (const check of waiting) check();
  });
  return {
    until: (marker, timeoutMs) =>
      new Promise((resolve) => {
        const timer = setTimeout(finish, timeoutMs);
        function finish() {
          clearTimeout(timer);
          waiting.delete(check);
          resolve(text);
        }
        function check() {
          if (over || text.includes(marker)) {
            finish();
          }
        }
        waiting.add(check);
        check();
      }),
  };
}

/** How the host reaches the guest's vsock server, and with what. */
interface VsockHost {
  /** `vsock-bench run`'s address: `uds:PATH` or `vsock:CID`. */
  readonly address: string;
  readonly tool: string;
  readonly mib: number;
  readonly rounds: number;
}

/** Runs `vsock-bench run` against the guest; resolves with its output (and why it failed, if it did). */
function runVsockTool(host: VsockHost, timeoutMs: number): Promise<string> {
  const args = ['run', host.address, String(VSOCK_PORT), String(host.mib), String(host.rounds)];
  const child = spawn(host.tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString('latin1');
  });
  child.stderr.on('data', (chunk: Buffer) => {
    out += chunk.toString('latin1');
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => {
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve(`${out}${error.message}\n`);
    });
    child.once('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

/** Waits for the guest's disk tests, then drives its vsock tests if it serves them, then waits for it to finish. */
async function guestRun(watch: ConsoleWatch, vsock: VsockHost | undefined, timeoutMs: number): Promise<VirtioRunTimes> {
  let text = await watch.until(vsock === undefined ? DONE : VSOCK_READY, timeoutMs);
  let hostSide = '';
  if (vsock !== undefined && text.includes(VSOCK_READY)) {
    hostSide = await runVsockTool(vsock, timeoutMs);
    text = await watch.until(DONE, timeoutMs);
  }
  return parseVirtioResults(`${text}\n${hostSide}`);
}

async function runKvmkit(options: VirtioBenchOptions, disk: string, cmdline: string, vsock: VsockPlan | undefined) {
  const uds = join(tmpdir(), `kvmkit-bench-${process.pid}.vsock`);
  rmSync(uds, { force: true });
  const { vm, console } = createLinuxMachine({
    kernel: options.kernel,
    initrd: options.initrd,
    cmdline,
    memory: `${options.memoryMib ?? 512}M`,
    disks: [{ path: disk }],
    ...(vsock === undefined ? {} : { vsock: { cid: 3, uds } }),
  });
  try {
    const host = vsock === undefined ? undefined : { ...vsock, address: `uds:${uds}` };
    return await guestRun(watchConsole(console.output, vm.run()), host, timeoutOf(options));
  } finally {
    vm.stop();
    await vm.close();
    rmSync(uds, { force: true });
  }
}

async function runQemu(
  qemu: string,
  options: VirtioBenchOptions,
  disk: string,
  cmdline: string,
  vsock: VsockPlan | undefined,
) {
  // vhost-vsock's CIDs are the host kernel's: one this process alone is likely to use.
  const cid = 3 + (process.pid % 1_000_000);
  const args = [
    ...qemuMicrovmArgs(options, cmdline),
    // virtio 1.x over virtio-mmio (version 2), as kvmkit's; the page cache as kvmkit's file backend.
    ...['-global', 'virtio-mmio.force-legacy=false'],
    ...['-drive', `id=vda,if=none,format=raw,cache=writeback,file=${disk}`],
    ...['-device', 'virtio-blk-device,drive=vda'],
    ...(vsock === undefined ? [] : ['-device', `vhost-vsock-device,guest-cid=${cid}`]),
  ];
  const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<unknown>((resolve) => child.once('close', resolve));
  try {
    const host = vsock === undefined ? undefined : { ...vsock, address: `vsock:${cid}` };
    return await guestRun(watchConsole(child.stdout, exited), host, timeoutOf(options));
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

function timeoutOf(options: VirtioBenchOptions): number {
  return (options.timeoutSeconds ?? 600) * 1000;
}

/** The vsock tests' program and sizes, when they run. */
type VsockPlan = Omit<VsockHost, 'address'>;

/** Why QEMU cannot run the vsock tests here, if it cannot: 7.2 has vsock only through vhost. */
function qemuVsockUnavailable(): string | undefined {
  try {
    accessSync('/dev/vhost-vsock', constants.R_OK | constants.W_OK);
    return undefined;
  } catch {
    return 'no /dev/vhost-vsock here (QEMU 7.2 has vsock only as vhost-vsock; modprobe vhost_vsock)';
  }
}

function summary(vmm: VirtioTimes['vmm'], runs: readonly VirtioRunTimes[], vsockUnavailable?: string): VirtioTimes {
  const med: Partial<Record<VirtioTest, number>> = {};
  for (const test of VIRTIO_TESTS) {
    const seen = runs.map((r) => r[test]).filter((s): s is number => s !== null);
    if (seen.length > 0) {
      med[test] = median(seen);
    }
  }
  return { vmm, runs, median: med, ...(vsockUnavailable === undefined ? {} : { vsockUnavailable }) };
}

/**
 * Runs the guest's disk and vsock tests `runs` times on each VMM, alternating, on one disk
 * file of `diskMib` MiB (filled, so neither VMM reads holes), and reports the times.
 */
export async function benchVirtio(options: VirtioBenchOptions): Promise<VirtioReport> {
  const runs = options.runs ?? 3;
  const diskMib = options.diskMib ?? 128;
  const latencyReads = options.latencyReads ?? 4096;
  const vsockMib = options.vsockMib ?? 64;
  const vsockRounds = options.vsockRounds ?? 2000;
  const tool = options.vsockTool ?? join(dirname(options.initrd), 'vsock-bench');
  const vsock = existsSync(tool) ? { tool, mib: vsockMib, rounds: vsockRounds } : undefined;
  const noTool = vsock === undefined ? `no vsock benchmark program at ${tool} (npm run fixtures builds it)` : undefined;
  const qemuNoVsock = noTool ?? qemuVsockUnavailable();
  const cmdline = withHostWorkarounds(
    `${DEFAULT_CMDLINE} quiet kvmkit.bench=virtio kvmkit.bench.mib=${diskMib} kvmkit.bench.reads=${latencyReads}` +
      (vsock === undefined ? '' : ` kvmkit.bench.vsock=${VSOCK_PORT}`),
  );
  const qemu = options.skipQemu ? { unavailable: 'left out (--no-qemu)' } : findQemu();
  const disk = join(tmpdir(), `kvmkit-bench-${process.pid}.img`);
  writeFileSync(disk, Buffer.alloc(diskMib << 20, 0x5a));
  const total = runs * ('path' in qemu ? 2 : 1);
  const kvmkit: VirtioRunTimes[] = [];
  const qemuRuns: VirtioRunTimes[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      kvmkit.push(await runKvmkit(options, disk, cmdline, vsock));
      options.progress?.(kvmkit.length + qemuRuns.length, total, `kvmkit run ${i + 1}`);
      if ('path' in qemu) {
        qemuRuns.push(await runQemu(qemu.path, options, disk, cmdline, qemuNoVsock === undefined ? vsock : undefined));
        options.progress?.(kvmkit.length + qemuRuns.length, total, `qemu run ${i + 1}`);
      }
    }
  } finally {
    rmSync(disk, { force: true });
  }
  return {
    diskMib,
    latencyReads,
    vsockMib,
    vsockRounds,
    results: [
      summary('kvmkit', kvmkit, noTool),
      'path' in qemu
        ? summary('qemu', qemuRuns, qemuNoVsock)
        : { vmm: 'qemu', runs: [], median: {}, unavailable: qemu.unavailable },
    ],
  };
}

/** One table: a row per VMM, then kvmkit's ratios to QEMU (above 1 is kvmkit better). */
function table(
  report: VirtioReport,
  title: string,
  tests: readonly VirtioTest[],
  figure: (test: VirtioTest, s: number) => string,
  missing: (r: VirtioTimes) => string | undefined,
): string[] {
  const head = `${'vmm'.padEnd(8)}${tests.map((t) => t.padStart(16)).join('')}   runs`;
  const lines = [title, '', head];
  for (const r of report.results) {
    const cells = tests.map((t) => {
      const s = r.median[t];
      return (s === undefined ? '—' : figure(t, s)).padStart(16);
    });
    lines.push(`${r.vmm.padEnd(8)}${cells.join('')}   ${missing(r) ?? r.runs.length}`);
  }
  const [kvmkit, qemu] = report.results;
  if (kvmkit !== undefined && qemu !== undefined && missing(qemu) === undefined) {
    const ratios = tests.map((t) => {
      const [k, q] = [kvmkit.median[t], qemu.median[t]];
      return k === undefined || q === undefined ? `${t} —` : `${t} ${(q / k).toFixed(2)}×`;
    });
    lines.push('', `kvmkit speed / qemu speed: ${ratios.join(', ')}`);
  }
  return lines;
}

/**
 * The report as two tables, disk and vsock: throughput in MB/s and latency in µs (medians),
 * kvmkit's ratios to QEMU (above 1 is kvmkit better), and what limits the figures.
 */
export function formatVirtioTable(report: VirtioReport): string {
  const mb = (bytes: number, s: number) => `${(bytes / s / 1e6).toFixed(1)} MB/s`;
  const µs = (count: number, s: number) => `${((s / count) * 1e6).toFixed(1)} µs`;
  const block = table(
    report,
    `virtio-blk, ${report.diskMib} MiB disk, O_DIRECT in the guest`,
    BLOCK_TESTS,
    (t, s) => (t === 'read-4k-qd1' ? µs(report.latencyReads, s) : mb(report.diskMib * 2 ** 20, s)),
    (r) => r.unavailable,
  );
  const vsock = table(
    report,
    `virtio-vsock, ${report.vsockMib} MiB each way, ${report.vsockRounds} round trips of 64 bytes (timed on the host)`,
    VSOCK_TESTS,
    (t, s) => (t === 'vsock-rtt' ? µs(report.vsockRounds, s) : mb(report.vsockMib * 2 ** 20, s)),
    (r) => r.unavailable ?? r.vsockUnavailable,
  );
  const notes = [
    'What limits them:',
    '- seq-read, seq-write: per 1 MiB request a notification, the backend moving it from or to the',
    "  page cache (kvmkit's I/O thread, QEMU's main loop) and an interrupt; the guest's block layer.",
    '- read-4k-qd1: one request at a time, so the whole trip: submit, notify, wake the VMM, read,',
    '  interrupt, complete.',
    '- vsock-g2h, vsock-h2g: copies (the guest kernel into its queue buffers; kvmkit between guest RAM',
    "  and a Unix socket, QEMU's vhost-vsock in the host kernel to AF_VSOCK; the host program), credit",
    '  updates, and 4 KiB RX buffers in a Linux guest (host to guest: a packet per 4 KiB).',
    '- vsock-rtt: two packets a round, each a notification or an interrupt, and the hand-offs between',
    "  the guest's vCPU, the VMM's thread (kvmkit's I/O thread, QEMU's vhost worker) and the host",
    '  program: with fewer CPUs than those, they take turns.',
  ];

  return `${[...block, '', ...vsock, '', ...notes].join('\n')}\n`;
}
