/**
 * One measured run of a benchmark path.
 * @module
 */
import type { LatencyBucket } from '../stats.js';

/** What one run of `count` exits measured. */
export interface Sample {
  /** Wall time of the run (ns), excluding start-up and teardown. */
  readonly wallNs: number;
  /** Exits the host answered (0 for exits KVM answers itself). */
  readonly exits: number;
  /** User CPU time of the process during the run (µs), where known. */
  readonly cpuUserUs?: number;
  /** System CPU time of the process during the run (µs), where known. */
  readonly cpuSysUs?: number;
  /** Host handling time per exit (KVM_RUN return to re-entry), where the path reports it. */
  readonly latency?: {
    readonly p50Ns: number;
    readonly p99Ns: number;
    readonly p999Ns: number;
    readonly buckets: readonly LatencyBucket[];
  };
}
