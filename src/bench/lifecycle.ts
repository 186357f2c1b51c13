/**
 * Start-up time and memory density: what a VM costs before it does anything.
 * @module
 */
import { readFileSync } from 'node:fs';
import { Machine } from '../machine.js';
import { BENCH_PORT, DONE_PORT } from './exits.js';
import { benchMachine } from './kvmkit-paths.js';

/** Time (ns) from `Machine.create` to the guest's first exit reaching a TypeScript device. */
export async function createToFirstExit(): Promise<number> {
  const start = process.hrtime.bigint();
  const vm = benchMachine('pio-out', 1);
  let first: bigint | undefined;
  vm.addPortDevice(BENCH_PORT, 1, {
    name: 'first',
    write: () => {
      first ??= process.hrtime.bigint();
    },
  });
  const outcome = await vm.run();
  await vm.close();
  if (first === undefined || outcome.reason !== 'device-request') {
    throw new Error(`the start-up guest did not reach its device (${outcome.reason})`);
  }
  return Number(first - start);
}

/** The process's resident memory (bytes). */
function rss(): number {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return kb === undefined ? process.memoryUsage().rss : Number(kb) * 1024;
}

/** What idle VMs cost in host memory. */
export interface IdleMemory {
  /** VMs running at once. */
  readonly vms: number;
  /** Resident host memory added per VM (bytes), excluding the guest RAM the guests touched. */
  readonly bytesPerVm: number;
}

/**
 * Starts `count` one-vCPU VMs whose guests idle in `hlt` with interrupts off (inside KVM,
 * with the in-kernel irqchip), and measures the resident memory they add to this process,
 * less the guest pages they touched. KVM's own kernel allocations are not in it.
 */
export async function idleMemory(count: number): Promise<IdleMemory> {
  // cli ; hlt ; jmp $-1   (16-bit real mode at 0x1000)
  const idle = Uint8Array.of(0xfa, 0xf4, 0xeb, 0xfd);
  const before = rss();
  const vms: Machine[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const vm = Machine.create({ memory: '2M', irqchip: true });
      vms.push(vm);
      vm.memory.write(0x1000, idle);
      vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
      vm.addDebugExit(DONE_PORT);
      vm.start();
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    const touched = count * 4096;
    return { vms: count, bytesPerVm: Math.max(0, rss() - before - touched) / count };
  } finally {
    await Promise.all(vms.map((vm) => vm.close()));
  }
}
