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
 * Host time spent handling exits, from `KVM_RUN` returning to re-entering it: for a
 * TypeScript device that includes the hand-off to JS and back. Measured into a log-linear
 * histogram (16 buckets per power of two), so percentiles are within about 3%.
 */
export interface LatencyStats {
  /** Exits measured. */
  readonly count: number;
  /** Median handling time (ns). */
  readonly p50Ns: number;
  /** 99th percentile (ns). */
  readonly p99Ns: number;
  /** 99.9th percentile (ns). */
  readonly p999Ns: number;
  /** The histogram's non-empty buckets. */
  readonly buckets: readonly LatencyBucket[];
}

/** One histogram bucket: `count` exits took from `lowNs` up to (not including) `highNs`. */
export interface LatencyBucket {
  /** Lower bound (ns). */
  readonly lowNs: number;
  /** Upper bound, exclusive (ns). */
  readonly highNs: number;
  /** Exits in the bucket. */
  readonly count: number;
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

/** Summarizes the native counters. */
export function toVcpuStats(s: NativeStats): VcpuStats {
  const exits = Object.fromEntries(s.exits.map((e) => [e.kind, e.count])) as Record<ExitKindName, number>;
  return {
    exits,
    totalExits: s.exits.reduce((a, e) => a + e.count, 0),
    latency: { count: s.measured, p50Ns: s.p50Ns, p99Ns: s.p99Ns, p999Ns: s.p999Ns, buckets: s.buckets },
  };
}
