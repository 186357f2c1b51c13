/**
 * Misuse of the API, as a new user makes it: every mistake is a typed kvmkit error with a
 * stable code that names the argument, shows the value as given and says what to do.
 */
import { totalmem } from 'node:os';
import { expect, it } from 'vitest';
import {
  ArgumentError,
  ConfigError,
  hardwareVirtualization,
  KvmkitError,
  kvmInfo,
  Machine,
  maskCpuid,
  stopMachine,
} from '../src/index.js';
import { closedAfterEach } from './guests.js';
import { describeKvm } from './kvm.js';
import { thrownBy } from './throws.js';

const track = closedAfterEach();

/** The error `f` throws, checked to be a kvmkit error. */
function thrown(f: () => unknown): KvmkitError {
  return thrownBy(f, KvmkitError);
}

/** The message of the ArgumentError `f` throws, checked to name `argument`. */
function argumentError(f: () => unknown, argument: string): string {
  const error = thrown(f);
  expect(error).toBeInstanceOf(ArgumentError);
  expect(error.code).toBe('INVALID_ARGUMENT');
  expect((error as ArgumentError).argument).toBe(argument);
  return error.message;
}

/** mov al, 0x2a ; out 0xf4, al ; hlt (16-bit real mode). */
const DEBUG_EXIT_GUEST = Uint8Array.of(0xb0, 0x2a, 0xe6, 0xf4, 0xf4);

describeKvm('errors a user can act on', () => {
  it('names the argument and the value as given, instead of a napi conversion error', () => {
    const vm = track(Machine.create({ memory: '2M' }));
    expect(argumentError(() => vm.addPortDevice(0x200, 1, {} as never), 'device.name')).toMatch(/got undefined/);
    expect(argumentError(() => vm.addPortDevice(0x200, 1, null as never), 'device')).toMatch(/got null/);
    expect(argumentError(() => vm.addPortDevice(0x1_0000, 1, { name: 'x' }), 'base')).toMatch(/0 to 0xffff/);
    expect(argumentError(() => vm.addPortDevice(0x200, 0, { name: 'x' }), 'length')).toMatch(/got 0/);
    expect(
      argumentError(() => vm.addMmioDevice(0xd000_0000, 16, { name: 'x', read: 1 as never }), 'device.read'),
    ).toMatch(/expected a function/);
    expect(argumentError(() => vm.memory.read('0x1000' as never, 4), 'address')).toContain('"0x1000" (a string)');
    expect(argumentError(() => vm.memory.write(0x3000, [1, 2, 3] as never), 'data')).toContain('Uint8Array.from');
    expect(argumentError(() => vm.memory.view(0x1000, -1), 'length')).toMatch(/got -1/);
  });

  it('checks the arguments of every other entry point too', () => {
    const vm = track(Machine.create({ memory: '2M' }));
    const vcpu = vm.vcpu(0);
    expect(argumentError(() => vcpu.setRegisters({ rax: 1.5 as never }), 'changes.rax')).toMatch(/got 1\.5/);
    expect(argumentError(() => vcpu.setMpState('asleep' as never), 'state')).toContain('"runnable"');
    expect(argumentError(() => vcpu.injectException(40), 'vector')).toMatch(/0 to 31/);
    expect(argumentError(() => vcpu.setSingleStep('yes' as never), 'enabled')).toMatch(/true or false/);
    expect(argumentError(() => vcpu.msrs(['0x10'] as never), 'indices[0]')).toContain('(a string)');
    expect(argumentError(() => vm.loadLinux(undefined as never, undefined, ''), 'kernel')).toMatch(/got undefined/);
    expect(argumentError(() => vm.loadFlat('/x', { address: 0, mode: 'v86' as never }), 'options.mode')).toBeTruthy();
    expect(argumentError(() => vm.addNullDevice(0x80, 1, { fill: 300 }), 'options.fill')).toMatch(/0 to 0xff/);
    expect(argumentError(() => vm.createIoEventFd({ address: 0x80, length: 3 }), 'options.length')).toMatch(/1, 2, 4/);
    expect(thrown(() => vm.addSerial({ irq: 4 })).code).toBe('NO_IRQCHIP');
    expect(argumentError(() => stopMachine('1' as never), 'id')).toContain('(a string)');
  });

  it('refuses values that do not fit the width written, and writes nothing', () => {
    const vm = track(Machine.create({ memory: '2M' }));
    vm.memory.writeU32(0x1000, 0x1122_3344);
    expect(argumentError(() => vm.memory.writeU8(0x1000, 300), 'value')).toMatch(/0 to 0xff, got 300/);
    expect(argumentError(() => vm.memory.writeU16(0x1000, -1), 'value')).toMatch(/got -1/);
    expect(argumentError(() => vm.memory.writeU32(0x1000, 2 ** 40), 'value')).toMatch(/0xffffffff/);
    expect(argumentError(() => vm.memory.writeU64(0x1000, 2n ** 64n), 'value')).toMatch(/0xffffffffffffffff/);
    expect(vm.memory.readU32(0x1000)).toBe(0x1122_3344);
    vm.memory.writeU64(0x1000, 2 ** 40);
    expect(vm.memory.readU64(0x1000)).toBe(2n ** 40n);
  });

  it('says a machine without irqchip has none, and how to create one with it', () => {
    const vm = track(Machine.create({ memory: '2M' }));
    for (const f of [() => vm.setIrqLine(4, true), () => vm.createIrqFd(4), () => vm.signalMsi(0xfee0_0000, 0x30)]) {
      const error = thrown(f);
      expect(error.code).toBe('NO_IRQCHIP');
      expect(error.message).toContain('irqchip: true');
    }
    const withIrqchip = track(Machine.create({ memory: '2M', irqchip: true }));
    expect(argumentError(() => withIrqchip.setIrqLine(24, true), 'irq')).toMatch(/0 to 23/);
  });

  it('names how many vCPUs there are when asked for one that does not exist', () => {
    const vm = track(Machine.create({ memory: '2M', vcpus: 2 }));
    expect(vm.vcpu(1)).toBe(vm.vcpus[1]);
    const error = thrown(() => vm.vcpu(2));
    expect(error.code).toBe('NO_SUCH_VCPU');
    expect(error.message).toBe('vCPU 2 does not exist: this machine has 2 vCPU(s), 0 to 1');
    expect(argumentError(() => vm.vcpu(-1), 'index')).toMatch(/-1/);
  });

  it('rejects, never throws, when run() cannot start', async () => {
    const vm = track(Machine.create({ memory: '2M' }));
    vm.memory.write(0x1000, Uint8Array.of(0xf4));
    vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
    await expect(vm.run()).resolves.toEqual({ reason: 'halted' });
    const again = vm.run();
    await expect(again).rejects.toMatchObject({ code: 'INVALID_STATE' });
    await vm.close();
    await expect(vm.run()).rejects.toMatchObject({ code: 'INVALID_STATE' });
  });

  it('refuses a vCPU entry its mode cannot reach, or outside guest RAM', () => {
    const vm = track(Machine.create({ memory: '2M' }));
    const vcpu = vm.vcpu(0);
    expect(argumentError(() => vcpu.setup({ mode: 'real', entry: 0x1000_0000 }), 'setup.entry')).toMatch(
      /real mode .* reaches 0 to 0xffff/,
    );
    expect(argumentError(() => vcpu.setup({ mode: 'long', entry: 0x1000_0000 }), 'setup.entry')).toMatch(
      /outside guest RAM \(0x0\.\.0x200000\)/,
    );
    expect(argumentError(() => vcpu.setup({ mode: 'virtual' as never, entry: 0 }), 'setup.mode')).toMatch(
      /"real", "protected", "long"/,
    );
  });

  it("shows a wrong vCPU count as given, with the host's limit", () => {
    const error = thrown(() => Machine.create({ memory: '1M', vcpus: '2' as never }));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain('"2" (a string)');
    expect(error.message).toContain(`at most ${kvmInfo().maxVcpus} on this host`);
    const tooMany = thrown(() => Machine.create({ memory: '1M', vcpus: kvmInfo().maxVcpus + 1 }));
    expect(tooMany.message).toContain(`max ${kvmInfo().maxVcpus}`);
  });

  it("needs overcommit: true for more RAM than the host's, and checks it before mapping anything", () => {
    const beyond = Math.ceil(totalmem() / 2 ** 30 + 1) * 2 ** 30;
    const error = thrown(() => Machine.create({ memory: beyond }));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toMatch(/more than this host's .* of RAM; set overcommit: true/);
    const vm = track(Machine.create({ memory: beyond, overcommit: true }));
    expect(vm.memory.regions.reduce((sum, r) => sum + r.size, 0)).toBe(beyond);
  });

  it('refuses a size string without a unit, saying both readings', () => {
    const error = thrown(() => Machine.create({ memory: '512' }));
    expect(error.message).toContain('write "512M" for MiB, or the number 512 for bytes');
  });

  it('reads CPUID back after setting it and returns what KVM kept its own way', () => {
    const vm = track(Machine.create({ memory: '2M' }));
    const vcpu = vm.vcpu(0);
    expect(vcpu.setCpuid(vcpu.cpuid())).toEqual([]);
    const XSAVE = 1 << 26;
    const leaf1 = vcpu.cpuid().find((e) => e.function === 1);
    const forced = vcpu.setCpuid(maskCpuid(vcpu.cpuid(), [{ function: 1, register: 'ecx', clear: XSAVE }]));
    if (!hardwareVirtualization() && leaf1 !== undefined && (leaf1.ecx & XSAVE) !== 0) {
      // A software-assisted KVM keeps XSAVE whatever is asked (seen on kvm_pvm).
      expect(forced).toContainEqual(
        expect.objectContaining({ function: 1, register: 'ecx', requested: (leaf1.ecx & ~XSAVE) >>> 0 }),
      );
    }
    for (const f of forced) {
      expect(f.actual).not.toBe(f.requested);
    }
  });

  it("ends the run with the debug-exit's raw value, or QEMU's (value << 1) | 1", async () => {
    for (const [convention, status] of [
      ['raw', 0x2a],
      ['qemu', 0x55],
    ] as const) {
      const vm = track(Machine.create({ memory: '2M' }));
      vm.memory.write(0x1000, DEBUG_EXIT_GUEST);
      vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
      vm.addDebugExit(0xf4, { convention });
      expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status });
    }
    const vm = track(Machine.create({ memory: '2M' }));
    expect(argumentError(() => vm.addDebugExit(0xf4, { convention: 'bochs' as never }), 'options.convention')).toMatch(
      /"raw", "qemu"/,
    );
  });
});
