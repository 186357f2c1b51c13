import { expect, it } from 'vitest';
import { encodeReadValue } from '../src/handoff.js';
import type { Machine, Outcome } from '../src/index.js';
import { closedAfterEach, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

/** The io guest with `read` answering its first port read (port 0x60, 1 byte). */
function ioMachine(read: () => unknown, config = {}): Machine {
  const vm = machineWith('io', config);
  track(vm);
  vm.addPortDevice(0x60, 8, { name: 'dev', read: read as () => number });
  vm.addNullDevice(0x70, 2);
  return vm;
}

function failure(outcome: Outcome): { code: string; message: string; cause: unknown } {
  if (outcome.reason !== 'error') {
    throw new Error(`expected an error, got ${outcome.reason}`);
  }
  return { code: outcome.error.code, message: outcome.error.message, cause: outcome.error.cause };
}

it('checks read values against the access width', () => {
  expect(encodeReadValue(0xff, 1)).toEqual([0xff, 0]);
  expect(encodeReadValue(0x1_0000_0001n, 8)).toEqual([1, 1]);
  expect(() => encodeReadValue(0x100, 1)).toThrow(/does not fit in 1 byte/);
  expect(() => encodeReadValue(-1, 4)).toThrow(/does not fit/);
  expect(() => encodeReadValue('7', 1)).toThrow(/returned "7"; expected an integer from 0 to 0xff/);
  expect(() => encodeReadValue(1.5, 2)).toThrow(/1.5 \(number\)/);
});

describeKvm('TypeScript devices', () => {
  it('may answer with a Promise', async () => {
    const vm = machineWith('io');
    track(vm);
    const writes: (number | bigint)[] = [];
    vm.addPortDevice(0x60, 8, {
      name: 'slow',
      read: async () => {
        await new Promise((r) => setTimeout(r, 5));
        return 1;
      },
      write: async (_a, v) => {
        await new Promise((r) => setTimeout(r, 1));
        writes.push(v);
      },
    });
    vm.addPortDevice(0x70, 2, { name: 'string', read: () => Promise.resolve(9), write: () => Promise.resolve() });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(writes).toEqual([2, 2, 2]);
  });

  it('stop the machine, not the process, when a handler throws', async () => {
    const boom = new Error('device exploded');
    const vm = ioMachine(() => {
      throw boom;
    });
    const f = failure(await vm.run());
    expect(f.code).toBe('HANDLER_FAILED');
    expect(f.message).toMatch(/device "dev" read handler failed: device exploded/);
    expect(f.message).toMatch(/RIP 0x/);
    expect(f.cause).toBe(boom);
  });

  it('stop the machine when a handler rejects', async () => {
    const vm = ioMachine(() => Promise.reject(new Error('async trouble')));
    expect(failure(await vm.run()).message).toMatch(/async trouble/);
  });

  it('stop the machine when a handler returns the wrong type', async () => {
    const vm = ioMachine(() => 'hello');
    expect(failure(await vm.run()).message).toMatch(/returned "hello"; expected an integer from 0 to 0xff/);
  });

  it('stop the machine when a handler never answers, after handlerTimeoutMs', async () => {
    const vm = ioMachine(() => new Promise(() => {}), { handlerTimeoutMs: 100 });
    expect(failure(await vm.run()).message).toMatch(/no answer within 100 ms/);
  });

  it('leave other machines running when one fails', async () => {
    const bad = ioMachine(() => {
      throw new Error('bad');
    });
    const good = machineWith('spin');
    track(good);
    good.start();
    expect((await bad.run()).reason).toBe('error');
    expect(good.state).toBe('running');
    await good.pause();
    good.stop();
    expect(await good.wait()).toEqual({ reason: 'stopped' });
  });

  it('post writes: the guest runs on, the writes arrive in order and before later reads', async () => {
    const vm = machineWith('io');
    track(vm);
    const log: string[] = [];
    vm.addPortDevice(0x60, 8, {
      name: 'regs',
      posted: true,
      read: (a) => {
        log.push(`read ${a.address.toString(16)}`);
        return 1;
      },
      write: async (a, v) => {
        await new Promise((r) => setTimeout(r, 2));
        log.push(`write ${a.address.toString(16)}=${v}`);
      },
    });
    vm.addNullDevice(0x70, 2);
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(log).toEqual(['read 60', 'write 60=2', 'read 62', 'write 62=2', 'read 64', 'write 64=2']);
  });

  it('stop the machine when a posted write handler fails', async () => {
    const vm = machineWith('io');
    track(vm);
    vm.addPortDevice(0x60, 8, {
      name: 'log',
      posted: true,
      read: () => 0,
      write: () => {
        throw new Error('disk full');
      },
    });
    vm.addNullDevice(0x70, 2);
    const f = failure(await vm.run());
    expect(f.message).toMatch(/posted write to 0x60: device "log" write handler failed: disk full/);
  });

  it('lets a waiting handler read the vCPU registers, and pauses with the access completed', async () => {
    const vm = machineWith('io');
    track(vm);
    let rbx: bigint | undefined;
    let paused: Promise<void> | undefined;
    vm.addPortDevice(0x60, 8, {
      name: 'inspect',
      read: (a) => {
        if (a.offset === 0) {
          // State read here precedes the access: `in` completes once the vCPU runs on.
          rbx = vm.vcpu(a.vcpu).registers().rbx;
          paused = vm.pause();
          return 0x41;
        }
        return 0;
      },
    });
    vm.addNullDevice(0x70, 2);
    vm.start();
    while (paused === undefined) {
      await new Promise((r) => setTimeout(r, 1));
    }
    await paused;
    expect(rbx).toBeTypeOf('bigint');
    // Paused after the answer: `in al,dx` at 0x1003 is complete, AL holds the answer.
    const regs = vm.vcpu(0).registers();
    expect([regs.rip, regs.rax & 0xffn]).toEqual([0x1004n, 0x41n]);
    vm.resume();
    expect(await vm.wait()).toEqual({ reason: 'halted' });
  });
});
