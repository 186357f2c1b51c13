/**
 * The benchmark's anchors: a minimal C KVM loop (the floor for a userspace exit on this
 * machine), the same loop answering on a second thread (the floor for an answer from
 * another thread), and QEMU with KVM, running the same guest.
 * @module
 */
import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { guestPath } from '../guests.js';
import { type ExitName, exitCode, reachesUserspace } from './exits.js';
import type { Sample } from './sample.js';

const execFile = promisify(execFileCb);

/** Finds `command` on PATH. */
export function which(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, command);
    if (dir !== '' && existsSync(candidate)) {
      return candidate;
    }
  }
  return undefined;
}

/** The C baseline's source, shipped in the package. */
export const C_SOURCE = fileURLToPath(new URL('../../benches/kvm_loop.c', import.meta.url));

/**
 * Builds the C baseline with the system C compiler (cached by source hash); returns the
 * binary's path, or why it cannot be built.
 */
export function buildCBaseline(): Promise<{ path: string } | { unavailable: string }> {
  return buildBenchTool(C_SOURCE, ['-pthread']);
}

/**
 * Builds one of the benchmark's C programs, `source`, with the system C compiler and
 * `flags` (cached by source hash in the temporary directory); returns the binary's path, or
 * why it cannot be built.
 */
export async function buildBenchTool(
  source: string,
  flags: readonly string[] = [],
): Promise<{ path: string } | { unavailable: string }> {
  const cc = which('cc') ?? which('gcc') ?? which('clang');
  if (cc === undefined) {
    return { unavailable: 'no C compiler (cc, gcc or clang) on PATH' };
  }
  const text = readFileSync(source);
  const hash = createHash('sha256').update(text).update(flags.join(' ')).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'kvmkit-bench');
  const path = join(dir, `${basename(source, '.c')}-${hash}`);
  if (!existsSync(path)) {
    mkdirSync(dir, { recursive: true });
    try {
      await execFile(cc, ['-O2', '-Wall', ...flags, '-o', path, source]);
    } catch (error) {
      return { unavailable: `${cc} could not build ${source}: ${(error as Error).message}` };
    }
  }
  return { path };
}

/**
 * Runs `count` exits of kind `exit` through the C baseline at `binary`; with `threaded`,
 * a second thread answers each exit while the vCPU thread waits for it.
 */
export async function runC(binary: string, exit: ExitName, count: number, threaded = false): Promise<Sample> {
  const args = [guestPath('bench'), String(exitCode(exit)), String(count), ...(threaded ? ['thread'] : [])];
  const { stdout } = await execFile(binary, args);
  const r = JSON.parse(stdout) as {
    wallNs: number;
    exits: number;
    userUs: number;
    sysUs: number;
    p50Ns: number;
    p99Ns: number;
    p999Ns: number;
    buckets: { lowNs: number; highNs: number; count: number }[];
  };
  return {
    wallNs: r.wallNs,
    exits: r.exits,
    cpuUserUs: r.userUs,
    cpuSysUs: r.sysUs,
    ...(r.exits > 0 ? { latency: { p50Ns: r.p50Ns, p99Ns: r.p99Ns, p999Ns: r.p999Ns, buckets: r.buckets } } : {}),
  };
}

/**
 * QEMU's `-cpu` model for KVM guests: the host's CPU as KVM offers it, less `hidden`.
 * QEMU 7.2's `host` model writes IA32_ARCH_CAPABILITIES (MSR 0x10a), which KVM refuses on
 * AMD hosts, and QEMU then aborts ("failed to set MSR 0x10a"); the feature is hidden on every
 * vendor so one command line serves Intel and AMD alike.
 */
export function qemuCpuModel(hidden: readonly string[] = []): string {
  return ['host', ...['arch-capabilities', ...hidden].map((feature) => `-${feature}`)].join(',');
}

/** QEMU, if installed: its path, or why it is not used. */
export function findQemu(): { path: string } | { unavailable: string } {
  const path = which('qemu-system-x86_64');
  return path === undefined
    ? { unavailable: 'qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)' }
    : { path };
}

/** Wall time of one QEMU run of `count` exits (ns), start-up included. */
async function qemuOnce(qemu: string, exit: ExitName, count: number): Promise<number> {
  const dir = join(tmpdir(), 'kvmkit-bench');
  mkdirSync(dir, { recursive: true });
  const params = join(dir, `qemu-params-${process.pid}-${exit}-${count}`);
  const words = Buffer.alloc(8);
  words.writeUInt32LE(exitCode(exit), 0);
  words.writeUInt32LE(count, 4);
  writeFileSync(params, words);
  const args = [
    '-machine',
    'microvm,x-option-roms=off,rtc=off',
    '-accel',
    'kvm',
    '-cpu',
    qemuCpuModel(),
    '-m',
    '16',
    '-nodefaults',
    '-nographic',
    '-no-reboot',
    '-kernel',
    guestPath('bench').replace(/\.bin$/, '.elf'),
    '-initrd',
    params,
    '-device',
    'isa-debug-exit,iobase=0xf4,iosize=1',
  ];
  const start = process.hrtime.bigint();
  try {
    await execFile(qemu, args);
    throw new Error('QEMU exited without the guest writing to its debug-exit port');
  } catch (error) {
    // isa-debug-exit ends QEMU with status (value << 1) | 1: the guest writes 0, so 1.
    if ((error as { code?: unknown }).code !== 1) {
      throw error;
    }
  } finally {
    rmSync(params, { force: true });
  }
  return Number(process.hrtime.bigint() - start);
}

/**
 * Runs `count` exits of kind `exit` under QEMU. QEMU is timed from outside, so the run is
 * timed twice, with `count` exits and with a tenth of them, and the difference divided by
 * the difference in exits: start-up cancels out.
 */
export async function runQemu(qemu: string, exit: ExitName, count: number): Promise<Sample> {
  const few = Math.max(1, Math.floor(count / 10));
  const full = await qemuOnce(qemu, exit, count);
  const short = await qemuOnce(qemu, exit, few);
  const perExit = Math.max(0, full - short) / (count - few || 1);
  return { wallNs: perExit * count, exits: reachesUserspace(exit) ? count : 0 };
}
