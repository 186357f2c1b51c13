/**
 * Repeated failures and machine lifecycles leak nothing: resident memory, file descriptors
 * and threads stay within generous bounds (a leak of a few KiB per iteration would exceed
 * them). Counts, not timings, are asserted.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { Machine } from '../src/index.js';
import { describeKvm } from './kvm.js';

interface Usage {
  rss: number;
  fds: number;
  threads: number;
}

function usage(): Usage {
  const threads = /^Threads:\s+(\d+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return {
    rss: process.memoryUsage.rss(),
    fds: readdirSync('/proc/self/fd').length,
    threads: Number(threads),
  };
}

/** Runs `step` `times` times after a warm-up; returns how usage grew across them. */
async function growth(times: number, step: () => Promise<void>): Promise<Usage> {
  for (let i = 0; i < 50; i++) {
    await step();
  }
  const before = usage();
  for (let i = 0; i < times; i++) {
    await step();
  }
  const after = usage();
  return { rss: after.rss - before.rss, fds: after.fds - before.fds, threads: after.threads - before.threads };
}

const MiB = 1 << 20;

describeKvm('kvmkit under repetition', () => {
  it('leaks nothing over 10,000 runs ended by a failing device handler', { timeout: 180_000 }, async () => {
    // in al,0x80 ; hlt   (the read handler of port 0x80 throws)
    const code = Uint8Array.of(0xe4, 0x80, 0xf4);
    const grown = await growth(10_000, async () => {
      const vm = Machine.create({ memory: '64K' });
      vm.memory.write(0x1000, code);
      vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
      vm.addPortDevice(0x80, 1, {
        name: 'broken',
        read: () => {
          throw new Error('broken device');
        },
      });
      const outcome = await vm.run();
      expect(outcome.reason === 'error' && outcome.error.code).toBe('HANDLER_FAILED');
      await vm.close();
    });
    expect(grown.fds).toBeLessThanOrEqual(2);
    expect(grown.threads).toBeLessThanOrEqual(2);
    expect(grown.rss).toBeLessThan(64 * MiB);
  });

  it('leaks nothing over 1,000 machines created, written and closed', { timeout: 120_000 }, async () => {
    // 1 MiB written into each machine's RAM: an unmapped-never region would add 1 GiB.
    const page = new Uint8Array(MiB).fill(0x5a);
    const grown = await growth(1_000, async () => {
      const vm = Machine.create({ memory: '2M', vcpus: 2 });
      vm.memory.write(0, page);
      await vm.close();
    });
    expect(grown.fds).toBeLessThanOrEqual(2);
    expect(grown.threads).toBeLessThanOrEqual(2);
    expect(grown.rss).toBeLessThan(64 * MiB);
  });

  it('leaks nothing over 300 machines with virtio devices, run and closed', { timeout: 120_000 }, async () => {
    // out 0xf4, al: each machine starts its vCPU and its I/O thread, with two devices' eventfds.
    const grown = await growth(300, async () => {
      const vm = Machine.create({ memory: '64K', irqchip: true });
      vm.memory.write(0x1000, Uint8Array.of(0xe6, 0xf4));
      vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
      vm.addDebugExit(0xf4);
      vm.addRng();
      vm.addRng();
      expect((await vm.run()).reason).toBe('device-request');
      await vm.close();
    });
    expect(grown.fds).toBeLessThanOrEqual(2);
    expect(grown.threads).toBeLessThanOrEqual(2);
    expect(grown.rss).toBeLessThan(64 * MiB);
  });
});
