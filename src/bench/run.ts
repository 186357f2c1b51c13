/**
 * The exit-latency benchmark: every path, every exit kind, interleaved repetitions,
 * medians and ratios to the C baseline measured in the same run.
 * @module
 */
import { ConfigError } from '../errors.js';
import type { LatencyBucket } from '../stats.js';
import { buildCBaseline, findQemu, runC, runQemu } from './anchors.js';
import { holdOneCpu } from './busy.js';
import { EXITS, type ExitName, reachesUserspace } from './exits.js';
import { type HostInfo, hostInfo } from './host.js';
import { type KvmkitPath, kvmkitApplies, runKvmkit } from './kvmkit-paths.js';
import { createToFirstExit, type IdleMemory, idleMemory } from './lifecycle.js';
import type { Sample } from './sample.js';
import { checkTargets, type TargetCheck } from './targets.js';

/**
 * A way of answering exits: the C baseline (`c-thread`: answered on a second thread), one
 * of kvmkit's, or QEMU.
 */
export type PathName = 'c' | 'c-thread' | KvmkitPath | 'qemu';

/** Every path, in report order (each C anchor before the kvmkit paths it is the floor of). */
export const PATHS: readonly PathName[] = ['c', 'builtin', 'inline', 'c-thread', 'async', 'posted', 'qemu'];

/** What to run. */
export interface BenchOptions {
  /** Exits per run (default 20000). */
  readonly count?: number;
  /** Interleaved repetitions (default 5). */
  readonly reps?: number;
  /** Paths to run (default all that are available). */
  readonly paths?: readonly PathName[];
  /** Exit kinds to run (default all). */
  readonly exits?: readonly ExitName[];
  /** Also measure start-up time and idle-VM memory (default true). */
  readonly lifecycle?: boolean;
  /**
   * Run the exit suite twice, side by side: quiet, then with one CPU held by a busy process
   * that the benchmark starts and stops itself (default false).
   */
  readonly busy?: boolean;
  /** VM counts for the idle-memory measurement (default 1, 10, 100). */
  readonly idleCounts?: readonly number[];
  /** Called before each run, for a progress indicator. */
  readonly progress?: (done: number, total: number, label: string) => void;
}

/** The medians of one path on one exit kind. */
export interface PathResult {
  /** The path. */
  readonly path: PathName;
  /** The exit kind. */
  readonly exit: ExitName;
  /** Runs measured. */
  readonly runs: number;
  /** Median wall time per exit (ns), guest instructions included. */
  readonly nsPerExit: number;
  /** Median of the runs' median handling time per exit (ns), where the path reports it. */
  readonly p50: number | undefined;
  /** Median of the runs' 99th percentile (ns). */
  readonly p99: number | undefined;
  /** Median of the runs' 99.9th percentile (ns). */
  readonly p999: number | undefined;
  /** Median user CPU time per exit (ns), where known. */
  readonly cpuUserNsPerExit: number | undefined;
  /** Median system CPU time per exit (ns), where known. */
  readonly cpuSysNsPerExit: number | undefined;
  /** `nsPerExit` over the C baseline's on the same exit kind, in the same run. */
  readonly ratioToC: number | undefined;
  /** The handling-time histogram of every run together. */
  readonly buckets: readonly LatencyBucket[];
}

/**
 * Where the time of one exit goes, from the port-out measurements. Handling times are the
 * medians of host time from KVM_RUN returning to re-entering it, which isolate the
 * userspace part; wall times per exit also carry the guest's own instructions.
 */
export interface Breakdown {
  /** Wall time per exit in the C loop: KVM, the guest's loop, and C's handling (ns). */
  readonly cExitNs: number;
  /** Wall time per exit KVM answers itself, cpuid: the in-kernel floor (ns). */
  readonly kernelFloorNs: number | undefined;
  /** The C loop's handling time (ns, p50). */
  readonly cHandlingNs: number | undefined;
  /** kvmkit's Rust built-in handling time (ns, p50). */
  readonly builtinHandlingNs: number | undefined;
  /** An inline TypeScript handler's handling time, napi call included (ns, p50). */
  readonly inlineHandlingNs: number | undefined;
  /** The C loop's handling time when a second thread answers: a bare hand-off (ns, p50). */
  readonly cThreadHandlingNs: number | undefined;
  /** An asynchronous TypeScript handler's handling time, hand-off included (ns, p50). */
  readonly asyncHandlingNs: number | undefined;
  /** The same at p99: what an exit costs when the event loop had gone to sleep (ns). */
  readonly asyncHandlingP99Ns: number | undefined;
}

/** A path the benchmark could not run. */
export interface UnavailablePath {
  /** The path. */
  readonly path: PathName;
  /** Why, and what would make it available. */
  readonly reason: string;
}

/** Time from `Machine.create` to the guest's first exit reaching a device. */
export interface StartupTime {
  /** Median (ms). */
  readonly median: number;
  /** Slowest run (ms). */
  readonly max: number;
  /** Runs measured. */
  readonly runs: number;
}

/** Everything a benchmark run measured. */
export interface BenchReport {
  /** When it ran (ISO 8601). */
  readonly date: string;
  /** Where it ran. */
  readonly host: HostInfo;
  /** Exits per run. */
  readonly count: number;
  /** Interleaved repetitions. */
  readonly reps: number;
  /** One record per (path, exit kind). */
  readonly results: readonly PathResult[];
  /** The same with one CPU held by a busy process, when asked for. */
  readonly busy: BusyResults | undefined;
  /** Paths that could not run, and why. */
  readonly unavailable: readonly UnavailablePath[];
  /** Where the time of a port-out exit goes. */
  readonly breakdown: Breakdown | undefined;
  /** Time from `Machine.create` to the first exit. */
  readonly createToFirstExitMs: StartupTime | undefined;
  /** Host memory per idle VM. */
  readonly idleMemory: readonly IdleMemory[];
  /** The targets for the host's kind of KVM ({@link HostInfo.kvmKind}), checked. */
  readonly targets: readonly TargetCheck[];
}

/** The exit suite measured while a busy process held one CPU. */
export interface BusyResults {
  /** One record per (path, exit kind); ratios are to the C loop under the same load. */
  readonly results: readonly PathResult[];
  /** Where the time of a port-out exit goes, under that load. */
  readonly breakdown: Breakdown | undefined;
}

/** The median of `values`. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length === 0
    ? Number.NaN
    : sorted.length % 2
      ? (sorted[mid] ?? 0)
      : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

function optionalMedian(values: readonly (number | undefined)[]): number | undefined {
  const known = values.filter((v): v is number => v !== undefined);
  return known.length === 0 ? undefined : median(known);
}

/** Microseconds over `count` exits, as nanoseconds per exit. */
function perExit(us: number | undefined, count: number): number | undefined {
  return us === undefined ? undefined : (us * 1000) / count;
}

function mergeBuckets(samples: readonly Sample[]): LatencyBucket[] {
  const merged = new Map<number, LatencyBucket>();
  for (const b of samples.flatMap((s) => s.latency?.buckets ?? [])) {
    const prev = merged.get(b.lowNs);
    merged.set(b.lowNs, { ...b, count: (prev?.count ?? 0) + b.count });
  }
  return [...merged.values()].sort((a, b) => a.lowNs - b.lowNs);
}

/** Runs the benchmark. */
export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const count = options.count ?? 20_000;
  const reps = options.reps ?? 5;
  for (const [field, value] of [
    ['count', count],
    ['reps', reps],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1 || value > 2 ** 31) {
      throw new ConfigError(field, `expected a whole number from 1 to 2^31, got ${value}`);
    }
  }
  const exits = options.exits ?? EXITS;
  const unavailable: UnavailablePath[] = [];
  const wanted = options.paths ?? PATHS;

  const runners = new Map<PathName, (exit: ExitName, n: number) => Promise<Sample>>();
  let cBaseline: ReturnType<typeof buildCBaseline> | undefined;
  for (const path of wanted) {
    if (path === 'c' || path === 'c-thread') {
      // One build serves both C loops.
      cBaseline ??= buildCBaseline();
      const built = await cBaseline;
      if ('path' in built) {
        const threaded = path === 'c-thread';
        runners.set(path, (exit, n) => runC(built.path, exit, n, threaded));
      } else {
        unavailable.push({ path, reason: built.unavailable });
      }
    } else if (path === 'qemu') {
      const qemu = findQemu();
      if ('path' in qemu) {
        runners.set('qemu', (exit, n) => runQemu(qemu.path, exit, n));
      } else {
        unavailable.push({ path, reason: qemu.unavailable });
      }
    } else {
      const kvmkitPath = path;
      runners.set(path, (exit, n) => runKvmkit(kvmkitPath, exit, n));
    }
  }
  const applies = (path: PathName, exit: ExitName): boolean => {
    switch (path) {
      case 'c':
      case 'qemu':
        return true;
      case 'c-thread':
        // The second thread has nothing to answer on exits KVM handles itself.
        return reachesUserspace(exit);
      default:
        return kvmkitApplies(path, exit);
    }
  };
  // An anchor (the C loops, QEMU) that cannot run on this host is reported as unavailable
  // with its reason; it never costs the other paths their results.
  for (const anchor of ['c', 'c-thread', 'qemu'] as const) {
    const run = runners.get(anchor);
    const probe = exits[0];
    if (run !== undefined && probe !== undefined) {
      try {
        await run(probe, Math.min(count, 200));
      } catch (error) {
        runners.delete(anchor);
        unavailable.push({ path: anchor, reason: firstLines((error as Error).message) });
      }
    }
  }
  const plan = exits.flatMap((exit) =>
    [...runners.keys()].filter((path) => applies(path, exit)).map((path) => ({ path, exit })),
  );

  const lifecycle = options.lifecycle ?? true;
  const idleCounts = options.idleCounts ?? [1, 10, 100];
  const startupRuns = 20;
  const loads = options.busy === true ? 2 : 1;
  const total = loads * plan.length * (reps + 1) + (lifecycle ? startupRuns + idleCounts.length : 0);
  let done = 0;
  const step = (label: string) => options.progress?.(done++, total, label);

  /** Warms up, then measures every path on every exit kind in interleaved repetitions. */
  const measure = async (load: string): Promise<PathResult[]> => {
    // Warm-up: one short run of each path and kind, not recorded.
    for (const { path, exit } of plan) {
      step(`warm-up ${path} ${exit}${load}`);
      await runners.get(path)?.(exit, Math.min(count, 200));
    }
    const samples = new Map<string, Sample[]>();
    for (let rep = 0; rep < reps; rep++) {
      for (const { path, exit } of plan) {
        step(`${path} ${exit} (${rep + 1}/${reps})${load}`);
        const sample = await (runners.get(path) as (exit: ExitName, n: number) => Promise<Sample>)(exit, count);
        const expected = reachesUserspace(exit) ? count : 0;
        if (sample.exits !== expected) {
          throw new Error(`${path} answered ${sample.exits} ${exit} exits, not the ${expected} the guest made`);
        }
        const key = `${path} ${exit}`;
        samples.set(key, [...(samples.get(key) ?? []), sample]);
      }
    }
    return withRatios(plan.map(({ path, exit }) => summarize(path, exit, samples.get(`${path} ${exit}`) ?? [], count)));
  };
  const results = await measure('');
  let busy: BusyResults | undefined;
  if (options.busy === true) {
    const hog = await holdOneCpu();
    try {
      const busyResults = await measure(', one CPU busy');
      busy = { results: busyResults, breakdown: breakdownOf(busyResults) };
    } finally {
      await hog.stop();
    }
  }

  let createToFirstExitMs: BenchReport['createToFirstExitMs'];
  const idle: IdleMemory[] = [];
  if (lifecycle) {
    const times: number[] = [];
    for (let i = 0; i < startupRuns; i++) {
      step('create to first exit');
      times.push((await createToFirstExit()) / 1e6);
    }
    createToFirstExitMs = { median: median(times), max: Math.max(...times), runs: times.length };
    for (const n of idleCounts) {
      step(`${n} idle VMs`);
      idle.push(await idleMemory(n));
    }
  }
  options.progress?.(total, total, 'done');

  const host = hostInfo();
  return {
    date: new Date().toISOString(),
    host,
    count,
    reps,
    results,
    busy,
    unavailable,
    breakdown: breakdownOf(results),
    createToFirstExitMs,
    idleMemory: idle,
    targets: checkTargets(host.kvmKind, results, busy, createToFirstExitMs, idle),
  };
}

/** The medians of one path's runs on one exit kind. */
function summarize(
  path: PathName,
  exit: ExitName,
  runs: readonly Sample[],
  count: number,
): Omit<PathResult, 'ratioToC'> {
  return {
    path,
    exit,
    runs: runs.length,
    nsPerExit: median(runs.map((s) => s.wallNs / count)),
    p50: optionalMedian(runs.map((s) => s.latency?.p50Ns)),
    p99: optionalMedian(runs.map((s) => s.latency?.p99Ns)),
    p999: optionalMedian(runs.map((s) => s.latency?.p999Ns)),
    cpuUserNsPerExit: optionalMedian(runs.map((s) => perExit(s.cpuUserUs, count))),
    cpuSysNsPerExit: optionalMedian(runs.map((s) => perExit(s.cpuSysUs, count))),
    buckets: mergeBuckets(runs),
  };
}

/** Adds each result's ratio to the C loop's on the same exit kind. */
function withRatios(results: readonly Omit<PathResult, 'ratioToC'>[]): PathResult[] {
  return results.map((r) => {
    const c = results.find((x) => x.path === 'c' && x.exit === r.exit);
    return { ...r, ratioToC: c === undefined ? undefined : r.nsPerExit / c.nsPerExit };
  });
}

/** An anchor's failure in a few lines: the command and what it printed, no stack. */
function firstLines(message: string): string {
  return message
    .split('\n')
    .filter((line) => line.trim() !== '')
    .slice(0, 3)
    .join(' / ');
}

function breakdownOf(results: readonly PathResult[]): Breakdown | undefined {
  const at = (path: PathName, exit: ExitName = 'pio-out') => results.find((r) => r.path === path && r.exit === exit);
  const c = at('c');
  if (c === undefined) {
    return undefined;
  }
  return {
    cExitNs: c.nsPerExit,
    kernelFloorNs: at('c', 'cpuid')?.nsPerExit,
    cHandlingNs: c.p50,
    builtinHandlingNs: at('builtin')?.p50,
    inlineHandlingNs: at('inline')?.p50,
    cThreadHandlingNs: at('c-thread')?.p50,
    asyncHandlingNs: at('async')?.p50,
    asyncHandlingP99Ns: at('async')?.p99,
  };
}
