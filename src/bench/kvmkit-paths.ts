/**
 * The benchmark paths through kvmkit: the Rust built-in device, TypeScript handlers called
 * asynchronously (threaded vCPU, hand-off to the event loop) or inline (the vCPU runs on the
 * calling thread), and posted writes.
 * @module
 */
import type { MachineConfig } from '../config.js';
import type { Device } from '../devices.js';
import { guestImage } from '../guests.js';
import { Machine } from '../machine.js';
import type { Outcome } from '../outcome.js';
import {
  BENCH_ENTRY,
  BENCH_MMIO,
  BENCH_PORT,
  BENCH_RAM,
  DONE_PORT,
  type ExitName,
  exitCode,
  isWrite,
  reachesUserspace,
} from './exits.js';
import type { Sample } from './sample.js';

/** The ways kvmkit can answer an exit. */
export type KvmkitPath = 'builtin' | 'async' | 'inline' | 'posted';

/** Whether `path` can answer `exit` (posted devices take writes only; cpuid never leaves KVM). */
export function kvmkitApplies(path: KvmkitPath, exit: ExitName): boolean {
  if (!reachesUserspace(exit)) {
    return path === 'builtin';
  }
  return path !== 'posted' || isWrite(exit);
}

/** The exit counter that counts `exit`. */
const COUNTER = {
  'pio-out': 'io-out',
  'pio-in': 'io-in',
  'mmio-write': 'mmio-write',
  'mmio-read': 'mmio-read',
} as const;

/** The bench machine, set up to make `count` exits of kind `exit` (with `config`'s tuning, if given). */
export function benchMachine(exit: ExitName, count: number, config: Omit<MachineConfig, 'memory'> = {}): Machine {
  const vm = Machine.create({ ...config, memory: BENCH_RAM });
  vm.memory.write(BENCH_ENTRY, guestImage('bench'));
  const vcpu = vm.vcpu(0);
  vcpu.setup({ mode: 'protected', entry: BENCH_ENTRY });
  vcpu.setRegisters({ rax: BigInt(exitCode(exit)), rsi: BigInt(count) });
  vm.addDebugExit(DONE_PORT);
  return vm;
}

/** Attaches the device that answers the guest's exits for `path`. */
function attach(vm: Machine, path: KvmkitPath, exit: ExitName): void {
  const mmio = exit === 'mmio-write' || exit === 'mmio-read';
  if (path === 'builtin') {
    vm.addNullDevice(mmio ? BENCH_MMIO : BENCH_PORT, mmio ? 0x1000 : 1, { space: mmio ? 'mmio' : 'port' });
    return;
  }
  const device: Device = { name: 'bench', read: () => 0, write: () => {}, posted: path === 'posted' };
  if (mmio) {
    vm.addMmioDevice(BENCH_MMIO, 0x1000, device);
  } else {
    vm.addPortDevice(BENCH_PORT, 1, device);
  }
}

/** Runs `count` exits of kind `exit` through `path` and measures them. */
export async function runKvmkit(path: KvmkitPath, exit: ExitName, count: number): Promise<Sample> {
  const vm = benchMachine(exit, count);
  try {
    attach(vm, path, exit);
    const cpu = process.cpuUsage();
    const start = process.hrtime.bigint();
    const outcome: Outcome = path === 'inline' ? vm.runInline() : await vm.run();
    const wallNs = Number(process.hrtime.bigint() - start);
    const used = process.cpuUsage(cpu);
    if (outcome.reason !== 'device-request') {
      const why = outcome.reason === 'error' ? outcome.error.message : outcome.reason;
      throw new Error(`the bench guest did not finish on the ${path} path: ${why}`);
    }
    const stats = vm.vcpu(0).stats();
    const counted = reachesUserspace(exit) ? (stats.exits[COUNTER[exit as keyof typeof COUNTER]] ?? 0) : 0;
    // The guest's final write to the done port is a port-out exit too.
    const exits = exit === 'pio-out' ? counted - 1 : counted;
    const { p50Ns, p99Ns, p999Ns, buckets } = stats?.latency ?? { p50Ns: 0, p99Ns: 0, p999Ns: 0, buckets: [] };
    return {
      wallNs,
      exits,
      cpuUserUs: used.user,
      cpuSysUs: used.system,
      ...(reachesUserspace(exit) ? { latency: { p50Ns, p99Ns, p999Ns, buckets } } : {}),
    };
  } finally {
    await vm.close();
  }
}
