import { on } from 'node:events';
import { Worker } from 'node:worker_threads';
import { expect, it } from 'vitest';
import { guestPath } from '../src/guests.js';
import type { Device, Machine, Outcome } from '../src/index.js';
import { stopMachine } from '../src/index.js';
import { closedAfterEach, IO_GUEST_WRITES, ioRegisters, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const tracked = closedAfterEach();

describeKvm('inline runs', () => {
  it('call handlers directly on the running thread', () => {
    const vm = tracked(machineWith('io'));
    const writes: [number, number | bigint][] = [];
    vm.addPortDevice(0x60, 8, ioRegisters(writes));
    let next = 0x61;
    const copied: number[] = [];
    vm.addPortDevice(0x70, 1, { name: 'source', read: () => next++ });
    vm.addPortDevice(0x71, 1, { name: 'sink', write: (_a, v) => void copied.push(Number(v)), posted: true });
    expect(vm.runInline()).toEqual({ reason: 'halted' });
    expect(vm.outcome).toEqual({ reason: 'halted' });
    expect(writes).toEqual(IO_GUEST_WRITES);
    expect(copied).toEqual([0x61, 0x62, 0x63, 0x64]);
  });

  it('end with an error when a handler throws or answers with a Promise', () => {
    const throwing = tracked(machineWith('io'));
    throwing.addPortDevice(0x60, 8, {
      name: 'dev',
      read: () => {
        throw new Error('inline boom');
      },
    });
    const outcome = throwing.runInline();
    expect(outcome.reason === 'error' && outcome.error.message).toMatch(
      /device "dev" read handler failed: inline boom/,
    );

    const promising = tracked(machineWith('io'));
    promising.addPortDevice(0x60, 8, { name: 'dev', read: async () => 1 });
    const second = promising.runInline();
    expect(second.reason === 'error' && second.error.message).toMatch(/answer synchronously/);
  });

  it('nest: a handler may drive another machine inline, each run keeping its own records', () => {
    /** The devices the io guest uses; what it copies from 0x70 to 0x71 lands in `copied`. */
    const devices = (vm: Machine, writes: [number, number | bigint][], copied: number[]): Device => {
      let next = 0x61;
      vm.addPortDevice(0x70, 1, { name: 'source', read: () => next++ });
      vm.addPortDevice(0x71, 1, { name: 'sink', write: (_a, v) => void copied.push(Number(v)) });
      return ioRegisters(writes);
    };
    const outer = tracked(machineWith('io'));
    const inner = tracked(machineWith('io'));
    const outerWrites: [number, number | bigint][] = [];
    const innerWrites: [number, number | bigint][] = [];
    const outerCopied: number[] = [];
    const innerCopied: number[] = [];
    inner.addPortDevice(0x60, 8, devices(inner, innerWrites, innerCopied));
    const registers = devices(outer, outerWrites, outerCopied);
    let innerOutcome: Outcome | undefined;
    outer.addPortDevice(0x60, 8, {
      ...registers,
      write: (access, value) => {
        // The outer guest's first write runs the inner machine to its end.
        innerOutcome ??= inner.runInline();
        return registers.write?.(access, value);
      },
    });
    expect(outer.runInline()).toEqual({ reason: 'halted' });
    expect(innerOutcome).toEqual({ reason: 'halted' });
    expect([outerWrites, outerCopied]).toEqual([IO_GUEST_WRITES, [0x61, 0x62, 0x63, 0x64]]);
    expect([innerWrites, innerCopied]).toEqual([IO_GUEST_WRITES, [0x61, 0x62, 0x63, 0x64]]);
  });

  it('stop when a handler calls stop()', () => {
    const vm = tracked(machineWith('io'));
    vm.addPortDevice(0x60, 8, {
      name: 'dev',
      read: () => {
        vm.stop();
        return 0;
      },
    });
    expect(vm.runInline()).toEqual({ reason: 'stopped' });
  });

  it('need a machine with one vCPU', () => {
    const vm = tracked(machineWith('smp', { vcpus: 2 }));
    expect(() => vm.runInline()).toThrow(/one thread can drive only one/);
  });

  it('run in a worker thread and stop from the main thread', async () => {
    const dist = new URL('../dist/index.js', import.meta.url).href;
    const worker = new Worker(
      `
      const { parentPort } = require('node:worker_threads');
      const { readFileSync } = require('node:fs');
      import(${JSON.stringify(dist)}).then(async ({ Machine }) => {
        const vm = Machine.create({ memory: '1M' });
        vm.memory.write(0x1000, readFileSync(${JSON.stringify(guestPath('spin'))}));
        vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
        parentPort.postMessage({ id: vm.id });
        const outcome = vm.runInline();
        await vm.close();
        parentPort.postMessage({ outcome });
      });
      `,
      { eval: true },
    );
    const messages = on(worker, 'message');
    const first = (await messages.next()).value as [{ id: number }];
    await new Promise((r) => setTimeout(r, 100));
    expect(stopMachine(first[0].id)).toBe(true);
    const second = (await messages.next()).value as [{ outcome: Outcome }];
    expect(second[0].outcome).toEqual({ reason: 'stopped' });
    await worker.terminate();
    expect(stopMachine(first[0].id)).toBe(false);
  });
});
