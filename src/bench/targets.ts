/**
 * The goals of the issue that reshaped the hand-off, checked on a benchmark run. There are
 * two sets. Under software-assisted KVM an exit costs ~9 µs, so the goals are tight ratios
 * and handling times in nanoseconds. Under hardware virtualization the exit itself is cheap
 * and every layer above it weighs more, so the goals are looser ratios and QEMU's userspace
 * exit as a bar for every kvmkit path.
 * @module
 */
import { reachesUserspace } from './exits.js';
import type { IdleMemory } from './lifecycle.js';
import { formatNs } from './report.js';
import type { BusyResults, PathName, PathResult, StartupTime } from './run.js';

/** Which KVM the benchmark ran on: VT-x/AMD-V, or software-assisted (no vmx/svm flag). */
export type KvmKind = 'hardware' | 'software-assisted';

/** A target from the issue, and whether this run met it. */
export interface TargetCheck {
  /** What is aimed for. */
  readonly target: string;
  /** What was measured. */
  readonly measured: string;
  /** Whether the measurement meets the target. */
  readonly met: boolean;
}

/** The kvmkit paths the ratio goals apply to. */
type GoalPath = 'builtin' | 'inline' | 'async';

/** One set of goals. */
interface Goals {
  /** The largest wall time per exit over the C loop's, on every exit kind. */
  readonly ratioToC: Readonly<Record<GoalPath, number>>;
  /** The largest handling time of a port-out exit (p50, ns), where the set has one. */
  readonly handlingNs?: Readonly<Record<GoalPath, number>>;
  /** The paths that must be faster than QEMU's userspace exit on every exit kind. */
  readonly beatQemu: readonly GoalPath[];
}

/** The goals for each kind of KVM. */
const GOALS: Readonly<Record<KvmKind, Goals>> = {
  'software-assisted': {
    ratioToC: { builtin: 1.03, inline: 1.1, async: 1.5 },
    handlingNs: { builtin: 40, inline: 300, async: 2000 },
    beatQemu: ['async'],
  },
  hardware: {
    ratioToC: { builtin: 1.05, inline: 1.25, async: 2 },
    beatQemu: ['builtin', 'inline', 'async'],
  },
};

/** What `handlingNs` is called in the target's line, by path. */
const HANDLING: Readonly<Record<GoalPath, string>> = {
  builtin: 'built-in handling',
  inline: 'inline napi crossing',
  async: 'async hand-off',
};

/**
 * The floor a path's ratio is measured against, where the run has it: an answer from
 * another thread cannot cost less than the bare C one.
 */
const FLOOR: Partial<Record<GoalPath, PathName>> = { async: 'c-thread' };

/** Async's ratio to C with one CPU held by a busy process, on either kind of KVM. */
const BUSY_ASYNC_RATIO = 3;

/** The slowest exit kind of `path` relative to the C loop. */
function worst(results: readonly PathResult[], path: PathName): PathResult | undefined {
  return results
    .filter((x) => x.path === path && reachesUserspace(x.exit) && x.ratioToC !== undefined)
    .reduce<PathResult | undefined>((a, x) => ((x.ratioToC ?? 0) > (a?.ratioToC ?? -1) ? x : a), undefined);
}

/**
 * Checks the goals for `kind` on a run's results (and, where measured, its busy results,
 * start-up time and idle memory).
 */
export function checkTargets(
  kind: KvmKind,
  results: readonly PathResult[],
  busy: BusyResults | undefined,
  startup: StartupTime | undefined,
  idle: readonly IdleMemory[],
): TargetCheck[] {
  const goals = GOALS[kind];
  const checks: TargetCheck[] = [];
  const ratio = (path: GoalPath, limit: number, of: readonly PathResult[], load: string) => {
    const r = worst(of, path);
    if (r?.ratioToC === undefined) {
      return;
    }
    const floorPath = FLOOR[path];
    const floor = of.find((x) => x.path === floorPath && x.exit === r.exit)?.ratioToC;
    const against = floor === undefined ? '' : `; ${floorPath} ${floor.toFixed(2)}×`;
    checks.push({
      target: `${path} ≤ ${limit}× C on every exit kind${load}`,
      measured: `worst ${r.ratioToC.toFixed(2)}× (${r.exit}${against})`,
      met: r.ratioToC <= limit,
    });
  };
  for (const path of ['builtin', 'inline', 'async'] as const) {
    ratio(path, goals.ratioToC[path], results, '');
    const limitNs = goals.handlingNs?.[path];
    const p50 = results.find((r) => r.path === path && r.exit === 'pio-out')?.p50;
    if (limitNs !== undefined && p50 !== undefined) {
      checks.push({
        target: `${HANDLING[path]} p50 ≤ ${formatNs(limitNs)}`,
        measured: formatNs(p50),
        met: p50 <= limitNs,
      });
    }
  }
  if (busy !== undefined) {
    ratio('async', BUSY_ASYNC_RATIO, busy.results, ', one CPU busy');
  }
  for (const path of goals.beatQemu) {
    const compared = results.filter((r) => r.path === path && reachesUserspace(r.exit));
    const qemu = (r: PathResult) => results.find((x) => x.path === 'qemu' && x.exit === r.exit);
    if (compared.length === 0 || !compared.some((r) => qemu(r) !== undefined)) {
      continue;
    }
    const slower = compared.filter((r) => r.nsPerExit >= (qemu(r)?.nsPerExit ?? Number.POSITIVE_INFINITY));
    checks.push({
      target: `${path} faster than QEMU's userspace exit`,
      measured: slower.length === 0 ? 'faster on every exit kind' : `slower on ${slower.map((r) => r.exit).join(', ')}`,
      met: slower.length === 0,
    });
  }
  if (startup !== undefined) {
    checks.push({
      target: 'create to first exit ≤ 5 ms (median)',
      measured: `${startup.median.toFixed(2)} ms`,
      met: startup.median <= 5,
    });
  }
  for (const m of idle) {
    checks.push({
      target: `≤ 5 MiB per idle VM (${m.vms} VMs)`,
      measured: `${(m.bytesPerVm / 2 ** 20).toFixed(2)} MiB`,
      met: m.bytesPerVm <= 5 * 2 ** 20,
    });
  }
  return checks;
}
