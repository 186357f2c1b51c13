/**
 * Exit counters and handling-latency histograms.
 * @module
 */
import type { NativeStats } from './native.js';

/** Exit kinds the core counts. */
export type ExitKindName =
  | 'io-in'
  | 'io-out'
  | 'mmio-read'
  | 'mmio-write'
  | 'hlt'
  | 'shutdown'
  | 'system-event'
  | 'internal-error'
  | 'fail-entry'
  | 'debug'
  | 'irq-window-open'
  | 'unknown'
  | 'interrupted'
  | 'other';

/**
 * Host time spent handling exits, from `KVM_RUN` returning to re-entering it, in a
 * power-of-two histogram: `buckets[i]` counts handling times in [2^(i-1), 2^i) ns.
 * Percentiles are the upper bound of the bucket they fall in.
 */
export interface LatencyStats {
  /** Exits measured. */
  readonly count: number;
  /** Median handling time (ns, bucket upper bound). */
  readonly p50Ns: number;
  /** 99th percentile (ns, bucket upper bound). */
  readonly p99Ns: number;
  /** The histogram. */
  readonly buckets: readonly number[];
}

/** Counters of one vCPU. */
export interface VcpuStats {
  /** Exits by kind. */
  readonly exits: Readonly<Record<ExitKindName, number>>;
  /** Exits of every kind. */
  readonly totalExits: number;
  /** Handling latency. */
  readonly latency: LatencyStats;
}

function percentile(buckets: readonly number[], count: number, p: number): number {
  if (count === 0) {
    return 0;
  }
  const rank = Math.ceil(count * p);
  let seen = 0;
  for (const [i, n] of buckets.entries()) {
    seen += n;
    if (seen >= rank) {
      return 2 ** i;
    }
  }
  return 2 ** (buckets.length - 1);
}

/** Summarizes the native counters. */
export function toVcpuStats(s: NativeStats): VcpuStats {
  const exits = Object.fromEntries(s.exits.map((e) => [e.kind, e.count])) as Record<ExitKindName, number>;
  const count = s.latencyBuckets.reduce((a, b) => a + b, 0);
  return {
    exits,
    totalExits: s.exits.reduce((a, e) => a + e.count, 0),
    latency: {
      count,
      p50Ns: percentile(s.latencyBuckets, count, 0.5),
      p99Ns: percentile(s.latencyBuckets, count, 0.99),
      buckets: s.latencyBuckets,
    },
  };
}
