/**
 * What machine the benchmark ran on.
 * @module
 */
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { cpuFlags, kvmModules } from '../hardware.js';
import type { KvmKind } from './targets.js';

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
  /** The kind of KVM alone: which goals the benchmark's targets are. */
  readonly kvmKind: KvmKind;
  /** Node version. */
  readonly node: string;
  /** What else was using the CPUs as the benchmark ended. */
  readonly load: HostLoad;
}

/** How busy the host was with other work. */
export interface HostLoad {
  /** The 1-minute load average (the benchmark's own threads included). */
  readonly loadAverage: number;
  /** CPUs' worth of time other processes used over a short sample. */
  readonly otherCpus: number;
  /** The busiest other processes, as `name NN%`. */
  readonly busiest: readonly string[];
}

/** Other processes using more than this many CPUs make the host busy. */
export const BUSY_CPUS = 0.25;
/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux x86-64). */
const USER_HZ = 100;

/** CPU ticks used so far by each process other than this one and its children, by pid. */
function otherProcessTicks(): Map<number, { name: string; ticks: number }> {
  const ticks = new Map<number, { name: string; ticks: number }>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) {
      continue;
    }
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      // After "pid (comm) ": state ppid … utime (11th) stime (12th).
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) !== process.pid) {
        ticks.set(pid, { name, ticks: Number(fields[11]) + Number(fields[12]) });
      }
    } catch {
      // The process ended while we looked.
    }
  }
  return ticks;
}

/** Samples what other processes use over `ms` milliseconds. */
export function hostLoad(ms = 500): HostLoad {
  const before = otherProcessTicks();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const used = [...otherProcessTicks()]
    .map(([pid, p]) => ({
      name: p.name,
      cpus: (p.ticks - (before.get(pid)?.ticks ?? p.ticks)) / USER_HZ / (ms / 1000),
    }))
    .filter((p) => p.cpus > 0)
    .sort((a, b) => b.cpus - a.cpus);
  return {
    loadAverage: loadavg()[0] ?? 0,
    otherCpus: used.reduce((sum, p) => sum + p.cpus, 0),
    busiest: used.slice(0, 3).map((p) => `${p.name} ${Math.round(p.cpus * 100)}%`),
  };
}

/** One line on how busy the host was, said plainly when it was. */
export function describeLoad(load: HostLoad, cores: number): string {
  const figures = `load average ${load.loadAverage.toFixed(1)} on ${cores} CPUs; other processes used ${load.otherCpus.toFixed(1)} CPUs`;
  return load.otherCpus > BUSY_CPUS
    ? `host busy: ${figures} (${load.busiest.join(', ')}): figures read slower, and targets miss, more than on an idle host`
    : `host idle: ${figures}`;
}

/** Describes this machine. */
export function hostInfo(): HostInfo {
  const flags = cpuFlags();
  const hardware = flags.includes('vmx') || flags.includes('svm');
  const modules = kvmModules().filter((m) => m !== 'kvm');
  const kvm = hardware
    ? `hardware (${flags.includes('vmx') ? 'VT-x' : 'AMD-V'}; modules ${modules.join(', ') || 'kvm'})`
    : `software-assisted (no vmx/svm CPU flag; modules ${modules.join(', ') || 'none found'})`;
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    kernel: release(),
    kvm,
    kvmKind: hardware ? 'hardware' : 'software-assisted',
    node: process.version,
    load: hostLoad(),
  };
}
