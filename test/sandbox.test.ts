/**
 * The sandbox option from Node: vCPU threads confined by a seccomp filter still run guests
 * whose devices are answered in TypeScript (on Node's thread, which is not confined), both
 * ways a refused call can go. That a refused call is refused on the vCPU thread is shown by
 * the Rust test `crates/kvmkit-core/tests/sandbox.rs`, which can run code on that thread.
 */
import { expect, it } from 'vitest';
import { ConfigError, Machine } from '../src/index.js';
import { closedAfterEach, IO_GUEST_WRITES, ioRegisters, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

it('refuses a sandbox setting it does not know, naming the choices', () => {
  expect(() => Machine.create({ memory: '1M', sandbox: 'strict' as never })).toThrow(ConfigError);
  expect(() => Machine.create({ memory: '1M', sandbox: 'strict' as never })).toThrow(/"fail", "kill-process"/);
});

describeKvm('a sandboxed machine', () => {
  for (const sandbox of ['fail', 'kill-process'] as const) {
    it(`runs a guest whose devices answer in TypeScript (${sandbox})`, async () => {
      const vm = track(machineWith('io', { sandbox }));
      const written: [number, number | bigint][] = [];
      vm.addPortDevice(0x60, 8, ioRegisters(written));
      vm.addNullDevice(0x70, 2);
      expect(await vm.run()).toEqual({ reason: 'halted' });
      expect(written).toEqual(IO_GUEST_WRITES);
    });
  }

  it('cannot run inline, where the guest would run on the caller’s thread', () => {
    const vm = track(machineWith('io', { sandbox: 'fail' }));
    expect(() => vm.runInline()).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG', field: 'sandbox' }));
  });
});
