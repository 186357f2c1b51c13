/**
 * kvmkit's benchmark: exit-handling latency of each kvmkit path against a C KVM loop and
 * QEMU, idle memory and start-up time, as `kvmkit bench` prints them. Import it from the
 * `kvmkit/bench` subpath.
 * @module kvmkit/bench
 */

export { type BootBenchOptions, type BootReport, type BootTimes, benchBoot, formatBootTable } from './boot.js';
export { EXITS, type ExitName } from './exits.js';
export {
  FOOTPRINT_EXITS,
  FOOTPRINT_PATHS,
  type Footprint,
  type FootprintOptions,
  type FootprintPath,
  type FootprintReport,
  formatFootprintTable,
  measureFootprints,
  type UnavailableFootprint,
} from './footprint.js';
export type { HostInfo, HostLoad } from './host.js';
export type { KvmkitPath } from './kvmkit-paths.js';
export type { IdleMemory } from './lifecycle.js';
export { formatTable, toHtml, toJson } from './report.js';
export {
  type BenchOptions,
  type BenchReport,
  type Breakdown,
  type BusyResults,
  PATHS,
  type PathName,
  type PathResult,
  runBench,
  type StartupTime,
  type UnavailablePath,
} from './run.js';
export type { KvmKind, TargetCheck } from './targets.js';
export {
  BLOCK_TESTS,
  benchVirtio,
  formatVirtioTable,
  parseVirtioResults,
  VIRTIO_TESTS,
  type VirtioBenchOptions,
  type VirtioReport,
  type VirtioRunTimes,
  type VirtioTest,
  type VirtioTimes,
  VSOCK_TESTS,
} from './virtio.js';
