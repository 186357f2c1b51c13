/** Guests that misbehave: the host reports what happened and stays in control. */
import { expect, it } from 'vitest';
import { type CpuMode, Machine, type MachineConfig, type Outcome } from '../src/index.js';
import { closedAfterEach, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

const ENTRY = { real: 0x1000, protected: 0x1000, long: 0x10_0000 } as const;

/** A machine running `code` (hand-assembled, spelled out beside each use). */
function running(code: number[], mode: CpuMode, config: Partial<MachineConfig> = {}): Machine {
  const vm = Machine.create({ memory: '2M', ...config });
  track(vm);
  vm.memory.write(ENTRY[mode], Uint8Array.from(code));
  vm.vcpu(0).setup({ mode, entry: ENTRY[mode] });
  return vm;
}

function errorOf(outcome: Outcome) {
  if (outcome.reason !== 'error') {
    throw new Error(`expected an error, got ${outcome.reason}`);
  }
  return outcome.error;
}

describeKvm('a hostile guest', () => {
  it('that jumps into unmapped memory stops with KVM internal error, RIP and exit', async () => {
    // mov rax,0xd0000000 ; jmp rax
    const vm = running([0x48, 0xb8, 0, 0, 0, 0xd0, 0, 0, 0, 0, 0xff, 0xe0], 'long');
    const error = errorOf(await vm.run());
    expect(['EMULATION_FAILURE', 'INTERNAL_ERROR']).toContain(error.code);
    expect(error.exit).toBe('internal-error');
    expect(error.rip).toBe(0xd000_0000n);
    expect(error.instruction.length).toBe(0); // nothing readable there
    expect(error.message).toMatch(/RIP 0xd0000000/);
  });

  it('that is single-stepped stops after one instruction with a debug exit', async () => {
    // mov al,1 ; hlt
    const vm = running([0xb0, 0x01, 0xf4], 'real');
    vm.vcpu(0).setSingleStep(true);
    const error = errorOf(await vm.run());
    expect([error.code, error.exit, error.rip]).toEqual(['UNHANDLED_EXIT', 'debug', 0x1002n]);
  });

  it('that resets through the i8042 ends with a reset outcome', async () => {
    // mov al,0xfe ; out 0x64,al ; hlt
    const vm = running([0xb0, 0xfe, 0xe6, 0x64, 0xf4], 'real');
    vm.addI8042();
    expect(await vm.run()).toEqual({ reason: 'reset', vcpu: 0 });
  });

  it('that reads the CMOS clock gets the host year in BCD', async () => {
    // mov al,9 ; out 0x70,al ; in al,0x71 ; out 0xe9,al ; hlt
    const vm = running([0xb0, 0x09, 0xe6, 0x70, 0xe4, 0x71, 0xe6, 0xe9, 0xf4], 'real');
    vm.addRtc();
    const console = vm.addDebugConsole();
    expect(await vm.run()).toEqual({ reason: 'halted' });
    const year = new Date().getUTCFullYear() % 100;
    expect(console.take()[0]).toBe(Math.floor(year / 10) * 16 + (year % 10));
  });

  it('that runs fwait, int3, ldmxcsr and stmxcsr gets through them, even where KVM cannot emulate them', async () => {
    const vm = track(machineWith('int3'));
    vm.addDebugExit(0xf4);
    // The #BP handler ran once, and MXCSR round-tripped with flush-to-zero set.
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x1_9f80 });
  });

  it('that runs int n, xgetbv, stac/clac, clwb and clflushopt gets through them, even where KVM cannot emulate them', async () => {
    const vm = track(machineWith('finish'));
    vm.addDebugExit(0xf4);
    // Bits of the status (guests/finish.S): the interrupt handlers' sum 0x12, XCR0 read
    // back, #GP(0) for XCR 2 taken once and returned from, AC set then cleared, the cache
    // line instructions passed over.
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0xbf12 });
  });

  it('that triple-faults ends with a triple-fault outcome', async () => {
    // lidt [0x1100] (an empty IDT) ; ud2
    const code = [0x0f, 0x01, 0x1d, 0x00, 0x11, 0x00, 0x00, 0x0f, 0x0b];
    const vm = running(code, 'protected');
    vm.memory.write(0x1100, new Uint8Array(6));
    expect(await vm.run()).toEqual({ reason: 'triple-fault', vcpu: 0 });
  });

  it('that storms the host with exits can still be stopped', async () => {
    // 1: out 0x80,al ; jmp 1b   (nothing claims port 0x80; the ignore policy drops it)
    const vm = running([0xe6, 0x80, 0xeb, 0xfc], 'real', { unhandled: 'ignore' });
    vm.start();
    // Stop it once the storm is under way (on a loaded host the vCPU thread may take a while
    // to get a CPU, so wait for the exits rather than for a fixed time).
    while ((vm.stats()[0]?.exits['io-out'] ?? 0) <= 10) {
      await new Promise((r) => setTimeout(r, 10));
    }
    vm.stop();
    expect(await vm.wait()).toEqual({ reason: 'stopped' });
  });

  it('that asks for a huge string-I/O count is served page by page', async () => {
    // mov cx,0xffff ; mov dx,0x80 ; rep outsb ; hlt   (writes 64 KiB from ds:si=0)
    const vm = running([0xb9, 0xff, 0xff, 0xba, 0x80, 0x00, 0xf3, 0x6e, 0xf4], 'real');
    vm.memory.write(0x8000, Uint8Array.of(1, 2, 3));
    const bytes: number[] = [];
    vm.addPortDevice(0x80, 1, { name: 'sink', write: (_a, v) => void bytes.push(Number(v)) });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(bytes.length).toBe(0xffff);
    expect(bytes.slice(0x8000, 0x8003)).toEqual([1, 2, 3]);
    // KVM moves string I/O through its one-page buffer: at least one exit per 4 KiB.
    expect(vm.stats()[0]?.exits['io-out']).toBeGreaterThanOrEqual(Math.ceil(0xffff / 4096));
  });
});
