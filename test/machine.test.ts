import { readdirSync } from 'node:fs';
import { expect, it } from 'vitest';
import { DEMO_ANSWER, runDemo } from '../src/demo.js';
import {
  type AccessEvent,
  ArgumentError,
  ConfigError,
  kvmInfo,
  Machine,
  MachineError,
  type Outcome,
} from '../src/index.js';
import { closedAfterEach, IO_GUEST_WRITES, ioRegisters, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

function errorOf(outcome: Outcome): MachineError {
  if (outcome.reason !== 'error') {
    throw new Error(`expected an error outcome, got ${outcome.reason}`);
  }
  return outcome.error;
}

describeKvm('Machine', () => {
  it('runs the demo: TypeScript and Rust devices, port and MMIO exits, then hlt', async () => {
    const lines: string[] = [];
    const report = await runDemo((l) => lines.push(l));
    expect(report.outcome).toEqual({ reason: 'halted' });
    expect(report.console).toBe('Hello from a kvmkit guest!\n');
    expect(report.debugConsole).toBe(`${DEMO_ANSWER}\n`);
    expect(report.mmioValue).toBe(0x1122334455667788n);
    expect(report.stats.exits['io-in']).toBe(1);
    expect(report.stats.exits['mmio-write']).toBe(1);
    expect(report.stats.exits.hlt).toBe(1);
    expect(lines.join('\n')).toMatch(/guest> Hello from a kvmkit guest!/);
  });

  it('validates the layout against the host, naming the field and limit', () => {
    const field = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as ConfigError).field;
      }
      return 'no error';
    };
    expect(field(() => Machine.create({ memory: 0 }))).toBe('memory[0].size');
    expect(field(() => Machine.create({ memory: 1000 }))).toBe('memory[0].size');
    expect(field(() => Machine.create({ memory: [{ guestAddr: 0x10, size: '4K' }] }))).toBe('memory[0].guestAddr');
    expect(
      field(() =>
        Machine.create({
          memory: [
            { guestAddr: 0, size: '1M' },
            { guestAddr: 0x8_0000, size: '1M' },
          ],
        }),
      ),
    ).toBe('memory[1].guestAddr');
    expect(field(() => Machine.create({ memory: '1M', vcpus: kvmInfo().maxVcpus + 1 }))).toBe('vcpus');
    expect(() => Machine.create({ memory: '1M', vcpus: kvmInfo().maxVcpus + 1 })).toThrow(/max \d+/);
    expect(field(() => Machine.create({ memory: [{ guestAddr: 2 ** 52, size: 2 ** 52 }], overcommit: true }))).toBe(
      'memory[0].size',
    );
  });

  it('reads and writes guest memory with typed accessors and refuses accesses outside RAM', () => {
    const vm = track(
      Machine.create({
        memory: [
          { guestAddr: 0, size: '64K' },
          { guestAddr: 0x10_0000, size: '64K' },
        ],
      }),
    );
    vm.memory.writeU8(0x10, 0xab);
    vm.memory.writeU16(0x20, 0xbeef);
    vm.memory.writeU32(0x30, 0xdeadbeef);
    vm.memory.writeU64(0x10_0040, 0x0123456789abcdefn);
    expect(vm.memory.readU8(0x10)).toBe(0xab);
    expect(vm.memory.readU16(0x20)).toBe(0xbeef);
    expect(vm.memory.readU32(0x30)).toBe(0xdeadbeef);
    expect(vm.memory.readU64(0x10_0040)).toBe(0x0123456789abcdefn);
    expect([...vm.memory.read(0x20, 2)]).toEqual([0xef, 0xbe]);
    expect(() => vm.memory.write(0xfffe, new Uint8Array(4))).toThrow(
      expect.objectContaining({ code: 'GUEST_MEMORY_RANGE' }),
    );
    expect(() => vm.memory.read(0x2_0000, 1)).toThrow(/outside guest RAM/);
    expect(() => vm.memory.read(-1, 1)).toThrow(ArgumentError);
  });

  it('answers port reads of every width, sees the writes, and handles string I/O', async () => {
    const vm = track(machineWith('io'));
    const writes: [number, number | bigint][] = [];
    vm.addPortDevice(0x60, 8, ioRegisters(writes));
    let next = 0x61;
    const copied: number[] = [];
    const seen: string[] = [];
    vm.on('access', (a) =>
      seen.push(`${a.vcpu} ${a.device} ${a.kind} ${a.space} ${a.address.toString(16)}/${a.size}×${a.count}`),
    );
    vm.addPortDevice(0x70, 1, { name: 'source', read: () => next++ });
    vm.addPortDevice(0x71, 1, { name: 'sink', write: (_a, v) => void copied.push(Number(v)) });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(writes).toEqual(IO_GUEST_WRITES);
    expect(copied).toEqual([0x61, 0x62, 0x63, 0x64]);
    expect(seen.slice(0, 4)).toEqual([
      '0 regs read port 60/1×1',
      '0 regs write port 60/1×1',
      '0 regs read port 62/2×1',
      '0 regs write port 62/2×1',
    ]);
    // String I/O comes as one exit or one per element, as the host's KVM chooses.
    expect(seen).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^0 source read port 70\/1×[14]$/),
        expect.stringMatching(/^0 sink write port 71\/1×[14]$/),
      ]),
    );
  });

  it('emits access events exactly while someone listens, listeners added and removed mid-run included', async () => {
    const vm = track(machineWith('io'));
    const writes: [number, number | bigint][] = [];
    const regs = ioRegisters(writes);
    const once: string[] = [];
    const late: string[] = [];
    const onLate = (a: AccessEvent) => {
      late.push(`${a.kind} ${a.address.toString(16)}`);
      if (late.length === 2) {
        vm.off('access', onLate);
      }
    };
    let added = false;
    vm.addPortDevice(0x60, 8, {
      ...regs,
      write: (a, v) => {
        regs.write?.(a, v);
        // The first write adds a listener from inside a handler: it sees the accesses after it.
        if (!added) {
          added = true;
          vm.on('access', onLate);
        }
      },
    });
    vm.addPortDevice(0x70, 2, { name: 'string-io', read: () => 0 });
    vm.once('access', (a) => once.push(`${a.kind} ${a.address.toString(16)}`));
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(once).toEqual(['read 60']);
    expect(late).toEqual(['read 62', 'write 62']);
    expect(vm.listenerCount('access')).toBe(0);
  });

  it('answers MMIO reads of 1, 2, 4 and 8 bytes and sees the writes', async () => {
    const vm = track(machineWith('mmio'));
    const reads = [0x7f, 0x7fff, 0x7fffffff, 0x7fffffffffffffffn];
    const writes: [number, number, number | bigint][] = [];
    vm.addMmioDevice(0xd000_0000, 0x1000, {
      name: 'regs',
      read: (a) => reads[a.offset / 8] ?? 0,
      write: (a, v) => void writes.push([a.offset, a.size, v]),
    });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(writes).toEqual([
      [0x100, 1, 0x80],
      [0x108, 2, 0x8000],
      [0x110, 4, 0x80000000],
      [0x118, 8, 0x8000000000000000n],
    ]);
    expect(vm.stats()[0]?.exits['mmio-read']).toBe(4);
  });

  it('stops on an unclaimed access with an error naming the exit, port and RIP', async () => {
    const vm = track(machineWith('unhandled'));
    const error = errorOf(await vm.run());
    expect(error).toBeInstanceOf(MachineError);
    expect(error.code).toBe('UNHANDLED_EXIT');
    expect(error.exit).toBe('io-out');
    expect(error.message).toMatch(/port 0x80: 1-byte write of 0x55/);
    expect(error.rip === 0x1002n || error.rip === 0x1004n).toBe(true);
    expect(error.instruction.length).toBeGreaterThan(0);
  });

  it('reads all-ones from an unclaimed port under the ignore policy', async () => {
    const vm = track(machineWith('io', { unhandled: 'ignore' }));
    const seen: (number | bigint)[] = [];
    vm.addPortDevice(0x60, 1, { name: 'echo', write: (_a, v) => void seen.push(v) });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(seen).toEqual([0]);
  });

  it('pauses a busy guest, shows its registers, changes them, resumes and stops it', async () => {
    const vm = track(machineWith('spin'));
    vm.start();
    expect(vm.state).toBe('running');
    await new Promise((r) => setTimeout(r, 50));
    expect(() => vm.vcpu(0).registers()).toThrow(expect.objectContaining({ code: 'INVALID_STATE' }));
    await vm.pause();
    expect(vm.state).toBe('paused');
    const vcpu = vm.vcpu(0);
    const regs = vcpu.registers();
    expect(regs.rip === 0x1000n || regs.rip === 0x1002n).toBe(true);
    const counted = regs.rax;
    expect(counted).toBeGreaterThan(0n);
    vcpu.setRegisters({ rbx: 0x1234n });
    expect(vcpu.registers().rbx).toBe(0x1234n);
    vm.resume();
    await new Promise((r) => setTimeout(r, 20));
    vm.stop();
    expect(await vm.wait()).toEqual({ reason: 'stopped' });
    expect(vm.state).toBe('ended');
    expect(vcpu.registers().rax).toBeGreaterThan(counted);
  });

  it('closes during a run and releases every file descriptor', async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 3; i++) {
      const vm = machineWith('spin', { vcpus: 2 });
      vm.start();
      await vm.close();
      expect(vm.state).toBe('closed');
      expect(vm.outcome).toEqual({ reason: 'stopped' });
    }
    const unstarted = machineWith('spin');
    await unstarted.close();
    expect(fds()).toBe(before);
  });

  it('runs a 2-vCPU guest and tells handlers which vCPU exited', async () => {
    const vm = track(machineWith('smp', { vcpus: 2 }));
    const seen: [number, number | bigint][] = [];
    vm.addPortDevice(0x600, 4, { name: 'ids', write: (a, v) => void seen.push([a.vcpu, v]) });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(seen.sort()).toEqual([
      [0, 0],
      [1, 1],
    ]);
  });

  it("answers one vCPU while another's handler is still waiting on a Promise", async () => {
    // The Promise ends the streak that took vCPU 0's access; vCPU 1's access, posted while
    // that streak was polling (no doorbell rung then) or after it, is served all the same.
    const vm = track(machineWith('smp', { vcpus: 2 }));
    const events: string[] = [];
    vm.addPortDevice(0x600, 4, {
      name: 'ids',
      write: (a) => {
        events.push(`write ${a.vcpu}`);
        if (a.vcpu !== 0) return;
        return new Promise<void>((resolve) =>
          setTimeout(() => {
            events.push('answered 0');
            resolve();
          }, 100),
        );
      },
    });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(events.indexOf('write 1')).toBeGreaterThanOrEqual(0);
    expect(events.indexOf('write 1')).toBeLessThan(events.indexOf('answered 0'));
  });

  it('keeps the Rust debug console output readable after close', async () => {
    const vm = machineWith('unhandled');
    const console = vm.addDebugConsole(0x80);
    expect(await vm.run()).toEqual({ reason: 'halted' });
    await vm.close();
    expect([...console.take()]).toEqual([0x55]);
    expect(() => vm.memory.read(0, 1)).toThrow(/the machine is closed/);
  });

  it('ends with the status written to the debug-exit port', async () => {
    const vm = track(machineWith('unhandled'));
    vm.addDebugExit(0x80);
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
  });

  it('runs many machines at once in one process', async () => {
    const vms = Array.from({ length: 8 }, () => track(machineWith('smp')));
    const outcomes = await Promise.all(
      vms.map((vm) => {
        vm.addNullDevice(0x600, 4);
        return vm.run();
      }),
    );
    expect(outcomes.every((o) => o.reason === 'halted')).toBe(true);
  });

  it('refuses overlapping and out-of-range device ranges', () => {
    const vm = track(machineWith('io'));
    vm.addPortDevice(0x60, 8, { name: 'a' });
    expect(() => vm.addPortDevice(0x64, 1, { name: 'b' })).toThrow(/overlaps a at 0x60..0x68/);
    expect(() => vm.addPortDevice(0xffff, 2, { name: 'c' })).toThrow(/2 ports from 0xffff run past the last port/);
    expect(() => vm.addMmioDevice(0x1000, 0x1000, { name: 'over-ram' })).toThrow(/overlaps guest RAM/);
    const handle = vm.addMmioDevice(0xd000_0000, 0x1000, { name: 'd' });
    handle.remove();
    vm.addMmioDevice(0xd000_0000, 0x1000, { name: 'e' });
  });

  it('refuses lifecycle calls in the wrong state', async () => {
    const vm = track(machineWith('spin'));
    await expect(vm.pause()).rejects.toThrow(/cannot pause: the machine is created/);
    expect(() => vm.resume()).toThrow(expect.objectContaining({ code: 'INVALID_STATE' }));
    vm.start();
    expect(() => vm.start()).toThrow(/cannot start: the machine is running/);
    vm.stop();
    await vm.wait();
  });
});
