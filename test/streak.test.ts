/**
 * A streak of accesses answered on Node's thread gives the event loop its turns: after 1 ms
 * and 32 accesses, or after 5 ms however few (slow exits). Accesses are counted per callback
 * of the event loop that answered them: a `process.nextTick` queued at a callback's first
 * access runs when that callback returns.
 */
import { performance } from 'node:perf_hooks';
import { expect, it } from 'vitest';
import { BENCH_PORT } from '../src/bench/exits.js';
import { benchMachine } from '../src/bench/kvmkit-paths.js';
import { describeKvm } from './kvm.js';

/** Runs `exits` port writes to an asynchronous device that takes `handlerMicros` each; returns how many accesses each event-loop callback answered. */
async function accessesPerCallback(exits: number, handlerMicros: number): Promise<number[]> {
  // Polls that wait long for the next access, so that a loaded host's late vCPU thread does
  // not end streaks before their budget does.
  const vm = benchMachine('pio-out', exits, { eventLoopSpinMicros: 20_000 });
  const perCallback: number[] = [];
  let open = false;
  try {
    vm.addPortDevice(BENCH_PORT, 1, {
      name: 'counter',
      write: () => {
        const until = performance.now() + handlerMicros / 1000;
        while (performance.now() < until) {
          // A handler that takes its time on Node's thread.
        }
        if (!open) {
          open = true;
          perCallback.push(0);
          process.nextTick(() => {
            open = false;
          });
        }
        perCallback[perCallback.length - 1] = (perCallback.at(-1) ?? 0) + 1;
      },
    });
    const outcome = await vm.run();
    expect(outcome.reason).toBe('device-request');
  } finally {
    await vm.close();
  }
  expect(perCallback.reduce((a, n) => a + n, 0)).toBe(exits);
  return perCallback;
}

describeKvm('a streak of accesses on the event loop', () => {
  it('serves slow accesses for more than 1 ms in one callback, but yields within 5 ms', async () => {
    // 200 µs each: 1 ms would be 5 accesses a turn; 32 would be 6.4 ms, past the 5 ms ceiling.
    const perCallback = await accessesPerCallback(300, 200);
    expect(Math.max(...perCallback)).toBeGreaterThan(10);
    expect(Math.max(...perCallback)).toBeLessThanOrEqual(26);
  });
});
